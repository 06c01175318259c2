"""Count recorded cases per topology and fault class, with their size on disk.

    python -m lab.summary evals/lab evals/heldout
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def summarize(root: Path) -> str:
    cases = sorted(p.parent for p in root.glob("*/expected.json"))
    by = Counter()
    size = 0
    for d in cases:
        e = json.loads((d / "expected.json").read_text())
        by[(e["topology"], e["fault_class"])] += 1
        size += sum(f.stat().st_size for f in d.iterdir())
    lines = [f"{root}: {len(cases)} cases, {size / 2**20:.1f} MiB"]
    for topo in sorted({t for t, _ in by}):
        per = {c: n for (t, c), n in sorted(by.items()) if t == topo}
        lines.append(f"  {topo} ({sum(per.values())}): " + ", ".join(f"{c} {n}" for c, n in per.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["evals/lab", "evals/heldout"]:
        print(summarize(Path(arg)))
