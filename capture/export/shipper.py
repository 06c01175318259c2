"""Ship spans to a hub (or any OTLP collector) without losing them: batch, spool, retry.

`submit(spans)` only appends to a bounded in-memory intake and returns: capture never waits on
the network or the disk. A spool thread encodes batches (OTLP protobuf) into an on-disk queue
(capture.export.spool); a sender thread sends the oldest batch over OTLP/gRPC or OTLP/HTTP and
deletes it only once the receiver accepted it. Unreachable, throttled or rejecting receivers
all keep the batch queued and back off exponentially (with jitter, Retry-After honoured);
a rejection is counted apart so /metrics says the hub refuses what it is sent.
Memory is bounded by the intake; the backlog lives on disk, bounded by bytes.
"""
from __future__ import annotations

import gzip
import logging
import random
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from capture.export.otlp_proto import encode
from capture.export.spool import Spool
from capture.span import Span

log = logging.getLogger(__name__)
GRPC_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# OTLP's retryable answers (specification, "OTLP/HTTP Response" and "OTLP/gRPC Response").
RETRY_HTTP = {429, 502, 503, 504}
RETRY_GRPC = {"CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE",
              "DATA_LOSS", "RESOURCE_EXHAUSTED"}


@dataclass(slots=True)
class Outcome:
    status: str  # "ok" | "retry" (unreachable, throttled) | "rejected" (the receiver refused it)
    detail: str = ""
    rejected_spans: int = 0  # partial success: spans of an accepted batch the receiver dropped
    retry_after_s: float | None = None


class HttpTransport:
    def __init__(self, endpoint: str, headers: dict[str, str] | None, timeout_s: float,
                 compress: bool = True):
        import httpx

        base = endpoint.rstrip("/")
        self.url = base if base.endswith("/v1/traces") else base + "/v1/traces"
        self.compress, self.timeout_s = compress, timeout_s
        h = {"Content-Type": "application/x-protobuf", **(headers or {})}
        if compress:
            h["Content-Encoding"] = "gzip"
        self.client = httpx.Client(headers=h, timeout=timeout_s)

    def send(self, body: bytes) -> Outcome:
        import httpx

        try:
            r = self.client.post(self.url, content=gzip.compress(body, 1) if self.compress else body)
        except httpx.HTTPError as e:
            return Outcome("retry", f"{type(e).__name__}: {e}")
        if r.status_code == 200:
            try:
                resp = ExportTraceServiceResponse.FromString(r.content)
                return Outcome("ok", resp.partial_success.error_message,
                               resp.partial_success.rejected_spans)
            except Exception:  # noqa: BLE001 - an accepted batch with an odd body is still accepted
                return Outcome("ok")
        after = r.headers.get("Retry-After")
        retry_after = float(after) if after and after.isdigit() else None
        status = "retry" if r.status_code in RETRY_HTTP else "rejected"
        return Outcome(status, f"HTTP {r.status_code}", retry_after_s=retry_after)

    def close(self) -> None:
        self.client.close()


class GrpcTransport:
    def __init__(self, endpoint: str, headers: dict[str, str] | None, timeout_s: float,
                 insecure: bool = True):
        import grpc

        target = endpoint.split("://", 1)[-1].rstrip("/")
        self.channel = (grpc.insecure_channel(target) if insecure or endpoint.startswith("http://")
                        else grpc.secure_channel(target, grpc.ssl_channel_credentials()))
        # Bytes in, bytes out: the spool already holds the serialized request.
        self.call = self.channel.unary_unary(GRPC_METHOD, request_serializer=lambda b: b,
                                             response_deserializer=ExportTraceServiceResponse.FromString)
        self.metadata = [(k.lower(), v) for k, v in (headers or {}).items()]
        self.timeout_s = timeout_s

    def send(self, body: bytes) -> Outcome:
        import grpc

        try:
            resp = self.call(body, timeout=self.timeout_s, metadata=self.metadata,
                             compression=grpc.Compression.Gzip)
        except grpc.RpcError as e:
            code = e.code().name if hasattr(e, "code") and e.code() else "UNKNOWN"
            status = "retry" if code in RETRY_GRPC else "rejected"
            return Outcome(status, f"gRPC {code}: {e.details() if hasattr(e, 'details') else e}")
        return Outcome("ok", resp.partial_success.error_message, resp.partial_success.rejected_spans)

    def close(self) -> None:
        self.channel.close()


def make_transport(endpoint: str, protocol: str = "grpc", headers: dict[str, str] | None = None,
                   timeout_s: float = 10.0, insecure: bool = True):
    if protocol == "http":
        return HttpTransport(endpoint, headers, timeout_s)
    return GrpcTransport(endpoint, headers, timeout_s, insecure)


