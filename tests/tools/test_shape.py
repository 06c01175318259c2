"""Call-pattern changes (tools/shape.py) on spans without status codes, shaped as the capture
emits them: a name lookup coming and going with the resolver's cache is no change; a call an
operation no longer makes is one, and says which answer requests stopped after."""
from __future__ import annotations

import random

import pytest

from capture.span import Span
from capture.store.api import TimeWindow
from tools.sampling import Sample
from tools.shape import shape_changes

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def requests(rng: random.Random, t0: int, n: int, lookup_share: float, stop_after_lookup: float = 0.0):
    """n requests of api `POST /order`: a DNS lookup of orders (when not cached), then a call to
    orders `POST /orders`. stop_after_lookup: share that fail right after the lookup."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        sp = lambda **k: Span(trace_id=trace, status_code="UNSET", **k)  # noqa: E731
        root_id = f"{i:08x}00000000"
        cur, spans = t + MS, []
        looked = rng.random() < lookup_share
        if looked:
            spans.append(sp(name="DNS A orders.local", kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + MS // 5, resource={"service.name": "api"},
                            span_id=f"{i:08x}00000001", parent_span_id=root_id,
                            attributes={"dns.question.name": "orders.local", "server.address": "127.0.0.1",
                                        "server.port": 53}))
            cur += MS // 5
        if not (looked and rng.random() < stop_after_lookup):
            spans.append(sp(name="POST /orders", kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + 5 * MS, resource={"service.name": "api"},
                            span_id=f"{i:08x}00000002", parent_span_id=root_id,
                            attributes={"server.address": "orders", "server.port": 8081}))
            cur += 5 * MS
        spans.append(sp(name="POST /order", kind="SERVER", start_time_unix_nano=t,
                        end_time_unix_nano=cur + MS, resource={"service.name": "api"}, span_id=root_id))
        out += spans
        t += 100 * MS
    return out


def changes(now_share: float, stop: float = 0.0):
    rng = random.Random(3)
    base = requests(rng, T0, 300, 0.9)
    cur = requests(rng, T0 + 60 * 10**9, 300, now_share, stop)
    return shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                         Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def test_lookups_coming_and_going_with_the_cache_are_no_change():
    assert changes(now_share=0.3) == []


def test_requests_stopping_after_a_lookup_still_show():
    got = changes(now_share=0.9, stop=0.8)
    dropped = [c for c in got if c.change == "dropped"]
    assert dropped and dropped[0].what.endswith("POST /orders")
    assert not any("DNS" in c.what for c in got)


def orders(rng: random.Random, t0: int, n: int, missing: float, shorter: bool):
    """n requests of api `POST /order` calling orders `POST /orders` (5 ms of its 6); a share
    `missing` lack the call's span: lost by the capture (as long as the rest) or not made
    (shorter by the call's time)."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root_id = f"{i:08x}00000000"
        gone = rng.random() < missing
        d = 6 * MS - (5 * MS if gone and shorter else 0) + rng.randrange(MS // 5)
        if not gone:
            out.append(Span(trace_id=trace, status_code="UNSET", name="POST /orders", kind="CLIENT",
                            start_time_unix_nano=t + MS // 2, end_time_unix_nano=t + MS // 2 + 5 * MS,
                            resource={"service.name": "api"}, span_id=f"{i:08x}00000002",
                            parent_span_id=root_id,
                            attributes={"server.address": "orders", "server.port": 8081}))
        out.append(Span(trace_id=trace, status_code="UNSET", name="POST /order", kind="SERVER",
                        start_time_unix_nano=t, end_time_unix_nano=t + d,
                        resource={"service.name": "api"}, span_id=root_id))
        t += 100 * MS
    return out


@pytest.mark.parametrize("shorter", [False, True])
def test_a_call_whose_spans_were_lost_is_no_dropped_call(shorter):
    rng = random.Random(5)
    base = orders(rng, T0, 300, 0.0, shorter)
    cur = orders(rng, T0 + 60 * 10**9, 300, 0.3, shorter)
    got = shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                        Sample(TimeWindow(T0, T0 + 60 * 10**9), base))
    dropped = [c for c in got if c.change == "dropped"]
    if shorter:  # requests really stopped before the call: they ended early
        assert dropped and dropped[0].what == "orders:8081 POST /orders", got
    else:  # as long as before: the call was made, its span lost
        assert dropped == [], got


def order_requests(t0: int, flags: list[str], work_ms: float = 30.0, tail_ms: float = 2.0,
                   seed: int = 1, db: bool = False) -> list[Span]:
    """One api `POST /order` request per flag: `work_ms` of its own work, a 1 ms call to orders
    `POST /orders`, then `tail_ms` of work on the answer. Flags: "ok"; "skip": the call not made,
    the request ends at once; "lost": the call not seen, the request as long; "loose": the call
    seen without its request (unlinked); "stray": the call linked to this request but made
    50 ms after it ended (the wrong request); "quit": the request ends right after the answer."""
    rng, out, t = random.Random(seed), [], t0
    for i, flag in enumerate(flags):
        trace = f"{rng.getrandbits(128):032x}"
        root_id = f"{i:08x}00000000"
        start = t + int(work_ms * MS * rng.uniform(0.9, 1.1))
        end = start + MS + int((0.1 if flag == "quit" else tail_ms) * MS * rng.uniform(0.9, 1.1))
        if flag == "skip":
            end = t + MS // 3
        at = end + 50 * MS if flag == "stray" else start
        if flag not in ("skip", "lost"):
            out.append(Span(trace_id=f"{rng.getrandbits(128):032x}" if flag == "loose" else trace,
                            status_code="UNSET", name="POST /orders", kind="CLIENT",
                            start_time_unix_nano=at, end_time_unix_nano=at + MS,
                            resource={"service.name": "api"}, span_id=f"{i:08x}00000002",
                            parent_span_id=None if flag == "loose" else root_id,
                            attributes={"server.address": "orders", "server.port": 8081}))
        out.append(Span(trace_id=trace, status_code="UNSET", name="POST /order", kind="SERVER",
                        start_time_unix_nano=t, end_time_unix_nano=end, span_id=root_id,
                        resource={"service.name": "api"},
                        attributes={"db.system": "postgresql"} if db else {}))
        t += 100 * MS
    return out


def shapes(base_flags: list[str], cur_flags: list[str], **kw):
    base = order_requests(T0, base_flags, **kw)
    cur = order_requests(T0 + 60 * 10**9, cur_flags, seed=2, **kw)
    return shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                         Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def spread(n: int, **share: int) -> list[str]:
    """n flags, share[flag] of them of each flag (the rest "ok"), in a fixed shuffled order."""
    flags = [f for f, k in share.items() for _ in range(k)]
    flags += ["ok"] * (n - len(flags))
    random.Random(n).shuffle(flags)
    return flags


def test_a_share_seen_on_a_few_baseline_requests_is_a_sample_not_a_known_rate():
    """2 of 9 baseline requests made the call, 13 of 21 now: a chance of about 5 % when both
    are samples (Fisher), not the near certainty of 13 of 21 against a known 2 in 9."""
    assert [c for c in shapes(spread(9, lost=7), spread(21, lost=8)) if c.change == "new"] == []


def test_calls_seen_without_their_request_were_made():
    """40 % of the calls lost their link to the request (unlinked, as a capture that cannot
    follow a thread leaves them): the requests lacking them made them."""
    got = shapes(spread(60), spread(60, loose=24))
    assert [c for c in got if c.change == "dropped"] == [], got
    # the same requests with the calls gone from the capture altogether stay unknown: a drop
    assert [c for c in shapes(spread(60), spread(60, lost=24)) if c.change == "dropped"]


def test_an_operation_whose_calls_are_linked_to_the_wrong_requests_is_not_read():
    flags = spread(60, stray=12, lost=12)  # calls of some requests landed on others
    assert shapes(spread(60), flags) == []


def test_an_operation_only_faster_does_not_end_early():
    faster = shapes(spread(60), spread(60), work_ms=30.0)  # same calls, same work: nothing
    assert faster == []
    base = order_requests(T0, spread(60), work_ms=30.0)
    cur = order_requests(T0 + 60 * 10**9, spread(60), work_ms=10.0, seed=2)
    got = shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                        Sample(TimeWindow(T0, T0 + 60 * 10**9), base))
    assert [c for c in got if c.change == "early"] == []  # every call still made: just faster


