"""`guardian import FILE`: load traces recorded elsewhere (OTLP JSON lines, CSV) into a store."""
from __future__ import annotations

import argparse
import sys

from capture.importers.csv_traces import parse_mapping
from capture.importers.load import FORMATS, read_spans

BATCH = 20_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "import", help="load traces from OTLP JSON lines or CSV into a store file",
        description="Load traces recorded elsewhere so investigations run on them. OTLP JSON: the "
                    "OpenTelemetry Collector file exporter's format (one ExportTraceServiceRequest "
                    "per line). CSV: one span per row; name the columns with --map.")
    p.add_argument("file", metavar="FILE", nargs="+",
                   help="one or more files; `guardian capture --json` output is read too (e.g. one per host)")
    p.add_argument("--store", metavar="PATH",
                   help="store file to write into (created if missing); without it, print spans as JSON lines")
    p.add_argument("--format", choices=FORMATS, default="auto", help="default: by extension/content")
    p.add_argument("--map", action="append", metavar="FIELD=COLUMN",
                   help="CSV column for a field (trace_id, span_id, parent_id, service, operation, start, "
                        "end, duration, status, kind); repeat or comma-separate. Default: the field name")
    p.add_argument("--duration-unit", choices=("ns", "us", "ms", "s"), default="ms",
                   help="unit of the CSV duration column (default ms)")
    p.add_argument("--link", action="store_true",
                   help="link spans that have no parent (captured without propagation) across all the "
                        "files, e.g. captures of several hosts")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        mapping = parse_mapping(args.map)
        spans = (s for f in args.file for s in read_spans(f, args.format, mapping, args.duration_unit))
        if args.link:
            from capture.traces.linker import link_all

            spans = iter(link_all(spans))
        if not args.store:
            n = 0
            for s in spans:
                sys.stdout.write(s.to_json() + "\n")
                n += 1
            print(f"{n} spans", file=sys.stderr)
            return 0
        from capture.store.factory import open_store

        store = open_store(args.store)
        try:
            n, traces, batch = 0, set(), []
            for s in spans:
                batch.append(s)
                traces.add(s.trace_id)
                if len(batch) >= BATCH:
                    n += store.append(batch)
                    batch = []
            n += store.append(batch)
        finally:
            store.close()
    except (ValueError, KeyError, UnicodeDecodeError) as e:
        print(f"guardian import: {e}", file=sys.stderr)
        return 2
    print(f"imported {n} spans ({len(traces)} traces) into {args.store}", file=sys.stderr)
    return 0
