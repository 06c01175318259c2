"""A process stopped again and again (guardian/investigate/release.py): its callers' requests
sit idle and resume together into calls to it, whose spans begin only at the release, so each
request alone reads as its caller's own slowdown. The release names the stopped process; a
caller slowed by a fixed delay is still named itself."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from guardian.investigate import signals
from guardian.investigate.deterministic import investigate
from tests.guardian.investigate.mesh import MS, T0, store_of

HALF_NS = 120 * 10**9
NOW = TimeWindow(T0 + HALF_NS, T0 + 2 * HALF_NS)


def _held(t: int, stop: bool) -> int:
    """When db, stopped 300 ms of every second in the window, lets work begun at t go."""
    into = (t - T0) % (1000 * MS)
    return t + (300 * MS - into if stop and t >= NOW.start_ns and into < 300 * MS else 0)


def build(fault: str, seed: int = 5, rate: float = 6.0) -> list[Span]:
    """web `GET /page` -> inv `GET /item` -> db `SELECT` (all linked), requests arriving at
    random. "stop:db": db stopped in the window (inv's calls begin at its release, as the
    capture stamps them); "slow:inv": 300 ms of inv's own before each call in the window."""
    rng = random.Random(seed)
    out: list[Span] = []
    n = 0

    def span(trace, parent, svc, name, kind, a, b, port=None):
        nonlocal n
        n += 1
        s = Span(name=name, kind=kind, start_time_unix_nano=a, end_time_unix_nano=b, status_code="OK",
                 resource={"service.name": svc}, trace_id=trace, span_id=f"{n:016x}", parent_span_id=parent,
                 attributes={"server.port": port} if port else {})
        out.append(s)
        return s

    for _ in range(int(rate * 2 * HALF_NS / 1e9)):
        t = T0 + int(rng.uniform(0, 2 * HALF_NS))
        trace = f"{rng.getrandbits(128):032x}"
        on = t >= NOW.start_ns
        inv_at = t + int(rng.uniform(1, 2) * MS)
        call = inv_at + int(rng.uniform(0.5, 1.5) * MS) + (300 * MS if fault == "slow:inv" and on else 0)
        call = _held(call, fault == "stop:db")
        q = int(rng.uniform(0.5, 1.5) * MS)
        inv_end = call + q + int(rng.uniform(0.3, 0.8) * MS)
        end = inv_end + int(rng.uniform(1, 2) * MS)
        root = span(trace, None, "web", "GET /page", "SERVER", t, end)
        wc = span(trace, root.span_id, "web", "GET /item", "CLIENT", inv_at, inv_end, 8081)
        inv = span(trace, wc.span_id, "inv", "GET /item", "SERVER", inv_at, inv_end)
        ic = span(trace, inv.span_id, "inv", "SELECT", "CLIENT", call, call + q, 5432)
        span(trace, ic.span_id, "db", "SELECT", "SERVER", call, call + q)
    return out


def top(spans):
    store = store_of(spans)
    try:
        return investigate(store, "Pages are slow, why?", NOW).root_causes
    finally:
        store.close()


def test_a_callee_stopped_again_and_again_is_named_not_its_caller():
    rc = top(build("stop:db"))[0]
    assert (rc.service, rc.kind) == ("db", "latency"), rc
    assert "resumed" in rc.description


def test_without_the_release_the_caller_is_named(monkeypatch):
    monkeypatch.setattr(signals, "releases", lambda cur, base: [])
    causes = top(build("stop:db"))
    assert not causes or causes[0].service != "db"


def test_a_caller_slowed_by_a_fixed_delay_is_named_itself():
    rc = top(build("slow:inv"))[0]
    assert rc.service == "inv", rc
