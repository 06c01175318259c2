"""`guardian eval DIR`: score the investigator (and the LLM agent when configured) on scenarios."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="score investigators on recorded fault scenarios",
                       description="Run every scenario folder under DIR (question.txt, expected.json, "
                                   "spans.jsonl[.gz]) through the investigator(s) and report top-1/top-3 "
                                   "accuracy of the root cause and seconds per case.")
    p.add_argument("dir", metavar="DIR", help="e.g. evals/scenarios")
    p.add_argument("--engine", choices=("auto", "deterministic", "llm", "all", "local",
                                        "llm:local-0.5b", "llm:local-1.5b"), default="auto",
                   help="auto (default): deterministic, plus llm when one is configured; "
                        "local: deterministic and both local models (make setup-llm)")
    p.add_argument("--only", action="append", metavar="NAME", help="only this scenario (repeatable)")
    p.add_argument("--generate", action="store_true",
                   help="first (re)generate the built-in seeded scenarios into DIR")
    p.add_argument("--min-top1", type=float, metavar="SHARE",
                   help="exit 1 when an engine's top-1 accuracy is below this (0..1)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from guardian.evals.runner import run_eval, table
    from guardian.evals.scenarios import write_scenarios
    from guardian.investigate.engine import llm_configured

    root = Path(args.dir)
    if args.generate:
        write_scenarios(root, args.only)
    if not root.is_dir():
        print(f"guardian eval: {root} is not a folder", file=sys.stderr)
        return 2
    if args.engine in ("auto", "all"):
        engines = ["deterministic"] + (["llm"] if llm_configured() or args.engine == "all" else [])
    elif args.engine == "local":
        engines = ["deterministic", "llm:local-0.5b", "llm:local-1.5b"]
    else:
        engines = [args.engine]
    result = run_eval(root, engines, args.only)
    if not result.cases:
        print(f"guardian eval: no scenario under {root}", file=sys.stderr)
        return 2
    print(json.dumps(result.model_dump(mode="json"), indent=2) if args.json else table(result))
    if args.min_top1 is not None and any(s.top1 < args.min_top1 for s in result.scores):
        return 1
    return 0
