"""The shop's load generator says what each failed request was (a 5xx status, a refused
connection, a timeout) in its stats lines, so a soak can explain its failures (real process,
real sockets on loopback)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from support.ports import free_port

REPO = Path(__file__).resolve().parents[2]


class _Checkout503(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        code = 503 if self.path == "/api/checkout" else 200
        self.send_response(code)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


def _loadgen_lines(port: int, tmp: Path, seconds: float = 3.0) -> list[dict]:
    stats = tmp / f"stats-{port}.jsonl"
    env = dict(os.environ, SHOP_FRONTEND_PORT=str(port), SHOP_RATE="40", SHOP_STATS=str(stats),
               SHOP_STATS_EVERY="0.5", PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "demo.loadgen.loadgen"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(seconds)
    proc.kill()
    proc.wait(10)
    assert stats.exists(), proc.stderr.read().decode()[-2000:]
    return [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]


def _failures(lines: list[dict]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for line in lines:
        for route, st in line.items():
            if isinstance(st, dict):
                assert sum(st.get("failures", {}).values()) == st["errors"]
                for kind, n in st.get("failures", {}).items():
                    out.setdefault(route, {}).setdefault(kind, 0)
                    out[route][kind] += n
    return out


def test_failed_requests_are_counted_by_kind(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Checkout503)
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    try:
        answered = _failures(_loadgen_lines(server.server_address[1], tmp_path))
    finally:
        server.shutdown()
    assert set(answered) == {"checkout"} and set(answered["checkout"]) == {"status 503"}, answered
    refused = _failures(_loadgen_lines(free_port(), tmp_path))  # nothing listens there
    assert refused and all(set(k) == {"ConnectError"} for k in refused.values()), refused
