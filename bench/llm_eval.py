"""The LLM agent next to the deterministic ranking on a fixed 30-case subset of the tuning lab.

  python -m bench.llm_eval --model 1.5b            every subset case, both engines
  python -m bench.llm_eval --model 1.5b --cases 2  the first two of the subset (a timing probe)
  python -m bench.llm_eval --analyse RESULT [--recheck]  the findings of a run (--recheck: the
      recorded answers through the current answer checks, without the model)

The subset (`subset()`): evals/lab cases grouped by fault class, each group ordered so its
topologies alternate (each topology's cases in name order), then taken round-robin over the
classes in name order (the first case of every class, then the second, ...) until 30. A run cut short stays stratified. The held-out set is never read.
Writes bench/results/llm-eval-<model>-<date>.json after every case (a killed run keeps what
it did): per case both answers, right or wrong, steps, tokens, seconds, and what the model
answered and cited, with each cited id checked in the store.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from guardian.evals.runner import matches, run_case, summarize
from guardian.evals.scenarios import Scenario, load_scenarios, load_store
from guardian.llm.models import MODELS, is_installed
from support import results as bench_results

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "evals" / "lab"
SUBSET_SIZE = 30


def subset(root: Path = LAB, size: int = SUBSET_SIZE) -> list[Scenario]:
    """Round-robin over fault classes (name order), each class's cases in name order."""
    if "heldout" in root.resolve().parts:
        raise ValueError("the held-out cases are not for this comparison")
    by_class: dict[str, list[Scenario]] = {}
    nth: dict[tuple[str, str], int] = {}
    for sc in sorted(load_scenarios(root), key=lambda s: s.name):
        cls, topo = str(sc.expected.get("fault_class") or "none"), str(sc.expected.get("topology"))
        nth[(sc.name, "")] = nth.setdefault((cls, topo), -1) + 1
        nth[(cls, topo)] += 1
        by_class.setdefault(cls, []).append(sc)
    for cases in by_class.values():  # topologies alternate within a class
        cases.sort(key=lambda s: (nth[(s.name, "")], str(s.expected.get("topology")), s.name))
    picked: list[Scenario] = []
    depth = 0
    while len(picked) < size and any(len(v) > depth for v in by_class.values()):
        picked += [v[depth] for _, v in sorted(by_class.items()) if len(v) > depth]
        depth += 1
    return picked[:size]


def _rc(rc) -> dict[str, Any]:
    return {"rank": rc.rank, "service": rc.service, "operation": rc.operation, "kind": rc.kind,
            "confidence": rc.confidence,
            "evidence": [{"trace_id": e.trace_id, "verified": e.verified} for e in rc.evidence[:5]]}


def cited_ids(store, ans: dict[str, Any], findings) -> list[dict[str, Any]]:
    """Each id the model cited: whether the store holds it, and whether it is in the window."""
    from guardian.llm.answer import IdChecker

    checker, win = IdChecker(store), findings.window
    rows = []
    for t in [t for t in ans.get("trace_ids") or [] if isinstance(t, str)]:
        spans = checker.trace(t)
        rows.append({"trace_id": t, "exists": bool(spans), "in_window": bool(spans) and (
            win is None or any(s.start_time_unix_nano < win.end_ns and s.end_time_unix_nano > win.start_ns
                               for s in spans))})
    return rows


def recheck(doc: dict[str, Any]) -> dict[str, Any]:
    """The recorded model answers through the current answer checks (no model needed): per case
    `rechecked` holds the report's new top-1 and whether it is right."""
    from guardian.investigate.deterministic import investigate as deterministic
    from guardian.llm.answer import build_report

    by_name = {sc.name: sc for sc in load_scenarios(LAB)}
    for row in doc["cases"]:
        sc, raw = by_name[row["case"]], (row.get("model") or {}).get("raw")
        store = load_store(sc.path)
        try:
            from guardian.evals.runner import case_window

            findings = deterministic(store, sc.question, case_window(sc.expected))
            rep = build_report(store, raw, findings, "recheck", sc.question)
            row["model"]["cited"] = cited_ids(store, raw, findings) if raw else []
        finally:
            store.close()
        top = rep.root_causes[0] if rep.root_causes else None
        right = (all(rc.confidence < 0.3 for rc in rep.root_causes) if sc.expected.get("kind") == "none"
                 else bool(top and matches(top, sc.expected)))
        row["rechecked"] = {"answer": f"{top.service}/{top.operation or '*'}/{top.kind}" if top else "(none)",
                            "top1": right}
    return doc


