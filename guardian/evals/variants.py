"""Turn any eval case into spans as public data sets carry them: no status codes, internal
spans (parent in the same service), sparse services (traces thinned), partial windows (data
ends before the window does). Ground truth is copied unchanged, except by `calm`: a no-fault
window cut from the part of a case before its fault began.

Run: python -m guardian.evals.variants SRC_DIR DST_DIR [--variant NAME ...] [--keep 0.25]
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
from pathlib import Path
from typing import Callable

from capture.span import Span
from guardian.evals.scenarios import load_scenarios, read_spans

from guardian.investigate.signals import STATUS_KEYS  # what carries a status, to strip


def no_status(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    for s in spans:
        s.status_code, s.status_message = "UNSET", ""
        for k in STATUS_KEYS:
            s.attributes.pop(k, None)
    return spans


def internal(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """Each SERVER/CONSUMER span gets an INTERNAL handler span holding its work and calls."""
    kids: dict[str | None, list[Span]] = {}
    for s in spans:
        kids.setdefault(s.parent_span_id, []).append(s)
    out = list(spans)
    for s in spans:
        if s.kind not in ("SERVER", "CONSUMER"):
            continue
        d = s.duration_ns
        h = Span(name=f"handle {s.name}", kind="INTERNAL",
                 start_time_unix_nano=s.start_time_unix_nano + d // 50,
                 end_time_unix_nano=s.end_time_unix_nano - d // 50, resource=s.resource,
                 trace_id=s.trace_id, span_id=f"{rng.getrandbits(64) or 1:016x}",
                 parent_span_id=s.span_id)
        for c in kids.get(s.span_id, []):
            if c.service == s.service:
                c.parent_span_id = h.span_id
        out.append(h)
    return out


def sparse(spans: list[Span], rng: random.Random, exp: dict, keep: float = 0.25) -> list[Span]:
    """Keep a share of whole traces: every service sees a handful of calls a minute."""
    ids = sorted({s.trace_id for s in spans})
    kept = {t for t in ids if rng.random() < keep}
    return [s for s in spans if s.trace_id in kept]


def partial(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """Data ends before the window does: the last third of the fault (or window) is missing."""
    end = max(s.end_time_unix_nano for s in spans)
    start = exp.get("fault_start_ns") or exp.get("window_start_ns") or min(
        s.start_time_unix_nano for s in spans)
    stop = exp.get("fault_end_ns") or exp.get("window_end_ns") or end
    cut = start + (min(stop, end) - start) * 2 // 3
    if not exp.get("window_end_ns"):
        exp["window_end_ns"] = end + 1  # the question still asks about the whole window
        exp.setdefault("window_start_ns", min(s.start_time_unix_nano for s in spans))
    return [s for s in spans if s.end_time_unix_nano <= cut]


CALM_SHARE = 0.4  # of the time before the fault, the last share is the calm window asked about


def calm(spans: list[Span], rng: random.Random, exp: dict) -> list[Span]:
    """A no-fault window: only what ended before the fault began; its last part is asked
    about, the rest is its baseline. Nothing should be named as a root cause there."""
    first = min(s.start_time_unix_nano for s in spans)
    stop = exp.get("fault_start_ns") or exp.get("window_end_ns") or max(
        s.end_time_unix_nano for s in spans)
    exp.update(service="", aliases=[], operation=None, kind="none", kind_aliases=[],
               fault_class="none", fault_start_ns=0, fault_end_ns=0, red_herrings=[],
               neighbours=[], window_start_ns=stop - int((stop - first) * CALM_SHARE),
               window_end_ns=stop)
    return [s for s in spans if s.end_time_unix_nano < stop]


VARIANTS: dict[str, Callable[[list[Span], random.Random, dict], list[Span]]] = {
    "nostatus": no_status, "internal": internal, "sparse": sparse, "partial": partial,
}
NO_FAULT = {"calm": calm}  # changes the ground truth: never combined with the others


def make_variant(src: Path, dst: Path, names: list[str], seed: int = 7) -> Path:
    """Write case `src` transformed by the named variants (applied in order) to folder dst."""
    exp = json.loads((src / "expected.json").read_text())
    spans = [s for batch in read_spans(src) for s in batch]
    rng = random.Random(seed)
    for n in names:
        spans = {**VARIANTS, **NO_FAULT}[n](spans, rng, exp)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "question.txt", dst / "question.txt")
    exp["variant"] = "+".join(names)
    (dst / "expected.json").write_text(json.dumps(exp, indent=2) + "\n")
    spans.sort(key=lambda s: s.start_time_unix_nano)
    with open(dst / "spans.jsonl.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(b"".join(s.json_line() for s in spans))
    return dst


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path, help="a folder of cases (e.g. evals/scenarios)")
    ap.add_argument("dst", type=Path)
    ap.add_argument("--variant", action="append", choices=[*VARIANTS, "all"],
                    help="repeatable; 'all' = every variant on its own and all of them together")
    args = ap.parse_args(argv)
    chosen = args.variant or ["all"]
    combos = ([[v] for v in VARIANTS] + [list(VARIANTS)]) if "all" in chosen else [chosen]
    for sc in load_scenarios(args.src):
        for combo in combos:
            make_variant(sc.path, args.dst / f"{sc.name}__{'+'.join(combo)}", combo)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
