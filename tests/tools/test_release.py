"""Requests held and released together (tools/release.py): a process stopped again and again
holds its requests (or its callers' requests, before their next call to it) and lets them go
at once; a fixed delay, waits inside a call (a lock) or the same pattern in the baseline are
not named."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.release import releases
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
WINDOW_NS = 60 * 10**9


def stopped(t: int, period_ms: int, stop_ms: int) -> int:
    """When a process stopped for stop_ms of every period_ms lets work begun at t go."""
    into = (t - T0) % (period_ms * MS)
    return t + (stop_ms * MS - into if into < stop_ms * MS else 0)


def build(t0: int, mode: str | None, seed: int = 1, n: int = 900) -> list[Span]:
    """Requests to inv `GET /item` arriving at random, each doing 1 ms of its own work, then
    calling db `SELECT` (1 ms, linked). Modes: "db" stopped 300 ms of every 1 s (inv's call
    to it begins when it runs again, as the capture stamps it); "inv" stopped likewise (its
    requests end when it runs again); "sleep" 300 ms of inv's own before each call; "lock"
    calls held inside db until it lets go, every second."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        t = t0 + int(rng.uniform(0, WINDOW_NS))
        trace = f"{rng.getrandbits(128):032x}"
        call = t + MS
        if mode == "db":
            call = stopped(call, 1000, 300)
        if mode == "sleep":
            call += 300 * MS
        took = MS
        if mode == "lock":
            took = stopped(call, 1000, 300) - call + MS
        end = call + took + MS
        if mode == "inv":
            end = stopped(end, 1000, 300)
        root = Span(name="GET /item", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=end,
                    resource={"service.name": "inv"}, trace_id=trace, span_id=f"{trace[:12]}01")
        cl = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=call, end_time_unix_nano=call + took,
                  resource={"service.name": "inv"}, trace_id=trace, span_id=f"{trace[:12]}02",
                  parent_span_id=root.span_id, attributes={"server.port": 5432})
        sv = Span(name="SELECT", kind="SERVER", start_time_unix_nano=call, end_time_unix_nano=call + took,
                  resource={"service.name": "db"}, trace_id=trace, span_id=f"{trace[:12]}03",
                  parent_span_id=cl.span_id)
        out += [root, cl, sv]
    return out


def found(mode: str | None, base_mode: str | None = None):
    base = Sample(TimeWindow(T0, T0 + WINDOW_NS), build(T0, base_mode, seed=2))
    cur = Sample(TimeWindow(T0 + WINDOW_NS, T0 + 2 * WINDOW_NS), build(T0 + WINDOW_NS, mode))
    return [(r.service, r.by) for r in releases(cur, base)]


def test_a_stopped_callee_holds_its_callers_requests_and_is_named():
    assert found("db") == [("inv", "db")]


def test_a_stopped_service_holds_its_own_requests():
    assert found("inv") == [("inv", "inv")]


def test_a_fixed_delay_or_nothing_is_no_release():
    assert found(None) == []
    assert found("sleep") == []  # requests that began apart end apart


def test_waits_inside_a_call_hold_the_callee_not_the_caller():
    """Calls held at db and let go together (a lock released): db held them; inv's requests
    waited inside their call, not idle."""
    assert found("lock") == [("db", "db")]


def test_the_same_pattern_in_the_baseline_is_no_change():
    assert found("db", base_mode="db") == []
