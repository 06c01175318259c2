"""Variants of the recorded lab cases with spans as public data sets carry them (no status codes,
internal spans, sparse services, partial windows; or a no-fault window before each fault), written as out/<variant>/<case> folders.

    python -m lab.variants evals/lab --out evals/lab-variants [--kinds nostatus,internal,sparse,partial] [--every N]

The transforms are guardian.evals.variants' (one copy); this adds the lab's folder layout and --every.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guardian.evals.variants import NO_FAULT, VARIANTS, make_variant

KINDS = tuple(VARIANTS)


def make(case: Path, out: Path, kind: str, seed: int = 0) -> Path:
    """Case folder `case` as variant `kind`, written to out/kind/<case name>."""
    return make_variant(case, out / kind / case.name, [kind], seed=seed)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.variants", description=__doc__.splitlines()[0])
    p.add_argument("cases", help="folder of case folders (e.g. evals/lab)")
    p.add_argument("--out", required=True)
    p.add_argument("--kinds", default=",".join(KINDS),
                   help=f"any of {','.join([*KINDS, *NO_FAULT])} (calm: a no-fault window per case)")
    p.add_argument("--every", type=int, default=1, help="only every n-th case (keeps the set small)")
    args = p.parse_args(argv)
    cases = sorted(c.parent for c in Path(args.cases).glob("*/expected.json"))[::args.every]
    for kind in args.kinds.split(","):
        for c in cases:
            make(c, Path(args.out), kind)
        print(f"{kind}: {len(cases)} cases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
