"""Spans as rows in C (capture/_rows.c), and HTTP/1 exchanges made as rows by the compiled path
(ConnTracker.spans_as_rows), give the Rows capture.rows.row_of (the specification) gives of the
Spans: every field, on recorded traffic, hand-built cases, hostile records and odd attributes."""
from __future__ import annotations

import itertools
import random

import pytest

from bench.events import load
from capture import rows, stitch
from capture.live import BATCH
from capture.pairing import pair
from capture.pipeline import Pipeline
from capture.span import Span
from capture.traces.linker import TRACEPARENT
from tests.capture.test_fastpath import FIXTURES, feed_to_the_end, mutate
from tests.capture.test_pairing import tracker_for, transcript
from tests.capture.traces.test_link_c import recorded_spans

FIELDS = ("name", "kind", "start_time_unix_nano", "end_time_unix_nano", "status_code", "status_message",
          "attributes", "resource", "trace_id", "span_id", "parent_span_id", "attrs_json", "key", "nat", "peer")


def test_the_extension_is_built():
    assert rows._rows is not None, "capture._rows is not built: python setup.py build_ext --inplace"


def fields(r) -> tuple:
    return tuple(getattr(r, f) for f in FIELDS)


def same(spans: list) -> list:
    want = [rows.row_of(s) for s in spans]
    got = rows._rows.rows(spans, rows._facts, rows._FACTS_MAX)
    assert [type(r) for r in got] == [rows.Row] * len(spans)
    assert [fields(r) for r in got] == [fields(r) for r in want]
    return got


@pytest.mark.parametrize("name", ["nginx_hey_pair", "redis_bench_pair"])
def test_recorded_traffic_gives_the_same_rows(name):
    spans = recorded_spans(name)
    got = same(spans)
    assert len(got) >= 1400 and all(r.key[0] is not None for r in got)
    assert {r.peer for r in got if r.kind == "CLIENT"} - {None}


ODD = [0, 1, -1, 2**63 - 1, 2**64, -2**70, 1.5, True, False, None, "", "x", "é€😀", "\ud800", "a\"\\\n\x01",
       [1, "a", None], (2, 3), {"k": [1, {"z": 2}]}, {1: "int key"}, b"bytes", object]


def test_odd_attributes_give_the_same_rows():
    rnd = random.Random(5)
    spans = []
    for k in range(3000):
        a: dict = {}
        for key in ("client.address", "client.port", "server.address", "server.port", "network.transport",
                    "thread.id", "go.goroutine.id", TRACEPARENT, "db.system", "db.system.name",
                    "messaging.system", "rpc.service", "http.request.method"):
            roll = rnd.random()
            if roll < 0.35:
                continue
            if key.endswith(".port") and roll < 0.95:
                a[key] = rnd.choice([80, 5432, "8080", 0, True])
            elif key.endswith(".address") and roll < 0.95:
                a[key] = rnd.choice(["10.0.0.1", "::1", "10.0.0.2", "", 7])
            else:
                a[key] = rnd.choice(ODD[:-2]) if key.endswith(".port") else rnd.choice(ODD[:-1])
        if rnd.random() < 0.05:
            a[rnd.choice([1, None, (1, 2), b"k", 2.5])] = "odd key"
        spans.append(Span(f"op{k % 7}", rnd.choice(["CLIENT", "SERVER", "PRODUCER", "CONSUMER", "INTERNAL"]),
                          k, k + rnd.randrange(3), rnd.choice(["OK", "ERROR", "UNSET"]), a,
                          {"process.pid": k % 5}, status_message=rnd.choice(["", "boom", None])))
    keys = [s for s in spans if "client.port" in s.attributes]
    ok = []
    for s in spans:  # what orjson, int() or str() refuses (ints past 64 bits, lone surrogates) raises on both alike
        try:
            rows.row_of(s)
            ok.append(s)
        except (TypeError, ValueError):
            with pytest.raises((TypeError, ValueError)):
                rows._rows.rows([s], rows._facts, rows._FACTS_MAX)
    got = same(ok)
    assert 900 < len(ok) < len(spans) and len(keys) > 1000
    assert sum(r.key[0] is not None for r in got) > 100 and sum(r.peer is not None for r in got) > 100


