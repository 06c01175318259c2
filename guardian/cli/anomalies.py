"""`guardian anomalies`: what changed vs the baseline window, ranked (table or --json)."""
from __future__ import annotations

import argparse
import json
import sys

from guardian.cli.investigate import add_source_args, open_source
from capture.store.window import WindowError, default_window, fmt_ns, split_baseline


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="list error, latency, traffic and saturation anomalies",
                       description="Compare the window with a baseline (the window just before, or "
                                   "the first third of recorded data) and list what changed, worst first.")
    add_source_args(p)
    p.add_argument("--service", help="only anomalies of this service")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tools.anomalies import anomalies

    try:
        store, window = open_source(args)
    except (WindowError, OSError, ValueError, KeyError) as e:
        print(f"guardian anomalies: {e}", file=sys.stderr)
        return 2
    try:
        window, baseline = split_baseline(store, window or default_window(store))
        found = anomalies(store, window, baseline)
    finally:
        store.close()
    if args.service:
        found = [a for a in found if args.service in (a.service, a.caller)]
    found = found[: max(args.limit, 1)]
    if args.json:
        print(json.dumps({"window": {"start_ns": window.start_ns, "end_ns": window.end_ns},
                          "baseline": {"start_ns": baseline.start_ns, "end_ns": baseline.end_ns},
                          "anomalies": [a.model_dump(mode="json") for a in found]}, indent=2))
        return 0
    print(f"window {fmt_ns(window.start_ns)} to {fmt_ns(window.end_ns)},"
          f" baseline {fmt_ns(baseline.start_ns)} to {fmt_ns(baseline.end_ns)}")
    if not found:
        print("no anomalies: everything is within its baseline")
    for a in found:
        trace = a.trace_ids[0] if a.trace_ids else "-"
        print(f"{a.score:6.2f}  {a.kind:<12} {a.description}  [trace {trace}]")
    return 0
