"""ConnTracker.on_event from ring-buffer records built here: data events become spans with the
kernel's fields (time, thread, ends) and a UDP socket's peer follows each datagram."""
from __future__ import annotations

from capture import abi
from capture.conntrack import ConnTracker
from capture.pipeline import Pipeline

LOOPBACK = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
OTHER = b"\0" * 10 + b"\xff\xff" + bytes([10, 0, 0, 9])


def event(payload: bytes, *, ts: int, pos: int, direction, proto=abi.Proto.HTTP1, transport=abi.Transport.TCP,
          raddr: bytes = LOOPBACK, rport: int = 8080, tid: int = 43) -> bytes:
    return abi.EVENT_STRUCT.pack(ts, 7, pos, 42, tid, 5, len(payload), len(payload), 0, abi.EventKind.DATA, proto,
                                 direction, abi.Role.CLIENT, 0, abi.Source.SYSCALL, 0, transport, LOOPBACK, raddr,
                                 41000, rport, 2, 0, b"client") + payload


def tracker(spans: list) -> tuple[ConnTracker, Pipeline]:
    pipeline = Pipeline(spans.extend)
    return ConnTracker(pipeline, lambda pid: {"service.name": "c", "process.pid": pid},
                       boot_offset_ns=1_000_000), pipeline


def test_request_and_response_events_become_one_client_span():
    spans: list = []
    t, pipeline = tracker(spans)
    req, resp = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    t.on_event(event(req, ts=10, pos=0, direction=abi.Direction.EGRESS))
    t.on_event(event(resp, ts=30, pos=0, direction=abi.Direction.INGRESS))
    pipeline.flush()
    [s] = spans
    assert (s.kind, s.name, s.start_time_unix_nano, s.end_time_unix_nano) == ("CLIENT", "GET /x", 1_000_010, 1_000_030)
    a = s.attributes
    assert (a["server.address"], a["server.port"], a["client.port"], a["thread.id"]) == ("127.0.0.1", 8080, 41000, 43)
    assert s.resource == {"service.name": "c", "process.pid": 42, "process.executable.name": "client"}  # comm
    assert t.stats["gaps"] == 0


def test_a_skipped_stream_position_is_a_gap():
    spans: list = []
    t, _ = tracker(spans)
    req = b"GET /x HTTP/1.1\r\n\r\n"
    t.on_event(event(req, ts=10, pos=0, direction=abi.Direction.EGRESS))
    t.on_event(event(req, ts=20, pos=len(req) + 100, direction=abi.Direction.EGRESS))
    assert t.stats["gaps"] == 1


def test_udp_peer_follows_each_datagram():
    t, _ = tracker([])
    query = bytes(12)  # a DNS header: enough to be a datagram
    t.on_event(event(query, ts=10, pos=0, direction=abi.Direction.EGRESS, proto=abi.Proto.DNS,
                     transport=abi.Transport.UDP, rport=53))
    assert t.conns[7].conn.remote == ("127.0.0.1", 53)
    t.on_event(event(query, ts=20, pos=12, direction=abi.Direction.EGRESS, proto=abi.Proto.DNS,
                     transport=abi.Transport.UDP, raddr=OTHER, rport=5353))
    assert t.conns[7].conn.remote == ("10.0.0.9", 5353)
    assert t.conns[7].conn.transport == "udp"


def test_a_process_gone_before_proc_was_read_is_named_by_the_enrichers_rule():
    """Only the record's task name is left: named as program_name names the running process
    (an interpreter without its version), not by the raw task name."""
    spans: list = []
    pipeline = Pipeline(spans.extend)
    t = ConnTracker(pipeline, lambda pid: {"service.name": "unknown", "process.pid": pid}, boot_offset_ns=0)
    req, resp = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    for payload, ts, direction in ((req, 10, abi.Direction.EGRESS), (resp, 30, abi.Direction.INGRESS)):
        raw = bytearray(event(payload, ts=ts, pos=0, direction=direction))
        raw[abi.EVENT_SIZE - 16:abi.EVENT_SIZE] = b"python3.11".ljust(16, b"\0")
        t.on_event(bytes(raw))
    pipeline.flush()
    [s] = spans
    assert s.resource["service.name"] == s.resource["process.executable.name"] == "python"


REQ, RESP = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
EGRESS, INGRESS = abi.Direction.EGRESS, abi.Direction.INGRESS


def _exchanges(records: list[tuple[int, int, int]], compiled: bool = False) -> tuple[list, ConnTracker]:
    """(ts, direction, stream offset) of each record seen, in order: requests egress, responses
    ingress; the spans made and the tracker."""
    spans: list = []
    pipeline = Pipeline(spans.extend)
    t = ConnTracker(pipeline, lambda pid: {"service.name": "c"}, boot_offset_ns=0, compiled=compiled)
    t.feed([event(REQ if d == EGRESS else RESP, ts=ts, pos=pos, direction=d) for ts, d, pos in records])
    t.close_all()
    pipeline.flush()
    return spans, t


def test_spans_after_lost_records_carry_the_connections_epoch():
    """Exchange 1 whole, exchange 2's response lost, exchanges 3 and 4 whole: exchange 4 comes
    after a gap (epoch 1), exchange 1 before any (no epoch); no request waiting at the gap is
    paired with a response after it (the parser cannot tell which of them the lost bytes
    answered)."""
    for compiled in (False, True):
        n, m = len(REQ), len(RESP)
        spans, t = _exchanges([(10, EGRESS, 0), (20, INGRESS, 0), (30, EGRESS, n), (50, EGRESS, 2 * n),
                               (60, INGRESS, 2 * m), (70, EGRESS, 3 * n), (80, INGRESS, 3 * m)], compiled)
        got = [(s.start_time_unix_nano, s.end_time_unix_nano, s.attributes.get("guardian.connection.epoch"))
               for s in spans]
        assert got == [(10, 20, None), (70, 80, 1)], (compiled, got)
        assert t.stats["gaps"] == 1


def test_a_lost_first_response_is_a_gap():
    """The first response and the second request lost: the first request must not be paired
    with the second response (a span joined from two exchanges). Positions start at 0, so the
    first ingress record at a later offset shows the loss."""
    for compiled in (False, True):
        spans, t = _exchanges([(10, EGRESS, 0), (40, INGRESS, len(RESP))], compiled)
        assert [s for s in spans if s.end_time_unix_nano == 40] == [], compiled
        assert t.stats["gaps"] == 1


def test_a_connection_first_seen_mid_stream_loses_its_first_exchange():
    """Records before the first one seen were lost: the first response may answer an earlier
    request than the first one seen (its own response lost), so that pair is not made; the
    next exchange is, in epoch 2 (one loss seen in each direction)."""
    spans, t = _exchanges([(10, EGRESS, 500), (20, INGRESS, 700), (30, EGRESS, 500 + len(REQ)),
                           (40, INGRESS, 700 + len(RESP))])
    got = [(s.start_time_unix_nano, s.end_time_unix_nano, s.attributes.get("guardian.connection.epoch"))
           for s in spans]
    assert got == [(30, 40, 2)], got
    assert t.stats["gaps"] == 2
