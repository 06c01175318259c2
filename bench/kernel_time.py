"""Kernel time of the capture's BPF programs per request (bpf_stats), nginx under hey, per checkout.

Two loads against one nginx: a new connection per request (what the per-connection work costs:
socket setup, the socket read at a connection's first record) and keep-alive (per-record work).
The figure is the run time of every program the agent loaded, summed over the load, divided by
the requests; the programs run for every process's syscalls, so a busy host adds its own share.
kernel.bpf_stats_enabled is on only for the run (it costs every BPF program on the host a clock
read per run).

With --tls: HTTPS keep-alive instead, nginx (OpenSSL) and a Go crypto/tls server, each under hey
(a Go client) and wrk (an OpenSSL client), with the TLS probes on; per program, its runs (probe
hits) per request and run time per run. A server's programs are those of its library kind when the
client's kind differs (nginx under hey: tls_openssl_* are nginx's hits, tls_go_* hey's).

Plain HTTP also runs wrk at saturation (keep-alive, 50 connections: bench.capture's load), first
without the capture, with the CPU microseconds per request of wrk, nginx and the agent: the
per-request budget (BPF programs run in the traced programs' context and count in theirs).

Run as root: .venv/bin/python -m bench.kernel_time [--seconds 8] [--tree DIR ...] [--tls] [--pair]
             [--programs] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from bench.capture import ROOT, agent, cpu_seconds, nginx_server, wrk as capture_wrk
from bench.soaklib.probe import prog_ids_of
from support import results as bench_results

LOADS = {"new_connection_each": ["-disable-keepalive", "-q", "100"], "keepalive": ["-q", "300"]}


def programs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out)}


def attach_names() -> dict[int, str]:
    """Program id -> the tracepoint it is attached to (bpftool names are cut at 15 characters,
    which leaves every syscall program "tracepoint__sys")."""
    out = subprocess.run(["bpftool", "perf", "list", "-j"], capture_output=True, text=True).stdout
    names: dict[int, str] = {}
    for row in json.loads(out or "[]"):
        name = row.get("tracepoint")  # uprobes keep their program's name (tls_openssl_…)
        if name and row.get("prog_id") not in names:
            names[row["prog_id"]] = name
    return names


def agent_pids(port: int) -> list[int]:
    return [int(p) for p in subprocess.run(["pgrep", "-f", f"capture --json --stats --port {port}"],
                                           capture_output=True, text=True).stdout.split()]


def agent_program_ids(port: int) -> list[int]:
    """Ids of the programs the agent for `port` holds (its fds' fdinfo names them)."""
    return sorted(set().union(*(prog_ids_of(pid) for pid in agent_pids(port))))


def hey(url: str, seconds: int, extra: list[str]) -> int:
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", "10", *extra, url],
                         capture_output=True, text=True, check=True).stdout
    return sum(int(n) for n in re.findall(r"\[\d{3}\]\s+(\d+) responses", out))


def wrk(url: str, seconds: int, _extra: list[str]) -> int:
    return capture_wrk(url, seconds, conns=10)["requests"]


TLS_LOADS = {"hey": (hey, ["-q", "300"]), "wrk": (wrk, [])}


def run_load(ids: list[int], load, seconds: int) -> dict:
    """Run `load` (a function returning requests done); per program name: runs and ns per request."""
    names = attach_names()
    before = programs()
    n = load(seconds)
    after = programs()
    per: dict[str, dict] = {}
    for i in ids:
        if i in before and i in after:
            name = names.get(i) or after[i].get("name", str(i))
            row = per.setdefault(name, {"runs": 0, "ns": 0})
            row["runs"] += after[i].get("run_cnt", 0) - before[i].get("run_cnt", 0)
            row["ns"] += after[i].get("run_time_ns", 0) - before[i].get("run_time_ns", 0)
    ns = sum(r["ns"] for r in per.values())
    runs = sum(r["runs"] for r in per.values())
    return {"requests": n, "bpf_ns_per_request": ns / max(n, 1), "program_runs_per_request": runs / max(n, 1),
            "programs": {name: {"runs_per_request": r["runs"] / max(n, 1), "ns_per_run": r["ns"] / max(r["runs"], 1)}
                         for name, r in sorted(per.items()) if r["runs"]}}


