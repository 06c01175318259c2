"""Memory on repeated faults, through the HTTP API: a case is investigated (POST /v1/investigate
over the case's window), a person confirms its real cause (POST /v1/investigations/{id}/outcome:
right, or wrong with the real cause), then a repeat of the fault is investigated with memory and
without it, on the same cases with the same (deterministic) engine.

    python -m guardian.memory.measure evals/lab [--weight 0.15] [--json]

Repeats, each compared with the engine alone (prior weight 0, empty memory) on the same case:
  same     the same recording again, after its first run was confirmed;
  pairs    another recording of the same fault (same topology, service and fault class),
           after the first one was confirmed (both orders);
  running  every case in name order, memory holding every earlier confirmed case (a team's
           memory: does it help, or mislead on a different fault?).
Held-out cases (a folder named heldout) are refused: they are kept unseen.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

TOKEN = "measure"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _ranked(report: dict, expected: dict) -> tuple[int | None, float | None]:
    """(rank of the true cause or None, its confidence minus the best other one's)."""
    from guardian.evals.runner import MAX_CONFIDENCE_WHEN_HEALTHY, matches
    from guardian.report import Report

    causes = Report.model_validate(report).root_causes
    if expected.get("kind") == "none":
        return (1 if all(rc.confidence < MAX_CONFIDENCE_WHEN_HEALTHY for rc in causes) else None), None
    hit = next((rc for rc in causes if matches(rc, expected)), None)
    if hit is None:
        return None, None
    others = [rc.confidence for rc in causes if rc is not hit]
    return hit.rank, round(hit.confidence - (max(others) if others else 0.0), 3)


class Bench:
    """Each case's spans in a store of their own, served by the real app (in process) with its
    incident memory in a SQLite file of the caller's choosing."""

    def __init__(self, cases: list, workdir: Path):
        from guardian.evals.scenarios import load_store

        self.cases = {sc.name: sc for sc in cases}
        self.stores = {sc.name: load_store(sc.path) for sc in cases}
        self.workdir = workdir
        self._n = 0

    def memory(self) -> str:
        self._n += 1
        return str(self.workdir / f"memory-{self._n}.sqlite")

    def ask(self, name: str, memory: str, weight: float) -> tuple[str, dict]:
        """Investigate case `name` over its window; (investigation id, report)."""
        from fastapi.testclient import TestClient

        from guardian.api.main import create_app
        from guardian.evals.runner import case_window

        sc = self.cases[name]
        body: dict[str, Any] = {"question": sc.question, "engine": "deterministic"}
        w = case_window(sc.expected)
        if w is not None:
            body.update(start=w.start_ns, end=w.end_ns)
        app = create_app(self.stores[name], {"api": {"token": TOKEN, "engine": "deterministic"},
                                             "memory": {"path": memory, "prior_weight": weight}}, mcp=False)
        with TestClient(app) as c:
            r = c.post("/v1/investigate", json=body, headers=AUTH)
            r.raise_for_status()
            inv = c.get("/v1/investigations?limit=1", headers=AUTH).json()["investigations"][0]["id"]
            return inv, r.json()

    def confirm(self, name: str, memory: str, inv_id: str, report: dict) -> None:
        """What the person on call says afterwards: right when the top cause is the fault, else
        wrong with the real cause. Nothing for a no-fault case."""
        from fastapi.testclient import TestClient

        from guardian.api.main import create_app

        exp = self.cases[name].expected
        if exp.get("kind") == "none" or not exp.get("service"):
            return
        rank, _ = _ranked(report, exp)
        body = {"outcome": "right" if rank == 1 else "wrong", "note": "confirmed from the case's ground truth",
                "cause": {"service": exp["service"], "operation": exp.get("operation"), "kind": exp.get("kind")},
                "by": "measure"}
        app = create_app(self.stores[name], {"api": {"token": TOKEN}, "memory": {"path": memory}}, mcp=False)
        with TestClient(app) as c:
            c.post(f"/v1/investigations/{inv_id}/outcome", json=body, headers=AUTH).raise_for_status()

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


def fault_key(sc) -> tuple | None:
    e = sc.expected
    if e.get("kind") == "none" or not e.get("fault_class"):
        return None
    return (e.get("topology"), e.get("service"), e.get("fault_class"))


def measure(root: Path, weight: float, modes: tuple[str, ...] = ("same", "pairs", "running")) -> list[dict]:
    """One row per (mode, case): rank and margin of the true cause without and with memory."""
    from guardian.evals.scenarios import load_scenarios

    if "heldout" in Path(root).resolve().parts:
        raise SystemExit(f"{root}: held-out cases stay unseen; measure on the tuning cases (evals/lab)")
    cases = load_scenarios(root)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="guardian-memory-") as tmp:
        bench = Bench(cases, Path(tmp))
        try:
            alone = {sc.name: _ranked(bench.ask(sc.name, bench.memory(), 0.0)[1], sc.expected) for sc in cases}

            def row(mode: str, name: str, report: dict, first: str | None = None) -> None:
                rank, margin = _ranked(report, bench.cases[name].expected)
                rows.append({"mode": mode, "case": name, "first": first,
                             "topology": bench.cases[name].expected.get("topology") or "scenarios",
                             "without": alone[name][0], "margin_without": alone[name][1],
                             "with": rank, "margin_with": margin})

            if "same" in modes:
                for sc in cases:
                    mem = bench.memory()
                    inv, rep = bench.ask(sc.name, mem, weight)
                    bench.confirm(sc.name, mem, inv, rep)
                    row("same", sc.name, bench.ask(sc.name, mem, weight)[1])
            if "pairs" in modes:
                groups: dict[tuple, list] = {}
                for sc in cases:
                    if fault_key(sc):
                        groups.setdefault(fault_key(sc), []).append(sc.name)
                for names in groups.values():
                    for a, b in itertools.permutations(names, 2):
                        mem = bench.memory()
                        inv, rep = bench.ask(a, mem, weight)
                        bench.confirm(a, mem, inv, rep)
                        row("pairs", b, bench.ask(b, mem, weight)[1], first=a)
            if "running" in modes:
                mem = bench.memory()
                for sc in cases:
                    inv, rep = bench.ask(sc.name, mem, weight)
                    row("running", sc.name, rep)
                    bench.confirm(sc.name, mem, inv, rep)
        finally:
            bench.close()
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """Per mode and topology (and all): top-1/top-3 without and with memory, mean margins, and
    how many cases memory moved up or down."""
    out = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        for topo in ["all", *sorted({r["topology"] for r in mine})]:
            rs = [r for r in mine if topo == "all" or r["topology"] == topo]
            s: dict[str, Any] = {"mode": mode, "topology": topo, "cases": len(rs)}
            for k in ("without", "with"):
                s[f"top1_{k}"] = sum(r[k] == 1 for r in rs)
                s[f"top3_{k}"] = sum(r[k] is not None and r[k] <= 3 for r in rs)
                both = [r for r in rs if r["margin_without"] is not None and r["margin_with"] is not None]
                s[f"margin_{k}"] = round(sum(r[f"margin_{k}"] for r in both) / len(both), 3) if both else None
            worse = lambda r: (r["with"] or 99) > (r["without"] or 99)  # noqa: E731
            s["moved_up"] = sum((r["with"] or 99) < (r["without"] or 99) for r in rs)
            s["moved_down"] = sum(worse(r) for r in rs)
            out.append(s)
    return out


