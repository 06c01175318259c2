"""How much of a case's traffic the capture kept: the load generator's requests seen in the
window against the rate it was set to (open-loop, so it sends that many whatever the fault).
Well below 1 means the capture dropped events (its ring buffer overflowed on a starved host)
or the load generator itself fell behind. Written to expected.json as `entry_coverage`.

    python -m lab.coverage evals/lab evals/heldout [--write]
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

import orjson

from lab.topology import LOADS


def entry_rate(topology: str) -> float:
    """Requests per second the load generator sends at load factor 1."""
    if topology == "shop":
        from lab.topologies.shop import BASE_RATE

        return BASE_RATE
    from lab.topologies.specs import SPECS

    return sum(rate for _, _, rate in SPECS[topology]["entries"])


def coverage(d: Path) -> float:
    exp = json.loads((d / "expected.json").read_text())
    ws, we = exp["window_start_ns"], exp["window_end_ns"]
    seen = 0
    with gzip.open(d / "spans.jsonl.gz", "rb") as f:
        for line in f:
            s = orjson.loads(line)
            if (s["kind"] == "CLIENT" and s.get("resource", {}).get("service.name") == "loadgen"
                    and ws <= s["start_time_unix_nano"] < we):
                seen += 1
    sent = entry_rate(exp["topology"]) * LOADS[exp["load"]] * (we - ws) / 1e9
    return round(seen / sent, 2) if sent else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.coverage", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="case folders, or folders of case folders")
    p.add_argument("--write", action="store_true", help="store it in each expected.json as entry_coverage")
    a = p.parse_args(argv)
    cases = []
    for d in map(Path, a.dirs):
        cases += [d] if (d / "expected.json").exists() else sorted(c for c in d.iterdir() if (c / "expected.json").exists())
    for c in cases:
        cov = coverage(c)
        print(f"{c}: {cov}")
        if a.write:
            exp = json.loads((c / "expected.json").read_text())
            exp["entry_coverage"] = cov
            (c / "expected.json").write_text(json.dumps(exp, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
