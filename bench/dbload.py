"""Database load with and without the agent, in one command:

  pgbench (TPC-B-like, 7 statements per transaction) against a real postgres, and
  redis-benchmark (SET/GET/INCR, optionally pipelined) against a real redis-server,
  each run first alone (baseline), then under `guardian capture --port`.

Reports the throughput ratio (with / without the agent) and spans / operations, where
operations are what the load generator says it did and spans are the CLIENT spans the
capture produced for the generator's connections (100 % = nothing lost or invented).

Run as root: .venv/bin/python -m bench.dbload [--seconds 10] [--requests 100000] [--json FILE] [--select-simple]
             [--pipeline 1 --pipeline 16]
A/B in one command: --compare /work/main runs that tree's agent too (same server and baseline);
--pair ab runs each agent without then with capture.options.pair (exchanges paired in the kernel).
Each run also reports the agent's CPU µs per operation (from ready to the load's end), the traced
processes' (the load generator's and the server's, BPF programs included) and, with --bpf-time, the
agent's BPF programs' µs and runs per operation, in all and per program (time spent inside the traced
processes). On a shared host one run says little: --repeat N runs N rounds (a baseline, then every
agent, in reverse order every other round), each ratio against its own round's baseline; the row
shown is the round with the median ratio, and `rounds` lists every round's figures. --rate TPS runs
pgbench at a fixed rate: the same work with and without the agent.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.kernel_time import attach_names, programs
from bench.soaklib.probe import prog_ids_of
from support import results as bench_results
from support.servers import PG_BIN, postgres_instance, redis_instance

PGBENCH_STATEMENTS = 7  # BEGIN, 3 UPDATEs, SELECT, INSERT, END per transaction
PGBENCH_MODE = ["-M", "extended"]  # --select-simple: ["-S", "-M", "simple"], one statement per transaction
PGBENCH_RATE: list[str] = []  # --rate: ["-R", TPS], a fixed rate instead of saturation
ROOT = Path(__file__).resolve().parent.parent
COMPARE: list[Path] = []  # other source trees whose agent runs too (--compare)
PAIRS: list[bool | None] = [None]  # --pair: each agent at its default (None), without (False) and/or with (True) capture.options.pair
RING_PAGES: list[int] = []  # --ringbuf-pages: the agents' ring buffer size (guardian capture --ringbuf-pages)
BPF_TIME = [False]  # --bpf-time: the agent's BPF programs' run time over the load (kernel.bpf_stats_enabled)
REPEAT = [1]  # --repeat: rounds of (baseline, every agent)


def pgbench(pg: dict, seconds: float, clients: int) -> dict:
    env = dict(os.environ, PGPASSWORD=pg["password"])
    base = [str(PG_BIN / "pgbench"), "-h", "127.0.0.1", "-p", str(pg["port"]), "-U", pg["user"]]
    out = subprocess.run(base + ["-c", str(clients), "-j", "2", "-T", str(int(seconds)), *PGBENCH_MODE, *PGBENCH_RATE,
                                 pg["dbname"]], env=env, capture_output=True, text=True, timeout=seconds + 120)
    tps = float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))
    done = int(re.search(r"actually processed: (\d+)", out.stdout).group(1))
    statements = 1 if "-S" in PGBENCH_MODE else PGBENCH_STATEMENTS
    return {"tps": tps, "transactions": done, "operations": done * statements}


def redis_benchmark(r: dict, requests: int, pipeline: int) -> dict:
    out = subprocess.run(["redis-benchmark", "-p", str(r["port"]), "-a", r["password"], "-n", str(requests),
                          "-c", "20", "-P", str(pipeline), "-t", "set,get,incr", "--csv"],
                         capture_output=True, text=True, timeout=300)
    rps = {m.group(1): float(m.group(2)) for m in re.finditer(r'^"(\w+)","([\d.]+)"', out.stdout, re.M)}
    return {"rps": rps, "rps_mean": sum(rps.values()) / len(rps), "operations": requests * len(rps)}


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of a server process and its descendants, each with its reaped children's
    (cutime, cstime: a PostgreSQL backend's once it exited; runuser -> postmaster -> backends)."""
    parent, cpu = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            parent[int(entry)] = int(f[1])
            cpu[int(entry)] = sum(int(x) for x in f[11:15])
    tree, todo = set(), [pid]
    while todo:
        p = todo.pop()
        tree.add(p)
        todo.extend(c for c, pp in parent.items() if pp == p and c not in tree)
    return sum(cpu.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def measured(load, server_pid: int) -> dict:
    """`load()` (a dict with "operations"), with the CPU µs per operation of the load generator (a
    child process, waited by the load) and of the server's processes: what the application paid,
    the BPF programs' run time and the tracepoints included (they run in the traced processes)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    server = _tree_cpu_s(server_pid)
    out = load()
    time.sleep(0.5)  # the server's per-connection processes exit and are reaped
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_s = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    server_s = _tree_cpu_s(server_pid) - server
    ops = max(out["operations"], 1)
    out["app_cpu_us_per_operation"] = round(1e6 * (client_s + server_s) / ops, 2)
    out["client_cpu_us_per_operation"] = round(1e6 * client_s / ops, 2)
    # the load generator's sleeps (voluntary switches) and preemptions (involuntary) per operation:
    # an agent whose CPU lands on the load's cores shows as preemptions here
    out["client_switches_per_operation"] = [round((after.ru_nvcsw - children.ru_nvcsw) / ops, 3),
                                            round((after.ru_nivcsw - children.ru_nivcsw) / ops, 3)]
    return out


class _Capture:
    spans: list
    stats: dict
    cpu_s: float  # the agent's CPU time from ready until it read what the load left queued (its start's compile left out)
    bpf_ns: int  # run time of the agent's BPF programs over the load (--bpf-time), in the traced processes
    bpf_runs: int
    bpf_by_program: dict  # attach point -> [run time ns, runs] over the load (--bpf-time)
    peak_rss_mb: float  # the agent's peak resident set (VmHWM) after the load
    ring_rss_mb: float  # of its resident set, the ring buffers' mappings
    switches: list  # the agent's voluntary and involuntary context switches over the load, all threads


def _switches(pid: int) -> list[int]:
    """Voluntary and involuntary context switches of every thread of a process."""
    out = [0, 0]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        except OSError:  # gone meanwhile
            continue
        out[0] += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
        out[1] += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.M).group(1))
    return out


def _cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def capture(port: int, tree: Path | None = None, pair: bool | None = None):
    """`guardian capture --port` around a run; unlike the tests' helper, waits as long as it takes
    to drain the ring buffer at exit (a loaded host needs more than 30 s after a load test)."""
    out = tempfile.NamedTemporaryFile("w+", suffix=".jsonl", delete=False)
    err = tempfile.NamedTemporaryFile("w+", suffix=".err", delete=False)
    ring = ["--ringbuf-pages", str(RING_PAGES[0])] if RING_PAGES else []
    env = dict(os.environ, PYTHONPATH=str(tree or ROOT))
    env.pop("GUARDIAN_CAPTURE__OPTIONS__PAIR", None)
    if pair is not None:
        env["GUARDIAN_CAPTURE__OPTIONS__PAIR"] = str(int(pair))
    proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--stats", "--no-tls",
                             "--port", str(port), *ring], stdout=out, stderr=err, cwd=tree or ROOT, env=env)
    cap = _Capture()
    ready_cpu = None
    try:
        while "ready" not in Path(err.name).read_text():
            if proc.poll() is not None:
                raise RuntimeError(Path(err.name).read_text())
            time.sleep(0.2)
        ready_cpu = _cpu_s(proc.pid)
        ready_switches = _switches(proc.pid)
        ids = prog_ids_of(proc.pid) if BPF_TIME[0] else set()
        names = attach_names() if ids else {}
        before = programs() if ids else {}
        yield cap
        after = programs() if ids else {}
        cap.bpf_by_program = {}
        for i in ids:
            if i in before and i in after:
                row = cap.bpf_by_program.setdefault(names.get(i) or after[i].get("name", str(i)), [0, 0])
                row[0] += after[i].get("run_time_ns", 0) - before[i].get("run_time_ns", 0)
                row[1] += after[i].get("run_cnt", 0) - before[i].get("run_cnt", 0)
        cap.bpf_ns = sum(ns for ns, _ in cap.bpf_by_program.values())
        cap.bpf_runs = sum(runs for _, runs in cap.bpf_by_program.values())
        _wait_drained(Path(out.name))
        # its own CPU time, read before the stop: wait4's rusage would add the compile child's
        cap.cpu_s = _cpu_s(proc.pid) - ready_cpu
        cap.switches = [b - a for a, b in zip(ready_switches, _switches(proc.pid))]
        cap.peak_rss_mb, cap.ring_rss_mb = _memory_mb(proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        _, status, _ = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    cap.spans = [json.loads(line) for line in Path(out.name).read_text().splitlines() if line.strip()]
    stats = [line for line in Path(err.name).read_text().splitlines() if line.startswith("{")]
    cap.stats = json.loads(stats[-1]) if stats else {}
    os.unlink(out.name)
    os.unlink(err.name)


def _wait_drained(out: Path, most_s: float = 120.0) -> None:
    """Until the agent has read what the load left in the ring (its span file stops growing for
    a second), at most `most_s`: its stop reads what is left for one second only (capture/live.py),
    and on a loaded host its CPU use says little about whether it is done."""
    deadline = time.monotonic() + most_s
    last, still = -1, 0
    while time.monotonic() < deadline and still < 4:
        time.sleep(0.25)
        size = out.stat().st_size
        still = still + 1 if size == last else 0
        last = size


def _memory_mb(pid: int) -> tuple[float, float]:
    """The process's peak resident set (VmHWM; the compile child's is not in it) and the part of
    its resident set that is mapped BPF maps (the ring buffers), in MB."""
    peak = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1])
    ring, in_map = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and ":" not in head[0]:
            in_map = line.rstrip().endswith("anon_inode:bpf-map")
        elif in_map and line.startswith("Rss:"):
            ring += int(head[1])
    return round(peak / 1024, 1), round(ring / 1024, 1)


def client_spans(cap, exclude_pid: int) -> int:
    return sum(1 for s in cap.spans if s["kind"] == "CLIENT" and s["resource"].get("process.pid") != exclude_pid)


def bench_postgres(seconds: float, clients: int) -> dict:
    with postgres_instance() as pg:
        env = dict(os.environ, PGPASSWORD=pg["password"])
        subprocess.run([str(PG_BIN / "pgbench"), "-i", "-s", "1", "-h", "127.0.0.1", "-p", str(pg["port"]), "-U",
                        pg["user"], pg["dbname"]], env=env, check=True, capture_output=True, timeout=120)

        def fields(alone: dict, agent: dict, cap) -> dict:
            spans = client_spans(cap, pg["pid"])
            return {"baseline_tps": alone["tps"], "with_agent_tps": agent["tps"],
                    "throughput_ratio": round(agent["tps"] / alone["tps"], 3), "operations": agent["operations"],
                    "client_spans": spans, "spans_per_operation": round(spans / agent["operations"], 4)}
        return _rounds(pg["port"], pg["pid"], lambda: pgbench(pg, seconds, clients), fields)


def _rounds(port: int, server_pid: int, load, fields) -> dict:
    """REPEAT rounds of the load alone and then under each agent; a run's figures are the load's own
    (`fields(alone, agent, capture)`) and those every load reports; the median round, with --compare's."""
    rounds = []
    for i in range(REPEAT[0]):
        alone = measured(load, server_pid)
        runs = {}
        for tree, pair in _agents(i):
            with capture(port, tree, pair) as cap:
                agent = measured(load, server_pid)
            runs[_name(tree, pair)] = {
                **fields(alone, agent, cap),
                "agent_cpu_us_per_operation": round(1e6 * cap.cpu_s / agent["operations"], 2),
                "agent_switches_per_1k_operations": [round(1e3 * n / agent["operations"], 2) for n in cap.switches],
                **_app_cpu(alone, agent),
                "agent_peak_rss_mb": cap.peak_rss_mb, "agent_ring_rss_mb": cap.ring_rss_mb,
                **_bpf_time(cap, agent["operations"]), "capture_stats": cap.stats}
        rounds.append(runs)
    return _with_compare(_median_round(rounds))


