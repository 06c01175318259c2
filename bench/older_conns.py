"""Connections busy before the capture starts: spans with their own answers from the start on.

Three psycopg clients (simple Query, extended protocol, a statement prepared before the start) query
a real postgres every 10 ms from before `guardian capture --port` starts until SECONDS after it is
ready. Per client and span kind: queries asked while the capture ran, spans of them, spans of queries
from before it was ready, and wrong spans (ERROR, over 100 ms, or another query's row count).
The last 0.2 s are left out (in flight when the capture stops).

Run as root: .venv/bin/python -m bench.older_conns [--seconds 8] [--compare /work/main] [--json FILE]
(--compare: that tree's capture first, then this one's, on the same server, in one command).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

from support import results as bench_results
from support.servers import postgres_instance

ROOT = Path(__file__).resolve().parents[1]
GAP_S = 0.01
CLIENTS = {"s": "simple", "x": "extended", "p": "prepared"}


class Clients:
    def __init__(self, dsn: str) -> None:
        self.stop = threading.Event()
        self.sent: list[tuple[str, int, int, int]] = []  # client, i, rows asked, sent at ns
        self.threads = [threading.Thread(target=self._loop, args=(dsn, k), daemon=True) for k in CLIENTS]

    def _loop(self, dsn: str, k: str) -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            i = 0
            while not self.stop.is_set():
                n, t = i % 7 + 1, time.time_ns()
                if k == "s":
                    c.execute(f"SELECT g FROM generate_series(1, {n}) g /* s{i} */").fetchall()
                elif k == "x":
                    c.execute(f"SELECT g FROM generate_series(1, %s) g /* x{i} */", (n,)).fetchall()
                else:
                    c.execute("SELECT g FROM generate_series(1, %s) g /* prepared */", (n,), prepare=True).fetchall()
                self.sent.append((k, i, n, t))
                i += 1
                time.sleep(GAP_S)


def capture(tree: Path, port: int, seconds: float) -> tuple[list[dict], int, int, float]:
    """`guardian capture --json --port` of `tree` for `seconds` after ready: its spans, when it was
    ready and when the load's window ended (ns), and how long it took to be ready (s)."""
    out = Path(f"/tmp/guardian-bench-older-{os.getpid()}.out")
    err = out.with_suffix(".err")
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.time_ns()
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--no-tls",
                                 "--port", str(port)], stdout=o, stderr=e, cwd=tree, env=env)
    try:
        while "ready" not in err.read_text():
            if proc.poll() is not None:
                raise RuntimeError(err.read_text())
            time.sleep(0.1)
        ready = time.time_ns()
        time.sleep(seconds)
        end = time.time_ns()
    finally:
        proc.send_signal(2)
        proc.wait(60)
    spans = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    out.unlink(missing_ok=True)
    err.unlink(missing_ok=True)
    return spans, ready, end, (ready - t0) / 1e9


def judge(spans: list[dict], sent: list[tuple[str, int, int, int]], ready: int, end: int) -> dict:
    rows = {(k, i): n for k, i, n, _ in sent}
    out: dict = {}
    for kind in ("CLIENT", "SERVER"):
        for k in CLIENTS:
            asked = sum(1 for kk, _, _, t in sent if kk == k and ready < t < end - 2e8)
            mine = []
            for s in spans:
                text = s["attributes"].get("db.query.text", "")
                if s["kind"] != kind or s["start_time_unix_nano"] >= end - 2e8:
                    continue
                if (k == "p" and not text) or (k != "p" and f"/* {k}" in text):
                    mine.append(s)

            def wrong(s: dict) -> bool:
                bad = s["status_code"] == "ERROR" or s["end_time_unix_nano"] - s["start_time_unix_nano"] > 1e8
                if k != "p":
                    i = int(s["attributes"]["db.query.text"].rsplit("/* ", 1)[1][1:-3])
                    bad = bad or s["attributes"].get("db.response.returned_rows") != rows.get((k, i))
                return bad
            after = sum(1 for s in mine if s["start_time_unix_nano"] > ready)
            out[f"{kind}.{CLIENTS[k]}"] = {"asked": asked, "spans": after, "spans_before_ready": len(mine) - after,
                                           "wrong": sum(map(wrong, mine))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--compare", type=Path, help="another tree whose capture runs first")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    results = {"load_before": os.getloadavg()[0]}
    with postgres_instance() as pg:
        dsn = f"host=127.0.0.1 port={pg['port']} user={pg['user']} password={pg['password']} dbname={pg['dbname']}"
        for label, tree in ([("compare", args.compare)] if args.compare else []) + [("this", ROOT)]:
            clients = Clients(dsn)
            for t in clients.threads:
                t.start()
            time.sleep(0.5)
            try:
                spans, ready, end, took = capture(tree, pg["port"], args.seconds)
            finally:
                clients.stop.set()
                for t in clients.threads:
                    t.join(30)
            results[label] = {"tree": str(tree), "ready_after_s": round(took, 1),
                              **judge(spans, clients.sent, ready, end)}
            print(json.dumps({label: results[label]}), flush=True)
    results["load_after"] = os.getloadavg()[0]
    if args.json:
        bench_results.write(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
