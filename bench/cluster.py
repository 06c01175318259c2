"""Cluster mode on one machine: 3 "nodes" (network namespaces on a bridge), web on node 2 behind
an iptables DNAT ClusterIP on node 1, stock on node 3 with a fault switched on halfway, one live
eBPF agent per node (scoped to its namespace) shipping OTLP to one hub (chDB store).

Measures how many cross-node calls the hub linked right (request ids in the query string are
the ground truth, never used by the linker), wrong links, whether `guardian investigate` on
the hub's store names the remote fault, and the hub's ingest rate on chDB and on DuckDB.

    python -m bench.cluster --json [--requests 10000 --conns 16]
    python -m bench.cluster --json --ingest-spans 0 --outage-s 0 --ring-pages 16 --stall 0.5
        (induced loss: each agent stopped half of every 3 s with a small ring; the same hub
        store is also relinked with and without the agents' connection epochs: `relinked`)
Needs root (namespaces, iptables, eBPF). Cleans up namespaces and rules even on failure.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from support.live import free_port
from support.netsim import CLUSTER_IP, leftovers, topology

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _wait_line(proc: subprocess.Popen, needle: str, timeout_s: float, what: str,
               log: Path | None = None) -> None:
    """Wait until `needle` appears on the process's stderr (read by a thread: never blocks);
    with `log`, everything it says goes there too (a node that fails says why)."""
    got = threading.Event()
    lines: list[str] = []

    def read():
        out = open(log, "a") if log else None
        for line in proc.stderr:
            lines.append(line)
            if out:
                out.write(line)
                out.flush()
            if needle in line:
                got.set()
        got.set()

    threading.Thread(target=read, daemon=True).start()
    if not got.wait(timeout_s) or proc.poll() is not None:
        raise RuntimeError(f"{what} did not start: {''.join(lines[-20:])}")


def _start(stack: ExitStack, argv: list[str], env: dict, what: str, needle: str = "ready",
           timeout_s: float = 30, stream: str = "stderr", wait: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen(argv, env=env, text=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
                            stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL)

    def stop():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    stack.callback(stop)
    if not wait:
        return proc
    if stream == "stdout":
        line = proc.stdout.readline()
        if needle not in line:
            raise RuntimeError(f"{what} did not start: {line!r}")
    else:
        _wait_line(proc, needle, timeout_s, what)
    return proc


def _stop(proc: subprocess.Popen, timeout_s: float = 60) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout_s)


def _metric(port: int, name: str) -> float:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "_total "):
            return float(line.split()[-1])
    return 0.0


def _losses(port: int) -> dict:
    """An agent's capture counters of lost records (ring drops, spills, stream gaps)."""
    import httpx

    out = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith("guardian_capture_events_total{"):
            key = line.split('counter="', 1)[1].split('"', 1)[0]
            if any(w in key for w in ("drops", "gaps", "spilled", "mid_stream")):
                out[key] = float(line.split()[-1])
    return out


def _settle(port: int, name: str, quiet_s: float, timeout_s: float) -> float:
    """Wait until a hub counter stops moving for quiet_s."""
    last, since, deadline = -1.0, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = _metric(port, name)
        if v != last:
            last, since = v, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.5)
    return last


def evaluate(store) -> dict:
    """Ground truth from request ids: the CLIENT and SERVER span of one call share path + rid."""
    from capture.store.api import SpanFilter

    return score(store.spans(SpanFilter(limit=10_000_000)))


def relink(store, epochs: bool) -> dict:
    """The hub's store linked again from what the agents shipped (the hub's links undone), with
    or without the connection epochs the agents wrote: both rules on the same spans."""
    from capture.connection import EPOCH
    from capture.store.api import SpanFilter
    from capture.traces.crossnode import CONFIDENCE, METHOD
    from support.lossy_links import link

    spans = store.spans(SpanFilter(limit=10_000_000))
    for s in spans:
        if s.attributes.get(METHOD):  # a hub link (an agent's own links carry no method)
            s.parent_span_id = None
            s.attributes = {k: v for k, v in s.attributes.items() if k not in (METHOD, CONFIDENCE)}
        if not epochs and EPOCH in s.attributes:
            s.attributes = {k: v for k, v in s.attributes.items() if k != EPOCH}
    spans.sort(key=lambda s: s.end_time_unix_nano)
    out, lk = link(spans, window_s=5.0)
    got = score(out)
    return {k: got[k] for k in ("cross_node", "linked_correct", "linked_wrong", "linked_pct")} | {
        "across_loss": lk.stats["across_loss"]}


