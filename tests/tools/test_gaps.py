"""CLIENT/SERVER gap shifts (tools/gaps.py) on calls shaped as the capture links them: what
counts as a callee's stall or network, and what is only a busy host's scheduling."""
from __future__ import annotations

import random

from capture.span import Span
from capture.store.api import TimeWindow
from tools.gaps import gap_shifts, lone_edges
from tools.sampling import Sample

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def calls(rng: random.Random, t0: int, n: int, wait_ms, client: str = "app") -> list[Span]:
    """n traces: app `POST /x` calls cache `GET` and db `SELECT`; wait_ms(edge) is how long
    each request waits unread before its server begins it."""
    out, t = [], t0
    for i in range(n):
        trace = f"{rng.getrandbits(128):032x}"
        root = Span(name="POST /x", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=t + 40 * MS,
                    resource={"service.name": client}, trace_id=trace, span_id=f"{client}{i:08x}",
                    status_code="OK")
        out.append(root)
        cur = t + MS
        for j, (callee, name) in enumerate((("cache", "GET"), ("db", "SELECT"))):
            wait = int(wait_ms(callee) * MS)
            d = int(rng.uniform(0.1, 1.0) * MS)
            cid, sid = f"{client}{i:08x}{j:04x}1", f"{client}{i:08x}{j:04x}2"
            out.append(Span(name=name, kind="CLIENT", start_time_unix_nano=cur,
                            end_time_unix_nano=cur + wait + d + int(0.05 * MS),
                            resource={"service.name": client}, trace_id=trace, span_id=cid,
                            parent_span_id=root.span_id, status_code="OK"))
            out.append(Span(name=name, kind="SERVER", start_time_unix_nano=cur + wait,
                            end_time_unix_nano=cur + wait + d, resource={"service.name": callee},
                            trace_id=trace, span_id=sid, parent_span_id=cid, status_code="OK"))
            cur += wait + d + MS
        t += 200 * MS
    return out


