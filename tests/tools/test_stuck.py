"""Stuck calls (tools/stuck.py) on few baseline calls: the bar rises as the calls behind it
fall (sparse data sees a lock's operation 0-2 times in the baseline), and the finding says
on how few it rests."""
from __future__ import annotations

from capture.span import Span
from capture.store.api import TimeWindow
from tools.sampling import Sample
from tools.stuck import STUCK_MS, bar_ms, stuck_calls

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
WINDOW_NS = 60 * 10**9


def call(t: int, ms: float, op: str, i: int, caller: str = "web") -> list[Span]:
    trace = f"{i:032x}"
    cl = Span(name=op, kind="CLIENT", start_time_unix_nano=t, end_time_unix_nano=t + int(ms * MS) + MS // 5,
              resource={"service.name": caller}, trace_id=trace, span_id=f"{i:012x}0001")
    sv = Span(name=op, kind="SERVER", start_time_unix_nano=t + MS // 10, end_time_unix_nano=t + int(ms * MS),
              resource={"service.name": "db"}, trace_id=trace, span_id=f"{i:012x}0002",
              parent_span_id=cl.span_id)
    return [cl, sv]


def samples(base_updates: int, stuck_s: float, caller: str = "web") -> tuple[Sample, Sample]:
    """web calls db `SELECT` 20 times a window (2 ms) and `UPDATE` base_updates times in the
    baseline (3 ms); in the window one UPDATE (from caller) waits stuck_s on a lock."""
    base, cur = [], []
    for k in range(20):
        base += call(T0 + k * 2 * 10**9, 2.0, "SELECT", k)
        cur += call(T0 + WINDOW_NS + k * 2 * 10**9, 2.0, "SELECT", 100 + k)
    for k in range(base_updates):
        base += call(T0 + k * 3 * 10**9 + 10**9, 3.0, "UPDATE", 200 + k)
    cur += call(T0 + WINDOW_NS + 10**9, stuck_s * 1e3, "UPDATE", 300, caller)
    return (Sample(TimeWindow(T0 + WINDOW_NS, T0 + 2 * WINDOW_NS), cur),
            Sample(TimeWindow(T0, T0 + WINDOW_NS), base))


def test_the_bar_rises_as_the_baseline_calls_fall():
    assert bar_ms(2.0, 5) == STUCK_MS
    assert bar_ms(2.0, 2) == 2.5 * STUCK_MS and bar_ms(2.0, 1) == 5 * STUCK_MS
    assert bar_ms(2.0, 0) == 5 * STUCK_MS  # judged on the caller's other calls


def test_a_lock_seen_twice_in_the_baseline_is_stuck_when_far_past_the_raised_bar():
    got = stuck_calls(*samples(2, 20.0))
    assert [(s.service, s.operation) for s in got] == [("db", "UPDATE")]
    assert got[0].few and got[0].bar_ms == 2.5 * STUCK_MS
    assert "only 2 baseline calls" in got[0].describe() and "not sure" in got[0].describe()
    assert stuck_calls(*samples(2, 2.0)) == []  # 2 s: stuck on 5 calls, not on 2


def test_an_operation_the_baseline_never_saw_is_judged_on_its_callers_other_calls():
    got = stuck_calls(*samples(0, 20.0))
    assert [(s.service, s.operation, s.count[0]) for s in got] == [("db", "UPDATE", 0)]
    assert "no baseline call" in got[0].describe()
    assert stuck_calls(*samples(0, 20.0, caller="batch")) == []  # a new caller: new work


def test_enough_baseline_calls_keep_the_plain_bar():
    got = stuck_calls(*samples(6, 1.5))
    assert [(s.operation, s.few) for s in got] == [("UPDATE", False)]
