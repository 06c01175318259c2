"""The deterministic investigator: anomalies -> sample requests -> walk each to its culprit ->
rank culprits by votes and by how much they themselves changed -> Report. Beside the walks:
CLIENT/SERVER gaps and call-pattern changes (signals.py); ranking and propagation in rank.py;
nothing named when the best candidate is too weak. Candidates are gathered in candidates.py,
how much each changed is read in change.py, what a report cites in evidence.py.

No LLM. Every query is bounded (a few dozen traces at most), so it runs in seconds on
stores of millions of spans; the aggregation is the store's work.
"""
from __future__ import annotations

import re
import time

from capture.store.api import SpanStore, TimeWindow
from guardian.investigate.asked import failures_first as _failures_first
from guardian.investigate.bar import BURST_WEIGHT
from guardian.investigate.bar import burst as _burst
from guardian.investigate.bar import covered_ns as _covered
from guardian.investigate.bar import not_alone as _not_alone
from guardian.investigate.bar import unanswered_but_absorbed as _absorbed
from guardian.investigate.candidates import (_callers_own, _candidates, _gap_text, _merge,
                                             _stuck_text)
from guardian.investigate.change import _change
from guardian.investigate.evidence import (_blast, _describe, _operation, _pick_evidence,
                                           _traffic_evidence)
from guardian.investigate.fixes import suggest_fix
from guardian.investigate.rank import Candidate
from guardian.investigate.rank import absorb as _absorb
from guardian.investigate.rank import downstream_bonus as _downstream_bonus
from guardian.investigate.rank import impact as _impact
from guardian.investigate.rank import propagate as _propagate
from guardian.investigate.release import hand_over as _hand_over
from guardian.investigate.release import held_on_itself as _held_on_itself
from guardian.investigate.samples import Memo, Walker
from guardian.investigate.signals import Signals, read_signals
from guardian.investigate.sparse import confidence as _confidence
from guardian.investigate.sparse import few as _few
from guardian.report import BlastRadius, EngineInfo, Evidence, Report, ReportWindow, RootCause
from capture.store.window import default_window, fmt_ns, split_baseline
from tools.anomalies import Anomaly, anomalies

MIN_SCORE = 1.0  # below this the best candidate is the noise of a busy host: name nothing


def _mentions(question: str, names: list[str]) -> set[str]:
    words = set(re.findall(r"[\w.:-]+", question.lower()))
    return {n for n in names if n.lower() in words}


def _score(walker: Walker, cands: list[Candidate], sig: Signals) -> None:
    """Each candidate's score before propagation: its votes, how much it changed itself, and
    how much that costs a request."""
    for c in cands:
        g = sig.network(c.key[0]) if c.kind == "network" else None
        # The network's change is in the gaps, not in the callee's own spans.
        change = g.sure if g is not None else _change(walker, c) if c.walked and c.spans else \
            c.fixed_change if c.fixed_change is not None else 1.0
        if c.stuck and change < 1.0:
            # One call held for much of the window (a row lock) leaves its operation's
            # percentiles where they were: its size says it changed, not the percentiles.
            change = 1.0
            c.change = f"{c.change}; {_stuck_text(sig, c)}" if _stuck_text(sig, c) else c.change
        c.changed = change
        if g is not None:
            c.calls = g.count
        c.score = c.votes * change * _impact(c)
        if g is not None and "answers" not in c.change:
            c.change = f"{_gap_text(g)}; {c.change}"


def _own_slowdown(cands: list[Candidate]) -> list[Candidate]:
    """Longer gaps before a callee's spans while its own spans slowed past their baseline
    noise too are its queue (requests wait for a busy server), not its network: the network
    delays calls, never the server's own work. Its network candidate joins its slowdown."""
    own = {c.key[0]: c for c in cands if c.kind in ("latency", "saturation") and c.moved}
    out = []
    for c in cands:
        into = own.get(c.key[0]) if c.kind == "network" else None
        if into is None:
            out.append(c)
            continue
        _absorb(into, c)
        into.score += c.score
    return out


