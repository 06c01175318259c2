"""`guardian investigate "question"`: what is broken and why, as a report (markdown or --json).

Reads spans from --store, --api or --spans (guardian/cli/source.py), like every span-reading command.
"""
from __future__ import annotations

import argparse
import json
import sys

from capture.store.window import WindowError
from guardian.cli.source import Source, SourceError, add_source_args, open_source


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("investigate", help="answer 'what is broken and why' with evidence",
                       description="Investigate a question over the captured spans: root causes "
                                   "ranked with confidence and evidence (trace ids), blast radius, "
                                   "suggested fix. Uses the LLM agent when one is configured "
                                   "(GUARDIAN_LLM), else the deterministic investigator.")
    p.add_argument("question", help='e.g. "why is checkout slow?"')
    add_source_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--engine", choices=("auto", "deterministic", "llm"), default=None,
                   help="default auto: llm when configured, else deterministic (over --api: the agent's api.engine)")
    p.set_defaults(func=run)


def _over_api(src: Source, args: argparse.Namespace) -> int:
    body = {k: v for k, v in {"question": args.question, "since": args.since, "start": args.start,
                              "end": args.end, "engine": args.engine}.items() if v is not None}
    headers = {} if args.json else {"Accept": "text/markdown"}
    r = src.api.send("POST", "/v1/investigate", json=body, headers=headers)
    if r.status_code >= 400:
        detail = r.json().get("detail", r.text) if "json" in r.headers.get("content-type", "") else r.text
        print(f"guardian investigate: the agent API answered {r.status_code}: {detail}", file=sys.stderr)
        return 2 if r.status_code < 500 else 1
    print(json.dumps(r.json(), indent=2) if args.json else r.text.rstrip("\n"))
    return 0


def run(args: argparse.Namespace) -> int:
    from guardian.investigate.engine import investigate

    try:
        src = open_source(args, "investigate")
    except (SourceError, WindowError, OSError, ValueError, KeyError) as e:
        print(f"guardian investigate: {e}", file=sys.stderr)
        return 2
    try:
        if src.api is not None:
            return _over_api(src, args)
        if src.store.count() == 0:
            print(f"guardian investigate: the store is empty ({src.what}; capture or import spans, or pass"
                  " --store/--api/--spans)", file=sys.stderr)
            return 1
        report = investigate(src.store, args.question, src.window, engine=args.engine or "auto")
    finally:
        src.close()
    print(json.dumps(report.model_dump(mode="json"), indent=2) if args.json else report.to_markdown())
    return 0
