"""`guardian investigate "question"`: what is broken and why, as a report (markdown or --json).

Also holds the window/store options that `guardian anomalies` shares.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from capture.store.api import SpanStore, TimeWindow
from capture.store.window import WindowError, resolve_window


def add_source_args(p: argparse.ArgumentParser) -> None:
    """--since | --start/--end, --store, --spans."""
    w = p.add_argument_group("window (default: last 15 min, or the whole range of recorded data)")
    w.add_argument("--since", metavar="DURATION", help="window ending now, e.g. 15m, 2h")
    w.add_argument("--start", metavar="T", help="window start: ISO-8601 or unix seconds")
    w.add_argument("--end", metavar="T", help="window end: ISO-8601 or unix seconds (default now)")
    p.add_argument("--store", metavar="PATH", default=os.environ.get("GUARDIAN_STORE_PATH"),
                   help="store file (default $GUARDIAN_STORE_PATH)")
    p.add_argument("--spans", metavar="PATH",
                   help="load spans from a JSON-lines file (.jsonl[.gz]) or an eval scenario folder"
                        " into an in-memory store instead")


def open_source(args: argparse.Namespace) -> tuple[SpanStore, TimeWindow | None]:
    """The store and the window the options ask for (None = the store's default)."""
    from capture.sources.spanfile import read_spans
    from capture.store.factory import open_store

    if args.spans:
        store = open_store(None)
        for batch in read_spans(args.spans):
            store.append(batch)
    else:
        store = open_store(args.store)
    if args.since is None and args.start is None and args.end is None:
        return store, None
    if args.since is not None and (args.start or args.end):
        store.close()
        raise WindowError("give --since or --start/--end, not both")
    return store, resolve_window(store, args.since, args.start, args.end)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("investigate", help="answer 'what is broken and why' with evidence",
                       description="Investigate a question over the captured spans: root causes "
                                   "ranked with confidence and evidence (trace ids), blast radius, "
                                   "suggested fix. Uses the LLM agent when one is configured "
                                   "(GUARDIAN_LLM), else the deterministic investigator.")
    p.add_argument("question", help='e.g. "why is checkout slow?"')
    add_source_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--engine", choices=("auto", "deterministic", "llm"), default="auto",
                   help="default auto: llm when configured, else deterministic")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guardian.investigate.engine import investigate

    try:
        store, window = open_source(args)
    except (WindowError, OSError, ValueError, KeyError) as e:
        print(f"guardian investigate: {e}", file=sys.stderr)
        return 2
    try:
        if store.count() == 0:
            print("guardian investigate: the store is empty (capture or import spans, or pass"
                  " --store/--spans)", file=sys.stderr)
            return 1
        report = investigate(store, args.question, window, engine=args.engine)
    finally:
        store.close()
    print(json.dumps(report.model_dump(mode="json"), indent=2) if args.json else report.to_markdown())
    return 0
