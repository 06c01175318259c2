"""Start time of `guardian capture`: without the compile cache (BCC compiles and loads, as before
the cache), a cold start (empty cache: compiles, then caches) and warm ones (programs loaded from
the cache); wall and CPU seconds until "ready" and for the whole `--duration 1` run. The run
without the cache is the baseline, in the same command.

Run as root: .venv/bin/python -m bench.start [--warm 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from support import results as bench_results

ROOT = Path(__file__).resolve().parents[1]


def one_start(cache_dir: str, extra: list[str]) -> dict:
    """One `guardian capture --duration 1` run: seconds to 'ready', total wall and CPU seconds."""
    env = dict(os.environ, GUARDIAN_CAPTURE_BPF_CACHE=cache_dir)
    cmd = [sys.executable, "-m", "guardian.cli.main", "capture", "--duration", "1", *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready_s = None
    lines = []
    for line in proc.stderr:
        lines.append(line.rstrip())
        if ready_s is None and line.strip() == "ready":
            ready_s = time.monotonic() - t0
    proc.wait()
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"guardian capture exited {proc.returncode}: {lines[-5:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    source = ("off" if cache_dir == "off" else
              "cache" if any("from the compile cache" in x for x in lines) else "compile")
    return {"from": source, "ready_s": round(ready_s or wall, 2), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--warm", type=int, default=3, help="warm starts after the cold one")
    ap.add_argument("--no-tls", action="store_true", help="pass --no-tls to guardian capture")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    extra = ["--no-tls"] if args.no_tls else []
    cache = tempfile.mkdtemp(prefix="bench-bpfcache-")
    try:
        before = one_start("off", extra)
        runs = [one_start(cache, extra)]
        runs += [one_start(cache, extra) for _ in range(args.warm)]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    cold, warm = runs[0], runs[1:]
    out = {"load_average": os.getloadavg(), "no_cache": before, "cold": cold, "warm": warm}
    if warm:
        best = min(warm, key=lambda r: r["ready_s"])
        out["warm_ready_ratio_to_no_cache"] = round(best["ready_s"] / before["ready_s"], 3)
    print(json.dumps(out, indent=1))
    if args.json:
        bench_results.write(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