def table(rows: list[dict], weight: float) -> str:
    lines = [f"rank of the true cause without and with memory (prior weight {weight}); margin = its "
             "confidence minus the best other cause's, over cases ranked both ways",
             "| repeat | topology | cases | top-1 without | top-1 with | top-3 without | top-3 with "
             "| margin without | margin with | moved up | moved down |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary(rows):
        m = lambda v: "-" if v is None else f"{v:+.3f}"  # noqa: E731
        lines.append(f"| {s['mode']} | {s['topology']} | {s['cases']} | {s['top1_without']} | {s['top1_with']} "
                     f"| {s['top3_without']} | {s['top3_with']} | {m(s['margin_without'])} | {m(s['margin_with'])} "
                     f"| {s['moved_up']} | {s['moved_down']} |")
    changed = [r for r in rows if r["with"] != r["without"]]
    for r in changed:
        lines.append(f"changed: {r['mode']} {r['case']}" + (f" (after {r['first']})" if r["first"] else "")
                     + f": rank {r['without'] or '-'} -> {r['with'] or '-'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--weight", type=float, default=0.15)
    p.add_argument("--mode", action="append", choices=["same", "pairs", "running"],
                   help="repeatable; default: all three")
    p.add_argument("--json", action="store_true", help="rows and summary as JSON")
    a = p.parse_args(argv)
    rows = measure(a.root, a.weight, tuple(a.mode or ("same", "pairs", "running")))
    print(json.dumps({"rows": rows, "summary": summary(rows)}, indent=1) if a.json else table(rows, a.weight))
    return 0


if __name__ == "__main__":
    sys.exit(main())
