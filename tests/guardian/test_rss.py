"""guardian/rss.py on this process's real mappings and heaps: the classes add up to the total and
follow what is allocated; `guardian agent` logs the same figures on SIGUSR1 and serves them in /metrics."""
from __future__ import annotations

import ctypes
import json
import mmap
import signal

import pytest

from guardian import rss
from tests.guardian.test_agent import replayed_agent

MB = rss.MB


def test_the_classes_add_up_to_the_total_and_to_the_kernels_count():
    m = rss.by_mapping(top_files=10_000)  # every file: after the whole suite, larger libraries lead
    assert m["total"] == sum(m[k] for k in rss.CLASSES)
    vm = rss.status()["VmRSS"]
    assert abs(m["total"] - vm) < 0.05 * vm + 4 * MB, (m["total"] / MB, vm / MB)
    assert m[rss.FILE] > 0 and m["files"] and sum(m["files"].values()) <= m[rss.FILE]
    assert any(name.startswith("libpython") or name.startswith("python") for name in m["files"])


def test_anonymous_and_file_backed_memory_land_in_their_class(tmp_path):
    before = rss.by_mapping()
    anon = mmap.mmap(-1, 64 * MB, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    anon.write(b"x" * (64 * MB))  # touched: resident
    path = tmp_path / "data.bin"
    path.write_bytes(b"y" * (32 * MB))
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        sum(mapped[i] for i in range(0, 32 * MB, 4096))  # every page read: resident
        after = rss.by_mapping()
        mapped.close()
    anon.close()
    assert after[rss.ANON] - before[rss.ANON] >= 60 * MB
    assert after[rss.FILE] - before[rss.FILE] >= 30 * MB
    assert after["files"].get("data.bin", 0) >= 30 * MB


@pytest.mark.skipif(not rss.malloc(), reason="malloc is not glibc's")
def test_glibc_in_use_follows_malloc_and_free():
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = rss.malloc()["in_use"]
    blocks = [libc.malloc(4096) for _ in range(8192)]  # 32 MiB below the mapping threshold
    held = rss.malloc()["in_use"]
    for p in blocks:
        libc.free(p)
    assert held - before >= 32 * MB
    assert rss.malloc()["in_use"] < held - 30 * MB


def test_python_blocks_and_pymalloc_bytes_follow_objects():
    before = rss.python_heap()
    keep = [bytearray(100) for _ in range(100_000)]  # ~160 bytes each: pymalloc's, not glibc's
    after = rss.python_heap()
    assert after["blocks"] - before["blocks"] >= 100_000
    assert after["in_use_bytes"] - before["in_use_bytes"] >= 10 * MB
    assert after["arena_bytes"] >= after["in_use_bytes"] + after["free_bytes"] and after["arenas"] >= 10
    del keep


def test_sigusr1_logs_one_json_line_and_metrics_carry_the_same_figures(tmp_path):
    agent = replayed_agent(tmp_path, {"GUARDIAN_STORE__MEMORY_LIMIT_MB": "64"})
    try:
        total = "guardian_agent_memory_rss_bytes{kind=\"total\"}"
        before = agent.metric(total)
        line = agent.signal_and_wait_line(signal.SIGUSR1, '"memory {')
        after = agent.metric(total)
        m = json.loads(json.loads(line)["msg"].split(" ", 1)[1])
        assert m["rss"]["total"] == sum(m["rss"][k] for k in rss.CLASSES)
        assert abs(m["rss"]["total"] - m["status"]["VmRSS"]) < 0.05 * m["status"]["VmRSS"] + 4 * MB
        assert m["malloc"]["in_use"] > 0 and m["python"]["blocks"] > 10_000 and m["python"]["arena_bytes"] > MB
        assert m["store"]["pool"] >= 0 and m["queue"]["spans"] == 0 and m["tables"]["store_spans"] >= 0
        # the scrapes just before and just after the line bracket its figure (the agent may still be
        # growing: its worker and store warm up under a loaded host)
        assert before is not None and after is not None
        assert 0.9 * min(before, after) <= m["rss"]["total"] <= 1.1 * max(before, after), (before, m["rss"], after)
        for name in ('guardian_agent_memory_rss_bytes{kind="file"}', 'guardian_agent_memory_malloc{what="in_use"}',
                     'guardian_agent_memory_python{what="blocks"}', 'guardian_agent_memory_store{what="pool"}',
                     'guardian_agent_memory_queue{what="bytes"}', 'guardian_agent_memory_tables{what="linker_pending"}',
                     "guardian_agent_ingest_queue_bytes", "guardian_agent_ingest_queue_refused_bytes_total",
                     "guardian_agent_store_holds_total", "guardian_store_drains_total",
                     "guardian_agent_row_facts_clears_total", "guardian_agent_spans_unflushed_total",
                     'guardian_agent_memory_tables{what="row_facts"}'):
            assert agent.metric(name) is not None, name
        assert agent.metric("guardian_agent_memory_paged_out_bytes_total") > 4 * MB  # at the worker's start
    finally:
        assert agent.stop(signal.SIGTERM) == 0, "".join(agent.stderr)
