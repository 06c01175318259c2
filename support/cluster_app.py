"""The simulated cluster's services, one process each inside a node's namespace:
`web` (calls stock for each request, one keep-alive connection per serving thread),
`stock` (answers; from request id --fail-from on, fails --fail-pct % of requests: the fault),
and `load` (N requests over C keep-alive connections, request ids in the query string so
a benchmark can tell which client span belongs with which server span).

python -m support.cluster_app stock --bind 10.77.0.3 --port 8081 [--fail-from N --fail-pct P]
python -m support.cluster_app web --bind 10.77.0.2 --port 8080 --stock http://10.77.0.3:8081
python -m support.cluster_app load --url http://10.96.0.10:80 --requests 10000 --conns 16
"""
from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def _rid(path: str) -> int:
    return int(parse_qs(urlparse(path).query).get("rid", ["0"])[0])


def serve(bind: str, port: int, answer) -> None:
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            code, body = answer(self)
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer((bind, port), H)
    srv.daemon_threads = True
    print("ready", flush=True)
    srv.serve_forever()


def stock(args) -> None:
    def answer(h):
        rid = _rid(h.path)
        if args.fail_from is not None and rid >= args.fail_from and rid % 100 < args.fail_pct:
            return 500, b'{"error":"stock ledger locked"}'
        return 200, b'{"in_stock":true}'
    serve(args.bind, args.port, answer)


def web(args) -> None:
    u = urlparse(args.stock)
    local = threading.local()

    def answer(h):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            conn.request("GET", f"/stock?rid={_rid(h.path)}")
            r = conn.getresponse()
            r.read()
            status = r.status
        except (OSError, http.client.HTTPException):
            local.conn = None
            conn.close()
            status = 599
        return (200, b'{"ok":true}') if status == 200 else (502, b'{"error":"stock failed"}')
    serve(args.bind, args.port, answer)


def load(args) -> None:
    u = urlparse(args.url)
    counts = {"ok": 0, "error": 0, "failed": 0}
    lock = threading.Lock()
    t0 = time.perf_counter()

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        for rid in range(k, args.requests, args.conns):
            try:
                conn.request("GET", f"/web?rid={rid}")
                r = conn.getresponse()
                r.read()
                key = "ok" if r.status == 200 else "error"
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
                key = "failed"
            with lock:
                counts[key] += 1
            if args.pace_s:
                time.sleep(args.pace_s)
        conn.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({**counts, "seconds": time.perf_counter() - t0}), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("stock")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--fail-from", type=int)
    s.add_argument("--fail-pct", type=int, default=30)
    w = sub.add_parser("web")
    w.add_argument("--bind", required=True)
    w.add_argument("--port", type=int, required=True)
    w.add_argument("--stock", required=True)
    ld = sub.add_parser("load")
    ld.add_argument("--url", required=True)
    ld.add_argument("--requests", type=int, default=10000)
    ld.add_argument("--conns", type=int, default=16)
    ld.add_argument("--pace-s", type=float, default=0.0)
    args = p.parse_args(argv)
    {"stock": stock, "web": web, "load": load}[args.role](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