class Shipper:
    """Same face as OtlpSink (submit, close, exported/failed/dropped) plus queue state."""

    def __init__(self, transport: Any, queue_dir: str | None = None, max_bytes: int = 1 << 30,
                 batch_spans: int = 2000, flush_s: float = 1.0, max_intake_spans: int = 20_000,
                 backoff_s: tuple[float, float] = (0.2, 5.0), metrics: Any = None,
                 annotate: Any = None):
        self.transport = transport
        self._tmp = None if queue_dir else tempfile.TemporaryDirectory(prefix="guardian-spool-")
        self.spool = Spool(queue_dir or self._tmp.name, max_bytes)
        self.batch_spans, self.flush_s, self.max_intake = batch_spans, flush_s, max_intake_spans
        self.backoff_min, self.backoff_max = backoff_s
        self.metrics = metrics
        self.annotate = annotate  # e.g. capture.enrich.nat.NatTable.annotate, off the capture thread
        self._intake: deque[list[Span]] = deque()
        self._intake_spans = 0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._abort = threading.Event()  # close()'s deadline passed: leave the rest on disk
        self._spooled_all = threading.Event()
        self.exported = 0  # spans the receiver accepted
        self.failed = 0  # spans in send attempts that did not go through (each attempt counts)
        self.rejected = 0  # spans in attempts the receiver refused (kept queued, retried)
        self.rejected_spans = 0  # spans an accepting receiver said it dropped (partial success)
        self.dropped = 0  # spans lost: intake or disk queue full
        self.retries = 0
        self.rejecting = False  # the last answer was a rejection
        self.last_error = ""
        self._spooler = threading.Thread(target=self._spool_loop, name="ship-spool", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name="ship-send", daemon=True)
        self._spooler.start()
        self._sender.start()

    # -- capture side: never blocks -------------------------------------------------------
    def submit(self, spans: list[Span]) -> None:
        if not spans:
            return
        if self.metrics is not None:
            self.metrics.record(spans)
        with self._cv:
            if self._intake_spans + len(spans) > self.max_intake:
                self.dropped += len(spans)
                return
            self._intake.append(spans)
            self._intake_spans += len(spans)
            if self._intake_spans >= self.batch_spans:
                self._cv.notify()

    def queued(self) -> int:
        """Spans not yet accepted by the receiver (in memory and on disk)."""
        return self._intake_spans + self.spool.spans

    # -- intake -> disk ---------------------------------------------------------------------
    def _take(self) -> list[Span]:
        with self._cv:
            if self._intake_spans < self.batch_spans and not self._stop.is_set():
                self._cv.wait(self.flush_s)
            out: list[Span] = []
            while self._intake and len(out) < self.batch_spans:
                b = self._intake.popleft()
                out.extend(b)
            self._intake_spans -= len(out)
            return out

    def _spool_loop(self) -> None:
        while True:
            batch = self._take()
            if batch:
                if self.annotate is not None:
                    try:
                        self.annotate(batch)
                    except Exception as e:  # noqa: BLE001 - enrichment must not stop shipping
                        log.warning("span annotation failed: %s", e)
                if not self.spool.put(encode(batch), len(batch)):
                    self.dropped += len(batch)
            elif self._stop.is_set():
                self._spooled_all.set()
                return

    # -- disk -> receiver ------------------------------------------------------------------
    def _send_loop(self) -> None:
        delay = self.backoff_min
        while not self._abort.is_set() and not (
                self._stop.is_set() and self._spooled_all.is_set() and not self.spool.batches()):
            item = self.spool.oldest(wait_s=0.2)
            if item is None:
                continue
            seq, n, body = item
            try:
                out = self.transport.send(body)
            except Exception as e:  # noqa: BLE001 - a transport bug must not end shipping
                out = Outcome("retry", f"{type(e).__name__}: {e}")
            if out.status == "ok":
                self.spool.remove(seq)
                self.exported += n - out.rejected_spans
                self.rejected_spans += out.rejected_spans
                self.rejecting = False
                delay = self.backoff_min
                continue
            self.retries += 1
            self.failed += n
            if out.status == "rejected":
                self.rejected += n
            self.rejecting = out.status == "rejected"
            if out.detail != self.last_error:
                log.warning("OTLP export %s (%d spans kept queued): %s", out.status, self.spool.spans,
                            out.detail)
            self.last_error = out.detail
            wait = out.retry_after_s if out.retry_after_s is not None else delay * random.uniform(0.5, 1.0)
            self._abort.wait(min(wait, self.backoff_max))
            delay = min(delay * 2, self.backoff_max)

    def close(self, timeout_s: float = 10.0) -> None:
        """Spool what is in memory, send what the receiver takes within timeout_s; the rest
        stays on disk (a persistent queue_dir sends it on the next start)."""
        deadline = time.monotonic() + timeout_s
        self._stop.set()
        with self._cv:
            self._cv.notify_all()
        self._spooler.join(timeout_s)
        self._sender.join(max(deadline - time.monotonic(), 0.1))
        self._abort.set()
        self._sender.join(self.transport_timeout_s())
        if self.metrics is not None:
            self.metrics.flush(timeout_s)
            self.metrics.shutdown()
        self.transport.close()

    def transport_timeout_s(self) -> float:
        return float(getattr(self.transport, "timeout_s", 10.0)) + 1.0

    def gauges(self) -> dict[str, tuple[str, float]]:
        """Queue state for the agent's /metrics."""
        return {
            "guardian_agent_export_queue_spans": ("spans waiting to be shipped (memory + disk)", self.queued()),
            "guardian_agent_export_queue_bytes": ("bytes of the on-disk export queue", self.spool.bytes),
            "guardian_agent_export_rejecting": ("1 while the receiver rejects batches (kept queued)",
                                                int(self.rejecting)),
        }

    def counters(self) -> dict[str, tuple[str, float]]:
        return {
            "guardian_agent_export_rejected_spans": ("spans in batches the receiver rejected (kept, retried)",
                                                     self.rejected),
            "guardian_agent_export_retries": ("send attempts that failed and were retried", self.retries),
        }


def shipper_from_config(cfg: Any, metrics: Any = None, netns: str | None = None) -> Shipper:
    """netns: the namespace the agent is scoped to (its clients' conntrack entries live there)."""
    transport = make_transport(cfg.otlp_endpoint, cfg.otlp_protocol, cfg.otlp_headers, cfg.timeout_s,
                               cfg.otlp_insecure)
    from capture.enrich.nat import NatTable

    return Shipper(transport, cfg.queue_dir, int(cfg.queue_max_bytes), metrics=metrics,
                   annotate=NatTable(netns=[netns] if netns else ()).annotate)
