"""Differential test of the compiled path (capture/_fastpath.c) against the Python path it stands
in for: the same ring records through ConnTracker.feed with and without the C table give the same
spans in the same order (ids masked) — recorded nginx + hey traffic (unpaired, paired in the kernel,
paired as the kernel would), transcripts of every case the C path hands back, many connections
coming and going, hostile and truncated records (never a crash: handed to the Python path, which
counts them) — and secrets are scrubbed on both paths alike."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from bench.events import _Sockets, load
from capture import abi, fastpath, scrub
from capture.conntrack import ConnTracker
from capture.live import BATCH
from capture.pairing import pair
from capture.pipeline import Pipeline
from capture.span import Span
from tests.capture.test_pairing import Conn, get, ok, transcript

FIXTURES = Path(__file__).parent / "fixtures"
E, I = abi.Direction.EGRESS, abi.Direction.INGRESS
END = 1 << 62  # the close of what is still open at the end: a fixed time on both paths

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built (see test below)")


def test_the_extension_is_built():
    assert fastpath._fastpath is not None, "capture._fastpath is not built: python setup.py build_ext --inplace"


def feed_to_the_end(tracker: ConnTracker, pipeline: Pipeline, records: list[bytes], batch: int) -> None:
    """Records in batches as the capture reads them, then what C holds handed back and every
    connection still open closed, each flush after it."""
    for i in range(0, len(records), batch):
        tracker.feed(records[i:i + batch])
        pipeline.flush()
    tracker.hand_back()
    for tracked in tracker.conns.values():
        if hasattr(tracked, "conn"):
            pipeline.close(tracked.conn, END)
    pipeline.flush()


def run(records: list[bytes], compiled: bool, header: dict | None = None, batch: int = BATCH):
    """Spans of `records` fed in batches (what is open at the end closed at END), as JSON with
    ids masked, in the order they were made; and the tracker."""
    out: list = []
    pipeline = Pipeline(out.extend)
    if header is None:
        tracker = ConnTracker(pipeline, lambda pid: {"service.name": f"p{pid}"}, boot_offset_ns=0, compiled=compiled)
    else:
        resources = {int(pid): res for pid, res in header["resources"].items()}
        tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0, compiled=compiled)
    feed_to_the_end(tracker, pipeline, records, batch)
    assert all(type(s) is Span for s in out)
    return [json.dumps({**s.to_dict(), "trace_id": "-", "span_id": "-"}) for s in out], tracker


def same(records: list[bytes], header: dict | None = None, batch: int = BATCH) -> tuple[list[str], dict]:
    """Both paths on `records`: their spans must be equal; returns them and the C path's counts."""
    python, _ = run(records, False, header, batch)
    compiled, tracker = run(records, True, header, batch)
    assert compiled == python
    return python, tracker.fast.counts()


@pytest.mark.parametrize("name,kernel_pairing", [("nginx_hey", False), ("nginx_hey", True),
                                                 ("nginx_hey_unpaired", False), ("nginx_hey_pair", False)])
def test_recorded_traffic_gives_the_same_spans_on_both_paths(name, kernel_pairing):
    header, records = load(str(FIXTURES / f"{name}.events.gz"), kernel_pairing)
    spans, counts = same(records, header)
    assert len(spans) >= 1400 and {json.loads(s)["kind"] for s in spans} == {"SERVER", "CLIENT"}
    # the C path made nearly all of them (the first exchange of each connection opens it in Python)
    assert counts["spans"] >= 0.95 * len(spans), counts
    assert counts["connections"] == 0 and counts["exchanges_waiting"] == 0


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_case_the_c_path_hands_back_gives_the_same_spans(batch, kernel_pairing):
    """Pipelining, bodies in several chunks, chunked replies, HEAD, 204/304, requests longer than
    the kernel holds, an unanswered request then close, an upgrade: each handed back in order,
    requests held across batch boundaries (batch 1 and 3)."""
    records = transcript()
    spans, counts = same(list(pair(records)) if kernel_pairing else records, batch=batch)
    assert len(spans) == 2 * 12 + 1
    assert counts["spans"] >= 8 and counts["handed_over"] >= 10, counts
    names = [json.loads(s)["name"] for s in spans]
    assert names.count("GET /hang") == 2 and names.count("GET /p2") == 2


