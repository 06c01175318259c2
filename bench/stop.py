"""`guardian capture`'s stop with a full backlog, per checkout: how long it takes from SIGTERM to
exit and what of the ring's backlog it read before it went.

wrk saturates nginx on loopback; the agent (its default ring) is stopped (SIGSTOP) for a few seconds
so that the ring holds far more than it reads in a second, then continued and sent SIGTERM at once
while the load goes on. Reported per tree: seconds to exit, the stop's drain (ring.stop_drain_ms
where the tree has it), the backlog bytes left unread (ring.unread_at_stop_bytes), spans written and
records dropped. The issue's bound: exit within 5 s.

Run as root: .venv/bin/python -m bench.stop [--tree DIR ...] [--behind 3] [--repeat 2] [--tls] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support.http_servers import nginx_server
from support import results as bench_results

ROOT = Path(__file__).resolve().parent.parent


def one_stop(tree: Path, port: int, behind_s: float, tls: bool = False) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-stop-") as tmp:
        out, err = Path(tmp, "spans.jsonl"), Path(tmp, "err")
        env = dict(os.environ, PYTHONPATH=str(tree))
        with open(out, "w") as o, open(err, "w") as e:
            agent = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--stats",
                                      *([] if tls else ["--no-tls"]), "--port", str(port)],
                                     stdout=o, stderr=e, cwd=tree, env=env)
        try:
            while "ready" not in err.read_text():
                if agent.poll() is not None:
                    raise RuntimeError(err.read_text())
                time.sleep(0.2)
            wrk = subprocess.Popen(["wrk", "-t1", "-c50", f"-d{int(behind_s) + 20}s", f"http://127.0.0.1:{port}/"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(1)
                agent.send_signal(signal.SIGSTOP)
                time.sleep(behind_s)
                agent.send_signal(signal.SIGCONT)
                start = time.monotonic()
                agent.send_signal(signal.SIGTERM)
                agent.wait(timeout=120)
                took = time.monotonic() - start
                load_on = wrk.poll() is None
            finally:
                wrk.terminate()
                wrk.wait()
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        stats = next((json.loads(line) for line in reversed(err.read_text().splitlines()) if line.startswith("{")), {})
        spans = sum(1 for line in out.read_text().splitlines() if line.strip())
    return {"exit_s": round(took, 2), "load_still_on": load_on, "stop_drain_ms": stats.get("ring.stop_drain_ms"),
            "unread_at_stop_bytes": stats.get("ring.unread_at_stop_bytes", 0),
            "max_backlog_bytes": stats.get("ring.max_backlog_bytes", 0), "spans": spans,
            "ring_records": stats.get("kernel.events", 0), "drops": stats.get("kernel.ringbuf_drops", 0)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=[], metavar="DIR",
                    help="checkout whose `guardian capture` runs (repeat for an A/B; default: this one)")
    ap.add_argument("--behind", type=float, default=3.0, metavar="S", help="how long the agent is stopped")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="rounds over the trees, interleaved")
    ap.add_argument("--tls", action="store_true",
                    help="with the TLS probes attached (their removal is part of the stop)")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in args.tree] or [ROOT]
    results: dict[str, list] = {str(t): [] for t in trees}
    with nginx_server() as (port, _):
        for _ in range(max(args.repeat, 1)):
            for tree in trees:
                r = one_stop(tree, port, args.behind, args.tls)
                results[str(tree)].append(r)
                print(f"{tree}: " + ", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    if args.json:
        bench_results.write(args.json, results, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
