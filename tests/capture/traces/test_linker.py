"""Linker rules on hand-built spans (the attributes the live capture provides)."""
from __future__ import annotations

from capture.span import Span
from capture.traces.linker import TRACEPARENT, link, link_all, parse_traceparent
from capture.traces.stream import StreamLinker

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def span(kind, start_ms, end_ms, *, pid, tid=None, conn=None, host="h1", name="op", **attrs):
    a = dict(attrs)
    if conn:
        (ca, cp), (sa, sp) = conn
        a.update({"client.address": ca, "client.port": cp, "server.address": sa, "server.port": sp,
                  "network.transport": "tcp"})
    if tid is not None:
        a["thread.id"] = tid
    return Span(name=name, kind=kind, start_time_unix_nano=T0 + start_ms * MS,
                end_time_unix_nano=T0 + end_ms * MS, attributes=a,
                resource={"process.pid": pid, "host.name": host, "service.name": f"svc{pid}"})


C1 = (("10.0.0.1", 40000), ("10.0.0.2", 80))


def test_cross_process_keepalive_requests_pair_by_time():
    c1, c2 = span("CLIENT", 0, 10, pid=1, conn=C1), span("CLIENT", 20, 30, pid=1, conn=C1)
    s1, s2 = span("SERVER", 1, 9, pid=2, conn=C1), span("SERVER", 21, 29, pid=2, conn=C1)
    stats = link([s2, c1, s1, c2])
    assert (s1.parent_span_id, s2.parent_span_id) == (c1.span_id, c2.span_id)
    assert s1.trace_id == c1.trace_id != s2.trace_id == c2.trace_id
    assert stats.cross_process == 2


def test_back_to_back_calls_with_a_slow_reader():
    # Recorded case: the client reads its second response late (GIL); the second server span
    # ends close to the first client's end. Start and end together pick the right pairs.
    us = 1_000
    c1 = span("CLIENT", 0, 0, pid=1, conn=C1)
    c2 = span("CLIENT", 0, 0, pid=1, conn=C1)
    s1 = span("SERVER", 0, 0, pid=2, conn=C1)
    s2 = span("SERVER", 0, 0, pid=2, conn=C1)
    for sp, (a, b) in ((c1, (0, 3515)), (s1, (957, 2440)), (c2, (3597, 50063)), (s2, (3860, 4220))):
        sp.start_time_unix_nano, sp.end_time_unix_nano = T0 + a * us, T0 + b * us
    link([c1, c2, s1, s2])
    assert (s1.parent_span_id, s2.parent_span_id) == (c1.span_id, c2.span_id)


def test_cross_host_with_clock_skew():
    # host h2's clock runs 20 ms ahead: its server span ends "after" the client's; slack covers it.
    conn = (("10.0.1.5", 51000), ("10.0.2.9", 5432))
    c = span("CLIENT", 0, 10, pid=1, conn=conn, host="h1")
    s = span("SERVER", 21, 29, pid=1, conn=conn, host="h2")
    child = span("CLIENT", 22, 25, pid=1, tid=None, host="h2")
    link_all([s, c, child])
    assert s.parent_span_id == c.span_id and child.parent_span_id == s.span_id
    assert c.trace_id == s.trace_id == child.trace_id
    assert link([span("SERVER", 200, 210, pid=1, conn=conn, host="h2"), c]).cross_process == 0


def test_server_view_with_swapped_endpoints_still_matches():
    c = span("CLIENT", 0, 10, pid=1, conn=C1)
    s = span("SERVER", 1, 9, pid=2, conn=(C1[1], C1[0]))
    link([c, s])
    assert s.parent_span_id == c.span_id


def test_in_process_same_thread_and_multi_host():
    srv_a = span("SERVER", 0, 100, pid=7, tid=11)
    srv_b = span("SERVER", 5, 100, pid=7, tid=12)
    out_a = span("CLIENT", 10, 20, pid=7, tid=11)
    out_b = span("CLIENT", 30, 40, pid=7, tid=12)
    other_host = span("CLIENT", 10, 20, pid=7, tid=11, host="h2")  # same pid number, other machine
    link_all([srv_a, srv_b, out_a, out_b, other_host])
    assert out_a.parent_span_id == srv_a.span_id and out_a.trace_id == srv_a.trace_id
    assert out_b.parent_span_id == srv_b.span_id
    assert other_host.parent_span_id is None


def test_async_single_thread_links_only_when_unambiguous():
    one = span("SERVER", 0, 50, pid=3, tid=1)
    call_alone = span("CLIENT", 10, 20, pid=3, tid=1)
    two = span("SERVER", 100, 200, pid=3, tid=1)
    three = span("SERVER", 110, 200, pid=3, tid=1)
    call_overlapping = span("CLIENT", 120, 130, pid=3, tid=1)
    worker_call = span("CLIENT", 20, 30, pid=3, tid=99)  # handed to another thread, one server open
    stats = link([one, call_alone, two, three, call_overlapping, worker_call])
    assert call_alone.parent_span_id == one.span_id
    assert worker_call.parent_span_id == one.span_id
    assert call_overlapping.parent_span_id is None and stats.ambiguous == 1