def split_tls(programs: dict[str, dict]) -> dict[str, tuple[float, float]]:
    """(runs, ns) per request of the TLS probes (each run a uprobe hit: a trap besides its run time,
    `python -m bench.uprobe_cost`) and of the syscall and other tracepoint programs."""
    out = {"uprobes": [0.0, 0.0], "tracepoints": [0.0, 0.0]}
    for name, pr in programs.items():
        row = out["uprobes" if name.startswith("tls_") else "tracepoints"]
        row[0] += pr["runs_per_request"]
        row[1] += pr["runs_per_request"] * pr["ns_per_run"]
    return {k: (v[0], v[1]) for k, v in out.items()}


def idle(seconds: int) -> int:
    """No load: what the programs cost the rest of the host meanwhile (1: totals, not per request)."""
    time.sleep(seconds)
    return 1


def net_of(r: dict, quiet: list[dict]) -> dict:
    """`r`'s BPF time and runs per request less those of the same time without the load (the
    mean of `quiet`): the syscalls of other processes on a shared host run these programs too."""
    q_ns = sum(q["bpf_ns_per_request"] for q in quiet) / len(quiet)
    q_runs = sum(q["program_runs_per_request"] for q in quiet) / len(quiet)
    n = max(r["requests"], 1)
    return {"net_bpf_ns_per_request": r["bpf_ns_per_request"] - q_ns / n,
            "net_program_runs_per_request": r["program_runs_per_request"] - q_runs / n,
            "quiet_runs": q_runs}


