"""Hub ingest: OTLP/HTTP in, cross-node linking, store, in spans/s, beside its baselines.

Agent-like traffic (gzip OTLP bodies of 2,000 spans; a CLIENT on one node and the SERVER of
the same exchange on another, 16 keep-alive connections, a request id in each query) is
posted to a hub on loopback from another process (agents are other processes), one thread per
node (each agent's shipper sends in order). In the same process and on the same batches:
  store_only        the store's append of the already decoded spans (the raw insert)
  decode_reference  OTLP decode through the protobuf runtime (otlp_proto.decode_message)
  decode_wire       the wire decoder to Spans (otlp_wire.decode)
  decode_rows       the hub's decoder (otlp_wire.decode_rows: Rows, attributes as JSON text)
  hub               end to end: first request to last span stored, 503s counted (backpressure);
                    hub_cpu_us_per_span is the hub process's CPU time per span (less noisy
                    than the rate on a shared machine)
One engine per process (chDB allows one data path per process). `--baseline DIR` runs the
same measurement from another checkout (e.g. main) right after each engine's, in one command.

    python -m bench.hub_ingest --json [--spans 200000] [--engines chdb,duckdb] [--baseline DIR]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pickle
import subprocess
import sys
import threading
import time

from capture.span import Span

PER_BODY = 2000
CONNS = 16


def traffic(spans: int, seed: int = 7) -> list[list[Span]]:
    """Batches as three agents ship them: web (node-1) calls api (node-2), api calls db-proxy
    (node-3); each exchange is a CLIENT span on the caller's node and a SERVER span on the
    callee's, 20-120 us apart on the wire; keep-alive connections reuse their 4-tuples."""
    import random

    rnd = random.Random(seed)
    t0 = time.time_ns()
    nodes = {n: {"service.name": svc, "host.name": n, "process.pid": 100 + i}
             for i, (n, svc) in enumerate((("node-1", "web"), ("node-2", "api"), ("node-3", "db-proxy")))}
    hops = (("node-1", "node-2", "10.77.0.2", 8080, "10.77.0.1"),
            ("node-2", "node-3", "10.77.0.3", 9090, "10.77.0.2"))
    per_node: dict[str, list[Span]] = {n: [] for n in nodes}
    free_at = [t0] * (2 * CONNS)  # a keep-alive connection carries one request at a time
    for n in range(spans // 2):
        cn, sn, saddr, sport, caddr = hops[n % 2]
        conn = (n // 2) % CONNS
        slot = (n % 2) * CONNS + conn
        start = max(t0 + n * 40_000, free_at[slot])  # 50k spans per second of stream time
        dur = rnd.randrange(300_000, 3_000_000)
        net = rnd.randrange(20_000, 120_000)
        free_at[slot] = start + dur + rnd.randrange(10_000, 50_000)
        attrs = {"http.request.method": "GET", "url.path": "/api/items", "url.query": f"rid={n}",
                 "server.address": saddr, "server.port": sport, "client.address": caddr,
                 "client.port": 40000 + conn, "network.transport": "tcp"}
        c = Span(name="GET /api/items", kind="CLIENT", start_time_unix_nano=start,
                 end_time_unix_nano=start + dur, status_code="UNSET", resource=nodes[cn],
                 attributes=dict(attrs))
        s = Span(name="GET /api/items", kind="SERVER", start_time_unix_nano=start + net,
                 end_time_unix_nano=start + dur - net, status_code="OK", resource=nodes[sn],
                 attributes={**attrs, "http.response.status_code": 200})
        per_node[cn].append(c)
        per_node[sn].append(s)
    for spans_of_node in per_node.values():
        spans_of_node.sort(key=lambda x: x.end_time_unix_nano)  # agents ship a span once it ended
    batches = []
    for spans_of_node in per_node.values():
        batches += [spans_of_node[i:i + PER_BODY] for i in range(0, len(spans_of_node), PER_BODY)]
    batches.sort(key=lambda b: b[0].start_time_unix_nano)  # agents ship roughly in time order
    return batches


def _rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def measure(engine: str, spans: int) -> dict:
    from capture.export.otlp_proto import decode_message, encode
    from capture.export import otlp_wire
    from capture.export.otlp_wire import decode
    from capture.store.factory import open_store
    from capture.traces.crossnode import CrossNodeLinker
    from guardian.hub.hub import Hub, tune_process

    batches = traffic(spans)
    bodies = [encode(b) for b in batches]
    total = sum(len(b) for b in batches)
    out: dict = {"engine": engine, "spans": total, "load_avg_before": os.getloadavg()}

    t = time.perf_counter()
    for body in bodies:
        decode_message(body)
    out["decode_reference_spans_per_s"] = _rate(total, time.perf_counter() - t)
    t = time.perf_counter()
    decoded = [decode(body)[0] for body in bodies]
    out["decode_wire_spans_per_s"] = _rate(total, time.perf_counter() - t)
    rows = getattr(otlp_wire, "decode_rows", None)
    if rows is not None:  # what the hub decodes with; the store's append takes it as well
        del decoded
        t = time.perf_counter()
        decoded = [rows(body)[0] for body in bodies]
        out["decode_rows_spans_per_s"] = _rate(total, time.perf_counter() - t)

    url = "chdb://" if engine == "chdb" else None
    store = open_store(url)
    t = time.perf_counter()
    for i in range(0, len(decoded), 10):  # the hub's writer takes up to 20k spans at a time
        store.append([s for b in decoded[i:i + 10] for s in b])
    out["store_only_spans_per_s"] = _rate(store.count(), time.perf_counter() - t)
    store.close()
    del decoded

    # One sender per node, each in its own order, as every agent's shipper sends its queue.
    by_node: dict[str, list[bytes]] = {}
    for b, body in zip(batches, bodies):
        by_node.setdefault(b[0].resource["host.name"], []).append(gzip.compress(body, 1))
    store = open_store(url)
    linker = CrossNodeLinker(window_s=1.0)  # several windows of stream time: steady state, not one flush
    tune_process()
    hub = Hub(store, "127.0.0.1", None, 0, linker=linker).start()
    sender = subprocess.Popen([sys.executable, "-m", "bench.hub_ingest", "--send",
                               f"http://127.0.0.1:{hub.http.port}/v1/traces"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    sender.stdin.write(pickle.dumps(list(by_node.values())))
    sender.stdin.close()
    assert sender.stdout.readline() == b"ready\n"  # imports and connections made: time from here

    cpu, t = time.process_time(), time.perf_counter()
    throttled = int(sender.stdout.readline())
    sender.wait(60)
    hub.ingest.close(300)  # flushes the linker: every span stored
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    stored = store.count()
    out.update(hub_spans_per_s=_rate(stored, elapsed), hub_seconds=round(elapsed, 2), stored=stored,
               hub_cpu_us_per_span=round(cpu / max(stored, 1) * 1e6, 1),
               throttled_requests=throttled, links=linker.linked,
               exchanges=total // 2, ambiguous=linker.stats["ambiguous"],
               stage_seconds={k: round(v, 2) for k, v in hub.ingest.seconds.items()},
               hub_vs_store_only=round(_rate(stored, elapsed) / max(out["store_only_spans_per_s"], 1), 2),
               load_avg_after=os.getloadavg())
    out.update(_truth(store))
    hub.stop()
    store.close()
    return out


def send(url: str) -> None:
    """The agents: bodies per node (pickled on stdin) posted in order, one thread per node;
    prints "ready", then the number of 503 answers once everything was accepted."""
    import httpx

    queues = pickle.loads(sys.stdin.buffer.read())
    throttled = [0] * len(queues)
    clients = [httpx.Client(headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
                            timeout=60) for _ in queues]

    def run(k: int) -> None:
        for body in queues[k]:
            while clients[k].post(url, content=body).status_code == 503:
                throttled[k] += 1
                time.sleep(0.05)

    print("ready", flush=True)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(queues))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(sum(throttled), flush=True)


def _truth(store) -> dict:
    """Links checked against the request id both halves carry (never read by the linker)."""
    from capture.store.api import SpanFilter

    clients, servers = {}, []
    for s in store.spans(SpanFilter(limit=10_000_000)):
        if s.kind == "CLIENT":
            clients[s.span_id] = s.attributes.get("url.query")
        else:
            servers.append((s.parent_span_id, s.attributes.get("url.query")))
    right = sum(1 for parent, rid in servers if parent in clients and clients[parent] == rid)
    wrong = sum(1 for parent, rid in servers if parent in clients and clients[parent] != rid)
    return {"linked_right": right, "linked_wrong": wrong, "unlinked": len(servers) - right - wrong}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--spans", type=int, default=200_000)
    p.add_argument("--engines", default="chdb,duckdb")
    p.add_argument("--baseline", metavar="DIR", help="also run from this checkout (e.g. /work/main)")
    p.add_argument("--only", choices=["chdb", "duckdb"], help=argparse.SUPPRESS)
    p.add_argument("--send", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.send:
        send(args.send)
        return 0
    if args.only:
        print(json.dumps(measure(args.only, args.spans)))
        return 0
    result: dict = {}
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for engine in args.engines.split(","):
        trees = [("", here)] + ([("baseline", os.path.abspath(args.baseline))] if args.baseline else [])
        for name, tree in trees:
            r = subprocess.run([sys.executable, "-m", "bench.hub_ingest", "--only", engine, "--spans",
                                str(args.spans)], capture_output=True, text=True, timeout=1800, cwd=tree,
                               env={**os.environ, "PYTHONPATH": tree})
            got = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-800:]}
            if name:
                result[engine][name] = got
            else:
                result[engine] = got
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0 if all("error" not in r for r in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
