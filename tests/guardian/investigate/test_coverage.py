"""A window that runs past the recorded data (guardian/investigate/coverage.py): what is sized as
a share of the window, or counted per second of it, is read on the time its data covers."""
from __future__ import annotations

from capture.span import Span
from capture.store.api import SpanFilter, TimeWindow
from capture.store.factory import open_store
from guardian.investigate.candidates import _signal_candidates
from guardian.investigate.change import _op_stats, _tail_shown
from guardian.investigate.rank import Candidate
from guardian.investigate.samples import Walker
from guardian.investigate.signals import Signals
from tools.stuck import Stuck

S, MS = 10**9, 1_000_000
T0 = 1_790_000_000 * S
BASELINE = TimeWindow(T0, T0 + 60 * S)
ASKED = TimeWindow(T0 + 60 * S, T0 + 120 * S)  # the data ends 20 s into it


def _calls(store, svc: str, name: str, t0: int, n: int, every_s: float, ms: float) -> list[Span]:
    spans = [Span(name=name, kind="SERVER", start_time_unix_nano=t0 + int(i * every_s * S),
                  end_time_unix_nano=t0 + int(i * every_s * S + ms * MS), status_code="UNSET",
                  resource={"service.name": svc}, trace_id=f"{svc}{t0 + i:027x}"[-32:],
                  span_id=f"{t0 // S + i:016x}") for i in range(n)]
    store.append(spans)
    return spans


def test_one_stuck_call_is_sized_against_the_covered_time():
    """One call of db stuck 8 s: under a quarter of the 60 s asked about (and under the 10 s a
    busy host may stall a call), but 40 % of the 20 s the data covers: a lock held through
    what was recorded, not a hiccup. Read on the asked window, it was dropped."""
    store = open_store(None)
    _calls(store, "db", "SELECT items", T0, 60, 1.0, 2.0)
    _calls(store, "db", "SELECT items", T0 + 60 * S, 20, 1.0, 2.0)
    stuck = _calls(store, "db", "SELECT items", T0 + 61 * S + S // 2, 1, 1.0, 8000.0)
    walker = Walker(store, ASKED, BASELINE)
    sig = Signals(stuck=[Stuck("db", "SELECT items", (60, 21), 2.0, 2.0, [8000.0], stuck)])
    cands: dict = {}
    _signal_candidates(walker, sig, cands)
    c = cands.get(("db", "latency"))
    assert c is not None and c.stuck, cands


def test_calls_more_than_doubled_per_second_covered_are_more_work():
    """20 slow calls in the 20 s covered, against 20 in the 60 s baseline: three times the rate,
    more work answered slower, not a slower operation (per second of the asked window it
    looked the same rate). The same slow calls at the baseline's rate are shown slower."""
    def shown(n_now: int) -> bool:
        store = open_store(None)
        _calls(store, "api", "GET /q", T0, 20, 3.0, 5.0)
        _calls(store, "api", "GET /q", T0 + 60 * S, n_now, 20.0 / n_now, 200.0)
        _calls(store, "other", "GET /", T0, 80, 1.0, 1.0)  # the data's span: to 20 s into ASKED
        walker = Walker(store, ASKED, BASELINE)
        tmpl = store.spans(SpanFilter(window=ASKED, service="api", limit=1))[0]
        cur, base = _op_stats(store, tmpl, ASKED), _op_stats(store, tmpl, BASELINE)
        c = Candidate(key=("api", "GET /q"), kind="latency")
        return _tail_shown(walker, c, tmpl, cur, base) and c.shown

    assert not shown(20)
    assert shown(7)
