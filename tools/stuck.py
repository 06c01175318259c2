"""Stuck calls: an operation's calls that took far longer than any of its baseline calls (a row
lock held by another session, a call waiting on something that never came), baseline vs window.

A p95 over a few dozen calls hides one call stuck for the whole fault, and a rank test cannot
tell one call from chance; its size can: seconds where the operation never took more than a
few ms. Each finding says on how many calls it rests. Reads a Sample; ranks nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.span import Span
from tools.base import peer_of
from tools.sampling import Sample
from tools.stats import MIN_SAMPLE, _quantile

STUCK_MS = 1000.0  # a stuck call waited at least this long
STUCK_RATIO = 50.0  # and this many times the operation's longest baseline call
# With fewer baseline calls than MIN_SAMPLE (sparse data: a lock's operation seen 0-2 times),
# their longest says less of how long the operation can take: the bar rises as the calls
# behind it fall (MIN_SAMPLE / n times, n = 1..MIN_SAMPLE - 1; an operation not seen at all is
# judged on every call its caller made to the service, at MIN_SAMPLE times).
FEW_FLOOR = 1  # baseline calls of the operation at least, else the caller's calls to the service


@dataclass
class Stuck:
    service: str
    operation: str
    count: tuple[int, int]  # calls in baseline, window
    base_max_ms: float
    base_p50_ms: float
    stuck_ms: list[float]  # durations of the stuck calls, longest first
    examples: list[Span] = field(default_factory=list)
    bar_ms: float = STUCK_MS  # the bar they passed (higher on few baseline calls)
    few: bool = False  # the baseline had fewer than MIN_SAMPLE calls of the operation

    def describe(self) -> str:
        n = len(self.stuck_ms)
        sure = "one call: its size, not a test, says so" if n == 1 else f"{n} calls"
        if self.few:
            sure += (f"; only {self.count[0]} baseline calls behind it, so the bar was raised to"
                     f" {self.bar_ms / 1e3:.1f} s: not sure")
        base = (f"its {self.count[0]} baseline calls" if self.count[0] else
                "it had no baseline call, and its caller's other baseline calls to it")
        return (f"{self.service} `{self.operation}`: {n} of {self.count[1]} calls took"
                f" {self.stuck_ms[0] / 1e3:.1f} s{' or more' if n > 1 else ''} where"
                f" {base} took at most {self.base_max_ms:.1f} ms ({sure})")


def bar_ms(base_max_ms: float, n: int) -> float:
    """How long a call must take to be stuck, against n baseline calls whose longest took
    base_max_ms: STUCK_MS and STUCK_RATIO times the longest on MIN_SAMPLE calls or more, raised
    MIN_SAMPLE / n times on fewer (n = 0: judged on the caller's other calls, MIN_SAMPLE times)."""
    scale = 1.0 if n >= MIN_SAMPLE else MIN_SAMPLE / max(n, 1)
    return scale * max(STUCK_MS, STUCK_RATIO * base_max_ms)


def _answered(sample: Sample) -> dict[tuple, list[Span]]:
    """Spans that answer a call (SERVER), per (caller, service, operation): a caller new in
    the window (a batch job's long queries) brings new work, not stuck calls. Calls no server
    span answered count as their callee's, named as the caller named it."""
    out: dict[tuple, list[Span]] = {}
    for tree in sample.trees:
        for s in tree.spans:
            if s.kind == "CLIENT":
                out.setdefault(("client", s.name), []).append(s)
                if not any(k.kind == "SERVER" for k in tree.children[s.span_id]):
                    # a call no server span answered (a database seen only by its clients)
                    if (peer := peer_of(s)):
                        out.setdefault((s.service, peer, s.name), []).append(s)
                    continue
            if s.kind != "SERVER":
                continue
            p = tree.by_id.get(s.parent_span_id or "")
            if p is None and s.attributes.get("error.type") == "timeout" and s.status_code == "ERROR":
                # ended by the capture's timer when no answer came, and no caller seen waiting
                # on it (a datagram query its client gave up on and asked again): not held
                continue
            caller = p.service if p is not None and p.service != s.service else ""
            out.setdefault((caller, s.service, s.name), []).append(s)
            if caller and p.kind == "CLIENT":
                # as the caller saw it (a baseline that already waited long there is no calm one)
                out.setdefault((caller, s.service, s.name, "client"), []).append(p)
    return out


def stuck_calls(cur: Sample, base: Sample) -> list[Stuck]:
    """Operations with calls far beyond their baseline's longest, longest stuck first."""
    now, before = _answered(cur), _answered(base)
    found: dict[tuple[str, str], Stuck] = {}
    for key, spans in now.items():
        if len(key) != 3:
            continue  # the callers' views, read below
        caller, svc, op = key
        bs = before.get(key, [])
        n = len(bs)
        if n < FEW_FLOOR:
            # never seen in the baseline: against every call this caller made to the service
            # (a caller new in the window has none: new work, not stuck calls)
            bs = [s for k, v in before.items() if len(k) == 3 and k[:2] == (caller, svc) for s in v]
            if len(bs) < MIN_SAMPLE:
                continue
        # as the caller saw it; calls whose caller is not seen, as any call of that name was seen
        views = before.get((*key, "client"), []) if caller else before.get(("client", op), [])
        b = sorted(s.duration_ns / 1e6 for s in bs + (views if n else []))
        limit = bar_ms(b[-1], n)
        long = sorted((s for s in spans if s.duration_ns / 1e6 >= limit),
                      key=lambda s: -s.duration_ns)
        if not long:
            continue
        got = found.get((svc, op))
        if got is None:
            found[(svc, op)] = Stuck(svc, op, (n, len(spans)), b[-1], _quantile(b, 0.5),
                                     [s.duration_ns / 1e6 for s in long], long[:5], limit, n < MIN_SAMPLE)
        else:  # the same operation stuck for another caller too
            got.count = (got.count[0] + n, got.count[1] + len(spans))
            got.few = got.few and n < MIN_SAMPLE
            got.stuck_ms = sorted(got.stuck_ms + [s.duration_ns / 1e6 for s in long], reverse=True)
            got.examples = (got.examples + long)[:5]
    return sorted(found.values(), key=lambda x: -x.stuck_ms[0])
