"""Cross-node linking on spans as agents ship them: 4-tuple, conntrack NAT, keep-alive order,
ambiguity left unlinked, trace ids merged (later spans too), and nothing changed when unsure."""
from __future__ import annotations

import time

from capture.span import Span
from capture.traces.crossnode import CONFIDENCE, METHOD, CrossNodeLinker

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def res(node: str, svc: str) -> dict:
    return {"service.name": svc, "host.name": node, "process.pid": 1}


def client(t: int, dur: int, c=("10.1.0.2", 40000), s=("10.96.0.10", 80), nat=None, node="a"):
    attrs = {"client.address": c[0], "client.port": c[1], "server.address": s[0], "server.port": s[1],
             "network.transport": "tcp"}
    if nat:
        attrs["guardian.nat.server.address"], attrs["guardian.nat.server.port"] = nat
    return Span(name="GET /x", kind="CLIENT", start_time_unix_nano=T0 + t * MS,
                end_time_unix_nano=T0 + (t + dur) * MS, attributes=attrs, resource=res(node, "front"))


def server(t: int, dur: int, c=("10.1.0.2", 40000), s=("10.1.0.3", 8080), node="b"):
    return Span(name="GET /x", kind="SERVER", start_time_unix_nano=T0 + t * MS,
                end_time_unix_nano=T0 + (t + dur) * MS,
                attributes={"client.address": c[0], "client.port": c[1], "server.address": s[0],
                            "server.port": s[1], "network.transport": "tcp"},
                resource=res(node, "back"))


def run(spans):
    lk = CrossNodeLinker(window_s=1.0, slack_ns=2 * MS)
    out = lk.add(spans) + lk.flush()
    assert len(out) == len(spans)
    return lk


def test_plain_four_tuple_across_nodes():
    c, s = client(0, 10, s=("10.1.0.3", 8080)), server(2, 6)
    child = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=T0 + 3 * MS,
                 end_time_unix_nano=T0 + 4 * MS, trace_id=s.trace_id, parent_span_id=s.span_id,
                 resource=res("b", "back"))
    lk = run([c, s, child])
    assert s.parent_span_id == c.span_id and s.trace_id == c.trace_id == child.trace_id
    assert s.attributes[METHOD] == "connection" and s.attributes[CONFIDENCE] >= 0.95
    assert lk.stats["connection"] == 1


def test_clusterip_needs_the_conntrack_mapping():
    s = server(2, 6)
    c = client(0, 10)  # saw 10.96.0.10:80, the server 10.1.0.3:8080
    run([c, s])
    assert s.parent_span_id is None  # without conntrack nothing matches: no guess
    c = client(0, 10, nat=("10.1.0.3", 8080))
    s = server(2, 6)
    lk = run([c, s])
    assert s.parent_span_id == c.span_id and s.attributes[METHOD] == "connection+conntrack"
    assert lk.stats["connection_conntrack"] == 1


def test_keep_alive_requests_pair_in_order():
    cs = [client(i * 20, 10, nat=("10.1.0.3", 8080)) for i in range(50)]
    ss = [server(i * 20 + 2, 6) for i in range(50)]
    run(ss[::-1] + cs)
    assert [s.parent_span_id for s in ss] == [c.span_id for c in cs]


def test_back_to_back_requests_within_slack_stay_right():
    # Requests 1 ms apart with 2 ms of clock slack: each server fits two clients within the
    # slack, one only on exact clocks.
    cs = [client(i * 3, 2, s=("10.1.0.3", 8080)) for i in range(20)]
    ss = [server(i * 3 + 1, 1) for i in range(20)]
    run(cs + ss)
    assert [s.parent_span_id for s in ss] == [c.span_id for c in cs]


def test_a_server_clock_ahead_is_paired_in_request_order():
    # The server's clock is 3 ms ahead (beyond the exact pass): the slack pass decides.
    cs = [client(i * 20, 10, s=("10.1.0.3", 8080)) for i in range(10)]
    ss = [server(0, 0) for _ in range(10)]
    for c, s in zip(cs, ss):
        s.start_time_unix_nano = c.start_time_unix_nano + 3 * MS + MS
        s.end_time_unix_nano = c.end_time_unix_nano + 3 * MS - MS
    lk = run(cs + ss)
    assert [s.parent_span_id for s in ss] == [c.span_id for c in cs]
    assert lk.stats["connection"] == 10 and all(s.attributes[CONFIDENCE] == 0.95 for s in ss)