def test_goroutine_beats_thread():
    s1 = span("SERVER", 0, 100, pid=4, tid=1, **{"go.goroutine.id": 50})
    s2 = span("SERVER", 0, 100, pid=4, tid=1, **{"go.goroutine.id": 51})
    c = span("CLIENT", 10, 20, pid=4, tid=1, **{"go.goroutine.id": 51})
    link([s1, s2, c])
    assert c.parent_span_id == s2.span_id


def test_traceparent_wins():
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(tp) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert parse_traceparent("00-xyz-00f067aa0ba902b7-01") is None
    s = span("SERVER", 0, 10, pid=5, tid=1, **{TRACEPARENT: tp})
    child = span("CLIENT", 2, 5, pid=5, tid=1)
    link([s, child])
    assert s.trace_id == child.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert s.parent_span_id == "00f067aa0ba902b7" and child.parent_span_id == s.span_id
    # A captured caller is a better parent than the id in the header, the trace id still wins.
    c = span("CLIENT", 100, 110, pid=1, conn=C1, **{TRACEPARENT: tp})
    s2 = span("SERVER", 101, 109, pid=2, conn=C1, **{TRACEPARENT: tp})
    link([c, s2])
    assert s2.parent_span_id == c.span_id and c.trace_id == s2.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_existing_parents_are_kept():
    root = span("SERVER", 0, 100, pid=1, tid=1)
    imported = span("CLIENT", 10, 20, pid=1, tid=1)
    imported.parent_span_id = "feedfacefeedface"
    link([root, imported])
    assert imported.parent_span_id == "feedfacefeedface"


def chain(offset_ms: int, pid_a: int = 1, pid_b: int = 2):
    """A SERVER(a) -> CLIENT(a) -> SERVER(b) -> CLIENT(b) request starting at offset_ms."""
    conn = (("10.0.0.1", 40000 + offset_ms % 20000), ("10.0.0.2", 80))
    o = offset_ms
    return [span("CLIENT", o + 3, o + 6, pid=pid_b, tid=2), span("SERVER", o + 2, o + 7, pid=pid_b, tid=2, conn=conn),
            span("CLIENT", o + 1, o + 8, pid=pid_a, tid=1, conn=conn), span("SERVER", o, o + 9, pid=pid_a, tid=1)]


def test_stream_linker_matches_batch_and_bounds_pending():
    reqs = [chain(i * 100) for i in range(200)]  # 20 s of stream
    stream = StreamLinker(window_s=1.0)
    released, max_pending = [], 0
    for r in reqs:  # arrival order: children end first
        released += stream.add(r)
        max_pending = max(max_pending, stream.pending)
    released += stream.flush()
    assert len(released) == 800 and stream.pending == 0
    assert max_pending <= 4 * 16  # ~1.5 windows of requests, not the whole stream
    for srv_b_client, srv_b, cl_a, srv_a in reqs:
        assert srv_b.parent_span_id == cl_a.span_id and cl_a.parent_span_id == srv_a.span_id
        assert srv_b_client.parent_span_id == srv_b.span_id
        assert len({srv_b_client.trace_id, srv_b.trace_id, cl_a.trace_id, srv_a.trace_id}) == 1
    assert stream.linked == 600


def test_stream_linker_does_not_reuse_a_released_client():
    # c1/s1 are released first; c2 reads its response late, so s2 also fits inside c1's end
    # slack. c1 is taken (it has s1): s2 must go to c2.
    c1, s1 = span("CLIENT", 0, 30, pid=1, conn=C1), span("SERVER", 2, 29, pid=2, conn=C1)
    s2, c2 = span("SERVER", 31, 34, pid=2, conn=C1), span("CLIENT", 30.5, 80, pid=1, conn=C1)
    stream = StreamLinker(window_s=0.02)
    stream.add([s1, c1])
    stream.add([span("SERVER", 60, 61, pid=9)])  # stream time moves on: c1, s1 released
    stream.add([s2, c2])
    stream.flush()
    assert s1.parent_span_id == c1.span_id and s2.parent_span_id == c2.span_id


def test_stream_linker_revisits_provisional_links():
    # The first run sees one open server span on the pid; a second one arrives later.
    early = span("SERVER", 0, 3000, pid=9, tid=1)
    call = span("CLIENT", 100, 200, pid=9, tid=3)
    stream = StreamLinker(window_s=5.0)
    assert stream.add([call, early]) == []
    assert call.parent_span_id is None  # a span is linked in the band of its release, not before
    late = span("SERVER", 50, 4000, pid=9, tid=2)
    stream.add([late])
    assert len(stream.flush()) == 3
    assert call.parent_span_id is None  # two servers open on the pid, neither on its thread
    assert stream.linked == 0
