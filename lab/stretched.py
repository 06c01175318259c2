"""Spans of recorded cases that look stretched to their connection's next use: longer than
`--min-ms` and ending within `--near-ms` after a later span of the same process, kind, protocol
and connection began (a request whose answer the capture missed, ended by the next one's).
Counts per protocol and kind, and the cases holding them. Reads spans only.

    python -m lab.stretched evals/lab [--min-ms 100] [--near-ms 5] [--json]
"""
from __future__ import annotations

import argparse
import bisect
import gzip
import json
from collections import defaultdict
from pathlib import Path


def stretched(spans: list[dict], min_ns: int, near_ns: int) -> list[dict]:
    """The spans of `spans` (one case, as spans.jsonl carries them) that end just after a later
    span of their connection began."""
    by_conn: dict[tuple, list[dict]] = defaultdict(list)
    for s in spans:
        a = s.get("attributes") or {}
        if a.get("network.transport", "tcp") != "tcp" or a.get("client.port") is None:
            continue
        proto = a.get("db.system") or a.get("network.protocol.name")
        by_conn[(proto, s.get("kind"), (s.get("resource") or {}).get("process.pid"), a.get("client.port"),
                 a.get("server.port"))].append(s)
    out = []
    for group in by_conn.values():
        starts = sorted(s["start_time_unix_nano"] for s in group)
        for s in group:
            start, end = s["start_time_unix_nano"], s["end_time_unix_nano"]
            later = bisect.bisect_right(starts, end) - 1  # the last span begun before this one ended
            if end - start > min_ns and later >= bisect.bisect_right(starts, start) and end - starts[later] <= near_ns:
                out.append(s)
    return out


def count(root: Path, min_ms: float = 100.0, near_ms: float = 5.0) -> dict[str, dict]:
    """{"protocol KIND": {"spans", "stretched", "cases"}} over the cases under `root`."""
    table: dict[str, dict] = defaultdict(lambda: {"spans": 0, "stretched": 0, "cases": set()})
    for path in sorted(root.glob("*/spans.jsonl.gz")):
        with gzip.open(path, "rt") as f:
            spans = [json.loads(line) for line in f if line.strip()]
        for s in spans:
            a = s.get("attributes") or {}
            table[f"{a.get('db.system') or a.get('network.protocol.name')} {s.get('kind')}"]["spans"] += 1
        for s in stretched(spans, int(min_ms * 1e6), int(near_ms * 1e6)):
            a = s["attributes"]
            row = table[f"{a.get('db.system') or a.get('network.protocol.name')} {s.get('kind')}"]
            row["stretched"] += 1
            row["cases"].add(path.parent.name)
    return {k: {**v, "cases": len(v["cases"])} for k, v in sorted(table.items())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.stretched", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--min-ms", type=float, default=100.0)
    ap.add_argument("--near-ms", type=float, default=5.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    table = count(args.root, args.min_ms, args.near_ms)
    if args.json:
        print(json.dumps(table))
    else:
        for key, row in table.items():
            print(f"{key:24} {row['spans']:8} spans {row['stretched']:6} stretched in {row['cases']} cases")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
