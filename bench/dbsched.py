"""Where pgbench -S's throughput goes under the capture: the scheduler's view per query.

pgbench -S -M simple (4 clients, 2 threads) against a real postgres, alone and under `guardian
capture --port` in variants that split the capture's cost: the agent running (`running`), the agent
running with its threads under SCHED_BATCH (`batch`: its timer wakeups never preempt the load), the
agent stopped (SIGSTOP) after it attached (`stopped`: the BPF programs run and fill the ring, no
userspace reads them: what is left is the kernel side), the agent in its own session (`own`: its own
autogroup, as a service started elsewhere would be, instead of sharing the load's).
Per query, from /proc/PID/task/*/schedstat and status over the middle of each run: CPU time on a core
(run), time runnable but waiting for a core (wait), voluntary (sleeps) and involuntary (preemptions)
switches, of pgbench's threads, of the postgres backends and of the agent; and the host's idle share.
Rounds of every variant, in reverse order every other round.

Run as root: .venv/bin/python -m bench.dbsched [--seconds 10] [--rounds 3] [--variants base,running,stopped]
             [--tree /work/main] [--ringbuf-pages 65536] [--json FILE]
A stopped agent's ring must hold the whole run (--ringbuf-pages: records of ~200 bytes, two per query).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from bench import dbload
from support import results as bench_results
from support.servers import PG_BIN, postgres_instance

VARIANTS = ("base", "running", "batch", "stopped", "own")
FIELDS = ("run_ns", "wait_ns", "slices", "vol", "invol")


def _children(ppid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == ppid:
                out.append(int(entry))
    return out


def _threads(pids: list[int]) -> list[tuple[int, int]]:
    out = []
    for pid in pids:
        try:
            out += [(pid, int(t)) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            pass
    return out


def _sched(threads: list[tuple[int, int]]) -> dict[int, tuple[int, ...]]:
    """Per thread: run ns, run-queue wait ns, timeslices, voluntary and involuntary switches."""
    out = {}
    for pid, tid in threads:
        try:
            run, wait, slices = map(int, Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split())
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:
            continue
        vol = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        invol = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        out[tid] = (run, wait, slices, vol, invol)
    return out


def _idle() -> tuple[int, int]:
    values = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return values[3] + values[4], sum(values)


def pgbench(pg: dict, seconds: int, agent_pid: int | None = None) -> dict:
    """One pgbench -S run; the scheduler figures over its middle (from 1.5 s to 1.5 s before its end)."""
    env = dict(os.environ, PGPASSWORD=pg["password"])
    cmd = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"], "-c", "4",
           "-j", "2", "-T", str(seconds), "-S", "-M", "simple", pg["dbname"]]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    postmaster = (_children(pg["pid"]) or [pg["pid"]])[0]  # runuser -> postgres -> backends
    groups = {"pgbench": _threads([proc.pid]), "backends": _threads(_children(postmaster))}
    if agent_pid:
        groups["agent"] = _threads([agent_pid])
    before, idle0, t0 = {g: _sched(t) for g, t in groups.items()}, _idle(), time.monotonic()
    time.sleep(seconds - 3)
    after, idle1, window = {g: _sched(t) for g, t in groups.items()}, _idle(), time.monotonic() - t0
    out, _ = proc.communicate(timeout=120)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    queries = tps * window
    done = int(re.search(r"actually processed: (\d+)", out).group(1))
    res = {"tps": round(tps), "queries": done, "host_idle": round((idle1[0] - idle0[0]) / max(idle1[1] - idle0[1], 1), 3)}
    for group in groups:
        total = [0] * len(FIELDS)
        for tid, v in after[group].items():
            if tid in before[group]:
                total = [t + b - a for t, a, b in zip(total, before[group][tid], v)]
        res[group] = {"run_us": round(total[0] / 1e3 / queries, 2), "wait_us": round(total[1] / 1e3 / queries, 2),
                      "sleeps": round(total[3] / queries, 3), "preemptions": round(total[4] / queries, 3)}
    return res


def _agent_pid() -> int:
    for pid in _children(os.getpid()):
        if b"guardian.cli.main" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    raise RuntimeError("no agent process")


def under_agent(pg: dict, variant: str, seconds: int, tree: Path | None) -> dict:
    popen = subprocess.Popen
    if variant == "own":  # its own session, hence its own autogroup
        subprocess.Popen = functools.partial(popen, start_new_session=True)
    try:
        ctx = dbload.capture(pg["port"], tree)
        cap = ctx.__enter__()
    finally:
        subprocess.Popen = popen
    try:
        pid = _agent_pid()
        if variant == "stopped":
            os.kill(pid, signal.SIGSTOP)
        if variant == "batch":
            for _, tid in _threads([pid]):
                os.sched_setscheduler(tid, os.SCHED_BATCH, os.sched_param(0))
        res = pgbench(pg, seconds, pid)
        if variant == "stopped":
            os.kill(pid, signal.SIGCONT)
    finally:
        ctx.__exit__(None, None, None)
    res["drops"] = cap.stats.get("kernel.ringbuf_drops", 0)
    res["spans_per_query"] = round(dbload.client_spans(cap, pg["pid"]) / max(res["queries"], 1), 4)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="base,running,batch,stopped",
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--tree", help="run the agent from this source tree (default: this one)")
    ap.add_argument("--ringbuf-pages", type=int, default=65536, help="the agent's ring (a stopped agent's holds the run)")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    variants = args.variants.split(",")
    if set(variants) - set(VARIANTS):
        ap.error(f"unknown variants: {set(variants) - set(VARIANTS)}")
    dbload.RING_PAGES[:] = [args.ringbuf_pages]
    tree = Path(args.tree).resolve() if args.tree else None
    results = []
    with postgres_instance() as pg:
        env = dict(os.environ, PGPASSWORD=pg["password"])
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", "1", "-h", "127.0.0.1", "-p", str(pg["port"]), "-U",
                        pg["user"], pg["dbname"]], env=env, check=True, capture_output=True, timeout=120)
        for round_ in range(args.rounds):
            for variant in (variants if round_ % 2 == 0 else variants[::-1]):
                load = os.getloadavg()[0]
                res = pgbench(pg, args.seconds) if variant == "base" else under_agent(pg, variant, args.seconds, tree)
                res = {"variant": variant, "round": round_, "load": round(load, 1), **res}
                print(json.dumps(res), flush=True)
                results.append(res)
    if args.json:
        bench_results.write(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