def score(spans: list) -> dict:
    clients: dict[tuple, object] = {}
    servers: dict[tuple, object] = {}
    client_key_of: dict[str, tuple] = {}
    for s in spans:
        path, query = s.attributes.get("url.path"), str(s.attributes.get("url.query", ""))
        if path not in ("/web", "/stock") or not query.startswith("rid="):
            continue
        key = (path, query)
        if s.kind == "CLIENT":
            clients[key] = s
            client_key_of[s.span_id] = key
        elif s.kind == "SERVER":
            servers[key] = s
    both = [k for k in servers if k in clients
            and clients[k].resource.get("host.name") != servers[k].resource.get("host.name")]
    correct = sum(1 for k in both if servers[k].parent_span_id == clients[k].span_id)
    wrong = sum(1 for k, s in servers.items()
                if s.parent_span_id in client_key_of and client_key_of[s.parent_span_id] != k)
    wrong_methods: dict[str, int] = {}
    for k, s in servers.items():
        if s.parent_span_id in client_key_of and client_key_of[s.parent_span_id] != k:
            m = str(s.attributes.get("guardian.link.method"))
            wrong_methods[m] = wrong_methods.get(m, 0) + 1
    methods: dict[str, int] = {}
    for k in both:
        m = servers[k].attributes.get("guardian.link.method")
        if m:
            methods[m] = methods.get(m, 0) + 1
    same_trace = sum(1 for k in both if servers[k].trace_id == clients[k].trace_id)
    return {"spans": len(spans), "client_spans": len(clients), "server_spans": len(servers),
            "cross_node": len(both), "linked_correct": correct, "linked_wrong": wrong,
            "linked_pct": round(100.0 * correct / len(both), 2) if both else 0.0,
            "same_trace": same_trace, "link_methods": methods, "wrong_link_methods": wrong_methods}


def _stall(agents: list[subprocess.Popen], share: float, done: threading.Event, period_s: float = 3.0) -> None:
    """Stop every agent (SIGSTOP) for `share` of each period until `done`: their rings (and the
    1 MiB spill ring behind each) fill and records are lost, however loaded the host is."""
    while not done.is_set():
        for a in agents:
            a.send_signal(signal.SIGSTOP)
        done.wait(share * period_s)
        for a in agents:
            a.send_signal(signal.SIGCONT)
        done.wait((1 - share) * period_s)