def _model_answer(sc: Scenario, res, findings) -> dict[str, Any]:
    """What the model said, whether it overruled, and whether its cited ids exist in the store."""
    from guardian.report import RootCause

    ans = res.answer if isinstance(res.answer, dict) else None
    out: dict[str, Any] = {"raw": ans, "cited": [], "overrule": False, "model_right": None}
    if not ans or not isinstance(ans.get("service"), str):
        return out
    store = load_store(sc.path)
    try:
        out["cited"] = cited_ids(store, ans, findings)
    finally:
        store.close()
    top = findings.root_causes[0] if findings.root_causes else None
    op = ans.get("operation") if isinstance(ans.get("operation"), str) else None
    kind = ans.get("kind") if isinstance(ans.get("kind"), str) else "error"
    said = RootCause(rank=1, service=ans["service"], operation=op, kind=kind, confidence=0.0,
                     description="")
    same = top is not None and said.service.split(":")[0].lower() == top.service.split(":")[0].lower() and (
        not op or op.lower() in ("null", "none") or not top.operation or op == top.operation)
    out["overrule"] = not same
    out["model_right"] = (matches(said, sc.expected) if sc.expected.get("kind") != "none" else False)
    return out


def run(model: str, cases: int | None, out: Path, base_url: str | None = None,
        resume: bool = False) -> dict[str, Any]:
    """`model` is a local key ("1.5b": its server runs meanwhile), or with `base_url` the model
    name at that OpenAI-compatible endpoint. `resume`: keep the cases `out` already holds and run
    only the rest of the subset (a long run cut short goes on where it stopped)."""
    from guardian.investigate.deterministic import investigate as deterministic
    from guardian.llm.agent import run as agent_run
    from guardian.llm.config import load_config
    from guardian.llm.evalhook import Outcome
    from guardian.llm.server import LocalServer

    picked = subset()[:cases] if cases else subset()
    engine = "llm" if base_url else f"llm:local-{model}"
    doc: dict[str, Any] = {
        "command": "python -m bench.llm_eval " + " ".join(sys.argv[1:]),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(), "subset": [s.name for s in picked],
        "engines": ["deterministic", engine], "cases": []}
    if resume and bench_results.find(out).exists():
        old = bench_results.read(out)
        if old.get("engines") != doc["engines"]:
            raise SystemExit(f"bench.llm_eval: {out} holds engines {old.get('engines')}, not {doc['engines']}")
        done = {c["case"] for c in old["cases"]}
        old.setdefault("resumed", []).append(doc["started"])
        old["subset"] = doc["subset"]
        old.pop("finished", None)
        doc, picked = old, [sc for sc in picked if sc.name not in done]
    server = None
    if base_url:
        cfg = load_config().model_copy(update={"provider": None, "base_url": base_url, "model": model})
    else:
        server = LocalServer(model, log_path=out.with_suffix(".server.log")).start()
        cfg = load_config().model_copy(update={"provider": f"local:{model}", "base_url": None, "model": None,
                                               "local_port": server.port})
    try:
        for sc in picked:
            load = os.getloadavg()
            det = run_case(sc, "deterministic")
            kept: dict[str, Any] = {}

            def llm(store, question, window):
                findings = deterministic(store, question, window)
                res = agent_run(store, question, window, findings, cfg)
                kept.update(res=res, findings=findings)
                return Outcome(res.report, res.steps, res.tokens)

            t0 = time.monotonic()
            mine = run_case(sc, engine, llm)
            res, findings = kept.get("res"), kept.get("findings")
            row = {"case": sc.name, "fault_class": mine.fault_class, "topology": mine.topology,
                   "expected": {k: sc.expected.get(k) for k in ("service", "operation", "kind")},
                   "loadavg_1m": round(load[0], 2),
                   "deterministic": det.model_dump(mode="json"), "llm": mine.model_dump(mode="json"),
                   "wall_s": round(time.monotonic() - t0, 1)}
            if res is not None:
                row["llm"].update(error=res.error or mine.error, tool_calls=res.tool_calls,
                                  native_tool_calls=res.native_tool_calls,
                                  root_causes=[_rc(rc) for rc in res.report.root_causes[:3]])
                row["model"] = _model_answer(sc, res, findings)
            doc["cases"].append(row)
            _write(doc, out)
            print(f"{sc.name:<22} {mine.fault_class:<18} det {det.answer:<40} {'y' if det.top1 else 'n'}"
                  f"  llm {mine.answer:<40} {'y' if mine.top1 else 'n'}  {mine.seconds:6.1f}s"
                  f" {mine.steps} steps {mine.tokens} tok", flush=True)
    finally:
        if server:
            server.stop()
    doc["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    _write(doc, out)
    return doc


def _write(doc: dict[str, Any], out: Path) -> None:
    from guardian.evals.runner import CaseResult

    for key in ("deterministic", doc["engines"][1]):
        side = "deterministic" if key == "deterministic" else "llm"
        rows = [CaseResult(**{k: v for k, v in c[side].items() if k in CaseResult.model_fields})
                for c in doc["cases"]]
        doc.setdefault("summary", {})[key] = json.loads(json.dumps(summarize(rows), default=lambda m: m.model_dump()))
    bench_results.write(out, doc)


def outcome(row: dict[str, Any]) -> str:
    det, llm = row["deterministic"]["top1"], row["llm"]["top1"]
    return {(True, True): "both right", (False, False): "both wrong",
            (False, True): "llm beats", (True, False): "llm loses"}[(det, llm)]


def _parts(answer: str) -> tuple[str, str]:
    """'gateway/GET /home/network' -> ('gateway', 'GET /home'); '*' is no operation."""
    service, _, rest = answer.partition("/")
    op = rest.rpartition("/")[0]
    return service.split(":")[0].lower(), "" if op in ("*", "") else op.lower()


def verdict(row: dict[str, Any]) -> str:
    """confirm (the model kept the deterministic top cause: same service, and no other operation),
    overrule (it named another; 'accepted' when the report's top cause changed, 'refused' when
    the checks kept it), or no answer."""
    raw = (row.get("model") or {}).get("raw") or {}
    if not isinstance(raw.get("service"), str) or not raw["service"].strip():
        return "no answer"
    det = _parts(row["deterministic"]["answer"])
    op = raw.get("operation") if isinstance(raw.get("operation"), str) else ""
    op = "" if op.lower() in ("", "null", "none") else op.lower()
    if row["deterministic"]["answer"] not in ("(none)", "(failed)") and raw["service"].split(":")[0].lower() == det[0] \
            and (not op or not det[1] or op == det[1]):
        return "confirm"
    return "overrule accepted" if _parts(row["llm"]["answer"]) != det else "overrule refused"


def analyse(doc: dict[str, Any]) -> str:
    """Plain-text findings: per case, per class, and every overrule with its cited ids."""
    rows = doc["cases"]
    lines = [f"{'case':<20} {'class':<18} {'deterministic (+ right)':<34} {'llm':<34} {'outcome':<10}"
             f" {'model said':<17} ids e/w   steps tokens     s"]
    for r in rows:
        cited = (r.get("model") or {}).get("cited") or []
        said = ((r.get("model") or {}).get("raw") or {}).get("verdict")
        lines.append(f"{r['case']:<20} {r['fault_class']:<18}"
                     f" {('+ ' if r['deterministic']['top1'] else '- ') + r['deterministic']['answer'][:32]:<34}"
                     f" {('+ ' if r['llm']['top1'] else '- ') + r['llm']['answer'][:32]:<34}"
                     f" {outcome(r):<10} {verdict(r):<17}"
                     f" {len(cited):>2} {sum(c['exists'] for c in cited)}/{sum(c.get('in_window', False) for c in cited)}"
                     f"   {r['llm']['steps'] or 0:>5} {r['llm']['tokens'] or 0:>6} {r['llm']['seconds']:>5.0f}"
                     + (f"  verdict {said!r}" if isinstance(said, str) else "")
                     + (f"  rechecked {'+' if r['rechecked']['top1'] else '-'} {r['rechecked']['answer']}"
                        if r.get("rechecked") else ""))
    lines.append("")
    lines.append(f"{'class':<18} cases  det  llm  beats  loses  overrules(accepted)")
    for c in sorted({r["fault_class"] for r in rows}) + ["ALL"]:
        mine = [r for r in rows if c in ("ALL", r["fault_class"])]
        lines.append(f"{c:<18} {len(mine):>5} {sum(r['deterministic']['top1'] for r in mine):>4}"
                     f" {sum(r['llm']['top1'] for r in mine):>4} {sum(outcome(r) == 'llm beats' for r in mine):>6}"
                     f" {sum(outcome(r) == 'llm loses' for r in mine):>6}"
                     f" {sum(verdict(r).startswith('overrule') for r in mine):>6}"
                     f"({sum(verdict(r) == 'overrule accepted' for r in mine)})")
    accepted = [r for r in rows if verdict(r) == "overrule accepted"]
    n = max(len(rows), 1)
    lines.append("")
    lines.append(f"per case: deterministic {sum(r['deterministic']['seconds'] for r in rows) / n:.2f} s;"
                 f" llm {sum(r['llm']['seconds'] for r in rows) / n:.0f} s,"
                 f" {sum(r['llm']['steps'] or 0 for r in rows) / n:.1f} steps,"
                 f" {sum(r['llm']['tokens'] or 0 for r in rows) / n:.0f} tokens (mean);"
                 f" load average at the cases' starts {min(r['loadavg_1m'] for r in rows):.1f}"
                 f"-{max(r['loadavg_1m'] for r in rows):.1f}" if rows else "no case")
    lines.append("accepted overrules without a cited trace the store holds: " + (", ".join(
        r["case"] for r in accepted if not any(c["exists"] for c in r["model"]["cited"])) or "none"))
    lines.append("accepted overrules without a cited trace in the window: " + (", ".join(
        r["case"] for r in accepted  # runs before the window was recorded: --recheck fills it in
        if not any(c.get("in_window", c["exists"]) for c in r["model"]["cited"])) or "none"))
    if any(r.get("rechecked") for r in rows):
        lines.append(f"rechecked with the current answer checks: llm top-1 "
                     f"{sum(r['rechecked']['top1'] for r in rows if r.get('rechecked'))} of {len(rows)}"
                     f" (deterministic {sum(r['deterministic']['top1'] for r in rows)})")
        lines.append("accepted overrules the current checks refuse: " + (", ".join(
            r["case"] for r in accepted if r.get("rechecked")
            and r["rechecked"]["answer"].split("/")[0] == r["deterministic"]["answer"].split("/")[0]) or "none"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.llm_eval", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="1.5b",
                    help="local model key (0.5b, 1.5b), or the model name with --base-url")
    ap.add_argument("--base-url", help="any OpenAI-compatible endpoint instead of the local server")
    ap.add_argument("--cases", type=int, help="only the first N of the subset (its order is stratified)")
    ap.add_argument("--out", type=Path, help="result file (default bench/results/llm-eval-MODEL-DATE.json)")
    ap.add_argument("--list", action="store_true", help="print the subset and stop")
    ap.add_argument("--analyse", type=Path, metavar="RESULT", help="print the findings of a result file")
    ap.add_argument("--recheck", action="store_true",
                    help="with --analyse: pass the recorded answers through the current checks first")
    ap.add_argument("--resume", action="store_true",
                    help="keep the cases the result file already holds and run the rest of the subset")
    a = ap.parse_args(argv)
    if a.analyse:
        doc = bench_results.read(a.analyse)
        print(analyse(recheck(doc) if a.recheck else doc))
        return 0
    if a.list:
        for sc in subset()[:a.cases] if a.cases else subset():
            print(sc.name, sc.expected.get("fault_class"))
        return 0
    if not a.base_url and a.model not in MODELS:
        ap.error(f"unknown local model {a.model!r}: choose one of {', '.join(MODELS)}")
    if not a.base_url and not is_installed(a.model):
        print(f"bench.llm_eval: local model {a.model} not installed: run make setup-llm", file=sys.stderr)
        return 2
    out = a.out or bench_results.DIR / f"llm-eval-{a.model}-{dt.date.today().isoformat()}.json"
    print(analyse(run(a.model, a.cases, out, a.base_url, resume=a.resume)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