def investigate(store: SpanStore, question: str, window: TimeWindow | None = None,
                anomaly: dict | None = None) -> Report:
    """From a question (or an anomaly), find and rank root causes with evidence."""
    t0 = time.perf_counter()
    store = Memo(store)  # type: ignore[assignment]
    window = window or default_window(store)
    cur, base = split_baseline(store, window)
    found = anomalies(store, cur, base, samples=False)
    walker = Walker(store, cur, base)
    names = store.services(cur) + [e.server for e in store.service_map(cur)]
    focus = _mentions(question, names) | ({anomaly["service"]} if anomaly and anomaly.get("service") else set())
    sig = read_signals(store, cur, base)
    walker.ports, walker.lone = sig.ports, frozenset(sig.lone)
    cands = _callers_own(walker, _merge(list(_candidates(walker, found, focus, sig).values()), sig))
    _score(walker, cands, sig)
    cands = _own_slowdown(cands)
    _downstream_bonus(walker, cands)
    _propagate(walker, cands, sig)
    cands = _hand_over(walker, cands, sig.releases)
    cands.sort(key=lambda c: -c.score)
    _bar(walker, cands)
    _failures_first(question, cands)
    # Too weak to name, unless a test showed a candidate's own failures grew: a failure rate
    # that surely grew is no noise, however few symptoms led to it.
    if cands and cands[0].score < MIN_SCORE and not any(c.shown for c in cands):
        weak, cands = cands, []  # abstain: nothing changed enough to name a cause
    else:
        weak = []
    _held_on_itself(walker, weak[:2] or cands[:5], *sig.samples)  # on the candidates the text names
    total = sum(c.score for c in cands) + 0.25
    causes = []
    for i, c in enumerate(cands[:5]):
        if c.kind == "traffic":
            evidence = _traffic_evidence(walker, c) + [
                Evidence(trace_id=s.trace_id, span_id=s.span_id, description=_describe(
                    walker.tree(s.trace_id), s, 0.0, c.key[0])) for s in c.spans[:2]]
        else:
            evidence = [Evidence(trace_id=s.trace_id, span_id=s.span_id,
                                 description=_describe(walker.tree(s.trace_id), s, x, c.key[0]))
                        for s, x in _pick_evidence(c)]
        causes.append(RootCause(
            rank=i + 1, service=c.key[0], operation=_operation(walker, c) or None, kind=c.kind,
            confidence=round(_confidence(c, c.score / total), 2), evidence=evidence,
            description=f"{c.kind} at {c.key[0]}: {c.change}" + (f"; {_few(c)}" if _few(c) else "") + (
                f"; reached from {len(c.traces)} sampled request(s)." if c.traces else ".")))
    report = Report(
        summary=_summary(causes, found, cur, weak), root_causes=causes,
        blast_radius=_blast(walker, cands[0], found) if cands else BlastRadius(),
        suggested_fix=suggest_fix(causes[0], cands[0].spans[0] if cands[0].spans else None)
        if causes else "Nothing changed against the baseline: widen the window or compare with"
                       " an earlier baseline.",
        engine=EngineInfo(type="deterministic"), question=question,
        window=ReportWindow(start_ns=cur.start_ns, end_ns=cur.end_ns),
        baseline=ReportWindow(start_ns=base.start_ns, end_ns=base.end_ns),
        anomalies=[a.model_dump(mode="json") for a in found[:10]])
    report.duration_s = round(time.perf_counter() - t0, 3)
    return report


def _bar(walker: Walker, cands: list[Candidate]) -> None:
    """The best candidates must have changed for more than one burst of calls, and failures
    must be more than closed connections nobody felt (bar.py); one that is not keeps a fifth
    of its score and its test's word no longer names it alone. Nor does a quiet operation's
    test when services that do not call it slowed as well (bar.not_alone)."""
    for c in cands:
        others = _not_alone(walker, c, cands)
        if others:
            c.shown = False
            c.change += (f"; {', '.join(others[:3])}, which do not call it, slowed too: the host or"
                         " the load, not it alone")
    covered = None
    for c in cands[:3]:
        if c.score < MIN_SCORE and not c.shown:
            continue
        covered = covered or _covered(walker)  # once, and only where a candidate is judged
        got = _burst(walker, c, covered)
        if got is not None:
            c.score *= BURST_WEIGHT
            c.shown = False
            c.change += (f"; its abnormal calls all fell within {got[0]:.1f} s of the {got[1]:.0f} s"
                         " covered: one burst, not a lasting change")
        elif _absorbed(walker, c):
            c.score *= BURST_WEIGHT
            c.shown = False
            c.change += ("; its callers' calls failed at once with no answer from it (closed"
                         " connections, as after a restart) and their requests succeeded anyway")
    cands.sort(key=lambda c: -c.score)


def _summary(causes: list[RootCause], found: list[Anomaly], window: TimeWindow,
             weak: list[Candidate] | None = None) -> str:
    if weak:
        seen = "; ".join(f"{c.kind} at {c.key[0]}: {c.change}" for c in weak[:2])
        return (f"No significant change between the baseline and {fmt_ns(window.start_ns)} to"
                f" {fmt_ns(window.end_ns)} that explains a symptom: nothing is named as a root cause."
                f" The largest changes are too small or too uncertain to blame ({seen}).")
    if not found and not causes:
        return (f"No significant change between the baseline and {fmt_ns(window.start_ns)} to"
                f" {fmt_ns(window.end_ns)}: error rates, latencies and traffic are within baseline.")
    if not causes:
        return f"{len(found)} anomalies found but no request could be walked to a cause: " + \
            "; ".join(a.description for a in found[:3])
    rc = causes[0]
    op = f" `{rc.operation}`" if rc.operation else ""
    symptoms = "; ".join(a.description for a in found[:3]) or rc.description
    return (f"Most likely root cause: {rc.kind} at {rc.service}{op} ({rc.confidence:.0%} confidence)."
            f" Symptoms: {symptoms}.")