def simulate(requests: int = 10_000, conns: int = 16, work: Path | None = None,
             agent_window_s: float = 2.0, ring_pages: int | None = None, stall: float = 0.0) -> dict:
    """`ring_pages`: each agent's ring buffer (a power of two); a small one loses records under
    the load, on each node independently: links under heavy capture loss (late halves, lost
    neighbours) must stay right. `stall`: agents stopped for this share of every second during
    the load, in periods of 3 s (induced loss whatever the host's load)."""
    work = Path(work or tempfile.mkdtemp(prefix="guardian-cluster-"))
    store_url = f"chdb://{work / 'hub-ch'}"
    hub_api, otlp_http, otlp_grpc = free_port(), free_port(), free_port()
    out: dict = {"requests": requests, "conns": conns, "ring_pages": ring_pages, "stall": stall}
    options: dict = {"tls": False}
    if ring_pages:
        options["ringbuf_pages"] = ring_pages
    with topology(3) as topo, ExitStack() as stack:
        n1, n2, n3 = topo.nodes
        topo.cluster_ip(n1, CLUSTER_IP, 80, n2, 8080)
        hub = _start(stack, [PY, "-m", "guardian.cli.main", "hub", "--store", store_url, "--otlp-host",
                             "127.0.0.1", "--otlp-grpc-port", str(otlp_grpc), "--otlp-http-port",
                             str(otlp_http), "--port", str(hub_api), "--link-window", "5"],
                     ENV, "hub", timeout_s=60)
        app = [PY, "-m", "support.cluster_app"]
        _start(stack, n3.run("env", "OTEL_SERVICE_NAME=stock", *app, "stock", "--bind", n3.ip,
                             "--port", "8081", "--fail-from", str(requests // 2), "--fail-pct", "30"),
               ENV, "stock", stream="stdout")
        _start(stack, n2.run("env", "OTEL_SERVICE_NAME=web", *app, "web", "--bind", n2.ip, "--port",
                             "8080", "--stock", f"http://{n3.ip}:8081"), ENV, "web", stream="stdout")
        agents, ports = [], []
        t0 = time.monotonic()
        for i, node in enumerate(topo.nodes):
            cfg = work / f"agent-{i + 1}.yaml"
            cfg.write_text(json.dumps({
                "capture": {"scope": {"netns": node.netns_path, "node_name": node.name},
                            "options": options},
                "linker": {"window_s": agent_window_s},
                "store": {"max_spans": 200_000},
                "export": {"otlp_endpoint": f"http://127.0.0.1:{otlp_http}", "otlp_protocol": "http",
                           "queue_dir": str(work / f"queue-{i + 1}"), "metrics": False},
                "log": {"format": "text", "level": "INFO"}}))
            ports.append(free_port())
            agents.append(_start(stack, ["nice", "-n", "5", PY, "-m", "guardian.cli.main", "agent",
                                         "--config", str(cfg), "--port", str(ports[-1])],
                                 ENV, f"agent {node.name}", wait=False))
            if i == 0:  # the first one compiles the eBPF programs (or loads them); the rest load its cache
                _wait_line(agents[0], "ready", 900, f"agent {node.name}", work / f"agent-{node.name}.log")
        for a, node in list(zip(agents, topo.nodes))[1:]:
            _wait_line(a, "ready", 300, f"agent {node.name}", work / f"agent-{node.name}.log")
        out["agents_start_s"] = round(time.monotonic() - t0, 1)
        stalled = threading.Event()
        if stall:
            threading.Thread(target=_stall, args=(agents, stall, stalled), daemon=True).start()
        try:
            load = subprocess.run(n1.run("env", "OTEL_SERVICE_NAME=load", PY, "-m", "support.cluster_app",
                                         "load", "--url", f"http://{CLUSTER_IP}:80", "--requests",
                                         str(requests), "--conns", str(conns)),
                                  env=ENV, capture_output=True, text=True, timeout=900)
        finally:
            stalled.set()
            time.sleep(0.1)
            for a in agents:
                a.send_signal(signal.SIGCONT)
        if load.returncode:
            raise RuntimeError(f"load failed: {load.stderr[-2000:]}")
        t_end = time.time()
        out["load"] = json.loads(load.stdout.strip().splitlines()[-1])
        out["agents_alive_after_load"] = [a.poll() is None for a in agents]
        try:
            out["agent_losses"] = [_losses(port) for port in ports]
        except Exception as e:  # noqa: BLE001 — a figure missing, not a failed run
            out["agent_losses"] = repr(e)
        for a in agents:  # agents link what is pending, ship it and exit
            _stop(a, 120)
        _settle(hub_api, "guardian_hub_spans_stored", quiet_s=8, timeout_s=120)
        out["hub_received"] = _metric(hub_api, "guardian_hub_spans_received")
        out["hub_malformed"] = _metric(hub_api, "guardian_hub_malformed_requests")
        _stop(hub, 120)
        # The incident window an alert would give: from the fault's start (stock fails from the
        # load's halfway request) to the end; the healthy first half is the baseline before it.
        fault_at = t_end - out["load"]["seconds"] / 2
        out["investigate_window"] = [round(fault_at, 1), round(t_end + 5, 1)]
        report = subprocess.run([PY, "-m", "guardian.cli.main", "investigate", "--store", store_url,
                                 "--start", f"{fault_at:.3f}", "--end", f"{t_end + 5:.3f}",
                                 "--json", "why are web requests failing?"],
                                env=ENV, capture_output=True, text=True, timeout=300)
        try:
            rep = json.loads(report.stdout)
            top = rep["root_causes"][0] if rep.get("root_causes") else {}
        except (ValueError, KeyError):
            rep, top = {}, {}
        out["investigate_top"] = {k: top.get(k) for k in ("service", "operation", "kind", "confidence")}
        out["investigate_names_remote_fault"] = top.get("service") == "stock"
    from capture.store.factory import open_store

    store = open_store(store_url)
    try:
        out.update(evaluate(store))
        out["span_loss"] = round(1 - (out["client_spans"] + out["server_spans"]) / (4 * requests), 4)
        out["relinked"] = {"with_epochs": relink(store, True), "without_epochs": relink(store, False)}
        stock = [s for s in store.spans(_flt("stock")) if s.kind == "SERVER"]
        out["fault_node"] = stock[0].resource.get("host.name") if stock else None
    finally:
        store.close()
    out["leftover_namespaces"] = leftovers()
    return out


def _flt(service: str):
    from capture.store.api import SpanFilter

    return SpanFilter(service=service, limit=1)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def outage(seconds: float = 60.0, rate: int = 5000, protocol: str = "http") -> dict:
    """The hub down for `seconds` while an agent's shipper gets `rate` spans/s, then up: how many
    spans were lost, the shipper process's peak memory, how long the backlog took to drain."""
    from capture.export.shipper import Shipper, make_transport
    from capture.span import Span
    from capture.store.factory import open_store
    from guardian.hub.hub import Hub

    port = free_port()
    ep = f"http://127.0.0.1:{port}" if protocol == "http" else f"127.0.0.1:{port}"
    work = tempfile.mkdtemp(prefix="guardian-outage-")
    ship = Shipper(make_transport(ep, protocol, timeout_s=2), work, backoff_s=(0.2, 2.0))
    res = {"service.name": "api", "host.name": "node-1", "process.pid": 1}
    tick, per_tick = 0.1, max(rate // 10, 1)
    sent, rss0, rss_max, slowest = 0, _rss_mb(), 0.0, 0.0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        now = time.time_ns()
        batch = [Span(name="GET /x", kind="SERVER", start_time_unix_nano=now, end_time_unix_nano=now + 1000,
                      resource=res, attributes={"http.response.status_code": 200, "n": sent + i})
                 for i in range(per_tick)]
        t = time.perf_counter()
        ship.submit(batch)
        slowest = max(slowest, time.perf_counter() - t)
        sent += per_tick
        rss_max = max(rss_max, _rss_mb())
        time.sleep(max(0.0, t0 + (sent / per_tick) * tick - time.monotonic()))
    achieved = sent / (time.monotonic() - t0)
    queued_on_disk = ship.spool.spans
    store = open_store(None)
    hub = Hub(store, "127.0.0.1", port if protocol == "grpc" else None,
              port if protocol == "http" else None).start()
    t1 = time.monotonic()
    while ship.exported < sent - ship.dropped and time.monotonic() - t1 < 600:
        time.sleep(0.2)
    drain_s = time.monotonic() - t1
    ship.close(10)
    hub.ingest.drain(120)
    stored = store.count()
    hub.stop()
    store.close()
    return {"outage_s": seconds, "rate_spans_per_s": round(achieved), "sent": sent,
            "queued_on_disk_at_restart": queued_on_disk, "dropped": ship.dropped,
            "stored": stored, "lost": sent - stored, "drain_s": round(drain_s, 1),
            "rss_mb_start": round(rss0), "rss_mb_max": round(rss_max),
            "submit_slowest_ms": round(slowest * 1000, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--ingest-spans", type=int, default=200_000, help="hub ingest bench size (0: skip)")
    p.add_argument("--skip-sim", action="store_true", help="only the ingest measurement")
    p.add_argument("--outage-s", type=float, default=60.0, help="hub outage to ride out (0: skip)")
    p.add_argument("--ring-pages", type=int, help="each agent's ring buffer in pages (small: heavy capture loss)")
    p.add_argument("--stall", type=float, default=0.0,
                   help="share of every 3 s each agent is stopped during the load (induced loss)")
    args = p.parse_args(argv)
    result: dict = {"load_avg_before": os.getloadavg()}
    if args.ingest_spans:
        for engine in ("chdb", "duckdb"):  # one engine per process: chDB has one data path per process
            r = subprocess.run([PY, "-m", "bench.hub_ingest", "--only", engine, "--spans",
                                str(args.ingest_spans)], env=ENV, capture_output=True, text=True, timeout=1800)
            result[f"ingest_{engine}"] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-500:]}
        result["ingest_spans_per_s"] = result["ingest_chdb"].get("hub_spans_per_s")
    if args.outage_s:
        r = subprocess.run([PY, "-c", f"import json; from bench.cluster import outage; "
                                      f"print(json.dumps(outage({args.outage_s})))"],
                           env=ENV, capture_output=True, text=True, timeout=1800)
        result["outage"] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-500:]}
    if not args.skip_sim:
        result.update(simulate(args.requests, args.conns, ring_pages=args.ring_pages, stall=args.stall))
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