def replay(records: list[bytes], as_rows: bool, monkeypatch, header: dict | None = None, batch: int = BATCH) -> list:
    """What the pipeline hands its sink for `records`: Spans, or with `as_rows` the compiled path's
    HTTP/1 exchanges as Rows (ConnTracker.spans_as_rows, what the agent turns on), ids from fixed
    sequences."""
    counter = itertools.count(1)
    monkeypatch.setattr(stitch, "_new_ids", lambda: (f"{next(counter):032x}", f"{next(counter):016x}"))
    out: list = []
    pipeline = Pipeline(out.extend)
    tracker = tracker_for(pipeline, header)
    tracker.fast.seed_ids(11)
    if as_rows:
        assert tracker.spans_as_rows(rows.Row)
    feed_to_the_end(tracker, pipeline, records, batch)
    return out


def same_rows_both_ways(records: list[bytes], monkeypatch, header: dict | None = None, batch: int = BATCH) -> int:
    """The Rows of the Span path (row_of, the specification) and of the compiled path's rows are
    equal; returns how many the compiled path made as rows."""
    spans = replay(records, False, monkeypatch, header, batch)
    assert all(type(s) is Span for s in spans)
    got = replay(records, True, monkeypatch, header, batch)
    assert [fields(rows.row_of(r)) for r in got] == [fields(rows.row_of(s)) for s in spans]
    assert [fields(r) for r in rows.to_rows(got)] == [fields(rows.row_of(s)) for s in spans]
    return sum(type(r) is rows.Row for r in got)


@pytest.mark.parametrize("name", ["nginx_hey_pair", "nginx_hey_unpaired"])
def test_the_compiled_path_makes_the_rows_the_span_path_gives(name, monkeypatch):
    header, records = load(str(FIXTURES / f"{name}.events.gz"))
    assert same_rows_both_ways(records, monkeypatch, header) >= 1300


@pytest.mark.parametrize("batch", [1, 3, BATCH])
@pytest.mark.parametrize("kernel_pairing", [False, True])
def test_every_http1_case_and_hostile_records_give_the_same_rows(batch, kernel_pairing, monkeypatch):
    """Hand-backs mid-exchange, pipelining, bodies in chunks, errors (made as Spans), records cut or
    garbled: never a crash, the same rows."""
    rnd = random.Random(batch)
    header, recorded = load(str(FIXTURES / "nginx_hey_pair.events.gz"))
    made = 0
    for base, hdr in ((transcript(), None), (recorded[:300], header)):
        recs = list(pair(base)) if kernel_pairing else base
        made += same_rows_both_ways(recs, monkeypatch, hdr, batch)
        hostile = [mutate(r, rnd) if rnd.random() < 0.15 else r for r in recs]
        same_rows_both_ways(hostile, monkeypatch, hdr, batch)
    assert made >= 100


ARENA_CHURN = """
import json
from capture import rows
assert rows.keep_arenas(4)
def churn():
    made = [str(i) * 3 for i in range(400_000)]  # ~25 MB of small strings: many arenas
    del made
churn()
a = rows.arenas()
churn()
b = rows.arenas()
rows.keep_arenas(0)
print(json.dumps([a, b, rows.arenas()]))
"""


def test_freed_arenas_are_kept_up_to_the_bound_and_handed_out_again():
    """The agent's rows are freed a batch at a time on another thread: the arenas freed are kept
    (at most the bound) and the next objects go into them before any arena is mapped afresh."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    got = subprocess.run([sys.executable, "-c", ARENA_CHURN], cwd=root, capture_output=True, text=True,
                         env={"PYTHONPATH": str(root)}, check=True)
    first, second, dropped = json.loads(got.stdout)
    assert first["kept"] == 4 and first["max"] == 4  # of the ~25 freed, the bound's worth kept
    assert second["reused"] >= first["reused"] + 4  # the second churn took the kept ones first
    assert second["mapped"] - first["mapped"] <= first["mapped"]  # and mapped no more than the first
    assert dropped == {**dropped, "kept": 0, "max": 0}  # a bound of 0 unmaps what was kept
