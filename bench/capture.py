"""Benchmark of the syscall capture's cost, every figure a ratio to a baseline run in the
same command:

  (a) wrk against nginx at saturation, without and with `guardian capture`;
  (b) hey at a fixed 10k req/s for 10 s with the capture: spans / requests must be 100 %;
  (c) a FastAPI app uninstrumented, with OpenTelemetry auto-instrumentation, and with
      `guardian capture` (zero-instrumentation must cost the app less than the SDK);
  (d) `guardian agent` (store, linker, API) while wrk saturates nginx: its RSS over the run
      and the spans it received, stored and dropped (--only agent; not in the default set);
      --only agent-rate: the same under hey at --rate req/s, with its CPU per request.

Each agent run also gives its CPU µs per request and per span made, and its context switches and
page faults per 1k requests; each wrk run, the host's idle CPU share meanwhile.

With --tree DIR (repeatable), (a), (b) and (c) run the agent from each of those checkouts in turn
against the same baseline run: an A/B of two versions of the capture in one command (--compare is the same option, as in bench.tls and bench.dbload).
Each agent runs with its checkout's default capture.options.pair unless --pair says: with --pair
ab, twice, without and with it (HTTP/1 exchanges paired in the kernel: one ring record per
exchange), against the same baseline; results are keyed TREE and "TREE pair";
ring_records_per_request counts the kernel's records.

Run as root: .venv/bin/python -m bench.capture [--seconds 10] [--json FILE] [--tree DIR ...] [--pair default|off|on|ab]
             [--only fastapi --repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

from support.http_servers import nginx_server
from support.process import process, stop
from support.live import free_port
from support import results as bench_results

ROOT = Path(__file__).resolve().parent.parent
AGENT_ARGS: list[str] = []  # extra `guardian capture` options (--agent-arg)
PAIR = ["default"]  # --pair: the agents run as their checkout's default, unpaired (off), paired (on) or both (ab)
READY_S = [120.0]  # how long the agent may take to compile and attach (--ready-s)


def peak_rss_mb(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def rss_by_mapping(pid: int, top: int = 14) -> dict[str, float]:
    """Resident MB per mapped file (anonymous memory as "[anon]", the BPF ring buffers as
    "anon_inode:bpf-map"), largest first: where a process's resident set is."""
    sizes: dict[str, int] = {}
    name = "?"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(None, 5)
        if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:
            name = Path(head[5]).name if len(head) > 5 and head[5].startswith("/") else (
                head[5] if len(head) > 5 else "[anon]")
        elif line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    ranked = sorted(sizes.items(), key=lambda kv: -kv[1])
    return {k: round(v / 1024, 1) for k, v in ranked[:top]} | {
        "[rest]": round(sum(v for _, v in ranked[top:]) / 1024, 1)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sched_counts(pid: int) -> dict[str, int]:
    """The process's context switches (all its threads) and page faults so far: what its CPU
    time does not show of what it costs the others (a switch evicts their caches)."""
    out = {"voluntary_switches": 0, "involuntary_switches": 0, "minor_faults": 0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a thread that ended meanwhile
            continue
        for line in status.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                out["voluntary_switches"] += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                out["involuntary_switches"] += int(line.split()[1])
        out["minor_faults"] += int(fields[7])
    return out


@contextmanager
def agent(port: int, ready_s: float | None = None, tree: Path = ROOT, pair: bool | None = None):
    """`guardian capture --json --stats --port` writing spans to a file; yields a dict of its
    figures (agent CPU, peak RSS, spans by kind, kernel events and drops), filled at exit.
    `ready_s`: how long BCC may take to compile at start (minutes on a host shared with other
    builds); `tree`: the checkout whose capture runs; `pair`: capture.options.pair (None: its default)."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as tmp:
        out, err = Path(tmp, "spans.jsonl"), Path(tmp, "err")
        cmd = [sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--stats",
               "--port", str(port), *AGENT_ARGS]
        env = dict(os.environ, PYTHONPATH=str(tree))
        env.pop("GUARDIAN_CAPTURE__OPTIONS__PAIR", None)
        if pair is not None:
            env["GUARDIAN_CAPTURE__OPTIONS__PAIR"] = str(int(pair))
        with open(out, "w") as o, open(err, "w") as e:
            proc = subprocess.Popen(cmd, stdout=o, stderr=e, cwd=tree, env=env)
        result: dict = {}
        try:
            deadline = time.monotonic() + (ready_s or READY_S[0])
            while "ready" not in err.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("capture did not start: " + err.read_text()[-300:])
                time.sleep(0.1)
            cpu0, t0, sched0 = cpu_seconds(proc.pid), time.monotonic(), sched_counts(proc.pid)
            yield result
            time.sleep(1.0)  # drain
            result["agent_cpu_s"] = cpu_seconds(proc.pid) - cpu0
            result["agent_cpu_pct"] = 100 * result["agent_cpu_s"] / (time.monotonic() - t0)
            result.update({k: v - sched0[k] for k, v in sched_counts(proc.pid).items()})
            result["agent_peak_rss_mb"] = peak_rss_mb(proc.pid)
        finally:
            stop(proc, signal.SIGINT, timeout=120)
        spans = [json.loads(line) for line in out.read_text().splitlines() if line]
        # a connection given up during its TLS handshake is a span of its own (Go's client dials
        # more than it keeps under hey): counted apart, so spans per request count requests
        kinds = [sp["kind"] for sp in spans if sp["name"] != "TLS handshake"]
        result["server_spans"], result["client_spans"] = kinds.count("SERVER"), kinds.count("CLIENT")
        result["tls_handshake_spans"] = len(spans) - len(kinds)
        for line in err.read_text().splitlines():
            if line.startswith("{"):
                stats = json.loads(line)
                result["kernel_drops"] = stats.get("kernel.ringbuf_drops", 0)
                result["kernel_events"] = stats.get("kernel.events", 0)
                result["kernel_spilled"] = stats.get("kernel.ringbuf_spilled", 0)
                result["ring_max_backlog_bytes"] = stats.get("ring.max_backlog_bytes")
                result["kernel_paired"] = stats.get("kernel.pair_paired", 0)
                result["kernel_wakeups"] = stats.get("kernel.ringbuf_wakeups", 0)
                result["scope_skipped"] = stats.get("kernel.scope_skipped", 0)  # capture.scope
                result["tls_probes"] = stats.get("tls.probes", 0)


def runs(trees: list[Path] | None) -> list[tuple[str, Path, bool]]:
    """(result key, checkout, paired) of each agent run, as --tree and --pair ask."""
    pairs = {"default": [None], "off": [False], "on": [True], "ab": [False, True]}[PAIR[0]]
    return [(str(tree) + (" pair" if pair else ""), tree, pair) for tree in trees or [ROOT] for pair in pairs]


def per_request(cap: dict, requests: int) -> dict:
    return {"server_spans_per_request": cap["server_spans"] / requests,
            "client_spans_per_request": cap["client_spans"] / requests,
            "ring_records_per_request": cap.get("kernel_events", 0) / requests,
            "agent_us_per_request": 1e6 * cap["agent_cpu_s"] / requests,
            # per span made: steadier than per request where a starved agent drops records
            "agent_us_per_span": 1e6 * cap["agent_cpu_s"] / max(cap["server_spans"] + cap["client_spans"], 1),
            "agent_switches_per_1k_requests": 1e3 * (cap["voluntary_switches"] + cap["involuntary_switches"]) / requests,
            "agent_faults_per_1k_requests": 1e3 * cap["minor_faults"] / requests}


def host_cpu() -> tuple[int, int]:
    """(idle, total) jiffies of every CPU since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def wrk(url: str, seconds: int, conns: int = 50) -> dict:
    idle0, total0 = host_cpu()
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    idle1, total1 = host_cpu()
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
    # single-threaded wrk and a one-worker nginx: CPU the capture takes from either one slows both,
    # and the other's core can sit idle meanwhile (idle here is time nobody on the host wanted)
    return {"requests": reqs, "rps": rps, "p99_ms": float(p99.group(1)) * scale,
            "host_idle_pct": round(100 * (idle1 - idle0) / max(total1 - total0, 1), 1)}


def hey(url: str, seconds: int, rate: int) -> dict:
    workers = 20
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate // workers), url],
                         capture_output=True, text=True, check=True).stdout
    codes = re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+in\s+([\d.]+)\s+secs", out)
    return {"requests": sum(int(n) for _, n in codes), "rps": rps,
            "p99_ms": float(p99.group(1)) * 1e3 if p99 else None}


def bench_nginx_saturation(seconds: int, trees: list[Path] | None = None) -> dict:
    out = {}
    with nginx_server() as (port, _):
        url = f"http://127.0.0.1:{port}/"
        wrk(url, 2)  # warm up
        base = wrk(url, seconds)
        for key, tree, pair in runs(trees):
            with agent(port, tree=tree, pair=pair) as cap:
                with_agent = wrk(url, seconds)
            out[key] = {
                "baseline": base, "with_agent": with_agent, "agent": cap,
                "throughput_ratio": with_agent["rps"] / base["rps"],
                "p99_ratio": with_agent["p99_ms"] / base["p99_ms"],
                **per_request(cap, with_agent["requests"]),
            }
    return out if len(out) > 1 or trees else next(iter(out.values()))


def bench_fixed_rate(seconds: int, rate: int, trees: list[Path] | None = None) -> dict:
    out = {}
    with nginx_server() as (port, _):
        url = f"http://127.0.0.1:{port}/"
        base = hey(url, seconds, rate)
        for key, tree, pair in runs(trees):
            with agent(port, tree=tree, pair=pair) as cap:
                run = hey(url, seconds, rate)
            out[key] = {"baseline": base, "with_agent": run, "agent": cap, **per_request(cap, run["requests"])}
    return out if len(out) > 1 or trees else next(iter(out.values()))


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}(?:_total)?(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


def memory_sample(pid: int, api: int | None) -> dict:
    """The agent's resident set by class of mapping (guardian/rss.py, read here from /proc) and,
    with `api` and where its tree has them, its own guardian_agent_memory_* gauges (allocators,
    queue, tables), MB. The gauges cost the agent CPU at every scrape (it reads its smaps and
    allocators): left out where the agent's CPU per request is the figure (a fixed rate)."""
    import httpx

    from bench.soaklib.probe import memory_gauges
    from guardian import rss as rss_by

    m = rss_by.by_mapping(pid)
    out = {"rss": {k: round(v / 2**20, 1) for k, v in m.items() if isinstance(v, int)},
           "files": {k: round(v / 2**20, 1) for k, v in m["files"].items()}}
    if api is None:
        return out
    try:
        text = httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    gauges = memory_gauges(text)
    for read_above in ("rss_bytes", "file_bytes"):  # from /proc above, for both trees alike
        gauges.pop(read_above, None)
    return {**out, **gauges}


def bench_agent_memory(seconds: int, trees: list[Path] | None = None, rate: int = 0) -> dict:
    """`guardian agent` with a store file, capturing nginx under wrk for `seconds` (with `rate`:
    hey at that many req/s instead): RSS sampled every second, and its span counters from /metrics
    just before the stop; its CPU per request and the spans it stored per request against the
    load's count, and under wrk its throughput against a baseline wrk run without it."""
    import httpx

    out = {}
    with nginx_server() as (port, _):
        url = f"http://127.0.0.1:{port}/"
        base = hey(url, seconds, rate) if rate else wrk(url, seconds)
        for tree in trees or [ROOT]:
            with tempfile.TemporaryDirectory(prefix="bench-agentd-") as tmp:
                api = free_port()
                Path(tmp, "g.yaml").write_text(json.dumps({
                    "store": {"path": str(Path(tmp, "spans.duckdb"))},
                    "capture": {"options": {"port": port, "tls": False}}}))
                env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDIAN_")}
                env["PYTHONPATH"] = str(tree)
                err = Path(tmp, "err")
                cmd = [sys.executable, "-m", "guardian.cli.main", "--config", str(Path(tmp, "g.yaml")),
                       "agent", "--port", str(api)]
                with open(err, "w") as e:
                    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=e, cwd=tree, env=env)
                try:
                    deadline = time.monotonic() + READY_S[0]
                    while "ready" not in err.read_text():
                        if proc.poll() is not None or time.monotonic() > deadline:
                            raise RuntimeError("agent did not start: " + err.read_text()[-300:])
                        time.sleep(0.2)
                    rss, cpu0, t0 = [], cpu_seconds(proc.pid), time.monotonic()
                    workers = 20
                    cmd = (["hey", "-z", f"{seconds}s", "-c", str(workers), "-q", str(rate // workers), url] if rate
                           else ["wrk", "-t1", "-c50", f"-d{seconds}s", url])
                    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                    by_source: list[dict] = []  # every second: /proc's split, and the agent's own view
                    while load.poll() is None:
                        time.sleep(1.0)
                        rss.append(round(float(Path(f"/proc/{proc.pid}/status").read_text()
                                               .split("VmRSS:")[1].split()[0]) / 1024))
                        by_source.append(memory_sample(proc.pid, None if rate else api))
                    loaded = load.stdout.read()
                    time.sleep(7.0)  # until the linker has released all (its window, 5 s, with nothing new)
                    mappings = rss_by_mapping(proc.pid)
                    text = httpx.get(f"http://127.0.0.1:{api}/metrics", timeout=30).text
                    cpu_s, elapsed = cpu_seconds(proc.pid) - cpu0, time.monotonic() - t0
                    cpu = 100 * cpu_s / elapsed
                    out[str(tree)] = {
                        "rss_mb_every_s": rss, "peak_rss_mb": peak_rss_mb(proc.pid), "agent_cpu_pct": cpu,
                        **{k: metric(text, f"guardian_agent_spans_{k}") for k in ("received", "stored", "dropped", "linked")},
                        "linker_pending": metric(text, "guardian_agent_linker_pending_spans"),
                        "rss_mb_by_mapping_at_end": mappings, "load_at_end": os.getloadavg(),
                        "by_source_every_s": by_source,
                        "by_source_at_peak": max(by_source, key=lambda x: x["rss"]["total"], default=None)}
                    # the load's own count: the requests the spans are judged against
                    r = out[str(tree)]
                    if rate:
                        requests = sum(int(n) for n in re.findall(r"\[\d{3}\]\s+(\d+) responses", loaded))
                    else:
                        requests = int(re.search(r"(\d+) requests in", loaded).group(1))
                        r["throughput_ratio"] = float(re.search(r"Requests/sec:\s+([\d.]+)", loaded).group(1)) / base["rps"]
                    # its CPU from the load's start to after its drain, over the load's duration
                    r.update({"baseline": base, "requests": requests, "agent_cpu_s": cpu_s,
                              "agent_cpu_pct_of_load": 100 * cpu_s / seconds,
                              "agent_us_per_request": 1e6 * cpu_s / max(requests, 1),
                              "received_spans_per_request": (r["received"] or 0) / max(requests, 1),
                              "stored_spans_per_request": (r["stored"] or 0) / max(requests, 1)})
                finally:
                    stop(proc, signal.SIGINT, timeout=120)
    return out


FASTAPI_APP = textwrap.dedent('''
    import os
    from fastapi import FastAPI
    app = FastAPI()
    @app.get("/hello")
    def hello():
        return {"hello": "world"}
    if os.environ.get("BENCH_OTEL"):
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
        class Discard(SpanExporter):  # the SDK's cost without any exporter's I/O
            def export(self, spans): return SpanExportResult.SUCCESS
        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Discard()))
        trace.set_tracer_provider(provider)
        FastAPIInstrumentor.instrument_app(app)
''')


def bench_fastapi(seconds: int, trees: list[Path] | None = None) -> dict:
    """One uvicorn app: uninstrumented, with the OpenTelemetry SDK, with `guardian capture` from each
    checkout (--tree: an A/B in one command; --repeat: fastapi_rounds), then
    uninstrumented again: the two baselines' spread is the drift of the host's load meanwhile."""
    results: dict = {"load_at_start": round(os.getloadavg()[0], 1)}
    with tempfile.TemporaryDirectory() as d:
        Path(d, "app.py").write_text(FASTAPI_APP)
        agents = [(key, tree, pair) for key, tree, pair in runs(trees)]
        modes = [("uninstrumented", None), ("otel_sdk", None), *[(key, (tree, pair)) for key, tree, pair in agents],
                 ("uninstrumented_after", None)]
        for mode, run in modes:
            port = free_port()
            env = dict(os.environ, **({"BENCH_OTEL": "1"} if mode == "otel_sdk" else {}))
            cmd = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "error"]
            with process(cmd, port, cwd=d, env=env) as app:
                url = f"http://127.0.0.1:{port}/hello"
                wrk(url, 2, conns=10)
                if run is None:
                    cpu0 = cpu_seconds(app.pid)
                    results[mode] = wrk(url, seconds, conns=10)
                    cpu1 = cpu_seconds(app.pid)
                else:
                    tree, pair = run
                    with agent(port, tree=tree, pair=pair) as cap:
                        cpu0 = cpu_seconds(app.pid)
                        results[mode] = wrk(url, seconds, conns=10)
                        cpu1 = cpu_seconds(app.pid)
                    results[mode]["agent"] = cap
                    results[mode].update(per_request(cap, max(results[mode]["requests"], 1)))
                # the app's CPU per request: what the probes add to it, readable on a loaded host
                results[mode]["app_cpu_us_per_request"] = round(1e6 * (cpu1 - cpu0) / max(results[mode]["requests"], 1), 1)
                results[mode]["load"] = round(os.getloadavg()[0], 1)
    base = results["uninstrumented"]["rps"]
    out = {**results, "otel_sdk_throughput_ratio": results["otel_sdk"]["rps"] / base,
           "baseline_drift": results["uninstrumented_after"]["rps"] / base}
    for key, _, _ in agents:
        out[key]["throughput_ratio"] = results[key]["rps"] / base
        out[key]["throughput_ratio_to_after"] = results[key]["rps"] / results["uninstrumented_after"]["rps"]
        out[key]["app_cpu_added_us_per_request"] = round(results[key]["app_cpu_us_per_request"] - (
            results["uninstrumented"]["app_cpu_us_per_request"] + results["uninstrumented_after"]["app_cpu_us_per_request"]) / 2, 1)
    if not trees:  # the single-tree shape the earlier results have
        out["guardian_throughput_ratio"] = out[agents[0][0]]["throughput_ratio"]
    return out


def fastapi_rounds(seconds: int, trees: list[Path] | None, repeat: int) -> dict:
    """bench_fastapi `repeat` times, the trees' order reversed every other round; per tree, the
    rounds' throughput ratios and added app CPU per request with their medians."""
    rounds = [bench_fastapi(seconds, (trees if i % 2 == 0 else trees[::-1]) if trees else None)
              for i in range(repeat)]
    if repeat == 1:
        return rounds[0]
    keys = [k for k, v in rounds[0].items() if isinstance(v, dict) and "throughput_ratio" in v]
    summary = {}
    for key in keys:
        ratios = [r[key]["throughput_ratio"] for r in rounds]
        added = [r[key]["app_cpu_added_us_per_request"] for r in rounds]
        summary[key] = {"throughput_ratios": ratios, "median_throughput_ratio": statistics.median(ratios),
                        "app_cpu_added_us_per_request": added,
                        "median_app_cpu_added_us_per_request": statistics.median(added)}
    otel = [r["otel_sdk_throughput_ratio"] for r in rounds]
    return {"rounds": rounds, "summary": summary, "otel_sdk_throughput_ratios": otel}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1,
                    help="(c) only: run the FastAPI sequence this many times, the trees' order reversed every other round")
    ap.add_argument("--only", choices=["nginx", "rate", "fastapi", "agent", "agent-rate"])
    ap.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ap.add_argument("--agent-arg", action="append", default=[], metavar="ARG",
                    help="pass ARG to `guardian capture` (repeatable), e.g. --agent-arg=--ringbuf-pages=16384")
    ap.add_argument("--tree", "--compare", dest="tree", action="append", type=Path, metavar="DIR",
                    help="run the agent of (a), (b) and (c) from this checkout (repeatable: an A/B against one baseline)")
    ap.add_argument("--pair", choices=["default", "off", "on", "ab"], default="default",
                    help="run the agents as their checkout's default (default), without (off), with (on) or "
                         "without then with (ab) exchanges paired in the kernel")
    ap.add_argument("--ready-s", type=float, default=READY_S[0], metavar="S",
                    help="how long the agent may take to start (BCC compiles for minutes on a loaded host)")
    args = ap.parse_args()
    AGENT_ARGS[:] = args.agent_arg
    PAIR[0] = args.pair
    READY_S[0] = args.ready_s
    out = {"agent_args": args.agent_arg, "pair": args.pair, "load_at_start": os.getloadavg()}
    if args.only in (None, "nginx"):
        out["a_nginx_saturation"] = bench_nginx_saturation(args.seconds, args.tree)
        print(json.dumps({"a_nginx_saturation": out["a_nginx_saturation"]}, indent=1), flush=True)
    if args.only in (None, "rate"):
        out["b_fixed_rate"] = bench_fixed_rate(args.seconds, args.rate, args.tree)
        print(json.dumps({"b_fixed_rate": out["b_fixed_rate"]}, indent=1), flush=True)
    if args.only in ("agent", "agent-rate"):
        out["d_agent_memory"] = bench_agent_memory(args.seconds, args.tree, args.rate if args.only == "agent-rate" else 0)
        print(json.dumps({"d_agent_memory": out["d_agent_memory"]}, indent=1), flush=True)
    if args.only in (None, "fastapi"):
        out["c_fastapi"] = fastapi_rounds(args.seconds, args.tree, args.repeat)
        print(json.dumps({"c_fastapi": out["c_fastapi"]}, indent=1), flush=True)
    if args.json:
        bench_results.write(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