def shifts(now) -> list:
    rng = random.Random(5)
    # A loaded host: now and then any call waits up to ~12 ms before it is read.
    noisy = lambda _: rng.uniform(8, 12) if rng.random() < 0.03 else rng.uniform(0.05, 0.5)  # noqa: E731
    base = calls(rng, T0, 300, noisy)
    cur = calls(rng, T0 + 60 * 10**9, 300, lambda callee: now(callee, noisy))
    return gap_shifts(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                      Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def test_waits_the_busy_host_already_had_are_no_stall():
    """cache's calls wait now and then a few ms more often, but no longer than every edge's
    calls already waited in the baseline: nothing to name."""
    r = random.Random(7)
    got = shifts(lambda callee, noisy: (r.uniform(3, 10) if r.random() < 0.2 else noisy(callee))
                 if callee == "cache" else noisy(callee))
    assert [g for g in got if g.server == "cache"] == []


def test_a_stall_longer_than_any_baseline_wait_is_named():
    r = random.Random(8)
    got = shifts(lambda callee, noisy: (r.uniform(80, 200) if r.random() < 0.2 else noisy(callee))
                 if callee == "cache" else noisy(callee))
    assert [g.server for g in got] == ["cache"]
    assert not got[0].every_call


def test_a_delay_on_every_call_is_named_even_when_small():
    got = shifts(lambda callee, noisy: noisy(callee) + (7.0 if callee == "db" else 0.0))
    assert [g.server for g in got] == ["db"] and got[0].every_call


def test_a_few_lost_requests_are_named_though_most_calls_are_as_before():
    """5 % of the calls into db wait a retransmission (200 ms) before db reads them."""
    r = random.Random(9)
    got = shifts(lambda callee, noisy: (200.0 if r.random() < 0.05 else noisy(callee))
                 if callee == "db" else noisy(callee))
    assert [g.server for g in got] == ["db"]



def test_one_straggler_is_no_shift():
    """Every cache call waits 0.1 ms longer (sure, but nothing to name) and one call waits
    900 ms: one call is no change of the edge; it takes more such calls than chance gives
    (lost packets)."""
    rng = random.Random(9)
    base = calls(rng, T0, 300, lambda callee: 0.3)
    once = iter([900.0])
    cur = calls(rng, T0 + 60 * 10**9, 300,
                lambda callee: next(once, 0.4) if callee == "cache" else 0.3)
    got = gap_shifts(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                     Sample(TimeWindow(T0, T0 + 60 * 10**9), base))
    assert [g for g in got if g.server == "cache"] == []


def two_callers(app_wait, web_wait):
    rng = random.Random(3)
    quiet = lambda _: rng.uniform(0.05, 0.5)  # noqa: E731
    base = calls(rng, T0, 200, quiet) + calls(rng, T0, 200, quiet, client="web")
    t1 = T0 + 60 * 10**9
    cur = calls(rng, t1, 200, app_wait) + calls(rng, t1, 200, web_wait, client="web")
    now, before = (Sample(TimeWindow(t1, t1 + 60 * 10**9), cur), Sample(TimeWindow(T0, t1), base))
    got = gap_shifts(now, before)
    return got, lone_edges(got, now, before)


def test_a_gap_only_one_caller_of_a_callee_sees_is_that_callers():
    """app's calls to db wait 20 ms more before db reads them; web's calls to the same db do
    not: db's network would delay both, so the time is app's (slow to send or read)."""
    slow = lambda callee: 20 + random.random() if callee == "db" else 0.2  # noqa: E731
    got, lone = two_callers(slow, lambda _: 0.2)
    assert ("app", "db") in {(g.client, g.server) for g in got}
    assert lone == {("app", "db")}
    # both callers see it: db's network or ingress, nobody's own time
    got, lone = two_callers(slow, slow)
    assert {("app", "db"), ("web", "db")} <= {(g.client, g.server) for g in got}
    assert lone == set()


def test_an_edge_that_always_queues_does_not_hide_a_stall_elsewhere():
    """web's calls to db queue for seconds now and then, before and now (a pool); cache now
    leaves a fifth of app's calls unread for 80-150 ms (a paused process). That is a stall,
    though the queueing edge's waits are longer still."""
    rng = random.Random(4)
    quiet = lambda _: rng.uniform(0.05, 0.5)  # noqa: E731
    pool = lambda callee: rng.uniform(1000, 3000) if callee == "db" and rng.random() < 0.1 \
        else quiet(callee)  # noqa: E731
    stall = lambda callee: rng.uniform(80, 150) if callee == "cache" and rng.random() < 0.2 \
        else quiet(callee)  # noqa: E731
    t1 = T0 + 60 * 10**9
    base = calls(rng, T0, 150, quiet) + calls(rng, T0, 150, pool, client="web")
    cur = calls(rng, t1, 150, stall) + calls(rng, t1, 150, pool, client="web")
    got = gap_shifts(Sample(TimeWindow(t1, t1 + 60 * 10**9), cur), Sample(TimeWindow(T0, t1), base))
    assert [(g.client, g.server) for g in got] == [("app", "cache")]


def test_a_longer_queue_on_an_edge_that_always_queued_is_no_stall():
    """db takes app's requests in turn: two in five of them wait 200-900 ms unread in the
    baseline already (a pool, a busy database), and now wait 1-3 s, replies as prompt as ever.
    More of the same queue, not a stall of db; cache stalling as long on a quiet edge is one."""
    rng = random.Random(6)
    quiet = lambda _: rng.uniform(0.05, 0.5)  # noqa: E731

    def queued(lo, hi):
        return lambda callee: rng.uniform(lo, hi) if callee == "db" and rng.random() < 0.4 \
            else quiet(callee)

    t1 = T0 + 60 * 10**9
    base = calls(rng, T0, 150, queued(200, 900))
    cur = calls(rng, t1, 150, queued(1000, 3000))
    got = gap_shifts(Sample(TimeWindow(t1, t1 + 60 * 10**9), cur), Sample(TimeWindow(T0, t1), base))
    assert [g for g in got if g.server == "db"] == []
    stall = lambda callee: rng.uniform(1000, 3000) if callee == "cache" and rng.random() < 0.2 \
        else quiet(callee)  # noqa: E731
    base = calls(rng, T0, 150, quiet)
    cur = calls(rng, t1, 150, stall)
    got = gap_shifts(Sample(TimeWindow(t1, t1 + 60 * 10**9), cur), Sample(TimeWindow(T0, t1), base))
    assert [g.server for g in got] == ["cache"]


def edge(rng: random.Random, t0: int, n: int, before_ms, after_ms, callee: str = "cart",
         request=lambda i: False) -> list[Span]:
    """n calls gateway -> callee; before_ms(i) / after_ms(i): the request and reply legs;
    request(i): the call is made inside a gateway request that waits for it."""
    out = []
    for i in range(n):
        trace, t = f"{rng.getrandbits(128):032x}", t0 + i * 300 * MS
        b, a, d = int(before_ms(i) * MS), int(after_ms(i) * MS), int(rng.uniform(4, 8) * MS)
        cid = f"{callee}{i:08x}c"
        parent = None
        if request(i):
            parent = f"{callee}{i:08x}r"
            out.append(Span(name="GET /page", kind="SERVER", start_time_unix_nano=t - MS,
                            end_time_unix_nano=t + b + d + a + MS, resource={"service.name": "gateway"},
                            trace_id=trace, span_id=parent, status_code="OK"))
        out.append(Span(name="GET /x", kind="CLIENT", start_time_unix_nano=t,
                        end_time_unix_nano=t + b + d + a, parent_span_id=parent,
                        resource={"service.name": "gateway"}, trace_id=trace, span_id=cid, status_code="OK"))
        out.append(Span(name="GET /x", kind="SERVER", start_time_unix_nano=t + b,
                        end_time_unix_nano=t + b + d,
                        resource={"service.name": callee}, trace_id=trace, span_id=f"{callee}{i:08x}s",
                        parent_span_id=cid, status_code="OK"))
    return out


def few_calls(before_now, after_now, before_base=lambda i: 40.0 if i == 3 else 0.2, n: int = 11):
    """11 calls on the edge each side (one baseline request leg slow), plus a quiet edge whose
    calls make the pooled baseline."""
    rng = random.Random(3)
    quiet = lambda i: rng.uniform(0.05, 0.4)  # noqa: E731
    base = edge(rng, T0, n, before_base, lambda i: 0.1) + edge(rng, T0, 200, quiet, quiet, "other")
    cur = edge(rng, T0 + 60 * 10**9, n, before_now, after_now) + \
        edge(rng, T0 + 60 * 10**9, 200, quiet, quiet, "other")
    return gap_shifts(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                      Sample(TimeWindow(T0, T0 + 60 * 10**9), base))


def test_replies_held_on_half_of_few_calls_are_the_callees_network():
    """Half of cart's replies arrive 35 ms after it sent them, on 11 calls: a rank test of the
    whole gaps is unsure (one baseline request waited 40 ms), the reply leg alone is not."""
    got = [g for g in few_calls(lambda i: 0.2, lambda i: 35.0 if i % 2 else 0.1) if g.server == "cart"]
    assert len(got) == 1 and got[0].after and got[0].sure >= 0.99, got


def test_few_calls_as_before_show_no_shift():
    assert [g for g in few_calls(lambda i: 0.2, lambda i: 0.1) if g.server == "cart"] == []


def test_calls_held_open_for_seconds_in_the_baseline_are_no_path():
    """The caller's calls already spent seconds between call and answer in the baseline (held
    open, paired across idle time): twice as long now is more of the same, not a network."""
    got = few_calls(lambda i: 4000.0, lambda i: 0.1, before_base=lambda i: 2000.0, n=12)
    assert [g for g in got if g.server == "cart"] == []


def quiet_edge(before_now, n_base: int = 3, n_now: int = 16, before_base=lambda i: 0.2,
               other_base=None, request=lambda i: True):
    """An edge with a few calls in the baseline (too few to test on their own) and more now,
    made inside gateway requests (request(i)), beside a busier edge whose calls make the
    pooled baseline."""
    rng = random.Random(9)
    quiet = lambda i: rng.uniform(0.05, 0.4)  # noqa: E731
    base = edge(rng, T0, n_base, before_base, lambda i: 0.1, request=request) + \
        edge(rng, T0, 200, other_base or quiet, quiet, "other")
    cur = edge(rng, T0 + 60 * 10**9, n_now, before_now, lambda i: 0.1, request=request) + \
        edge(rng, T0 + 60 * 10**9, 200, quiet, quiet, "other")
    return [g for g in gap_shifts(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                                  Sample(TimeWindow(T0, T0 + 60 * 10**9), base)) if g.server == "cart"]


def test_a_stall_on_an_edge_too_quiet_in_the_baseline_is_read_against_every_edge():
    """cart answered 3 calls in the baseline; now 6 of its 16 requests wait 60-150 ms unread (a
    paused process). Its own 3 calls tell no spread: every typical edge's baseline does."""
    r = random.Random(10)
    got = quiet_edge(lambda i: r.uniform(60, 150) if i % 3 == 0 else 0.2)
    assert len(got) == 1 and not got[0].every_call and got[0].sure >= 0.99, got
    assert got[0].count == (3, 16)


def test_a_quiet_edge_as_before_or_always_slow_shows_no_shift():
    assert quiet_edge(lambda i: 0.2) == []
    # its own few baseline calls already waited that long: not read against other edges
    r = random.Random(11)
    assert quiet_edge(lambda i: r.uniform(60, 150) if i % 3 == 0 else 0.2,
                      before_base=lambda i: 100.0) == []


def test_a_quiet_edge_is_not_read_against_a_baseline_whose_calls_waited_long_now_and_then():
    """The other edge's calls were held seconds now and then in the baseline (held open,
    paired across idle time): three such calls now on the quiet edge tell nothing."""
    r = random.Random(12)
    got = quiet_edge(lambda i: r.uniform(5000, 9000) if i in (3, 8, 13) else 0.2,
                     other_base=lambda i: r.uniform(1000, 4000) if i % 25 == 0 else 0.2)
    assert got == []


def test_long_calls_of_a_quiet_edge_made_in_no_request_are_no_stall():
    """The long calls are made in no request of the caller seen (paired across idle time, or
    fire-and-forget): nobody waited on them, whatever their gap."""
    r = random.Random(13)
    got = quiet_edge(lambda i: r.uniform(60, 150) if i % 3 == 0 else 0.2,
                     request=lambda i: i % 3 != 0)
    assert got == []


def _queued(rng: random.Random, t0: int, n: int, share: float, top_ms: float) -> list[Span]:
    """n calls app -> db; a share of them wait 400-top_ms ms for their turn (a lock, a queue),
    put where the capture pairs a long operation: before the server's span, or (past a second)
    after it, on the reply."""
    out = []
    for i in range(n):
        t = t0 + i * 1_500 * MS
        trace = f"{rng.getrandbits(128):032x}"
        slow = rng.random() < share
        wait = int((rng.uniform(400, top_ms) if slow else rng.uniform(0.1, 4)) * MS)
        before, after = (0, wait) if wait > 1_000 * MS else (wait, 0)
        d = int(rng.uniform(0.1, 0.5) * MS)
        end = t + before + d + after + 2 * MS
        out += [Span(name="POST /o", kind="SERVER", start_time_unix_nano=t, end_time_unix_nano=end,
                     resource={"service.name": "app"}, trace_id=trace, span_id=f"r{i:015x}", status_code="OK"),
                Span(name="INSERT", kind="CLIENT", start_time_unix_nano=t + MS,
                     end_time_unix_nano=t + MS + before + d + after, resource={"service.name": "app"},
                     trace_id=trace, span_id=f"c{i:015x}", parent_span_id=f"r{i:015x}", status_code="OK"),
                Span(name="INSERT", kind="SERVER", start_time_unix_nano=t + MS + before,
                     end_time_unix_nano=t + MS + before + d, resource={"service.name": "db"},
                     trace_id=trace, span_id=f"s{i:015x}", parent_span_id=f"c{i:015x}", status_code="OK")]
    return out


def test_more_long_waits_at_an_edge_that_already_queued_are_its_queue():
    """app's calls into db already waited up to a second now and then (a lock): more of them
    waiting, a few longer (their wait paired on the reply), while the typical call is as
    before, is that queue, not db's network; the test on every call does not show a shift."""
    rng = random.Random(11)
    base = _queued(rng, T0, 12, 0.3, 1_100)
    cur = _queued(rng, T0 + 60 * 10**9, 30, 0.45, 3_300)
    got = gap_shifts(Sample(TimeWindow(T0 + 60 * 10**9, T0 + 120 * 10**9), cur),
                     Sample(TimeWindow(T0, T0 + 60 * 10**9), base))
    assert [g.server for g in got] == []
