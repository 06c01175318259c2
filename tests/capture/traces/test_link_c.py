"""The agent's linker in C (capture/traces/_link.c) links as its Python specification
(linker.link_python) does: the same parents, trace ids and counts, on Spans and on compact rows,
on random spans full of ties, frozen context, traceparents and odd parents, and on recorded
traffic through the stream linker."""
from __future__ import annotations

import copy
import random

import pytest

from capture.rows import Row, to_rows
from capture.span import Span
from capture.traces import linker
from capture.traces.linker import TRACEPARENT, link_python
from capture.traces.stream import StreamLinker
from bench.events import _Sockets, load
from capture.conntrack import ConnTracker
from capture.live import BATCH
from capture.pipeline import Pipeline
from tests.capture.test_fastpath import FIXTURES, feed_to_the_end

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def test_the_extension_is_built():
    assert linker._link is not None, "capture.traces._link is not built: python setup.py build_ext --inplace"


def random_spans(rnd: random.Random) -> list[Span]:
    conns = [(("10.0.0.%d" % rnd.randrange(1, 4), 40000 + k), ("10.0.1.1", rnd.choice([80, 5432])))
             for k in range(rnd.randrange(1, 5))]
    pids = [rnd.randrange(1, 5) for _ in range(3)]
    resources = {(h, p): {"process.pid": p, "host.name": h} for h in ("h1", "h2") for p in pids}
    spans = []
    for _ in range(rnd.randrange(0, 60)):
        kind = rnd.choice(["SERVER", "CLIENT", "SERVER", "CLIENT", "CONSUMER", "PRODUCER", "INTERNAL"])
        start = rnd.randrange(0, 40) * MS // rnd.choice([1, 2, 1000])  # many equal times
        end = start + rnd.choice([0, 1, 2, 5, 30, 80]) * MS
        a: dict = {}
        if rnd.random() < 0.85:
            (ca, cp), (sa, sp) = rnd.choice(conns)
            a.update({"client.address": ca, "client.port": cp, "server.address": sa, "server.port": sp})
            if rnd.random() < 0.1:
                a["network.transport"] = "udp"
        if rnd.random() < 0.6:
            a["thread.id"] = rnd.randrange(1, 4)
        elif rnd.random() < 0.2:
            a["go.goroutine.id"] = rnd.randrange(1, 4)
        if rnd.random() < 0.12:
            a[TRACEPARENT] = rnd.choice([
                f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-01", "00-" + "0" * 32 + "-" + "1" * 16 + "-01",
                "garbage", f"00-{'AB' * 16}-{'cd' * 8}-00", f"00-{rnd.getrandbits(128):032x}-{rnd.getrandbits(64):016x}-01"])
        s = Span("op", kind, T0 + start, T0 + end, attributes=a,
                 resource=resources[(rnd.choice(["h1", "h2"]), rnd.choice(pids))])
        spans.append(s)
    for s in spans:  # parents already there: imported traces, earlier runs, missing ones, cycles
        if rnd.random() < 0.1 and spans:
            s.parent_span_id = rnd.choice(spans).span_id
        elif rnd.random() < 0.03:
            s.parent_span_id = f"{rnd.getrandbits(64):016x}"
    if spans and rnd.random() < 0.2:  # ids that order on their first digits: ties by id matter
        for k, s in enumerate(spans):
            s.span_id = f"{rnd.randrange(4)}{k:015x}"
    return spans


def outcome(spans: list, stats) -> tuple:
    return [(s.span_id, s.parent_span_id, s.trace_id) for s in spans], stats


def links_as_the_specification(spans: list, frozen: set, slack: int, rows: bool) -> int:
    """The C linker links copies of `spans` (as Spans or Rows) as the Python one does; how many
    links were made."""
    a, b = copy.deepcopy(spans), copy.deepcopy(spans)
    if rows:
        a, b = to_rows(a), to_rows(b)
    want = link_python(a, frozen, slack)
    got = linker._link.link(b, frozen, slack, linker.conn_key, linker._thread, linker._process,
                            linker.parse_traceparent)
    assert got is not None
    assert outcome(b, linker.LinkStats(*got)) == outcome(a, want)
    return want.cross_process + want.in_process


@pytest.mark.parametrize("rows", [False, True])
def test_c_links_as_the_specification_does(rows):
    rnd = random.Random(14)
    linked = 0
    for _ in range(1500):
        spans = random_spans(rnd)
        frozen = {s.span_id for s in spans if rnd.random() < 0.25}
        slack = rnd.choice([0, MS, 50 * MS])
        linked += links_as_the_specification(spans, frozen, slack, rows)
    assert linked > 5000


def test_two_spans_with_one_id_are_left_to_the_specification():
    s1 = Span("a", "SERVER", T0, T0 + MS)
    s2 = Span("b", "CLIENT", T0, T0 + MS, span_id=s1.span_id)
    assert linker._link.link([s1, s2], frozenset(), MS, linker.conn_key, linker._thread, linker._process,
                             linker.parse_traceparent) is None
    assert linker.link([s1, s2]).cross_process == 0  # the Python ran


def recorded_spans(name: str) -> list[Span]:
    """The spans of a recorded ring-buffer fixture, as the live capture makes them (the compiled path)."""
    header, records = load(str(FIXTURES / f"{name}.events.gz"))
    resources = {int(pid): res for pid, res in header["resources"].items()}
    out: list = []
    pipeline = Pipeline(out.extend)
    tracker = ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                          sockets=_Sockets(header["port"]), boot_offset_ns=0)
    feed_to_the_end(tracker, pipeline, records, BATCH)
    return out


