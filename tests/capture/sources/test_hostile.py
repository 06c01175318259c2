"""Hostile captures stay bounded (bench/hostile.py writes them; the bench measures peak RSS at full size)."""
import tracemalloc

from bench import hostile
from capture.sources import pcap


def replay_peak(path):
    spans = []
    tracemalloc.start()
    try:
        stats = pcap.replay(str(path), spans.extend)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return spans, stats, peak


def test_unclosed_flows_are_capped_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(pcap, "MAX_FLOWS", 500)
    path = tmp_path / "flows.pcap"
    hostile.unclosed_flows(path, 3000)
    spans, stats, _ = replay_peak(path)
    assert stats["pcap.flows"] == 3000 and stats["pcap.flows_evicted"] == 2500
    assert len(spans) == 3000  # evicted flows still report their unanswered command
    assert all(s.status_code == "ERROR" for s in spans)


def test_announced_63_mib_queries_are_skipped_by_length(tmp_path):
    path = tmp_path / "queries.pcap"
    hostile.announced_queries(path)
    spans, stats, peak = replay_peak(path)
    # all eight read (skipped by length): each Query ends the one before it, unanswered, which
    # no client sends (postgres.py Rule 4); the last is reported at the end of the capture
    assert [s.name for s in spans] == ["SELECT"] and stats["pipeline.postgres.answers_missed"] == 7, stats
    assert stats.get("pipeline.postgres.garbage", 0) == 0
    assert peak < 32 * 1024 * 1024, peak  # eight 63 MiB messages, never held


def test_hpack_table_growth_is_capped(tmp_path):
    path = tmp_path / "hpack.pcap"
    hostile.hpack_growth(path, streams=60)  # 60 x 12 KB of new headers: past the 64 KiB cap
    spans = []
    stats = pcap.replay(str(path), spans.extend)
    assert len(spans) == 60 and stats["pipeline.http2.hpack_table_capped"] >= 1
