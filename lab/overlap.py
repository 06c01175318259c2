"""No-fault cases recorded while another topology on the same host had a fault under way
(expected.json's `concurrent_faults`): their label says nothing was wrong, which the host
cannot vouch for. Lists them; `--move-to DIR` takes them out of the case folder. Reads the
labels only, never the investigator's answers.

    python -m lab.overlap evals/lab [--move-to build/overlapped/lab]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def overlapped(root: Path) -> list[tuple[Path, list[dict]]]:
    out = []
    for f in sorted(root.glob("*/expected.json")):
        try:
            exp = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if exp.get("fault_class") == "none" and exp.get("concurrent_faults"):
            out.append((f.parent, exp["concurrent_faults"]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.overlap", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+")
    p.add_argument("--move-to", help="move the cases found here (one sub-folder per input folder)")
    args = p.parse_args(argv)
    for d in map(Path, args.dirs):
        found = overlapped(d)
        for case, faults in found:
            what = ", ".join(f"{x.get('topology')}:{x.get('fault_class')}" for x in faults)
            print(f"{case}\t{what}")
            if args.move_to:
                dest = Path(args.move_to) / d.name
                dest.mkdir(parents=True, exist_ok=True)
                shutil.move(str(case), str(dest / case.name))
        print(f"{d}: {len(found)} no-fault cases overlapped another topology's fault"
              + (f" (moved to {args.move_to})" if args.move_to and found else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
