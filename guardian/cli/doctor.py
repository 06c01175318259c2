"""guardian doctor: check the eBPF prerequisites and print a fix for each one missing."""
from __future__ import annotations

import json

from capture.prereqs import run_checks


def register(sub) -> None:
    p = sub.add_parser("doctor", help="check what eBPF capture needs on this machine")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps([{"name": c.name, "ok": c.ok, "detail": c.detail, "fix": c.fix,
                           "required": c.required} for c in checks], indent=2))
    else:
        for c in checks:
            mark = "ok " if c.ok else ("FAIL" if c.required else "warn")
            print(f"[{mark}] {c.name}: {c.detail}")
            if not c.ok:
                print(f"       fix: {c.fix}")
    failed = [c for c in checks if c.required and not c.ok]
    if not args.json:
        print("ready for eBPF capture" if not failed else f"{len(failed)} problem(s) to fix")
    return 1 if failed else 0
