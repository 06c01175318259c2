"""A database stopped again and again (guardian/investigate/stutter.py): its own spans stay
quick (each request is read when it runs again) and its caller's wait shows as the caller's
own time, as when the caller cannot open its connection meanwhile; the caller's slow requests
end right after the database's bursts, so the database is named, not the caller."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from guardian.investigate import deterministic
from tests.guardian.investigate.test_classes import top

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
MINUTE = 60 * 10**9
NOW = TimeWindow(T0 + MINUTE, T0 + 2 * MINUTE)


def shop(seed: int, paused: bool) -> list[Span]:
    """loadgen -> app `GET /item` -> db `SELECT`, 5 requests a second for two minutes; in the
    second, db is stopped for 0.6 s of every second when paused."""
    rng = random.Random(seed)
    out: list[Span] = []
    for i in range(600):
        t = T0 + int(rng.uniform(0, 2 * MINUTE - 2 * 10**9))
        trace = f"{rng.getrandbits(128):032x}"
        call = t + int(rng.uniform(1, 3) * MS)
        phase = (call - T0) % 10**9
        if paused and t >= NOW.start_ns and phase < 600 * MS:
            call += 600 * MS - phase  # app waits, outside any span of its calls, until db runs
        d = int(rng.uniform(0.1, 0.4) * MS)
        end = call + d + int(rng.uniform(1, 3) * MS)
        ids = [f"{k}{i:015x}" for k in "lacs"]
        out += [
            Span(name="GET /item", kind="CLIENT", start_time_unix_nano=t - MS // 10,
                 end_time_unix_nano=end + MS // 10,
                 resource={"service.name": "loadgen"}, trace_id=trace, span_id=ids[0], status_code="OK"),
            Span(name="GET /item", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=end,
                 resource={"service.name": "app"}, trace_id=trace, span_id=ids[1], parent_span_id=ids[0],
                 status_code="OK", attributes={"http.response.status_code": 200}),
            Span(name="SELECT", kind="CLIENT", start_time_unix_nano=call,
                 end_time_unix_nano=call + d + MS // 20,
                 resource={"service.name": "app"}, trace_id=trace, span_id=ids[2], parent_span_id=ids[1],
                 status_code="OK"),
            Span(name="SELECT", kind="SERVER", start_time_unix_nano=call, end_time_unix_nano=call + d,
                 resource={"service.name": "db"}, trace_id=trace, span_id=ids[3], parent_span_id=ids[2],
                 status_code="OK"),
        ]
    return out


def test_a_database_stopped_again_and_again_is_named_not_its_caller():
    report = top(shop(1, paused=True), "why is app slow?", NOW)
    rc = report.root_causes[0]
    assert (rc.service, rc.kind) == ("db", "latency"), report.summary
    assert "bursts" in rc.description


def test_without_the_hand_over_its_caller_would_be_named(monkeypatch):
    monkeypatch.setattr(deterministic, "_hand_over", lambda *a: None)
    report = top(shop(1, paused=True), "why is app slow?", NOW)
    assert report.root_causes and report.root_causes[0].service == "app", report.summary


def test_the_same_traffic_without_a_pause_names_nothing():
    report = top(shop(2, paused=False), "why is app slow?", NOW)
    assert report.root_causes == [], report.summary


def _handed(pool_held: bool) -> dict[str, float]:
    from types import SimpleNamespace

    from guardian.investigate.rank import Candidate
    from guardian.investigate.samples import Walker
    from guardian.investigate.stutter import hand_over
    from tests.guardian.investigate.mesh import store_of
    from tools.sampling import sample
    from tools.stutter import stutters

    spans = shop(1, paused=True)
    store = store_of(spans)
    try:
        base = TimeWindow(T0, T0 + MINUTE)
        slow = [s for s in spans if s.service == "app" and s.kind == "SERVER"
                and s.start_time_unix_nano >= NOW.start_ns and s.duration_ns > 100 * MS][:20]
        x = Candidate(key=("app", "GET /item"), kind="saturation", score=2.0, spans=slow,
                      excess_ms=[s.duration_ns / 1e6 for s in slow])
        sig = SimpleNamespace(stutters=stutters(sample(store, NOW), sample(store, base)), stuck=[],
                              pools=[SimpleNamespace(service="app")] if pool_held else [])
        return {c.key[0]: round(c.score, 2) for c in hand_over(Walker(store, NOW, base), [x], sig)}
    finally:
        store.close()


def test_a_caller_whose_pool_was_held_keeps_its_slowdown():
    """Requests that waited for a pooled connection were held by the pool: the database then
    begins what waited in bursts as connections come back, but the pool is the cause."""
    assert _handed(pool_held=False) == {"app": 0.4, "db": 2.0}
    assert _handed(pool_held=True) == {"app": 2.0}
