"""Differential test of the compiled path writing `--json` lines itself (ConnTracker.spans_as_lines,
what `guardian capture --json` does) against its specification, Span.json_line() of the Spans the
same path makes otherwise: the same bytes, ids included (both tables draw ids from one seed, the
Python path from one counter), on recorded ring-buffer traffic and on every protocol's transcripts
(HTTP/1, Redis, Memcached, PostgreSQL, MySQL; paired in the kernel or not; hand-backs; hostile
resources the C writer leaves to orjson)."""
from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path

import pytest

from bench.events import _Sockets, load
from capture import fastpath, scrub, stitch
from capture.conntrack import ConnTracker
from capture.live import BATCH
from capture.pairing import pair
from capture.pipeline import Pipeline
from capture.span import Span, json_lines, write_json_lines
from tests.capture import test_fastpath_memcached as memcached_cases
from tests.capture import test_fastpath_mysql as mysql_cases
from tests.capture import test_fastpath_postgres as postgres_cases
from tests.capture import test_fastpath_redis as redis_cases
from tests.capture.test_fastpath import feed_to_the_end, mutate
from tests.capture.test_pairing import transcript

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="capture._fastpath not built")


def replay(records: list[bytes], lines: bool, header: dict | None, monkeypatch, batch: int = BATCH,
           resource=None) -> list:
    """What the pipeline hands its sink for `records` (Spans, and with `lines` the compiled path's
    bytes), every id drawn from fixed sequences."""
    counter = itertools.count(1)
    monkeypatch.setattr(stitch, "_new_ids", lambda: (f"{next(counter):032x}", f"{next(counter):016x}"))
    out: list = []
    pipeline = Pipeline(out.extend)
    if header is None:
        resources = lambda pid: resource or {"service.name": f"p{pid}"}  # noqa: E731
        tracker = ConnTracker(pipeline, resources, boot_offset_ns=0)
    else:
        known = {int(pid): res for pid, res in header["resources"].items()}
        tracker = ConnTracker(pipeline, lambda pid: resource or known.get(pid, {}), port=header["port"],
                              sockets=_Sockets(header["port"]), boot_offset_ns=0)
    tracker.fast.seed_ids(11)
    if lines:
        tracker.spans_as_lines()
    feed_to_the_end(tracker, pipeline, records, batch)
    return out


def same_bytes(records: list[bytes], monkeypatch, header: dict | None = None, batch: int = BATCH,
               resource=None) -> tuple[bytes, int, int]:
    """Both ways on `records`: the lines must be the same bytes; returns them, the spans, and how
    many the compiled path wrote as lines."""
    spans = replay(records, False, header, monkeypatch, batch, resource)
    assert all(type(s) is Span for s in spans)
    spec = b"".join(s.json_line() for s in spans)
    got = replay(records, True, header, monkeypatch, batch, resource)
    assert len(got) == len(spans)
    assert json_lines(got) == spec
    # the Python fallback of the printer (no _spanjson) writes the same
    assert b"".join(s if type(s) is bytes else s.json_line() for s in got) == spec
    return spec, len(spans), sum(type(s) is bytes for s in got)


@pytest.mark.parametrize("name,kernel_pairing", [("nginx_hey_pair", False), ("nginx_hey_unpaired", False),
                                                 ("nginx_hey_unpaired", True), ("redis_bench", False),
                                                 ("redis_bench_pair", False)])
def test_recorded_traffic_gives_the_same_bytes_as_json_line(name, kernel_pairing, monkeypatch):
    header, records = load(str(FIXTURES / f"{name}.events.gz"), kernel_pairing)
    spec, n, as_lines = same_bytes(records, monkeypatch, header)
    assert n >= 1400 and as_lines >= 0.95 * n, (n, as_lines)
    kinds = {json.loads(line)["kind"] for line in spec.splitlines()}
    assert {"SERVER", "CLIENT"} <= kinds


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_protocol_case_gives_the_same_bytes(batch, kernel_pairing, monkeypatch):
    """Hand-backs mid-exchange, pipelines, errors, scrubbed secrets, each protocol the C path takes."""
    rnd = random.Random(batch)
    cases = {
        "http1": transcript(),
        "redis": redis_cases.records(redis_cases.EXCHANGES, rnd),
        "memcached": redis_cases.records(memcached_cases.EXCHANGES, rnd, kind=memcached_cases.MemcachedConn),
        "postgres": redis_cases.records(postgres_cases.seq(rnd), rnd, kind=postgres_cases.PostgresConn),
        "mysql": redis_cases.records(mysql_cases.seq(rnd), rnd, kind=mysql_cases.MysqlConn),
    }
    for proto, recs in cases.items():
        spec, n, as_lines = same_bytes(list(pair(recs)) if kernel_pairing else recs, monkeypatch, batch=batch)
        assert n >= 20 and as_lines >= 4, (proto, n, as_lines)
        assert b"hunter2" not in spec and b"s3cr3t" not in spec


