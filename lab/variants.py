"""Variants of recorded cases with spans as public data sets carry them, to test that the
investigator holds on them: no status codes, internal spans, sparse services, partial windows.

    python -m lab.variants evals/lab --out evals/lab-variants [--kinds nostatus,internal,sparse,partial]

Each variant is a full case folder (same contract); expected.json gets "variant".
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

from capture.span import Span, new_span_id

STATUS_ATTRS = ("http.response.status_code", "rpc.grpc.status_code", "db.response.status_code",
                "error.type", "exception.message")


def no_status(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """Status left unset and status attributes dropped, as many exporters and data sets do."""
    for s in spans:
        s.status_code, s.status_message = "UNSET", ""
        for k in STATUS_ATTRS:
            s.attributes.pop(k, None)
    return spans


def internal(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """Every SERVER span gets an INTERNAL child named after its handler; the spans that were
    its children hang below it (parent in the same service, as instrumented code makes)."""
    out = list(spans)
    mid: dict[str, str] = {}
    for s in spans:
        if s.kind == "SERVER":
            i = Span(name=f"handle {s.name}", kind="INTERNAL", start_time_unix_nano=s.start_time_unix_nano + 1000,
                     end_time_unix_nano=max(s.end_time_unix_nano - 1000, s.start_time_unix_nano + 1000),
                     resource=dict(s.resource), trace_id=s.trace_id, span_id=new_span_id(),
                     parent_span_id=s.span_id)
            mid[s.span_id] = i.span_id
            out.append(i)
    for s in spans:
        if s.parent_span_id in mid and s.kind != "SERVER":
            s.parent_span_id = mid[s.parent_span_id]
    return out


def sparse(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """Traces kept at 15 %: each service is seen a handful of times per minute."""
    keep = {t for t in {s.trace_id for s in spans} if rng.random() < 0.15}
    return [s for s in spans if s.trace_id in keep]


def partial(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """The data ends part-way into the fault: the window asked about runs past the data."""
    if exp["fault_class"] == "none":
        cut = exp["window_start_ns"] + (exp["window_end_ns"] - exp["window_start_ns"]) // 2
    else:
        cut = exp["fault_start_ns"] + (exp["fault_end_ns"] - exp["fault_start_ns"]) * 2 // 5
    return [s for s in spans if s.end_time_unix_nano <= cut]


KINDS = {"nostatus": no_status, "internal": internal, "sparse": sparse, "partial": partial}


def make(case: Path, out: Path, kind: str, seed: int = 0) -> Path:
    exp = json.loads((case / "expected.json").read_text())
    with gzip.open(case / "spans.jsonl.gz", "rt") as f:
        spans = [Span.from_dict(json.loads(line)) for line in f if line.strip()]
    spans = KINDS[kind](spans, random.Random(f"{seed}-{case.name}-{kind}"), exp)
    d = out / kind / case.name
    d.mkdir(parents=True, exist_ok=True)
    (d / "question.txt").write_text((case / "question.txt").read_text())
    (d / "expected.json").write_text(json.dumps({**exp, "variant": kind, "spans": len(spans)}, indent=2) + "\n")
    spans.sort(key=lambda s: s.start_time_unix_nano)
    with open(d / "spans.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(b"".join(s.json_line() for s in spans))
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.variants", description=__doc__.splitlines()[0])
    p.add_argument("cases", help="folder of case folders (e.g. evals/lab)")
    p.add_argument("--out", required=True)
    p.add_argument("--kinds", default=",".join(KINDS))
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
