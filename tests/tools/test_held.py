"""How a service held its requests (tools/held.py): on its CPU quota's period, stopped once,
or one at a time in a queue; a slow service, a fixed delay or a timer's beat is none of them."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.held import hold, holds, lattice
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
WINDOW_NS = 30 * 10**9


def throttled(t: int, period_ms: int, run_ms: int) -> int:
    """When a service that runs run_ms of every period_ms (its quota) finishes work ready at t."""
    into = (t - T0) % (period_ms * MS)
    return t if into < run_ms * MS else t + period_ms * MS - into


def build(t0: int, mode: str | None, seed: int = 1, n: int = 300) -> list[Span]:
    """Calls from web to svc `GET /x`, sent at random, each 2 ms of svc's own work. Modes:
    "quota" svc runs 20 ms of every 100 ms, every other second (its quota spent);
    "stop" svc stopped from 10 s to 13 s; "pool" its requests of that time wait for a pooled
    connection freed at 13 s, while svc goes on with others; "slow" 80-400 ms of work at
    random; "lock" svc's requests wait for one lock, let go one at a time in arrival order;
    "timer" a poller's blocking read that times out every 300 ms, sent again at once."""
    rng = random.Random(seed)
    out = []
    sends = sorted(t0 + int(rng.uniform(0, WINDOW_NS)) for _ in range(n))
    free = t0  # the lock's next free instant
    if mode == "timer":
        sends = [t0 + i * 300 * MS for i in range(WINDOW_NS // (300 * MS))]
    for i, t in enumerate(sends):
        trace = f"{rng.getrandbits(128):032x}"
        start, end = t + MS // 5, t + 2 * MS
        if mode == "quota" and ((t - t0) // 10**9) % 2:
            end = throttled(end, 100, 20) + rng.randrange(0, 2 * MS)
        elif mode in ("stop", "pool") and t0 + 10 * 10**9 <= t < t0 + 13 * 10**9:
            end = t0 + 13 * 10**9 + rng.randrange(0, 3 * MS)
            if mode == "stop":  # it reads nothing while stopped: it begins them as it runs again
                start = end - MS
        elif mode == "slow" and rng.random() < 0.5:
            end = t + rng.randrange(80, 400) * MS
        elif mode == "lock" and rng.random() < 0.5:
            end = max(free, t) + 90 * MS
            free = end
        elif mode == "timer":
            end = t + 300 * MS - MS
        cl = Span(name="GET /x", kind="CLIENT", start_time_unix_nano=t, end_time_unix_nano=end + MS // 5,
                  resource={"service.name": "web"}, trace_id=trace, span_id=f"{trace[:12]}01")
        sv = Span(name="GET /x", kind="SERVER", start_time_unix_nano=start, end_time_unix_nano=end,
                  resource={"service.name": "svc"}, trace_id=trace, span_id=f"{trace[:12]}02",
                  parent_span_id=cl.span_id)
        out += [cl, sv]
    return out


def found(mode: str | None, base_mode: str | None = None) -> list[tuple[str, str]]:
    base = Sample(TimeWindow(T0, T0 + WINDOW_NS), build(T0, base_mode, seed=2))
    cur = Sample(TimeWindow(T0 + WINDOW_NS, T0 + 2 * WINDOW_NS), build(T0 + WINDOW_NS, mode))
    return [(h.service, h.kind) for h in holds(cur, base)]


def test_a_service_out_of_cpu_quota_lets_its_requests_go_on_the_period():
    got = holds(Sample(TimeWindow(T0 + WINDOW_NS, T0 + 2 * WINDOW_NS), build(T0 + WINDOW_NS, "quota")),
                Sample(TimeWindow(T0, T0 + WINDOW_NS), build(T0, None, seed=2)))
    assert [(h.service, h.kind) for h in got] == [("svc", "period")]
    assert abs(got[0].period_ms % 100) < 2 or abs(got[0].period_ms % 100) > 98, got[0].period_ms
    assert got[0].own() and "period" in got[0].describe()


def test_a_stopped_service_lets_everything_go_at_once():
    assert found("stop") == [("svc", "once")]


def test_requests_let_go_at_once_by_a_service_that_went_on_working_are_no_stop():
    """Waiters on a pool that frees its connections at once (a lock given up): let go
    together after seconds, but svc began and ended other work meanwhile."""
    assert found("pool") == []


def test_a_queue_lets_its_waiters_go_one_at_a_time_in_order():
    assert found("lock") == [("svc", "queue")]


def test_slowness_a_timer_or_the_same_pattern_in_the_baseline_is_no_hold():
    assert found(None) == []
    assert found("slow") == []  # slow at random: no lattice, no common release
    assert found("timer") == []  # sent again as each came back: a timer's beat, not a quota
    assert found("quota", base_mode="quota") == []  # it always ran so


def test_a_lattice_needs_more_instants_on_it_than_chance_gives():
    rng = random.Random(5)
    on = [T0 + k * 100 * MS + rng.randrange(0, 3 * MS) for k in rng.sample(range(200), 12)]
    lat = lattice(on)
    assert lat.period_ns and lat.on == 12 and lat.p < 1e-6
    assert lat.period_ns % (100 * MS) < 4 * MS or lat.period_ns % (100 * MS) > 96 * MS
    noise = [T0 + rng.randrange(0, WINDOW_NS) for _ in range(12)]
    assert lattice(noise).p > 1e-4
    assert lattice(on[:3]).period_ns == 0  # too few to say


def test_a_hold_with_nothing_held_is_none():
    assert hold("svc", []).kind == ""