@pytest.mark.parametrize("resource", [
    {"service.name": "a\u2028\"\\\x01é😀", "process.pid": 2**63 - 1, "flag": True, "none": None},
    {"service.name": "float", "load": 0.5},        # orjson's float: the span's json_line()
    {"service.name": "big", "n": 2**64},           # beyond 64 bits: the stdlib's
    {"service.name": "lone \ud800 surrogate"},     # orjson refuses it: json_line() decides
    {1: "key not a str", "service.name": "k"},
    {"service.name": "nested", "k8s": {"labels": ["a", ("b", 1)]}},
])
@pytest.mark.parametrize("name", ["nginx_hey_pair", "redis_bench_pair"])
def test_what_the_writer_leaves_to_json_line_is_written_by_json_line(resource, name, monkeypatch):
    header, records = load(str(FIXTURES / f"{name}.events.gz"))
    records = records[:400]
    try:
        Span("x", "SERVER", 1, 2, resource=resource).json_line()
    except (TypeError, ValueError, UnicodeError):
        pytest.skip("json_line() itself refuses it")
    spec, n, as_lines = same_bytes(records, monkeypatch, header, resource=resource)
    assert n >= 300 and as_lines >= 0.9 * n
    assert all(json.loads(line)["resource"]["service.name"] for line in spec.splitlines()[:50])


def test_attributes_already_holding_a_connection_attribute_keep_theirs(monkeypatch):
    """record_to_span adds the connection's ends only where absent: a scrubbed span whose attributes
    hold one already (never from today's rules: a rule that added one) is written as its dict has it."""
    real = scrub.record

    def adding(attrs, message):
        out = real(attrs, message)
        attrs["server.address"] = "kept"
        attrs.setdefault("thread.id", 1)
        return out

    monkeypatch.setattr(scrub, "record", adding)
    rnd = random.Random(3)
    for kind, exchanges in ((postgres_cases.PostgresConn, postgres_cases.seq(rnd)),
                            (mysql_cases.MysqlConn, mysql_cases.seq(rnd)),
                            (memcached_cases.MemcachedConn, memcached_cases.EXCHANGES)):
        spec, n, as_lines = same_bytes(redis_cases.records(exchanges, rnd, kind=kind), monkeypatch)
        assert spec.count(b'"server.address":"kept"') >= 2, kind


def test_mixed_batches_are_written_in_order_to_a_descriptor(monkeypatch, tmp_path):
    header, records = load(str(FIXTURES / "redis_bench_pair.events.gz"))
    got = replay(records[:2000], True, header, monkeypatch)
    assert {type(s) for s in got} == {bytes, Span}  # the first exchanges are Python's
    path = tmp_path / "out.jsonl"
    with open(path, "wb") as f:
        for i in range(0, len(got), 97):
            write_json_lines(f.fileno(), got[i:i + 97])
    assert path.read_bytes() == json_lines(got)
    assert len(path.read_bytes().splitlines()) == len(got)
    assert os.path.getsize(path) > 100 * len(got)


def test_hostile_and_truncated_records_give_the_same_bytes(monkeypatch):
    """Records cut, garbled or lying about their lengths, each protocol's: never a crash, and the
    lines written in C are still the Spans' json_line()."""
    header, recorded = load(str(FIXTURES / "nginx_hey_pair.events.gz"))
    rnd = random.Random(10)
    bases = [(recorded[:300], header), (transcript(), None),
             (redis_cases.records(redis_cases.EXCHANGES, rnd), None),
             (redis_cases.records(postgres_cases.seq(rnd), rnd, kind=postgres_cases.PostgresConn), None),
             (redis_cases.records(mysql_cases.seq(rnd), rnd, kind=mysql_cases.MysqlConn), None),
             (redis_cases.records(memcached_cases.EXCHANGES, rnd, kind=memcached_cases.MemcachedConn), None)]
    written = 0
    for round_ in range(24):
        base, hdr = bases[round_ % len(bases)]
        recs = list(pair(base)) if round_ % 4 >= 2 else base
        hostile = [mutate(r, rnd) if rnd.random() < 0.15 else r for r in recs]
        _, _, as_lines = same_bytes(hostile, monkeypatch, hdr, batch=rnd.choice([1, 7, BATCH]))
        written += as_lines
    assert written > 500
