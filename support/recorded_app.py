"""A small real service for the linking tests: a threaded HTTP server that calls HTTP peers
(keep-alive, one connection per thread) and Redis, and logs every request it serves and every
call it makes as a span with the real 4-tuple, thread id and times, plus the true parent
(passed down in an X-Truth-Parent header the linker never sees).

usage: recorded_app.py NAME PORT LOGFILE CALLS_JSON   (CALLS_JSON: {"/path": [["http", "host:port", "/p"], ["redis", port, "GET k"]]})
"""
from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME, PORT, LOG, CALLS = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
_lock = threading.Lock()
_local = threading.local()


def log(kind, name, start, end, local, peer, parent, span_id, extra=None):
    client, server = (peer, local) if kind == "SERVER" else (local, peer)
    rec = {"span_id": span_id, "truth_parent": parent, "kind": kind, "name": name, "start": start,
           "end": end, "service": NAME, "pid": os.getpid(), "tid": threading.get_native_id(),
           "client": client, "server": server, **(extra or {})}
    with _lock, open(LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


def http_call(hostport: str, path: str, parent: str) -> None:
    conns = _local.__dict__.setdefault("http", {})
    conn = conns.get(hostport)
    if conn is None:
        conn = conns[hostport] = http.client.HTTPConnection(hostport, timeout=10)
        conn.connect()
    span_id = os.urandom(8).hex()
    start = time.time_ns()
    conn.request("GET", path, headers={"X-Truth-Parent": span_id})
    conn.getresponse().read()
    end = time.time_ns()
    log("CLIENT", "GET " + path, start, end, conn.sock.getsockname()[:2],
        conn.sock.getpeername()[:2], parent, span_id)


def redis_call(port: int, cmd: str, parent: str) -> None:
    sock = _local.__dict__.get("redis")
    if sock is None:
        sock = _local.redis = socket.create_connection(("127.0.0.1", port), timeout=10)
        _local.rfile = sock.makefile("rb")
    parts = cmd.split()
    wire = f"*{len(parts)}\r\n" + "".join(f"${len(p)}\r\n{p}\r\n" for p in parts)
    span_id = os.urandom(8).hex()
    start = time.time_ns()
    sock.sendall(wire.encode())
    line = _local.rfile.readline()
    if line.startswith(b"$") and int(line[1:]) >= 0:
        _local.rfile.read(int(line[1:]) + 2)
    end = time.time_ns()
    log("CLIENT", parts[0], start, end, sock.getsockname()[:2], sock.getpeername()[:2], parent,
        span_id, {"db.system": "redis"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        start = time.time_ns()
        span_id = os.urandom(8).hex()
        for call in CALLS.get(self.path, []):
            if call[0] == "http":
                http_call(call[1], call[2], span_id)
            else:
                redis_call(call[1], call[2], span_id)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        end = time.time_ns()
        log("SERVER", "GET " + self.path, start, end, self.connection.getsockname()[:2],
            self.client_address[:2], self.headers.get("X-Truth-Parent"), span_id)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()
