"""Benchmark of TLS plaintext capture: HTTPS load against nginx (OpenSSL) and against a Go
crypto/tls server, each without the agent, with `guardian capture`, and with bcc's sslsniff
(bpfcc-tools) as the reference tool, in one command. Two loads per server: wrk at saturation
(throughput and p99 ratios, and the CPU the server and wrk spent per request: the probes' cost,
readable on a loaded host) and hey at a fixed rate (p99 added, in ms); spans captured per request
completed over both. Every figure is beside its baseline, with the load average.

With --tree DIR (repeatable; --compare is the same option), the agent runs from each checkout in
turn against the same server and baselines: an A/B of two versions in one command. With --pair on,
the agents pair each exchange in the kernel (capture.options.pair: one ring record per exchange);
with --pair ab each agent runs unpaired then paired (results keyed TREE and "TREE pair"). --repeat N
runs the whole sequence N times (the spread between rounds is the noise). TLS probes that other
processes hold (another agent's) during a phase are listed with it: they tax every TLS call on
the host, so a figure taken with some is no clean one.

Run as root: .venv/bin/python -m bench.tls [--seconds 10] [--connections 8] [--rate 10000]
             [--tree DIR ...] [--pair off|on|ab] [--repeat N] [--json FILE]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import bench.capture as capture
from bench.capture import ROOT, agent, cpu_seconds, hey, wrk
from support import tls_targets as targets
from support.live import free_port
from support.process import stop
from support import results as bench_results

SSLSNIFF = shutil.which("sslsniff-bpfcc") or "/usr/sbin/sslsniff-bpfcc"
READY_S = 600  # BCC compiles at start: minutes on a host shared with other builds
NO_SSLSNIFF = [False]  # --no-sslsniff


@contextmanager
def sslsniff():
    """bcc's sslsniff on every OpenSSL user; yields a dict with its state (it may fail to build)."""
    out = tempfile.NamedTemporaryFile(prefix="bench-sslsniff-", suffix=".out", delete=False)
    proc = subprocess.Popen([SSLSNIFF], stdout=out, stderr=subprocess.STDOUT)
    result: dict = {}
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and b"FUNC" not in Path(out.name).read_bytes():
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        result["running"] = proc.poll() is None
        if not result["running"]:
            result["error"] = Path(out.name).read_text()[-400:]
        yield result
    finally:
        stop(proc, signal.SIGINT, timeout=30)
        result["output_lines"] = sum(1 for _ in open(out.name, "rb"))
        Path(out.name).unlink()


def load() -> float:
    return round(os.getloadavg()[0], 1)


