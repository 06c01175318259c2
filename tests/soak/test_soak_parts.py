"""The soak's parts that need no agent: metric parsing and drop selection, the RSS slope,
the hostile messages (well-formed where they must be, absurd where they should be), the
probe accounting of a process without BPF and the soak's cgroup that scopes the agent."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hyperframe.frame import Frame, HeadersFrame, SettingsFrame

from bench.soaklib import hostile as soak_hostile, probe as soak_probe
from bench.soaklib.cgroup import v2_root
from capture.scope import Scope

ROOT = Path(__file__).resolve().parents[2]


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
    # spans of processes outside the agent's scope are not lost: the soak reports them apart
    assert soak_probe.drop_counters({"guardian_agent_scope_dropped_spans": 9.0, "capture.kernel.scope_skipped": 4.0}) == {}


def test_the_agents_memory_gauges_parse_back_by_source():
    """What an agent's /metrics page says of its memory (guardian_agent_memory_*) is what the soak keeps."""
    from prometheus_client import generate_latest

    from capture.config import AgentConfig
    from capture.store.factory import open_store
    from guardian.agent_daemon import Agent

    store = open_store(None, memory_limit_mb=64)
    agent = Agent(AgentConfig(), store, source=None)
    m = soak_probe.memory_gauges(generate_latest(agent.registry).decode())
    store.close()
    parts = sum(m["rss_bytes"][k] for k in ("ring", "heap", "anon", "stack", "file", "other"))
    assert abs(m["rss_bytes"]["total"] - parts) <= 0.3  # each rounded to 0.1 MB
    assert m["rss_bytes"]["total"] > 10 and m["malloc"]["in_use"] > 0 and m["python"]["blocks"] > 10_000
    assert m["queue"] == {"spans": 0.0, "bytes": 0.0, "batches": 0.0} and "pool" in m["store"]
    assert m["file_bytes"]


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


_JOIN = """
import json, os, subprocess, sys
from bench.soaklib.cgroup import SoakCgroup
cg = SoakCgroup(sys.argv[1]).join()
child = subprocess.Popen(["sleep", "30"])
print(json.dumps({"path": cg.path, "child": child.pid}), flush=True)
sys.stdin.readline()
child.kill(); child.wait()
print(json.dumps({"removed": cg.leave(), "members": cg.members()}), flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0 or v2_root() is None, reason="needs root and a cgroup v2 hierarchy")
def test_the_soak_cgroup_holds_its_children_and_the_scope_keeps_only_them():
    name = f"guardian-soak-test-{os.getpid()}"
    p = subprocess.Popen([sys.executable, "-c", _JOIN, name], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        joined = json.loads(p.stdout.readline())
        assert joined["path"].endswith("/" + name)
        scope = Scope(cgroup=joined["path"])
        assert scope.allows(joined["child"]) and scope.allows(p.pid)  # the child inherited it
        assert not scope.allows(os.getpid()) and not scope.allows(1)
        p.stdin.write("\n")
        p.stdin.flush()
        left = json.loads(p.stdout.readline())
        assert left == {"removed": True, "members": []}
        assert not (v2_root() / joined["path"].lstrip("/")).exists()
    finally:
        p.kill()
        p.wait()