def _app_cpu(alone: dict, agent: dict) -> dict:
    return {"baseline_app_cpu_us_per_operation": alone["app_cpu_us_per_operation"],
            "app_cpu_us_per_operation": agent["app_cpu_us_per_operation"],
            "baseline_client_cpu_us_per_operation": alone["client_cpu_us_per_operation"],
            "client_cpu_us_per_operation": agent["client_cpu_us_per_operation"],
            "baseline_client_switches_per_operation": alone["client_switches_per_operation"],
            "client_switches_per_operation": agent["client_switches_per_operation"],
            "app_cpu_added_us_per_operation": round(agent["app_cpu_us_per_operation"]
                                                    - alone["app_cpu_us_per_operation"], 2)}


ROUND_KEYS = ("throughput_ratio", "baseline_app_cpu_us_per_operation", "app_cpu_us_per_operation",
              "app_cpu_added_us_per_operation", "baseline_client_cpu_us_per_operation", "client_cpu_us_per_operation", "agent_cpu_us_per_operation", "bpf_us_per_operation",
              "bpf_runs_per_operation", "baseline_client_switches_per_operation", "client_switches_per_operation",
              "agent_switches_per_1k_operations", "spans_per_operation")


def _median_round(rounds: list[dict]) -> dict:
    """Per agent, the row of the round with its median throughput ratio, with every round's
    figures (ROUND_KEYS) under `rounds` when there were several."""
    if len(rounds) == 1:
        return rounds[0]
    out = {}
    for name in rounds[0]:
        rows = sorted((r[name] for r in rounds), key=lambda row: row["throughput_ratio"])
        row = dict(rows[len(rows) // 2])
        row["rounds"] = [{k: r[name][k] for k in ROUND_KEYS if k in r[name]} for r in rounds]
        out[name] = row
    return out


def _bpf_time(cap: _Capture, operations: int) -> dict:
    if not BPF_TIME[0]:
        return {}
    return {"bpf_us_per_operation": round(cap.bpf_ns / 1000 / operations, 2),
            "bpf_runs_per_operation": round(cap.bpf_runs / operations, 2),
            "bpf_by_program": {name: {"ns_per_operation": round(ns / operations), "runs_per_operation":
                                      round(runs / operations, 2)}
                               for name, (ns, runs) in sorted(cap.bpf_by_program.items()) if runs}}


def _agents(round_: int = 0) -> list[tuple[Path | None, bool | None]]:
    """The agents to run, in reverse order every other round: a host whose load drifts during a
    round then favours none of them."""
    agents = [(tree, pair) for tree in (*COMPARE, None) for pair in PAIRS]
    return agents[::-1] if round_ % 2 else agents


def _name(tree: Path | None, pair: bool | None) -> str:
    return str(tree or ROOT) + (" pair" if pair else "")


def _with_compare(runs: dict) -> dict:
    out = runs.pop(_name(None, PAIRS[0]))
    for tree, r in runs.items():
        r.update(losses(r.pop("capture_stats")))
        out[f"compare {tree}"] = r
    return out


def losses(stats: dict) -> dict:
    """Where spans go missing and how much of the traffic the compiled path kept: records the
    kernel could not queue (drops), records still queued at the stop, gaps, the compiled path's
    hand-backs to Python and its re-adoptions of connections it had handed back."""
    return {"ring_records": stats.get("kernel.events"), "drops": stats.get("kernel.ringbuf_drops", 0),
            "unread_at_stop_bytes": stats.get("ring.unread_at_stop_bytes", 0),
            "max_backlog_bytes": stats.get("ring.max_backlog_bytes", 0), "gaps": stats.get("conntrack.gaps", 0),
            "c_spans": stats.get("fastpath.spans", 0), "all_spans": stats.get("pipeline.spans", 0),
            "hand_backs": stats.get("fastpath.released", 0), "records_to_python": stats.get("fastpath.handed_over", 0),
            "readoptions": stats.get("conntrack.fastpath_readoptions", 0),
            "truncated": stats.get("kernel.truncated"), "parser_exceptions": stats.get("pipeline.parser_exceptions", 0)}


def bench_redis(requests: int, pipeline: int) -> dict:
    with redis_instance() as r:
        def fields(alone: dict, agent: dict, cap) -> dict:
            data_ops = [s for s in cap.spans if s["kind"] == "CLIENT"
                        and s["attributes"].get("db.operation.name") in ("SET", "GET", "INCR")]
            return {"pipeline": pipeline, "baseline_rps": round(alone["rps_mean"]),
                    "with_agent_rps": round(agent["rps_mean"]),
                    "throughput_ratio": round(agent["rps_mean"] / alone["rps_mean"], 3),
                    "operations": agent["operations"], "client_spans": len(data_ops),
                    "spans_per_operation": round(len(data_ops) / agent["operations"], 4)}
        return _rounds(r["port"], r["pid"], lambda: redis_benchmark(r, requests, pipeline), fields)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10, help="pgbench duration of each run")
    ap.add_argument("--clients", type=int, default=4, help="pgbench clients")
    ap.add_argument("--requests", type=int, default=100_000, help="redis-benchmark requests per command")
    ap.add_argument("--pipeline", type=int, action="append", help="redis-benchmark -P (repeat for several runs; 1)")
    ap.add_argument("--only", choices=("postgres", "redis"), help="run one of the two")
    ap.add_argument("--select-simple", action="store_true",
                    help="pgbench -S -M simple (one simple-protocol SELECT per transaction) instead of TPC-B extended")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="rounds of (baseline, every agent); each ratio against its round's baseline")
    ap.add_argument("--rate", type=int, metavar="TPS",
                    help="pgbench at this fixed rate (-R) instead of saturation: the same work with and without "
                         "the agent, so the traced processes' CPU per operation compares directly")
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--compare", action="append", default=[], metavar="TREE",
                    help="also run the agent from this source tree (e.g. /work/main), same server and baseline")
    ap.add_argument("--pair", choices=("default", "off", "on", "ab"), default="default",
                    help="agents as their tree's default (default), without (off), with (on) or without then with "
                         "(ab) exchanges paired in the kernel")
    ap.add_argument("--ringbuf-pages", type=int, metavar="N",
                    help="the agents' ring buffer in pages (default: the agent's)")
    ap.add_argument("--bpf-time", action="store_true",
                    help="also report the agent's BPF programs' run time per operation (BPF statistics are on for "
                         "the command: every BPF program on the host then pays a clock read per run)")
    args = ap.parse_args()
    BPF_TIME[0] = args.bpf_time
    REPEAT[0] = max(args.repeat, 1)
    RING_PAGES[:] = [args.ringbuf_pages] if args.ringbuf_pages else []
    if args.bpf_time:
        fd = _bpf_stats_fd()
        try:
            return _main(args)
        finally:
            os.close(fd)
    return _main(args)


