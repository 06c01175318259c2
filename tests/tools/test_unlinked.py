"""Calls no SERVER span answered (tools/unlinked.py): the callee or its path grew when the
caller's calls to it grew alone among its calls; not when all of them grew (the caller)."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from guardian.investigate.signals import signals
from tools.sampling import Sample
from tools.unlinked import unlinked_shifts

MS = 1_000_000
T0 = 1_790_000_000 * 10**9
EXT = "10.0.0.9:443"


def requests(rng: random.Random, t0: int, n: int, ext_ms: float, cache_ms: float,
             answered: bool = False) -> list[Span]:
    """n traces: app `POST /pay` calls cache `GET` (answered by cache's SERVER span) and then
    the outside service at EXT `POST /charge` (answered only when `answered`)."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root = Span(name="POST /pay", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + 80 * MS,
                    resource={"service.name": "app"}, trace_id=trace, span_id=f"a{i:08x}", status_code="OK")
        out.append(root)
        cur = t + MS
        for j, (callee, name, ms, port) in enumerate((("cache", "GET", cache_ms, 6379),
                                                       ("ext", "POST /charge", ext_ms, 443))):
            d = int((ms + rng.uniform(0.5, 3.0)) * MS)
            cid = f"a{i:08x}{j:04x}1"
            out.append(Span(name=name, kind="CLIENT", start_time_unix_nano=cur, end_time_unix_nano=cur + d,
                            resource={"service.name": "app"}, trace_id=trace, span_id=cid,
                            parent_span_id=root.span_id, status_code="OK",
                            attributes={"server.address": "10.0.0.9" if callee == "ext" else "127.0.0.1",
                                        "server.port": port}))
            if callee == "cache" or answered:
                out.append(Span(name=name, kind="SERVER", start_time_unix_nano=cur + int(0.1 * MS),
                                end_time_unix_nano=cur + d - int(0.1 * MS),
                                resource={"service.name": callee}, trace_id=trace,
                                span_id=f"a{i:08x}{j:04x}2", parent_span_id=cid, status_code="OK"))
            cur += d + MS
        t += 300 * MS
    return out


def samples(ext_ms: float, cache_ms: float, answered: bool = False, base_n: int = 8) -> tuple[Sample, Sample]:
    rng = random.Random(3)
    base = requests(rng, T0, base_n, 5.0, 1.0, answered)
    cur = requests(rng, T0 + 60 * 10**9, 40, ext_ms, cache_ms, answered)
    return (Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
            Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def test_an_unanswered_callee_slower_alone_is_named_from_few_baseline_calls():
    got = unlinked_shifts(*samples(ext_ms=20.0, cache_ms=1.0))
    assert [(g.client, g.server, g.operation) for g in got] == [("app", EXT, "POST /charge")]
    assert got[0].every_call and got[0].count == (8, 40)


def test_the_callers_calls_all_slower_is_the_caller():
    assert unlinked_shifts(*samples(ext_ms=20.0, cache_ms=15.0)) == []


def test_as_before_is_nothing():
    assert unlinked_shifts(*samples(ext_ms=5.0, cache_ms=1.0)) == []


def test_an_answered_callee_is_left_to_the_gaps():
    assert unlinked_shifts(*samples(ext_ms=20.0, cache_ms=1.0, answered=True)) == []


def test_the_signals_call_it_the_callees_network():
    """Through the investigator's signals: the outside callee's network, not a stall."""
    sig = signals(*samples(ext_ms=20.0, cache_ms=1.0))
    g = sig.network(EXT)
    assert g is not None and g.client == "app" and "app" not in sig.slow_callers