def test_port_reuse_is_told_apart_by_time_and_other_connections_do_not_mix():
    a1, b1 = client(0, 10, s=("10.1.0.3", 8080)), server(2, 6)
    a2, b2 = client(5000, 10, s=("10.1.0.3", 8080)), server(5002, 6)
    other = server(3, 5, c=("10.1.0.2", 40001))
    run([a1, a2, b1, b2, other])
    assert b1.parent_span_id == a1.span_id and b2.parent_span_id == a2.span_id
    assert other.parent_span_id is None


def test_a_server_linked_on_its_node_is_left_alone():
    c = client(0, 10, s=("10.1.0.3", 8080))
    local_client = client(1, 8, s=("10.1.0.3", 8080), node="b")
    s = server(2, 6)
    s.parent_span_id, s.trace_id = local_client.span_id, local_client.trace_id
    run([c, local_client, s])
    assert s.parent_span_id == local_client.span_id and METHOD not in s.attributes


def test_late_spans_of_a_merged_trace_follow_it():
    lk = CrossNodeLinker(window_s=0.01, slack_ns=2 * MS)
    c, s = client(0, 10, s=("10.1.0.3", 8080)), server(2, 6)
    old = s.trace_id
    out = lk.add([c, s]) + lk.flush()
    assert s.trace_id == c.trace_id and len(out) == 2
    late = Span(name="SET", kind="CLIENT", start_time_unix_nano=T0 + 4 * MS, end_time_unix_nano=T0 + 5 * MS,
                trace_id=old, parent_span_id=s.span_id, resource=res("b", "back"))
    lk.add([late])
    assert late.trace_id == c.trace_id


def test_a_server_whose_client_was_lost_is_not_given_the_next_client():
    # Requests 1 ms apart, far inside the 50 ms clock slack; request 4's client span and
    # request 5's server span were lost by the capture.
    cs, ss = [], []
    for i in range(10):
        c, s = client(0, 0, s=("10.1.0.3", 8080)), server(0, 0)
        c.start_time_unix_nano, c.end_time_unix_nano = T0 + i * 3 * MS, T0 + i * 3 * MS + 2 * MS
        s.start_time_unix_nano = c.start_time_unix_nano + MS // 2
        s.end_time_unix_nano = c.start_time_unix_nano + 3 * MS // 2
        cs.append(c)
        ss.append(s)
    truth = {s.span_id: c.span_id for c, s in zip(cs, ss)}
    del cs[4], ss[5]
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    lk.add(cs + ss)
    lk.flush()
    assert ss[4].parent_span_id is None  # request 4's server: its client is gone
    linked = [s for s in ss if s.parent_span_id]
    assert all(s.parent_span_id == truth[s.span_id] for s in linked)
    assert len(linked) == 8


def test_a_client_whose_server_was_released_earlier_takes_no_other_server():
    lk = CrossNodeLinker(window_s=0.05, slack_ns=50 * MS)
    c1 = client(0, 500, s=("10.1.0.3", 8080))  # a slow client: its span outlives its server's
    s1 = server(1, 2)
    late = server(501, 2)  # the next request's server; its client span was lost
    lk.add([c1, s1])
    time.sleep(0.06)  # past the start-up hold
    out = lk.add([server(400, 1, c=("10.9.9.9", 1))])  # stream time moves on: s1 released
    assert s1 in out and c1 not in out and s1.parent_span_id == c1.span_id
    lk.add([late])
    lk.flush()
    assert late.parent_span_id is None


def test_clocks_that_agree_shrink_the_slack_so_a_lost_clients_neighbour_does_not_fit():
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    cs = [client(i * 10, 3, s=("10.1.0.3", 8080)) for i in range(60)]
    ss = [server(i * 10 + 1, 1) for i in range(60)]
    lk.add(cs + ss)
    lk.flush()
    assert all(s.parent_span_id == c.span_id for c, s in zip(cs, ss))
    assert lk.slack_for("a", "b") == lk.strict_ns and lk.slack_for("a", "c") == 50 * MS
    # Request 1000's server is lost and 1001's client is lost: 1001's server (starting 1 ms
    # after 1000's client ended) fitted 1000's client within 50 ms; not within the exact slack.
    c = client(1000, 3, s=("10.1.0.3", 8080))
    s = server(1004, 1)
    lk.add([c, s])
    lk.flush()
    assert s.parent_span_id is None