def _bpf_stats_fd() -> int:
    """BPF run-time statistics on while the returned fd is open (bpf(BPF_ENABLE_STATS)): counted
    by the kernel per holder, so another bench toggling kernel.bpf_stats_enabled is not disturbed."""
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(8)  # union bpf_attr's enable_stats: type = BPF_STATS_RUN_TIME (0)
    fd = libc.syscall(321, 32, attr, 8)  # x86_64 __NR_bpf, BPF_ENABLE_STATS
    if fd < 0:
        raise OSError(ctypes.get_errno(), "bpf(BPF_ENABLE_STATS)")
    return fd


def _main(args) -> int:
    COMPARE[:] = [Path(t).resolve() for t in args.compare]
    PAIRS[:] = {"default": [None], "off": [False], "on": [True], "ab": [False, True]}[args.pair]
    if args.select_simple:
        PGBENCH_MODE[:] = ["-S", "-M", "simple"]
    PGBENCH_RATE[:] = ["-R", str(args.rate)] if args.rate else []
    results = {}
    if args.only in (None, "postgres"):
        results["pgbench"] = bench_postgres(args.seconds, args.clients)
    if args.only in (None, "redis"):
        pipelines = args.pipeline or [1]
        for p in pipelines:
            results["redis-benchmark" if len(pipelines) == 1 else f"redis-benchmark -P {p}"] = \
                bench_redis(args.requests, p)
    for name, r in results.items():
        stats = r.pop("capture_stats")
        print(f"{name}: " + ", ".join(f"{k}={v}" for k, v in r.items() if not k.startswith("compare ")))
        # every way a span can be missing from spans_per_operation (see losses)
        print("  capture: " + " ".join(f"{k}={v}" for k, v in losses(stats).items()))
        for k, v in r.items():
            if k.startswith("compare "):
                print(f"  {k}: " + ", ".join(f"{a}={b}" for a, b in v.items()))
        r["capture_stats"] = stats
    if args.json:
        bench_results.write(args.json, results, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
