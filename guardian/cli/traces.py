"""`guardian traces`, `guardian trace ID`, `guardian services`: read spans from a store file, a running
agent's API or a span file (--store | --api | --spans: guardian/cli/source.py)."""
from __future__ import annotations

import argparse
import json
import sys

from capture.span import Span
from capture.store.api import SpanFilter
from capture.store.window import WindowError
from guardian.cli.source import Source, SourceError, add_source_args, open_source

def _source_args(p: argparse.ArgumentParser, window: bool = True) -> None:
    add_source_args(p, window)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("traces", help="list traces matching a filter (newest first)",
                       description="Whole traces having a span that matches the filter. With --json: one "
                                   'trace per line, {"trace_id": ..., "spans": [span objects]}.')
    _source_args(p)
    p.add_argument("--service")
    p.add_argument("--operation", help="span name, e.g. 'GET /cart'")
    p.add_argument("--kind", choices=("SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"))
    p.add_argument("--status", choices=("OK", "ERROR", "UNSET"))
    p.add_argument("--min-duration", type=float, metavar="MS", help="spans at least this slow")
    p.add_argument("--attr", action="append", metavar="KEY=VALUE", help="attribute equality (repeatable)")
    p.add_argument("--limit", type=int, default=20, help="traces at most (default 20)")
    p.set_defaults(func=run_traces)

    t = sub.add_parser("trace", help="show one trace by id", description="Every span of one trace.")
    t.add_argument("trace_id", metavar="ID")
    _source_args(t, window=False)
    t.set_defaults(func=run_trace)

    s = sub.add_parser("services", help="list services with their RED", description="Services seen, with RED.")
    _source_args(s)
    s.set_defaults(func=run_services)


def _open(args: argparse.Namespace, command: str) -> Source:
    try:
        return open_source(args, command, must_exist=True)
    except (SourceError, WindowError, OSError, ValueError) as e:
        raise SystemExit(f"guardian {command}: {e}")


def _attrs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"guardian: --attr wants KEY=VALUE, got {item!r}")
        out[k] = v
    return out


def _summary(spans: list[Span]) -> str:
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids] or spans
    root = roots[0]
    start = min(s.start_time_unix_nano for s in spans)
    ms = (max(s.end_time_unix_nano for s in spans) - start) / 1e6
    status = "ERROR" if any(s.status_code == "ERROR" for s in spans) else "OK"
    services = len({s.service for s in spans})
    return (f"{spans[0].trace_id}  {root.service[:18]:<18} {root.name[:40]:<40} "
            f"{len(spans):>4} spans {services:>2} svc {ms:10.2f} ms  {status}")


def _tree(spans: list[Span]) -> list[str]:
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for s in spans:
        children.setdefault(s.parent_span_id if s.parent_span_id in ids else None, []).append(s)
    lines: list[str] = []
    t0 = min((s.start_time_unix_nano for s in spans), default=0)

    def walk(parent: str | None, depth: int) -> None:
        for s in sorted(children.get(parent, []), key=lambda x: x.start_time_unix_nano):
            lines.append(f"{'  ' * depth}{s.kind:<6} {s.service} {s.name}  +{(s.start_time_unix_nano - t0) / 1e6:.2f} ms "
                         f"{s.duration_ns / 1e6:.2f} ms {s.status_code}  [{s.span_id}]")
            walk(s.span_id, depth + 1)

    walk(None, 0)
    return lines


def run_traces(args: argparse.Namespace) -> int:
    src = _open(args, "traces")
    store, api = src.store, src.api
    attrs = _attrs(args.attr)
    min_ns = int(args.min_duration * 1e6) if args.min_duration is not None else None
    if store is not None:
        try:
            flt = SpanFilter(window=src.window, service=args.service, name=args.operation,
                             kind=args.kind, status_code=args.status, min_duration_ns=min_ns,
                             attributes=attrs, limit=max(args.limit * 50, 1000))
            traces = store.traces(flt, limit=args.limit)
        finally:
            store.close()
    else:
        body = {k: v for k, v in {"service": args.service, "operation": args.operation, "kind": args.kind,
                                  "status": args.status, "min_duration_ms": args.min_duration,
                                  "attributes": attrs or None, "since": args.since, "start": args.start,
                                  "end": args.end, "order": "start", "limit": 100}.items() if v is not None}
        found = api.post("/v1/tools/search_spans", body)
        if "error" in found:
            print(f"guardian traces: {found['error']} ({found.get('hint', '')})", file=sys.stderr)
            return 2
        traces = []
        for tid in list(reversed(found.get("trace_ids", [])))[: args.limit]:
            got = api.get(f"/v1/traces/{tid}")
            if got:
                traces.append([Span.from_dict(d) for d in got["spans"]])
    for spans in traces:
        if args.json:
            sys.stdout.write(json.dumps({"trace_id": spans[0].trace_id, "spans": [s.to_dict() for s in spans]},
                                        separators=(",", ":"), default=str) + "\n")
        else:
            sys.stdout.write(_summary(spans) + "\n")
    return 0


def run_trace(args: argparse.Namespace) -> int:
    src = _open(args, "trace")
    store, api = src.store, src.api
    tid = args.trace_id.lower()
    if store is not None:
        try:
            spans = store.trace(tid)
        finally:
            store.close()
    else:
        got = api.get(f"/v1/traces/{tid}")
        spans = [Span.from_dict(d) for d in got["spans"]] if got else []
    if not spans:
        print(f"guardian trace: {tid} not found", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(json.dumps({"trace_id": tid, "spans": [s.to_dict() for s in spans]}, default=str) + "\n")
    else:
        sys.stdout.write("\n".join(_tree(spans)) + "\n")
    return 0


def run_services(args: argparse.Namespace) -> int:
    src = _open(args, "services")
    store, api = src.store, src.api
    if store is not None:
        try:
            window = src.window or store.time_range()
            rows = []
            if window is not None:
                red = {r.service: r for r in store.red(window)}
                for name in store.services(window):
                    r = red.get(name)
                    rows.append({"name": name, "count": r.count if r else 0, "errors": r.errors if r else 0,
                                 "error_rate": r.error_rate if r else 0.0, "rate_per_s": r.rate_per_s if r else 0.0,
                                 "p50_ms": r.p50_ms if r else 0.0, "p95_ms": r.p95_ms if r else 0.0,
                                 "p99_ms": r.p99_ms if r else 0.0})
        finally:
            store.close()
    else:
        got = api.get("/v1/services", since=args.since, start=args.start, end=args.end) or {}
        rows = got.get("services", [])
    if args.json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return 0
    sys.stdout.write(f"{'service':<28} {'requests':>9} {'err%':>6} {'req/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}\n")
    for r in rows:
        sys.stdout.write(f"{r['name'][:28]:<28} {r.get('count', 0):>9} {100 * r.get('error_rate', 0):>6.1f} "
                         f"{r.get('rate_per_s', 0):>9.2f} {r.get('p50_ms', 0):>9.2f} {r.get('p95_ms', 0):>9.2f} "
                         f"{r.get('p99_ms', 0):>9.2f}\n")
    return 0