def test_many_connections_coming_and_going():
    """Thousands of connections interleaved, closed in random order: the C table grows, and
    removals keep every other connection findable."""
    rnd = random.Random(7)
    conns = [Conn(1000 + k * 7919, rnd.choice([abi.Role.CLIENT, abi.Role.SERVER]), 40000 + k % 20000, 8080)
             for k in range(3000)]
    live, records, t = list(conns), [], 1000
    while live:
        c = rnd.choice(live)
        t += 10
        req_dir, resp_dir = (E, I) if c.role == abi.Role.CLIENT else (I, E)
        if rnd.random() < 0.15:
            records.append(c.close(t))
            live.remove(c)
        else:
            records += [c.data(req_dir, get(f"/c/{c.conn_id}"), t), c.data(resp_dir, ok(rnd.choice([200, 404])), t + 5)]
    spans, counts = same(records)
    assert len(spans) >= 15_000 and counts["spans"] >= len(spans) - 3000 - 100
    spans_paired, counts = same(list(pair(records)))
    assert spans_paired == spans


def mutate(raw: bytes, rnd: random.Random) -> bytes:
    """One hostile change: a truncation, random bytes in the header or payload, an absurd length,
    position or timestamp, a kind, protocol or direction the record does not have."""
    b = bytearray(raw)
    what = rnd.randrange(8)
    if what == 0:
        return bytes(b[:rnd.randrange(len(b) + 1)])
    if what == 1:
        for _ in range(rnd.randint(1, 6)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
    elif what == 2 and len(b) >= abi.EVENT_SIZE:
        at = rnd.choice([abi.Event.copied_len.offset, abi.Event.total_len.offset])
        b[at:at + 4] = rnd.choice([0xFFFFFFFF, 0x7FFFFFFF, len(b), 1]).to_bytes(4, "little")
    elif what == 3 and len(b) >= abi.EVENT_SIZE:
        at = rnd.choice([abi.Event.pos.offset, abi.Event.ts_ns.offset])
        b[at:at + 8] = rnd.choice([(1 << 64) - 1, (1 << 63) + 5, 0, 1]).to_bytes(8, "little")
    elif what == 4 and len(b) >= abi.EVENT_SIZE:
        b[abi.Event.kind.offset] = rnd.randrange(6)
    elif what == 5 and len(b) >= abi.EVENT_SIZE:
        b[abi.Event.direction.offset] = rnd.randrange(3)
        b[abi.Event.source.offset] = rnd.choice([0, 0, 1, 3])
    elif what == 6 and len(b) >= abi.EVENT_SIZE:
        b[abi.Event.transport.offset] = rnd.randrange(3)
        b[abi.Event.role.offset] = rnd.randrange(4)
    else:
        b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(64)))
    return bytes(b)


def hostile_rounds(base: list[bytes], rnd: random.Random, rounds: int = 40) -> int:
    """Rounds of `base` (every other one paired as the kernel would) with some records made hostile: each
    gives the same spans on both paths; returns how many records the C path handed to the Python path."""
    handed = 0
    for round_ in range(rounds):
        recs = list(pair(base)) if round_ % 2 else base
        hostile = [mutate(r, rnd) if rnd.random() < 0.15 else r for r in recs]
        python, _ = run(hostile, False, batch=rnd.choice([1, 7, BATCH]))
        compiled, tracker = run(hostile, True, batch=rnd.choice([1, 7, BATCH]))
        assert compiled == python, round_
        handed += tracker.fast.counts()["handed_over"]
    return handed


def test_hostile_and_truncated_records_never_crash_and_give_the_same_spans():
    header, records = load(str(FIXTURES / "nginx_hey.events.gz"))
    base = {"recorded": (records[:400], header), "paired": (list(pair(records[:400])), header),
            "transcript": (transcript(), None), "transcript paired": (list(pair(transcript())), None)}
    rnd = random.Random(2026)
    handed = short = 0
    for round_ in range(60):
        name = list(base)[round_ % len(base)]
        recs, hdr = base[name]
        hostile = [mutate(r, rnd) if rnd.random() < 0.2 else r for r in recs]
        python, _ = run(hostile, False, hdr, batch=rnd.choice([1, 7, BATCH]))
        compiled, tracker = run(hostile, True, hdr, batch=rnd.choice([1, 7, BATCH]))
        assert compiled == python, (name, round_)
        handed += tracker.fast.counts()["handed_over"]
        short += tracker.stats["short_events"]
    assert handed > 1000 and short > 0  # the C path handed them over; the Python path counted them