class Compiled:
    """The extension, asserting that it took every run (none left to the Python)."""

    def link(self, *args):
        got = C.link(*args)
        assert got is not None
        return got

    def release(self, *args):
        got = C.release(*args)
        assert got is not None
        return got

    def newest_end(self, *args):
        got = C.newest_end(*args)
        assert got is not None
        return got


C = linker._link


def stream(rows: list, batch: int, python: bool, monkeypatch, max_pending: int = 3000) -> tuple:
    """Rows through a StreamLinker in batches, as the agent's worker hands them (the C release and
    link, or the Python of both); what it releases, and its counters."""
    monkeypatch.setattr(linker, "_link", None if python else Compiled())
    out, sl = [], StreamLinker(window_s=0.2, max_pending=max_pending)
    for i in range(0, len(rows), batch):
        out += sl.add(rows[i:i + batch])
    out += sl.flush()
    monkeypatch.undo()
    return ([(r.name, r.kind, r.start_time_unix_nano, r.span_id, r.parent_span_id, r.trace_id) for r in out],
            (sl.linked, sl.forced, sl.context_trimmed, sl.pending))


@pytest.mark.parametrize("name,max_pending", [("nginx_hey_pair", 3000), ("nginx_hey_pair", 300),
                                              ("redis_bench_pair", 3000)])
def test_recorded_traffic_links_the_same_through_the_stream_linker(name, max_pending, monkeypatch):
    """max_pending 300: the flood case (the oldest half of the pending released early, context trimmed)."""
    spans = recorded_spans(name)[:4000]  # (redis-benchmark's pipelines: the Python takes seconds per 1,000)
    assert len(spans) >= 1400 and all(type(r) is Row for r in to_rows(spans[:1]))
    want = stream(to_rows(copy.deepcopy(spans)), 256, True, monkeypatch, max_pending)
    got = stream(to_rows(copy.deepcopy(spans)), 256, False, monkeypatch, max_pending)
    assert got == want
    assert sum(1 for r in want[0] if r[4]) >= 0.4 * len(want[0])  # most spans found a parent
    if max_pending < 1000:
        assert want[1][1] > 0 and want[1][2] > 0  # forced releases and trimmed context: exercised


def test_random_streams_link_the_same_through_the_stream_linker(monkeypatch):
    """Random spans (ties, traceparents, odd parents) in small batches, flooded and idle."""
    rnd = random.Random(3)
    for _ in range(150):
        spans = sorted(random_spans(rnd), key=lambda s: s.end_time_unix_nano)
        for k, s in enumerate(spans):
            s.parent_span_id = None  # (a stream's spans come without parents)
            s.start_time_unix_nano += k * MS
            s.end_time_unix_nano += k * MS
        batch, cap = rnd.choice([1, 3, 10]), rnd.choice([4, 10, 1000])
        want = stream(to_rows(copy.deepcopy(spans)), batch, True, monkeypatch, cap)
        got = stream(to_rows(copy.deepcopy(spans)), batch, False, monkeypatch, cap)
        assert got == want


def crowd(rnd: random.Random) -> list[Span]:
    """Spans of many processes and connections: more resource dicts than the C's process cache has
    slots (some equal and distinct, some the same dict), more connection keys than its first table."""
    shared = [{"process.pid": p % 40, "host.name": "h"} for p in range(90)]  # pids repeat: equal, distinct
    spans = []
    for k in range(rnd.randrange(200, 700)):
        port = 30000 + rnd.randrange(120)
        a = {"client.address": "10.0.0.1", "client.port": port, "server.address": "10.0.0.2", "server.port": 80,
             "thread.id": rnd.randrange(3)}
        start = rnd.randrange(0, 400) * MS // rnd.choice([1, 4])
        s = Span("op", rnd.choice(["SERVER", "CLIENT", "CLIENT", "INTERNAL"]), T0 + start,
                 T0 + start + rnd.choice([0, 1, 3, 40]) * MS, attributes=a,
                 resource=rnd.choice(shared) if rnd.random() < 0.8 else {"process.pid": rnd.randrange(40),
                                                                          "host.name": "h"})
        spans.append(s)
    return spans


@pytest.mark.parametrize("rows", [False, True])
def test_many_processes_and_connections_link_as_the_specification_does(rows):
    rnd = random.Random(140)
    linked = 0
    for _ in range(40):
        spans = crowd(rnd)
        frozen = {s.span_id for s in spans if rnd.random() < 0.2}
        linked += links_as_the_specification(spans, frozen, 50 * MS, rows)
    assert linked > 2000


def test_the_batch_helpers_read_as_their_python():
    """newest_end (StreamLinker.add's loop) and resources (Agent._enrich's distinct resources)."""
    rnd = random.Random(7)
    for _ in range(200):
        spans = crowd(rnd)[:rnd.randrange(0, 50)]
        batch = rnd.choice([spans, to_rows(copy.deepcopy(spans))])
        floor = rnd.choice([0, T0 + 100 * MS, T0 + 10_000 * MS])
        assert C.newest_end(batch, floor) == max([floor] + [s.end_time_unix_nano for s in batch])
        assert [id(r) for r in C.resources(batch)] == [id(r) for r in linker.resources_python(batch)]
    # an end that is not an int, or one too large for the C's sums: left to the Python loop
    assert C.newest_end([Span("op", "CLIENT", T0, T0 + 0.5)], 0) is None
    assert C.newest_end([Span("op", "CLIENT", T0, 1 << 80)], 0) is None