def test_a_server_at_the_frontier_waits_for_its_client_instead_of_taking_a_neighbour():
    # Node b has shipped s1; node a has shipped c0 (whose own server was lost) but not yet c1,
    # s1's real client. c0's wait holds s1 within the exact slack: linked now, it would be wrong.
    lk = CrossNodeLinker(window_s=0.05, slack_ns=2 * MS)
    c0 = client(0, 10, s=("10.1.0.3", 8080))
    c1 = client(10, 1, s=("10.1.0.3", 8080))
    s1 = server(10, 1)
    lk.add([c0])
    time.sleep(0.06)  # past the start-up hold: this add links what it can
    lk.add([s1])
    assert s1.parent_span_id is None  # s1 ends after what node a has shipped: it waits
    lk.add([c1])
    lk.flush()
    assert s1.parent_span_id == c1.span_id


def test_a_server_released_before_its_client_arrived_is_linked_late():
    # Node a's agent was cut off: b's servers leave the window unlinked; a's clients come later.
    lk = CrossNodeLinker(window_s=0.05, slack_ns=2 * MS)
    cs = [client(i * 20, 10, s=("10.1.0.3", 8080)) for i in range(5)]
    ss = [server(i * 20 + 2, 6) for i in range(5)]
    child = Span(name="SELECT", kind="CLIENT", start_time_unix_nano=ss[0].start_time_unix_nano + MS,
                 end_time_unix_nano=ss[0].start_time_unix_nano + 2 * MS, trace_id=ss[0].trace_id,
                 parent_span_id=ss[0].span_id, resource=res("b", "back"))
    old = [s.trace_id for s in ss]
    lk.add(ss + [child])
    time.sleep(0.06)  # past the start-up hold
    out = lk.add([server(2000, 1, c=("10.9.9.9", 1))])  # b's stream moves on: its spans leave
    assert all(any(s is o for o in out) and s.parent_span_id is None for s in ss)
    assert lk.take_late() == ([], {})
    lk.add(cs)
    lk.flush()
    links, traces = lk.take_late()
    assert [(sid, parent) for sid, parent, _ in links] == [(s.span_id, c.span_id) for c, s in zip(cs, ss)]
    assert all(extra[METHOD] == "connection+late" and extra[CONFIDENCE] >= 0.9 for _, _, extra in links)
    assert traces == {o: c.trace_id for o, c in zip(old, cs)}  # the child's row moves with it
    assert lk.stats["late"] == 5 and lk.take_late() == ([], {})
    late = Span(name="SET", kind="CLIENT", start_time_unix_nano=T0 + 5 * MS, end_time_unix_nano=T0 + 6 * MS,
                trace_id=old[0], parent_span_id=ss[0].span_id, resource=res("b", "back"))
    lk.add([late])
    assert late.trace_id == cs[0].trace_id  # later spans of that trace follow it too


def test_released_halves_wait_only_late_s():
    lk = CrossNodeLinker(window_s=0.05, slack_ns=2 * MS, late_s=1.0)  # forgotten after 1-1.25 s of stream time
    s = server(2, 6, s=("10.1.0.3", 8080))
    lk.add([s])
    time.sleep(0.06)
    lk.add([server(500, 1, c=("10.9.9.9", 1))])  # s leaves unlinked, 0.5 s of stream later
    assert lk.take_late() == ([], {})
    lk.add([server(1500, 1, c=("10.9.9.9", 1))])  # 1.5 s after s: past late_s, s is forgotten
    c = client(0, 10, s=("10.1.0.3", 8080))
    lk.add([c])
    lk.flush()
    assert lk.take_late() == ([], {}) and lk.stats["late"] == 0


def test_a_measured_clock_offset_replaces_the_wide_slack():
    # Node b's clock runs 30 ms ahead: within the 50 ms slack but far beyond the exact one.
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    ahead = 30 * MS

    def pair(t: float, dur: float, work: float):
        c = client(0, 0, s=("10.1.0.3", 8080))
        c.start_time_unix_nano, c.end_time_unix_nano = T0 + int(t * MS), T0 + int((t + dur) * MS)
        s = server(0, 0)
        s.start_time_unix_nano = c.start_time_unix_nano + ahead + int((dur - work) / 2 * MS)
        s.end_time_unix_nano = s.start_time_unix_nano + int(work * MS)
        return c, s

    first = [pair(i * 200, 3, 1) for i in range(60)]  # far apart: each server fits one client
    lk.add([x for p in first for x in p])
    lk.flush()
    assert all(s.parent_span_id == c.span_id for c, s in first)
    offset, slack = lk.clock_for("a", "b")
    assert abs(offset - ahead) < MS // 10 and slack < 3 * MS and lk.slack_for("a", "b") == slack
    # Now back to back, 4 ms apart: on a 50 ms slack every server fits a dozen clients and
    # the closest one is 30 ms later (the wrong request); read on b's measured clock, one fits.
    busy = [pair(20_000 + i * 4, 3, 1) for i in range(40)]
    lk.add([x for p in busy for x in p])
    lk.flush()
    assert [s.parent_span_id for _, s in busy] == [c.span_id for c, _ in busy]


