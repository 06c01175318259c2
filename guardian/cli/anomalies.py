"""`guardian anomalies`: what changed vs the baseline window, ranked (table or --json).

Reads spans from --store, --api or --spans (guardian/cli/source.py), like every span-reading command.
"""
from __future__ import annotations

import argparse
import json
import sys

from capture.store.window import WindowError, default_window, fmt_ns, split_baseline
from guardian.cli.source import Source, SourceError, add_source_args, open_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("anomalies", help="list error, latency, traffic and saturation anomalies",
                       description="Compare the window with a baseline (the window just before, or "
                                   "the first third of recorded data) and list what changed, worst first.")
    add_source_args(p)
    p.add_argument("--service", help="only anomalies of this service")
    p.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _local(src: Source, args: argparse.Namespace) -> dict:
    from tools.anomalies import anomalies

    window, baseline = split_baseline(src.store, src.window or default_window(src.store))
    found = anomalies(src.store, window, baseline)
    if args.service:
        found = [a for a in found if args.service in (a.service, a.caller)]
    return {"window": {"start_ns": window.start_ns, "end_ns": window.end_ns},
            "baseline": {"start_ns": baseline.start_ns, "end_ns": baseline.end_ns},
            "anomalies": [a.model_dump(mode="json") for a in found[: max(args.limit, 1)]]}


def _over_api(src: Source, args: argparse.Namespace) -> dict:
    got = src.api.get("/v1/anomalies", since=args.since, start=args.start, end=args.end, service=args.service,
                      limit=min(max(args.limit, 1), 100))
    if got is None or "error" in got:
        raise ValueError(f"{(got or {}).get('error', 'no anomalies endpoint')} ({(got or {}).get('hint', '')})")
    return {k: got[k] for k in ("window", "baseline", "anomalies")}


def run(args: argparse.Namespace) -> int:
    try:
        src = open_source(args, "anomalies")
    except (SourceError, WindowError, OSError, ValueError, KeyError) as e:
        print(f"guardian anomalies: {e}", file=sys.stderr)
        return 2
    try:
        result = _over_api(src, args) if src.api is not None else _local(src, args)
    except ValueError as e:
        print(f"guardian anomalies: {e}", file=sys.stderr)
        return 2
    finally:
        src.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    window, baseline = result["window"], result["baseline"]
    print(f"window {fmt_ns(window['start_ns'])} to {fmt_ns(window['end_ns'])},"
          f" baseline {fmt_ns(baseline['start_ns'])} to {fmt_ns(baseline['end_ns'])}")
    if not result["anomalies"]:
        print("no anomalies: everything is within its baseline")
    for a in result["anomalies"]:
        trace = a["trace_ids"][0] if a.get("trace_ids") else "-"
        print(f"{a['score']:6.2f}  {a['kind']:<12} {a['description']}  [trace {trace}]")
    return 0
