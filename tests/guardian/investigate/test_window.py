"""Window parsing: durations, absolute times, defaults for live and recorded stores, baselines."""
from __future__ import annotations

import pytest

from capture.span import Span
from capture.store.api import TimeWindow
from capture.store.factory import open_store
from capture.store.window import (WindowError, default_window, parse_duration, parse_time,
                             resolve_window, split_baseline)

S = 10**9
T0 = 1_768_471_200  # 2026-01-15T10:00:00Z


def test_parse_duration():
    assert parse_duration("15m") == 900
    assert parse_duration("2h") == 7200
    assert parse_duration("90") == 90
    assert parse_duration("500ms") == 0.5
    with pytest.raises(WindowError):
        parse_duration("soon")


def test_parse_time_forms():
    assert parse_time("2026-01-15T10:00:00Z") == T0 * S
    assert parse_time("2026-01-15T11:00:00+01:00") == T0 * S
    assert parse_time("2026-01-15 10:00:00") == T0 * S  # naive = UTC
    assert parse_time(str(T0)) == T0 * S
    assert parse_time(T0 * 1000) == T0 * S  # ms
    assert parse_time(T0 * S) == T0 * S  # ns
    with pytest.raises(WindowError):
        parse_time("half past ten")


def test_resolve_window():
    now = (T0 + 3600) * S
    assert resolve_window(None, since="15m", now_ns=now) == TimeWindow(now - 900 * S, now)
    w = resolve_window(None, start="2026-01-15T10:00:00Z", end=str(T0 + 60), now_ns=now)
    assert w == TimeWindow(T0 * S, (T0 + 60) * S)
    with pytest.raises(WindowError):
        resolve_window(None, start=str(T0 + 60), end=str(T0), now_ns=now)
    with pytest.raises(WindowError):
        resolve_window(None, since="5m", start=str(T0), now_ns=now)


def _store(start_s, end_s, step_s=1):
    st = open_store(None)
    st.append([Span(name="GET /", kind="SERVER", start_time_unix_nano=t * S,
                    end_time_unix_nano=t * S + 5_000_000, resource={"service.name": "a"})
               for t in range(start_s, end_s, step_s)])
    return st


def test_default_window_recorded_vs_live():
    st = _store(T0, T0 + 600)
    now = (T0 + 86400) * S
    w = default_window(st, now)  # recorded long ago: the store's own range
    assert w.start_ns == T0 * S and w.end_ns > (T0 + 599) * S
    live = default_window(st, (T0 + 610) * S)  # data in the last 15 min: the last 15 min
    assert live == TimeWindow((T0 + 610 - 900) * S, (T0 + 610) * S)
    assert default_window(open_store(None), now) == TimeWindow(now - 900 * S, now)


def test_split_baseline():
    st = _store(T0, T0 + 600)
    late = TimeWindow((T0 + 300) * S, (T0 + 600) * S)
    cur, base = split_baseline(st, late)  # data before: the equal window before
    assert cur == late and base == TimeWindow(T0 * S, (T0 + 300) * S)
    whole = TimeWindow(T0 * S, (T0 + 600) * S)
    cur, base = split_baseline(st, whole)  # nothing before: first third is the baseline
    assert base.start_ns == whole.start_ns and base.end_ns == cur.start_ns
    assert cur.end_ns == whole.end_ns and base.end_ns - base.start_ns == 200 * S
