"""Make recorded cases smaller without touching what the question is about: baseline traces
sampled whole, ordinary traces (a shape seen many times, no error, no span slower than the
baseline's p95 for its operation) thinned at one share in baseline and window alike, every
other trace kept, trace and span ids renumbered in order (they are the linker's, not the
services'; random ids are most of the gzip), times to the microsecond. Deterministic; a case is
shrunk once (expected.json then has ordinary_trace_share); never reads the labels.

    python -m lab.shrink evals/lab evals/heldout [--budget 1500]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import orjson

BASELINE_SPANS = 2500  # no fewer than the recorder's --max-baseline-spans ever kept
BUDGET = 1500  # spans per case above which ordinary traces are thinned
MIN_SHARE = 0.25  # ordinary traces are never thinned below this share
QUANTILE = 0.95  # a span slower than this quantile of its operation's baseline is not ordinary
MIN_SHAPE = 12  # a shape seen fewer times than this is never thinned
MIN_CALLS = 60  # a trace with a call to an operation seen fewer times than this is never thinned


def keep(trace_id: str, share: float, salt: str = "") -> bool:
    """Whole-trace sampling by a hash of the id (sequential or random ids alike)."""
    if share >= 1.0:
        return True
    h = int.from_bytes(hashlib.blake2b((salt + trace_id).encode(), digest_size=4).digest(), "big")
    return h < share * 2**32


def _dur(s: dict) -> int:
    return s["end_time_unix_nano"] - s["start_time_unix_nano"]


def _key(s: dict) -> tuple:
    return (s.get("resource", {}).get("service.name", ""), s["name"], s["kind"])


def _bad(s: dict) -> bool:
    code = s.get("attributes", {}).get("http.response.status_code")
    return s.get("status_code") == "ERROR" or (isinstance(code, int) and code >= 500)


def shrink(spans: list[dict], window_start_ns: int, baseline_spans: int = BASELINE_SPANS,
           budget: int = BUDGET) -> tuple[list[dict], dict]:
    """The spans to keep (renumbered) and what was done. `window_start_ns` splits baseline
    from window (public: the question names it); nothing else from expected.json is used."""
    traces: dict[str, list[dict]] = defaultdict(list)
    for s in spans:
        traces[s["trace_id"]].append(s)
    # a trace belongs to the window when any span of it started there
    in_window = {t for t, ss in traces.items() if max(s["start_time_unix_nano"] for s in ss) >= window_start_ns}
    base = [t for t in traces if t not in in_window]
    n_base = sum(len(traces[t]) for t in base)
    b_share = min(1.0, baseline_spans / max(n_base, 1))
    kept = [t for t in traces if t in in_window or keep(t, b_share, "b")]

    # ordinary traces: their shape is common and nothing in them is failing or slow
    p95: dict[tuple, int] = {}
    by_key: dict[tuple, list[int]] = defaultdict(list)
    for t in base:
        for s in traces[t]:
            by_key[_key(s)].append(_dur(s))
    for k, ds in by_key.items():
        ds.sort()
        p95[k] = ds[min(len(ds) - 1, int(len(ds) * QUANTILE))]

    def shape(t: str) -> tuple:  # which operations, not how many calls of each (fan-out varies)
        return tuple(sorted({(_key(s), s.get("status_code")) for s in traces[t]}))

    shapes = {t: shape(t) for t in kept}
    seen = Counter(shapes.values())
    # busy operations only: a thinned call of a quiet one is evidence lost
    calls = Counter(_key(s) for t in kept for s in traces[t])
    ordinary = [t for t in kept if seen[shapes[t]] >= MIN_SHAPE
                and not any(_bad(s) or _dur(s) > p95.get(_key(s), -1) or calls[_key(s)] < MIN_CALLS
                            for s in traces[t])]
    n_kept = sum(len(traces[t]) for t in kept)
    n_ord = sum(len(traces[t]) for t in ordinary)
    share = 1.0
    if n_kept > budget and n_ord:
        share = max(MIN_SHARE, min(1.0, 1 - (n_kept - budget) / n_ord))
    ordinary_set = set(ordinary)
    final = {t for t in kept if t not in ordinary_set or keep(t, share, "o")}
    out = [s for s in spans if s["trace_id"] in final]
    info = {"baseline_trace_share": round(b_share, 3), "ordinary_trace_share": round(share, 3),
            "spans_before": len(spans), "spans_after": len(out)}
    return renumber(out), info


def renumber(spans: list[dict]) -> list[dict]:
    """Trace and span ids as counters in order of appearance (links kept, parents outside
    the slice too)."""
    tids: dict[str, str] = {}
    sids: dict[str, str] = {}

    def sid(x: str | None) -> str | None:
        if x is None:
            return None
        if x not in sids:
            sids[x] = f"{len(sids) + 1:016x}"
        return sids[x]

    out = []
    for s in spans:
        s = dict(s)
        s["trace_id"] = tids.setdefault(s["trace_id"], f"{len(tids) + 1:032x}")
        s["span_id"] = sid(s["span_id"])
        s["parent_span_id"] = sid(s.get("parent_span_id"))
        for k in ("start_time_unix_nano", "end_time_unix_nano"):  # the clocks are not ns-exact
            s[k] = s[k] // 1000 * 1000
        out.append(s)
    return out


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def write(path: Path, spans: list[dict]) -> int:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
        f.write(b"".join(orjson.dumps(s, option=orjson.OPT_APPEND_NEWLINE) for s in spans))
    tmp.replace(path)
    return path.stat().st_size


def shrink_case(d: Path, baseline_spans: int = BASELINE_SPANS, budget: int = BUDGET) -> dict:
    exp_path = d / "expected.json"
    exp = json.loads(exp_path.read_text())
    spans = read(d / "spans.jsonl.gz")
    before = (d / "spans.jsonl.gz").stat().st_size
    out, info = shrink(spans, exp["window_start_ns"], baseline_spans, budget)
    after = write(d / "spans.jsonl.gz", out)
    ws = exp["window_start_ns"]
    # the recorder's own counts, kept true to the file
    exp["spans"] = len(out)
    exp["spans_in_window"] = sum(s["start_time_unix_nano"] >= ws for s in out)
    exp["baseline_trace_share"] = round(exp.get("baseline_trace_share", 1.0) * info["baseline_trace_share"], 3)
    exp["ordinary_trace_share"] = round(exp.get("ordinary_trace_share", 1.0) * info["ordinary_trace_share"], 3)
    exp_path.write_text(json.dumps(exp, indent=2) + "\n")
    return {**info, "bytes_before": before, "bytes_after": after}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab.shrink", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", help="case folders, or folders of case folders")
    p.add_argument("--baseline-spans", type=int, default=BASELINE_SPANS)
    p.add_argument("--budget", type=int, default=BUDGET)
    p.add_argument("--again", action="store_true", help="shrink cases that were shrunk already")
    a = p.parse_args(argv)
    cases = []
    for d in map(Path, a.dirs):
        cases += [d] if (d / "expected.json").exists() else sorted(c for c in d.iterdir() if (c / "expected.json").exists())
    tot_b = tot_a = n = 0
    for c in cases:
        if "ordinary_trace_share" in json.loads((c / "expected.json").read_text()) and not a.again:
            continue  # shrunk already (a second pass could thin again where the floor held)
        r = shrink_case(c, a.baseline_spans, a.budget)
        n += 1
        tot_b += r["bytes_before"]
        tot_a += r["bytes_after"]
        print(f"{c}: {r['spans_before']} -> {r['spans_after']} spans, {r['bytes_before'] // 1024} -> "
              f"{r['bytes_after'] // 1024} KiB (baseline share {r['baseline_trace_share']}, "
              f"ordinary {r['ordinary_trace_share']})")
    if n:
        print(f"{n} cases shrunk: {tot_b / n / 1024:.0f} -> {tot_a / n / 1024:.0f} KiB per case")
    print(f"{len(cases) - n} cases were shrunk already")
    return 0


if __name__ == "__main__":
    sys.exit(main())
