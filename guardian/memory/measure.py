"""Memory on repeated faults: each eval scenario investigated without memory, then again after a
person confirmed the real cause of its first run (repeat), and with only the *other* scenarios'
confirmed causes in memory (cross: does memory mislead on a different fault?).

    python -m guardian.memory.measure evals/scenarios [--weight 0.15]

Prints top-1/top-3 per mode; the same cases and engine (deterministic) in every column.
"""
from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

from guardian.memory.hook import Memory, remember
from guardian.memory.store import MemoryStore


def _rank(report, sc) -> int | None:
    from guardian.evals.runner import MAX_CONFIDENCE_WHEN_HEALTHY, matches

    if sc.expected.get("kind") == "none":
        return 1 if all(rc.confidence < MAX_CONFIDENCE_WHEN_HEALTHY for rc in report.root_causes) else None
    return next((rc.rank for rc in report.root_causes if matches(rc, sc.expected)), None)


def _margin(report, sc) -> float | None:
    """Confidence of the true cause minus the best other cause (how clearly it wins); None if absent."""
    from guardian.evals.runner import matches

    if sc.expected.get("kind") == "none":
        return None
    hit = next((rc for rc in report.root_causes if matches(rc, sc.expected)), None)
    if hit is None:
        return None
    others = [rc.confidence for rc in report.root_causes if rc is not hit]
    return round(hit.confidence - (max(others) if others else 0.0), 3)


def _confirm(memory: Memory, inv_id: str, sc, report) -> None:
    """What a person would say: right when the top cause is the fault, else wrong with the real cause."""
    exp = sc.expected
    if exp.get("kind") == "none" or not exp.get("service"):
        return
    ok = _rank(report, sc) == 1
    memory.store.mark(inv_id, "right" if ok else "wrong", exp["service"], exp.get("operation"), exp["kind"],
                      "confirmed from the scenario's ground truth", "measure")


def measure(root: Path, weight: float) -> list[dict]:
    from guardian.evals.scenarios import load_scenarios, load_store
    from guardian.investigate.engine import investigate

    scenarios = load_scenarios(root)
    stores = {}
    base = {}
    for sc in scenarios:
        stores[sc.name] = load_store(sc.path)
        base[sc.name] = investigate(stores[sc.name], sc.question, None, engine="deterministic")
    rows = []
    try:
        for sc in scenarios:
            st = stores[sc.name]
            # repeat: the same fault seen before and confirmed
            mem = Memory(MemoryStore(None), weight)
            first_id = uuid.uuid4().hex[:16]
            first = remember(mem, first_id, "measure", sc.question, None, base[sc.name].model_copy(deep=True))
            _confirm(mem, first_id, sc, first)
            again = remember(mem, uuid.uuid4().hex[:16], "measure", sc.question, None,
                             investigate(st, sc.question, None, engine="deterministic"))
            # cross: only the other scenarios' confirmed causes in memory
            cross_mem = Memory(MemoryStore(None), weight)
            for other in scenarios:
                if other.name != sc.name:
                    oid = uuid.uuid4().hex[:16]
                    rep = remember(cross_mem, oid, "measure", other.question, None, base[other.name].model_copy(deep=True))
                    _confirm(cross_mem, oid, other, rep)
            cross = remember(cross_mem, uuid.uuid4().hex[:16], "measure", sc.question, None,
                             investigate(st, sc.question, None, engine="deterministic"))
            rows.append({"scenario": sc.name, "without": _rank(base[sc.name], sc), "repeat": _rank(again, sc),
                         "cross": _rank(cross, sc), "margin_without": _margin(base[sc.name], sc),
                         "margin_repeat": _margin(again, sc), "margin_cross": _margin(cross, sc)})
    finally:
        for s in stores.values():
            s.close()
    return rows


def table(rows: list[dict]) -> str:
    out = ["rank of the true cause (margin: its confidence minus the best other cause's)",
           "| scenario | without memory | repeat (confirmed before) | others' causes in memory |",
           "|---|---|---|---|"]

    def cell(r, k):
        m = r[f"margin_{k}"]
        return f"{r[k] or '-'}" + (f" ({m:+.2f})" if m is not None else "")
    for r in rows:
        out.append(f"| {r['scenario']} | {cell(r, 'without')} | {cell(r, 'repeat')} | {cell(r, 'cross')} |")
    n = len(rows)
    for k in ("without", "repeat", "cross"):
        t1 = sum(r[k] == 1 for r in rows)
        t3 = sum(r[k] is not None and r[k] <= 3 for r in rows)
        ms = [r[f"margin_{k}"] for r in rows if r[f"margin_{k}"] is not None]
        mean = sum(ms) / len(ms) if ms else 0.0
        out.append(f"{k}: top-1 {t1}/{n}, top-3 {t3}/{n}, mean margin {mean:+.3f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--weight", type=float, default=0.15)
    a = p.parse_args(argv)
    print(table(measure(a.root, a.weight)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