def measure_tls(trees: list[Path], seconds: int, pair: bool = False) -> dict:
    import tempfile

    import bench.capture as capture
    from support import tls_targets as targets
    from support.live import free_port

    capture.AGENT_ARGS[:] = []
    results: dict = {}
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ktls-") as tmp:
            d = Path(tmp)
            cert, key = targets.make_certs(d)
            go = targets.build_go(d / "tlstarget")
            servers = {"nginx_openssl": lambda p: targets.nginx_tls(p, cert, key, d),
                       "go_crypto_tls": lambda p: targets.go_server(go, p, cert, key)}
            for server, start in servers.items():
                port = free_port()
                url = f"https://127.0.0.1:{port}/bench"
                with start(port):
                    for tree in trees:
                        with agent(port, tree=tree, pair=pair) as cap:
                            ids = agent_program_ids(port)
                            row = {client: run_load(ids, lambda s, f=fn, e=extra: f(url, s, e), seconds)
                                   for client, (fn, extra) in TLS_LOADS.items()}
                        results.setdefault(str(tree), {})[server] = {**row, "agent": cap}
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])
    return results


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its children (nginx's master and workers)."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    total = 0.0
    for p in [pid, *map(int, kids)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def cpu_load(url: str, server_pid: int, agent_pids: list[int]):
    """wrk at saturation, as a load for run_load that also notes the CPU microseconds per request
    of the client (wrk), the server (nginx) and the agent: the budget's parts, robust to a busy host
    where throughput is not (BPF programs run in the traced programs' context and count in theirs)."""
    note: dict = {}

    def load(seconds: int) -> int:
        def agent_cpu() -> float:
            return sum(cpu_seconds(p) for p in agent_pids)
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0, a0 = tree_cpu(server_pid), agent_cpu()
        n = capture_wrk(url, seconds)["requests"]
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s1, a1 = tree_cpu(server_pid), agent_cpu()
        us = 1e6 / max(n, 1)
        note.update(client_us=(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) * us,
                    server_us=(s1 - s0) * us, agent_us=(a1 - a0) * us, rps=n / seconds)
        return n

    return load, note


def measure(trees: list[Path], seconds: int, pair: bool = False) -> dict:
    import bench.capture as capture

    capture.AGENT_ARGS[:] = ["--no-tls"]
    results: dict = {}
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    try:
        with nginx_server() as (port, server):
            url = f"http://127.0.0.1:{port}/"
            load, note = cpu_load(url, server.pid, [])
            results["no capture"] = {"wrk_saturation": {**run_load([], load, seconds), **note}}
            for tree in trees:
                with agent(port, tree=tree, pair=pair) as cap:
                    ids = agent_program_ids(port)
                    row = {name: run_load(ids, lambda s, e=extra: hey(url, s, e), seconds)
                           for name, extra in LOADS.items()}
                    load, note = cpu_load(url, server.pid, agent_pids(port))
                    quiet = [run_load(ids, idle, seconds)]
                    r = run_load(ids, load, seconds)
                    quiet.append(run_load(ids, idle, seconds))
                    row["wrk_saturation"] = {**r, **note, **net_of(r, quiet)}
                results[str(tree)] = {**row, "agent": cap}
    finally:
        subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=0"])
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=int, default=8)
    p.add_argument("--tree", action="append", type=Path, help="checkout whose capture runs (repeatable: an A/B)")
    p.add_argument("--tls", action="store_true", help="HTTPS (nginx, Go) with the TLS probes: runs per program")
    p.add_argument("--json", help="also write the results as JSON")
    p.add_argument("--pair", action="store_true", help="agents with capture.options.pair (exchanges paired in the kernel)")
    p.add_argument("--programs", action="store_true", help="also print runs and run time per program")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.kernel_time needs root", file=sys.stderr)
        return 2
    print(f"load {os.getloadavg()[0]:.1f}")
    if args.tls:
        results = measure_tls(args.tree or [ROOT], args.seconds, args.pair)
        for tree, servers in results.items():
            for server, row in servers.items():
                for client in TLS_LOADS:
                    r = row[client]
                    print(f"{tree}  {server} <- {client}: requests={r['requests']} "
                          f"bpf_ns_per_request={r['bpf_ns_per_request']:.0f} "
                          f"program_runs_per_request={r['program_runs_per_request']:.2f}")
                    for kind, (runs, ns) in split_tls(r["programs"]).items():
                        print(f"    {kind}: runs/request={runs:.2f} ns/request={ns:.0f}")
                    for name, pr in r["programs"].items():
                        print(f"    {name:<16} runs/request={pr['runs_per_request']:.3f} ns/run={pr['ns_per_run']:.0f}")
        print(f"load {os.getloadavg()[0]:.1f}")
        if args.json:
            bench_results.write(args.json, results)
        return 0
    results = measure(args.tree or [ROOT], args.seconds, args.pair)
    for tree, row in results.items():
        for name in [n for n in [*LOADS, "wrk_saturation"] if n in row]:
            r = row[name]
            print(f"{tree}  {name:<20} requests={r['requests']:<7} bpf_ns_per_request={r['bpf_ns_per_request']:.0f} "
                  f"program_runs_per_request={r['program_runs_per_request']:.1f}")
            if "net_bpf_ns_per_request" in r:
                print(f"    net of the same time without load: bpf_ns_per_request={r['net_bpf_ns_per_request']:.0f} "
                      f"program_runs_per_request={r['net_program_runs_per_request']:.1f}")
            if "client_us" in r:
                print(f"    cpu us/request: wrk {r['client_us']:.2f} nginx {r['server_us']:.2f} "
                      f"agent {r['agent_us']:.2f} total {r['client_us'] + r['server_us'] + r['agent_us']:.2f} "
                      f"({r['rps']:.0f} req/s)")
            if args.programs:
                for prog, pr in r["programs"].items():
                    print(f"    {prog:<16} runs/request={pr['runs_per_request']:.3f} ns/run={pr['ns_per_run']:.0f}")
    print(f"load {os.getloadavg()[0]:.1f}")
    if args.json:
        bench_results.write(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
