"""OTLP trace receivers for the hub: gRPC (TraceService/Export) and HTTP/protobuf (/v1/traces).

Both decode with capture.export.otlp_wire.decode_rows and hand the rows to the Ingest queue. Answers follow
the OTLP specification: bytes that are not a request -> INVALID_ARGUMENT / HTTP 400 with a
google.rpc.Status body (counted as malformed); spans we cannot store -> accepted with
partial_success.rejected_spans; a full ingest queue -> UNAVAILABLE / HTTP 503 + Retry-After,
which exporters retry. Metrics and logs sent to /v1/metrics and /v1/logs are accepted and dropped.
"""
from __future__ import annotations

import gzip
import logging
import threading
import time
import zlib
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from capture.export.otlp_wire import DecodeError, decode_rows
from guardian.hub.ingest import Ingest

log = logging.getLogger(__name__)
SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
MAX_BODY = 64 << 20


class Malformed(ValueError):
    pass


def handle(ingest: Ingest, body: bytes) -> ExportTraceServiceResponse | None:
    """The response for one request body, or None when the ingest queue is full."""
    t = time.perf_counter()
    try:
        spans, rejected = decode_rows(body)
    except (DecodeError, ValueError, RuntimeError) as e:
        ingest.malformed += 1
        raise Malformed(f"not an OTLP ExportTraceServiceRequest: {e}") from e
    ingest.decoded(time.perf_counter() - t)
    if spans and not ingest.offer(spans):
        return None
    ingest.rejected += rejected
    resp = ExportTraceServiceResponse()
    if rejected:
        resp.partial_success.rejected_spans = rejected
        resp.partial_success.error_message = "spans with invalid trace/span ids or no name"
    return resp


class GrpcReceiver:
    def __init__(self, ingest: Ingest, host: str = "0.0.0.0", port: int = 4317, workers: int = 4):
        def export(body: bytes, context: grpc.ServicerContext):
            try:
                resp = handle(ingest, body)
            except Malformed as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            if resp is None:
                context.abort(grpc.StatusCode.UNAVAILABLE, "hub ingest queue full, retry later")
            return resp

        handler = grpc.method_handlers_generic_handler(SERVICE, {
            "Export": grpc.unary_unary_rpc_method_handler(
                export, request_deserializer=None,  # raw bytes: we count undecodable requests
                response_serializer=ExportTraceServiceResponse.SerializeToString)})
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers),
                                  options=[("grpc.max_receive_message_length", MAX_BODY)])
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port(f"{host}:{port}")
        if not self.port:
            raise RuntimeError(f"cannot bind OTLP/gRPC on {host}:{port}")

    def start(self) -> "GrpcReceiver":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(grace=2).wait(5)


def _status(code: int, message: str) -> bytes:
    return status_pb2.Status(code=code, message=message).SerializeToString()


class HttpReceiver:
    def __init__(self, ingest: Ingest, host: str = "0.0.0.0", port: int = 4318):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: agents post a batch a second each

            def _reply(self, code: int, body: bytes, extra: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                try:
                    length = int(self.headers.get("Content-Length") or -1)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    ingest.malformed += 1
                    self.close_connection = True
                    return self._reply(400, _status(code_pb2.INVALID_ARGUMENT, "bad Content-Length"))
                body = self.rfile.read(length)
                if self.path.split("?")[0] in ("/v1/metrics", "/v1/logs"):
                    return self._reply(200, b"")
                if self.path.split("?")[0] != "/v1/traces":
                    return self._reply(404, _status(code_pb2.NOT_FOUND, "OTLP traces are at /v1/traces"))
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if ctype != "application/x-protobuf":
                    ingest.malformed += 1
                    return self._reply(415, _status(code_pb2.INVALID_ARGUMENT,
                                                    "only application/x-protobuf is accepted"))
                try:
                    enc = (self.headers.get("Content-Encoding") or "").lower()
                    if enc == "gzip":
                        body = gzip.decompress(body)
                    elif enc == "deflate":
                        body = zlib.decompress(body)
                    resp = handle(ingest, body)
                except (Malformed, OSError, EOFError, zlib.error) as e:
                    if not isinstance(e, Malformed):
                        ingest.malformed += 1
                    return self._reply(400, _status(code_pb2.INVALID_ARGUMENT, str(e)[:200]))
                if resp is None:
                    return self._reply(503, _status(code_pb2.UNAVAILABLE, "hub ingest queue full"),
                                       {"Retry-After": "1"})
                self._reply(200, resp.SerializeToString())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="otlp-http", daemon=True)

    def start(self) -> "HttpReceiver":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
