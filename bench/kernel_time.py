"""Kernel time of the capture's BPF programs per request (bpf_stats), nginx under hey, per checkout.

Two loads against one nginx: a new connection per request (what the per-connection work costs:
socket setup, the socket read at a connection's first record) and keep-alive (per-record work).
The figure is the run time of every program the agent loaded, summed over the load, divided by
the requests; the programs run for every process's syscalls, so a busy host adds its own share.
kernel.bpf_stats_enabled is on only for the run (it costs every BPF program on the host a clock
read per run).

Run as root: .venv/bin/python -m bench.kernel_time [--seconds 8] [--tree DIR ...] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from bench.capture import ROOT, agent, nginx_server
from bench.soaklib.probe import prog_ids_of

LOADS = {"new_connection_each": ["-disable-keepalive", "-q", "100"], "keepalive": ["-q", "300"]}


def programs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out)}


def agent_program_ids(port: int) -> list[int]:
    """Ids of the programs the agent for `port` holds (its fds' fdinfo names them)."""
    pids = subprocess.run(["pgrep", "-f", f"capture --json --stats --port {port}"],
                          capture_output=True, text=True).stdout.split()
    return sorted(set().union(*(prog_ids_of(int(pid)) for pid in pids)))


def hey(url: str, seconds: int, extra: list[str]) -> int:
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", "10", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r"\[\d{3}\]\s+(\d+) responses", out))


def measure(trees: list[Path], seconds: int) -> dict:
    import bench.capture as capture

    capture.AGENT_ARGS[:] = ["--no-tls"]
    results: dict = {}
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        with nginx_server() as (port, _):
            url = f"http://127.0.0.1:{port}/"
            for tree in trees:
                with agent(port, tree=tree) as cap:
                    ids = agent_program_ids(port)
                    row = {}
                    for name, extra in LOADS.items():
                        before = programs()
                        n = hey(url, seconds, extra)
                        after = programs()
                        ns = sum(after[i].get("run_time_ns", 0) - before[i].get("run_time_ns", 0)
                                 for i in ids if i in before and i in after)
                        runs = sum(after[i].get("run_cnt", 0) - before[i].get("run_cnt", 0)
                                   for i in ids if i in before and i in after)
                        row[name] = {"requests": n, "bpf_ns_per_request": ns / max(n, 1),
                                     "program_runs_per_request": runs / max(n, 1)}
                results[str(tree)] = {**row, "agent": cap}
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--tree", action="append", type=Path, help="checkout whose capture runs (repeatable: an A/B)")
    p.add_argument("--json", help="also write the results as JSON")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.kernel_time needs root", file=sys.stderr)
        return 2
    results = measure(args.tree or [ROOT], args.seconds)
    for tree, row in results.items():
        for name in LOADS:
            r = row[name]
            print(f"{tree}  {name:<20} requests={r['requests']:<7} bpf_ns_per_request={r['bpf_ns_per_request']:.0f} "
                  f"program_runs_per_request={r['program_runs_per_request']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