def foreign_tls_probes(port: int | None = None) -> dict[str, int]:
    """uprobe_multi links held by processes other than the agent under test (the one capturing
    `port`), by pid and command: another agent's TLS probes make every TLS call on the host
    dearer while they exist, the baseline's included, so a run with some is not a clean figure."""
    ours = set(subprocess.run(["pgrep", "-f", f"capture --json --stats --port {port}"], capture_output=True,
                              text=True).stdout.split()) if port else set()
    out: dict[str, int] = {}
    for fdinfo in glob.glob("/proc/[0-9]*/fdinfo/*"):
        pid = fdinfo.split("/")[2]
        if pid in ours:
            continue
        try:
            text = Path(fdinfo).read_text()
        except OSError:
            continue
        if "link_type:\tuprobe_multi" in text:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                comm = "?"
            out[f"{pid} {comm}"] = out.get(f"{pid} {comm}", 0) + 1
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` and its children (nginx's worker)."""
    total = 0.0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for p in [pid, *map(int, children)]:
        try:
            total += cpu_seconds(p)
        except OSError:
            continue  # exited meanwhile
    return total


def saturate(url: str, seconds: int, conns: int, server_pid: int) -> dict:
    """wrk at saturation, with the CPU the server and wrk spent per request: what the probes add to
    a request shows there whatever share of the CPU the host's load leaves the run."""
    client0, server0 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_s(server_pid)
    out = wrk(url, seconds, conns)
    client1, server1 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_s(server_pid)
    n = max(out["requests"], 1)
    out["server_cpu_us_per_request"] = round((server1 - server0) * 1e6 / n, 1)
    out["client_cpu_us_per_request"] = round((client1.ru_utime + client1.ru_stime - client0.ru_utime
                                              - client0.ru_stime) * 1e6 / n, 1)
    return out


def measure(url: str, port: int, seconds: int, conns: int, rate: int, trees: list[Path], server_pid: int) -> dict:
    wrk(url, 2, conns)  # warm up: TLS sessions, page cache
    foreign = foreign_tls_probes()
    base = {"saturation": saturate(url, seconds, conns, server_pid), "fixed_rate": hey(url, seconds, rate),
            "load": load(),
            "foreign_tls_probes": {**foreign, **foreign_tls_probes()}}  # at the start or the end
    out: dict = {"baseline": base}
    for name, tree, pair in capture.runs(trees):
        with agent(port, ready_s=READY_S, tree=tree, pair=pair) as cap:
            at = load()
            foreign = foreign_tls_probes(port)
            sat = saturate(url, seconds, conns, server_pid)
            fixed = hey(url, seconds, rate)
            foreign.update(foreign_tls_probes(port))
        requests = sat["requests"] + fixed["requests"]
        out[name] = {
            "saturation": sat, "fixed_rate": fixed, "agent": cap, "load": at, "foreign_tls_probes": foreign,
            "throughput_ratio": sat["rps"] / base["saturation"]["rps"],
            "p99_ratio": sat["p99_ms"] / base["saturation"]["p99_ms"],
            "fixed_rate_p99_added_ms": (fixed["p99_ms"] or 0) - (base["fixed_rate"]["p99_ms"] or 0),
            # p99s compare only where both runs reached the rate (hey falls short on a loaded host)
            "fixed_rate_reached": [round(base["fixed_rate"]["rps"] / rate, 3), round(fixed["rps"] / rate, 3)],
            "server_spans_per_request": cap["server_spans"] / max(requests, 1),
            "client_spans_per_request": cap["client_spans"] / max(requests, 1),
            "ring_records_per_request": cap.get("kernel_events", 0) / max(requests, 1),
            # what the probes add to a request in the traced processes (the agent's own CPU is apart)
            "added_cpu_us_per_request": {
                side: round(sat[f"{side}_cpu_us_per_request"] - base["saturation"][f"{side}_cpu_us_per_request"], 1)
                for side in ("server", "client")},
        }
    if NO_SSLSNIFF[0]:
        return out
    with sslsniff() as sniff:
        sniffed = wrk(url, seconds, conns) if sniff["running"] else None
    out["sslsniff"] = sniff
    if sniffed:
        out["with_sslsniff"] = sniffed
        out["sslsniff_throughput_ratio"] = sniffed["rps"] / base["saturation"]["rps"]
        out["sslsniff_p99_ratio"] = sniffed["p99_ms"] / base["saturation"]["p99_ms"]
    return out


def summary(name: str, result: dict) -> str:
    """One line per agent run: the figures the targets name."""
    if "baseline" not in result:
        return f"{name}: {result}"
    b = result["baseline"]
    lines = [f"{name} baseline: {b['saturation']['rps']:.0f} req/s p99 {b['saturation']['p99_ms']:.2f} ms, CPU "
             f"{b['saturation']['server_cpu_us_per_request']} + {b['saturation']['client_cpu_us_per_request']} us/request "
             "(server + wrk); "
             f"fixed {b['fixed_rate']['rps']:.0f} req/s p99 {b['fixed_rate']['p99_ms'] or 0:.2f} ms; load {b['load']}"
             f"; foreign TLS probe links {sum(b['foreign_tls_probes'].values())}"]
    for tree, r in result.items():
        if isinstance(r, dict) and "throughput_ratio" in r:
            lines.append(f"  {tree}: ratio {r['throughput_ratio']:.3f} ({r['saturation']['rps']:.0f} req/s), CPU "
                         f"{r['saturation']['server_cpu_us_per_request']} + {r['saturation']['client_cpu_us_per_request']}"
                         f" us/request (added {r['added_cpu_us_per_request']['server']} + "
                         f"{r['added_cpu_us_per_request']['client']}), "
                         f"p99 x{r['p99_ratio']:.1f}; fixed {r['fixed_rate']['rps']:.0f} req/s p99 added "
                         f"{r['fixed_rate_p99_added_ms']:.2f} ms (rate reached {r['fixed_rate_reached']}); spans/request server "
                         f"{r['server_spans_per_request']:.4f} client {r['client_spans_per_request']:.4f}; "
                         f"ring records/request {r.get('ring_records_per_request', 0):.2f}; "
                         f"drops {r['agent'].get('kernel_drops')}; agent {r['agent'].get('agent_cpu_pct', 0):.0f} %; "
                         f"load {r['load']}; foreign TLS probe links {sum(r['foreign_tls_probes'].values())}")
    return "\n".join(lines)


def server_rounds(args, measure_one, summarize, first: dict | None = None) -> list[dict]:
    """args.repeat rounds over the HTTPS servers (Go crypto/tls, then nginx/OpenSSL; args.only
    picks one): per server, measure_one(url, port, pid) -> its figures, a RuntimeError (an agent
    that did not start in time) kept as its error; each round starts from a copy of `first` and
    the rounds so far are written to args.json after every server."""
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        d = Path(tmp)
        cert, key = targets.make_certs(d)
        go = targets.build_go(d / "tlstarget")
        servers = {"go_crypto_tls": lambda p: targets.go_server(go, p, cert, key),
                   "nginx_openssl": lambda p: targets.nginx_tls(p, cert, key, d)}
        for _ in range(args.repeat):
            results: dict = dict(first or {})
            rounds.append(results)
            for name, server in servers.items():
                if args.only and name != args.only:
                    continue
                port = free_port()
                try:
                    with server(port) as proc:
                        results[name] = measure_one(f"https://127.0.0.1:{port}/bench", port, proc.pid)
                except RuntimeError as e:  # the agent did not start in time on a loaded host
                    results[name] = {"error": str(e)[:300]}
                print(summarize(name, results[name]), flush=True)
                if args.json:
                    bench_results.write(args.json, rounds, indent=2)
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--rate", type=int, default=10000, help="the fixed rate of the p99 load (req/s)")
    ap.add_argument("--repeat", type=int, default=1, help="run the whole sequence this many times")
    ap.add_argument("--json", metavar="FILE", help="also write the results here")
    ap.add_argument("--tree", "--compare", dest="tree", action="append", type=Path, metavar="DIR",
                    help="run the agent from this checkout (repeatable: an A/B against one baseline)")
    ap.add_argument("--only", choices=["go_crypto_tls", "nginx_openssl"])
    ap.add_argument("--no-sslsniff", action="store_true", help="skip the reference tool's run")
    ap.add_argument("--pair", choices=["off", "on", "ab"], default="off",
                    help="agents unpaired, with capture.options.pair (one ring record per exchange), or both")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.tree] if args.tree else [ROOT]
    NO_SSLSNIFF[0] = args.no_sslsniff
    capture.PAIR[0] = args.pair
    rounds = server_rounds(args, lambda url, port, pid: measure(url, port, args.seconds, args.connections,
                                                                args.rate, trees, pid), summary)
    print(json.dumps(rounds, indent=2))


if __name__ == "__main__":
    main()
