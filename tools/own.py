"""A service's own time: how long its SERVER spans ran outside the calls they made (its CPU,
its threads, its locks). Grown against the baseline in one service alone, while the calls it
made did not explain it, it is that service's: starved of CPU, throttled, paused. Grown in
many services at once, it is the host. Read from the bounded samples of gaps and shapes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, SURE, _quantile, confidence, mann_whitney_p

MIN_SHIFT_MS = 2.0  # own time this much longer at the median at least
MIN_RATIO = 1.5
FLOOR_MS = 0.5  # an operation's baseline median below this counts as this (timer noise)
HOST_WIDE = 3  # this many services grown at once: the host, not one of them


@dataclass
class OwnShift:
    service: str
    p50_ms: tuple[float, float]  # baseline, now
    p90_ms: tuple[float, float]
    count: tuple[int, int]
    sure: float
    operations: int  # of its operations with calls in both windows, how many grew
    examples: list[tuple[Span, float]] = field(default_factory=list)  # (span, own ms), longest first


def _own(sample: Sample, spans: dict | None = None) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind == "SERVER":
                ms = tree.self_ns(s) / 1e6
                out.setdefault(s.service, {}).setdefault(s.name, []).append(ms)
                if spans is not None:
                    spans.setdefault(s.service, []).append((s, ms))
    return out


def own_shifts(cur: Sample, base: Sample) -> list[OwnShift]:
    """Services whose own time grew in their operations together (each call measured against
    its operation's baseline median, so a changed mix of operations is no change), surest
    first; none when as many grew as the host's noise."""
    spans: dict[str, list[tuple[Span, float]]] = {}
    now, before = _own(cur, spans), _own(base)
    out = []
    for svc, ops in now.items():
        med = {op: max(_quantile(sorted(v), 0.5), FLOOR_MS) for op, v in before.get(svc, {}).items()
               if len(v) >= 2 and op in ops}
        r1 = sorted(x / med[op] for op, v in ops.items() if op in med for x in v)
        r0 = sorted(x / med[op] for op, v in before[svc].items() if op in med for x in v) if med else []
        # a busy host's noise makes a few requests of a quiet service look slower together
        if len(r1) < 2 * MIN_SAMPLE or len(r0) < 2 * MIN_SAMPLE or _quantile(r1, 0.5) < MIN_RATIO:
            continue
        g1 = sorted(x for op, v in ops.items() if op in med for x in v)
        g0 = sorted(x for op, v in before[svc].items() if op in med for x in v)
        p50 = (_quantile(g0, 0.5), _quantile(g1, 0.5))
        p90 = (_quantile(g0, 0.9), _quantile(g1, 0.9))
        if p50[1] - p50[0] < MIN_SHIFT_MS:
            continue
        grew = sum(1 for op in med if _quantile(sorted(ops[op]), 0.5) >= MIN_RATIO * med[op])
        if 2 * grew < len(med):
            continue  # one operation slower is that operation's (a query, a lock), not the service's
        sure = confidence(mann_whitney_p(r1, r0))
        if sure < SURE:
            continue
        out.append(OwnShift(svc, p50, p90, (len(g0), len(g1)), sure, grew,
                            sorted(spans[svc], key=lambda p: -p[1])[:5]))
    if len(out) >= HOST_WIDE:
        return []
    out.sort(key=lambda o: -o.sure)
    return out