def test_a_query_answered_sooner_does_not_end_early():
    def leaf(t0, n, ms, seed):
        rng = random.Random(seed)
        return [Span(trace_id=f"{rng.getrandbits(128):032x}", status_code="UNSET", name="SELECT items",
                     kind="SERVER", start_time_unix_nano=t0 + i * 100 * MS,
                     end_time_unix_nano=t0 + i * 100 * MS + int(ms * MS * rng.uniform(0.8, 1.2)),
                     span_id=f"{i:016x}", resource={"service.name": "postgres"},
                     attributes={"db.system": "postgresql"}) for i in range(n)]
    got = shape_changes(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), leaf(T0 + 60 * 10**9, 60, 1, 2)),
                        Sample(TimeWindow(T0, T0 + 60 * 10**9), leaf(T0, 60, 8, 1)))
    assert got == []  # a cache or a plan: faster, not failing


def test_requests_quitting_right_after_a_call_answered_name_the_callee():
    got = shapes(spread(40), spread(40, quit=12))
    quit = [c for c in got if c.change == "quit"]
    assert quit and quit[0].after == "orders:8081" and quit[0].what.endswith("POST /orders"), got
    assert "ends right after orders:8081 answered" in quit[0].describe()
    assert [c for c in shapes(spread(40), spread(40)) if c.change == "quit"] == []


def test_a_drop_on_a_few_baseline_requests_counts_when_the_requests_lacking_it_ended_at_once():
    """6 baseline requests all made the call, 8 of 16 now do not: about 96 % sure alone, shown
    when those 8 also ended at once while the rest took as long as ever."""
    cut = shapes(spread(6), spread(16, skip=8))
    assert [c for c in cut if c.change == "dropped"], cut
    assert [c for c in shapes(spread(6), spread(16, lost=8)) if c.change == "dropped"] == []
