"""ConnTracker's table stays bounded: connections idle past the timeout are closed at the sweep,
and a full table closes its least recently active tenth; both counted (records built here)."""
from __future__ import annotations

import os
import time

from capture import abi
from capture.conntrack import ConnTracker
from capture.pipeline import Pipeline

LOOPBACK = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
NOW = 10**12
REQUEST = b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n"


def request(conn_id: int, ts: int) -> bytes:
    """A client's request on connection `conn_id` of this (live) process, stamped `ts`."""
    return abi.EVENT_STRUCT.pack(ts, conn_id, 0, os.getpid(), 1, 5, len(REQUEST), len(REQUEST), 0,
                                 abi.EventKind.DATA, abi.Proto.HTTP1, abi.Direction.EGRESS, abi.Role.CLIENT,
                                 0, abi.Source.SYSCALL, 0, abi.Transport.TCP, LOOPBACK, LOOPBACK,
                                 41000 + conn_id, 8080, 2, 0, b"client") + REQUEST


def tracker(spans: list, **bounds) -> tuple[ConnTracker, Pipeline]:
    pipeline = Pipeline(spans.extend)
    # stamps are CLOCK_MONOTONIC-like: the offset makes ts=NOW "now" in Unix time
    return ConnTracker(pipeline, lambda pid: {"service.name": "c"}, boot_offset_ns=time.time_ns() - NOW,
                       **bounds), pipeline


def test_a_full_table_closes_its_least_recently_active_tenth():
    spans: list = []
    t, pipeline = tracker(spans, max_tracked=20)
    for conn_id in range(1, 21):  # connection 7 is the oldest, then 1, 2, ...
        t.on_event(request(conn_id, 0 if conn_id == 7 else conn_id * 1000))
    assert t.tracked == 20 and not t.stats["evicted_table_full"]
    t.on_event(request(21, 50_000))
    pipeline.flush()
    assert t.stats["evicted_table_full"] == 2 and t.tracked == 19
    assert set(t.conns) == set(range(1, 22)) - {7, 1}
    # closing flushed their unanswered requests: nothing is lost silently
    assert sorted(s.attributes["client.port"] for s in spans) == [41001, 41007]
    assert all(s.attributes["error.type"] == "no_response" for s in spans)


def test_idle_connections_are_closed_at_the_sweep_and_active_ones_stay():
    spans: list = []
    t, pipeline = tracker(spans, idle_timeout_s=60)
    t.on_event(request(1, NOW - 120 * 10**9))  # last active two minutes ago
    t.on_event(request(2, NOW - 10**9))
    t.sweep(force=True)
    pipeline.flush()
    assert set(t.conns) == {2} and t.tracked == 1
    assert t.stats["closed_idle"] == 1 and not t.stats["closed_by_exit"]
    assert [s.attributes["client.port"] for s in spans] == [41001]
    t.on_event(request(1, NOW))  # a byte on a forgotten connection follows it again
    assert set(t.conns) == {1, 2} and t.tracked == 2


def test_a_close_event_keeps_the_count():
    t, _ = tracker([])
    t.on_event(request(1, 0))
    close = bytearray(request(1, 10)[:abi.EVENT_SIZE])
    close[abi.Event.kind.offset] = abi.EventKind.CLOSE
    t.on_event(bytes(close))
    assert t.tracked == 0 and not t.conns
