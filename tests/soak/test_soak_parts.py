"""The soak's parts that need no agent: metric parsing and drop selection, the RSS slope,
the hostile messages (well-formed where they must be, absurd where they should be) and the
probe accounting of a process without BPF."""
from __future__ import annotations

import os
import struct

from hyperframe.frame import Frame, HeadersFrame, SettingsFrame

from bench.soaklib import hostile as soak_hostile, probe as soak_probe


def test_metrics_parse_counters_and_pick_the_drops():
    m = soak_probe.parse_metrics(
        "# HELP x\nguardian_agent_spans_received_total 22.0\nguardian_agent_spans_dropped_total 3.0\n"
        "guardian_agent_spans_dropped_created 1.7e9\n"
        'guardian_capture_events_total{counter="kernel.ringbuf_drops"} 1.116806e+06\n'
        'guardian_capture_events_total{counter="ring.size_bytes"} 1.6e+07\n'
        'guardian_capture_events_total{counter="pipeline.redis.resyncs"} 0.0\n')
    assert m == {"guardian_agent_spans_received": 22.0, "guardian_agent_spans_dropped": 3.0,
                 "capture.kernel.ringbuf_drops": 1116806.0, "capture.ring.size_bytes": 16000000.0,
                 "capture.pipeline.redis.resyncs": 0.0}
    assert soak_probe.drop_counters(m) == {"capture.kernel.ringbuf_drops": 1116806.0,
                                           "guardian_agent_spans_dropped": 3.0}


def test_slope_per_minute():
    assert soak_probe.slope_per_min([(0, 100), (60, 110), (120, 120)]) == 10.0
    assert soak_probe.slope_per_min([(0, 100), (60, 110)]) is None


def test_h2_huge_table_is_valid_framing_with_absurd_settings():
    data = soak_hostile.h2_huge_table()
    assert data.startswith(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    rest, frames = data[24:], []
    while rest:
        f, length = Frame.parse_frame_header(memoryview(rest[:9]))
        f.parse_body(memoryview(rest[9:9 + length]))
        frames.append(f)
        rest = rest[9 + length:]
    settings, headers = frames
    assert isinstance(settings, SettingsFrame) and settings.settings[1] == 0xFFFFFFFF
    assert isinstance(headers, HeadersFrame) and headers.data[:1] == b"\x3f"  # table size update first


def test_mongo_messages_claim_what_the_issue_describes():
    msg = soak_hostile.mongo_kind1_negative()
    length, _, _, opcode = struct.unpack_from("<iiii", msg)
    assert length == len(msg) and opcode == 2013
    kind1 = msg.index(b"\x01", 16 + 4 + 6)
    assert struct.unpack_from("<i", msg, kind1 + 1)[0] == -1
    assert len(soak_hostile.mongo_compressed_21()) == 21


def test_hostile_round_robin_against_a_listener_counts_every_case():
    lst = soak_hostile.Listener(b"-ERR no\r\n")
    try:
        ports = {k: lst.port for k in ("http1", "http2", "redis", "memcached", "nats")}
        h = soak_hostile.Hostile(ports, seed=3)
        for _ in range(len(h.cases)):
            h.one()
        assert sum(h.sent.values()) + sum(h.refused.values()) == len(h.cases)
        assert h.sent["mongo_kind1_size_-1"] == 1
        h.close()
    finally:
        lst.shutdown()
        lst.server_close()


def test_a_process_without_bpf_holds_and_leaves_nothing():
    me = soak_probe.attached(os.getpid())
    assert me["prog_count"] == 0 and me["tracefs_events"] == 0
    left = soak_probe.leftovers(os.getpid(), set())
    assert left["total"] == 0
    assert soak_probe.rss_mb(os.getpid()) > 1