def test_stand_ins_are_bounded():
    lk = CrossNodeLinker(window_s=0.05, slack_ns=2 * MS, max_late=100)
    lk.add([server(i, 1, c=("10.1.0.2", 40000 + i)) for i in range(300)])  # 300 connections
    time.sleep(0.06)
    lk.add([server(2000, 1, c=("10.9.9.9", 1))])
    assert lk.pending == 1 and 0 < lk.waiting_late <= 100
    c = client(299, 1, c=("10.1.0.2", 40299), s=("10.1.0.3", 8080))  # the newest are kept
    lk.add([c])
    lk.flush()
    assert [parent for _, parent, _ in lk.take_late()[0]] == [c.span_id]


def test_a_lost_clients_neighbour_that_started_after_the_client_ended_is_not_its_server():
    # Clocks agree (exact links): request A's server span and request B's client span were lost on
    # one keep-alive connection. B's server started 0.2 ms after A's client had its response and
    # was done within the exact slack: it fits A's wait but cannot be A's (B is read after A's end).
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    cs = [client(i * 10, 3, s=("10.1.0.3", 8080)) for i in range(60)]
    ss = [server(i * 10 + 1, 1) for i in range(60)]
    lk.add(cs + ss)
    lk.flush()
    assert lk.slack_for("a", "b") == lk.strict_ns
    a = client(1000, 2, s=("10.1.0.3", 8080))
    b = server(1000, 0)
    b.start_time_unix_nano, b.end_time_unix_nano = T0 + 1002 * MS + MS // 5, T0 + 1002 * MS + 7 * MS // 10
    c = client(1010, 2, s=("10.1.0.3", 8080))
    d = server(1010, 0)
    d.start_time_unix_nano, d.end_time_unix_nano = T0 + 1010 * MS + MS // 2, T0 + 1011 * MS
    lk.add([a, b, c, d])
    lk.flush()
    assert b.parent_span_id is None and d.parent_span_id == c.span_id


def _agreeing_linker(work: int, dur: int) -> CrossNodeLinker:
    """A linker whose clocks between nodes a and b agree, after 60 exact links (each server
    `work` ms inside a `dur` ms client wait, 1 ms after its start)."""
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    cs = [client(i * 20, dur, s=("10.1.0.3", 8080)) for i in range(60)]
    ss = [server(i * 20 + 1, work) for i in range(60)]
    lk.add(cs + ss)
    lk.flush()
    assert all(s.parent_span_id == c.span_id for c, s in zip(cs, ss))
    assert lk.slack_for("a", "b") == lk.strict_ns
    return lk


def _at(span: Span, start_ms: float, end_ms: float) -> Span:
    span.start_time_unix_nano, span.end_time_unix_nano = T0 + int(start_ms * MS), T0 + int(end_ms * MS)
    return span


def test_a_client_span_holding_two_servers_of_its_connection_takes_neither():
    # A joined client span (request 1 and request 3's response) holds request 1's server and
    # request 3's; request 3's is the closer at both ends and within the typical distance.
    lk = _agreeing_linker(6, 12)
    x = _at(client(0, 0, s=("10.1.0.3", 8080)), 2000, 2010)
    s1 = _at(server(0, 0), 2000.5, 2001)
    s3 = _at(server(0, 0), 2008, 2009.5)
    lk.add([x, s1, s3])
    lk.flush()
    assert s1.parent_span_id is None and s3.parent_span_id is None


def test_a_few_loose_links_do_not_open_the_measured_slack_for_a_lost_clients_neighbour():
    # 60 exact links and 2 loose ones (servers ending 2 ms after their clients): the clocks do
    # not count as agreeing, the offset is measured; the two outliers must not widen its spread.
    lk = CrossNodeLinker(window_s=1.0, slack_ns=50 * MS)
    cs = [client(i * 20, 3, s=("10.1.0.3", 8080)) for i in range(62)]
    ss = [server(i * 20 + 1, 1) for i in range(60)] + [server(60 * 20 + 1, 4), server(61 * 20 + 1, 4)]
    lk.add(cs + ss)
    lk.flush()
    assert all(s.parent_span_id == c.span_id for c, s in zip(cs, ss))
    assert lk.clock_for("a", "b") == (0, lk.strict_ns)
    a = _at(client(0, 0, s=("10.1.0.3", 8080)), 3000, 3002)
    b = _at(server(0, 0), 3002.5, 3003)  # the next request's server: a's server and its client lost
    lk.add([a, b])
    lk.flush()
    assert b.parent_span_id is None