def test_secrets_are_scrubbed_on_the_c_path_as_on_the_python_path():
    c = Conn(5, abi.Role.CLIENT, 41000, 8080)
    records = []
    for k, line in enumerate([b"GET /login?user=ann&token=s3cr3t&x=1 HTTP/1.1",
                              b"GET http://bob:hunter2@api.local/x?password=pw1 HTTP/1.1",
                              b"GET /plain?q=1 HTTP/1.1", b"GET /at@sign HTTP/1.1"]):
        records += [c.data(E, line + b"\r\nHost: h\r\n\r\n", 100 * k + 10), c.data(I, ok(), 100 * k + 20)]
    spans, counts = same(records)
    text = "".join(spans)
    assert counts["spans"] >= 3
    for secret in ("s3cr3t", "hunter2", "pw1"):
        assert secret not in text
    assert "token=REDACTED" in text and "q=1" in text
    saved = scrub._config
    scrub.configure(scrub.ScrubConfig(enabled=False))
    try:
        unscrubbed, _ = same(records)  # the rule is read at each span: off means off on both paths
    finally:
        scrub.configure(saved)
    assert "s3cr3t" in "".join(unscrubbed)


def test_held_connections_and_requests_go_back_to_python_intact():
    """A request held in C when the table is handed back (sweep, stop) becomes the Python
    parser's pending request; the connection's positions, last activity and thread come back."""
    c = Conn(9, abi.Role.CLIENT, 41000, 8080)
    resource = {"service.name": "p"}
    refs = sys.getrefcount(resource)
    out: list = []
    pipeline = Pipeline(out.extend)
    tracker = ConnTracker(pipeline, lambda pid: resource, boot_offset_ns=0)
    tracker.feed([c.data(E, get("/a"), 10, tid=77), c.data(I, ok(), 20), c.data(E, get("/b"), 30, tid=78)])
    assert tracker.fast.counts()["exchanges_waiting"] == 1 and len(tracker.fast) == 1
    tracker.hand_back()
    assert len(tracker.fast) == 0
    tracked = tracker.conns[9]
    assert tracked.pos == c.pos and tracked.conn.request_tid == 78 and tracked.conn.last_seen_ns == 30
    assert [r.name for r in tracked.conn.parser.close(99)] == ["GET /b"]
    pipeline.flush()
    assert [(s.name, s.attributes["thread.id"], s.start_time_unix_nano, s.end_time_unix_nano) for s in out] == [
        ("GET /a", 77, 10, 20)]
    del out, pipeline, tracker, tracked
    assert sys.getrefcount(resource) == refs  # what the table held is let go


def test_request_line_caches_stay_at_their_bound_under_unique_lines():
    """Request lines with an id in them never repeat: the compiled path's line cache and http1's
    caches hold at most their bound whatever the number of distinct lines, and count what they drop
    (the agent's RSS rose for minutes in the soak while the larger bounds filled)."""
    from capture.protocols import http1

    n = 3 * http1.LINES_CACHED + 200
    s = Conn(2, abi.Role.SERVER, 8080, 41001)
    records, t = [], 1000
    for i in range(n):
        records += [s.data(I, get(f"/orders/{i}?ref=r{i}"), t), s.data(E, ok(), t + 500)]
        t += 1000
    before = http1.cache_stats()
    spans, tracker = run(records, True)
    counts, after = tracker.fast.counts(), http1.cache_stats()
    assert len(spans) == n
    assert 0 < counts["line_cache.entries"] <= http1.LINES_CACHED
    # every line is asked once (the connection's first exchange goes through Python, before C adopts it)
    assert n - 2 <= counts["line_cache.evicted"] + counts["line_cache.entries"] <= n
    assert after["request_line.entries"] == http1.LINES_CACHED  # full, not past it
    assert after["request_line.evicted"] - before["request_line.evicted"] >= n - http1.LINES_CACHED
    assert after["route.entries"] <= http1.ROUTES_CACHED
