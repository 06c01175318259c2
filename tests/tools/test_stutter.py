"""Stutter (tools/stutter.py): a service stopped again and again begins the requests that waited
all at once when it runs; one that is merely busy, or a host that stalls everything, does not
name it."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.sampling import Sample
from tools.stutter import END_LAG_NS, ended_with, stutters

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
MINUTE = 60 * 10**9


def held(t: int, t0: int, stop_s: float, period_s: float) -> int:
    """When a request arriving at t is read by a process stopped for the first stop_s of
    every period_s from t0."""
    phase = (t - t0) % int(period_s * 1e9)
    return t + int(stop_s * 1e9) - phase if phase < stop_s * 1e9 else t


def traffic(rng: random.Random, t0: int, services: tuple[str, ...] = ("db", "cache"),
            paused: tuple[str, ...] = (), stop_s: float = 0.6, n: int = 300) -> list[Span]:
    """n requests a minute at random times; each calls every service once (app -> svc); a
    paused service reads a request only when it runs."""
    out = []
    for i in range(n):
        t = t0 + rng.randrange(MINUTE - 2 * 10**9)
        trace = f"{rng.getrandbits(128):032x}"
        root = f"a{i:015x}"
        end = t
        for j, svc in enumerate(services):
            begin = held(end, t0, stop_s, 1.0) if svc in paused else end
            d = int(rng.uniform(0.1, 0.5) * MS)
            cid, sid = f"c{i:011x}{j:04x}", f"s{i:011x}{j:04x}"
            out.append(Span(name="Q", kind="CLIENT", start_time_unix_nano=begin,
                            end_time_unix_nano=begin + d + MS // 20, resource={"service.name": "app"},
                            trace_id=trace, span_id=cid, parent_span_id=root, status_code="OK"))
            out.append(Span(name="Q", kind="SERVER", start_time_unix_nano=begin,
                            end_time_unix_nano=begin + d, resource={"service.name": svc},
                            trace_id=trace, span_id=sid, parent_span_id=cid, status_code="OK"))
            end = begin + d + MS
        out.append(Span(name="GET /x", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=end,
                        resource={"service.name": "app"}, trace_id=trace, span_id=root, status_code="OK"))
    return out


def found(now: list[Span], base: list[Span]) -> list:
    return stutters(Sample(TimeWindow(T0 + MINUTE, T0 + 2 * MINUTE), now),
                    Sample(TimeWindow(T0, T0 + MINUTE), base))


def test_a_service_stopped_again_and_again_stutters():
    rng = random.Random(1)
    got = found(traffic(rng, T0 + MINUTE, paused=("db",)), traffic(rng, T0))
    assert [x.service for x in got] == ["db"], got
    assert got[0].share[1] > 2 * got[0].share[0] and len(got[0].releases) >= 10


def test_requests_at_random_times_do_not_stutter():
    rng = random.Random(2)
    assert found(traffic(rng, T0 + MINUTE, n=600), traffic(rng, T0)) == []


def test_what_a_stopped_service_releases_does_not_stutter_too():
    """cache is called right after db answers: its calls begin together because db released
    them, not because cache stopped."""
    rng = random.Random(3)
    got = found(traffic(rng, T0 + MINUTE, paused=("db",)), traffic(rng, T0))
    assert "cache" not in [x.service for x in got]


def test_a_host_stalling_every_service_names_none():
    rng = random.Random(4)
    svcs = ("db", "cache", "queue")
    now = traffic(rng, T0 + MINUTE, svcs, paused=svcs, stop_s=0.3)
    # every service stalled on its own, none by another's release
    for s in now:
        if s.kind in ("CLIENT", "SERVER"):
            s.trace_id = f"{random.Random(s.span_id).getrandbits(128):032x}"
    assert found(now, traffic(rng, T0, svcs)) == []


def test_requests_ending_right_after_the_releases_waited_on_them():
    releases = [T0 + k * 10**9 for k in range(30)]
    waited = [r + 3 * MS for r in releases[:10]]
    spread = [T0 + int(random.Random(k).uniform(0, 30) * 1e9) for k in range(10)]
    assert ended_with(releases, waited, T0, T0 + 30 * 10**9) >= 0.99
    assert ended_with(releases, spread, T0, T0 + 30 * 10**9) < 0.99
    assert ended_with(releases, [r + 2 * END_LAG_NS for r in releases[:10]], T0, T0 + 30 * 10**9) == 0.0
