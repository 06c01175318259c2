"""Cases whose label the recording cannot vouch for: no-fault windows recorded while another
topology on the same host had a fault under way (expected.json's `concurrent_faults`), and
cpu_contention cases of the old mechanism (hogs at equal weight on the service's CPU, which
left a light service's own time unchanged; those cases carry no `effect.server_p50_growth`).
Lists them; `--move-to DIR` takes them out of the case folder. Reads the labels only, never
the investigator's answers.

    python -m lab.stale evals/lab [--move-to build/stale]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def why_stale(exp: dict) -> str | None:
    if exp.get("fault_class") == "none" and exp.get("concurrent_faults"):
        return "no fault here, but " + ", ".join(
            f"{x.get('topology')}:{x.get('fault_class')}" for x in exp["concurrent_faults"]) + " beside it"
    if exp.get("fault_class") == "cpu_contention" and "server_p50_growth" not in (exp.get("effect") or {}):
        return "cpu_contention of the old mechanism (equal-weight hogs)"
    return None


def stale(root: Path) -> list[tuple[Path, str]]:
    out = []
    for f in sorted(root.glob("*/expected.json")):
        try:
            why = why_stale(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
        if why:
            out.append((f.parent, why))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.stale", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+")
    p.add_argument("--move-to", help="move the cases found here (one sub-folder per input folder)")
    args = p.parse_args(argv)
    for d in map(Path, args.dirs):
        found = stale(d)
        for case, why in found:
            print(f"{case}\t{why}", flush=True)
            if args.move_to:
                dest = Path(args.move_to) / d.name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.move(str(case), str(dest / case.name))
        print(f"{d}: {len(found)} stale cases" + (f" (moved to {args.move_to})" if args.move_to and found else ""),
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
