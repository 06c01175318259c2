"""DuckDB's store keeps ids as 64-bit keys and each resource once (capture.store.columns ID_COLUMNS):
every id comes back as the string it went in as (OTLP hex or any other), lookups and links by id
hold for both kinds, the compiled and the Python builders give the same table, and a store file of
the previous layout (ids and resource as text) is migrated in place when opened."""
from __future__ import annotations

import copy

import duckdb
import pytest

from capture import rows
from capture.span import Span
from capture.store import columns
from capture.store.api import SpanFilter, TimeWindow
from capture.store.columns import ID_SCHEMA, arrow_batch, id_key, keyed_batch, text_key
from capture.store.duckdb_store import DuckDBStore
from tests.capture.store.test_duckdb_store import S, T0, call

# ids as imported files and tests write them: not OTLP's lowercase hex of its width
ODD_TRACE = ["t", "T" * 32, "0" * 31, "ABCDEF0123456789abcdef0123456789", ""]
ODD_SPAN = ["a", "root", "DEADBEEFDEADBEEF", "0" * 15, "ü"]


def odd_spans() -> list[Span]:
    out = []
    for i, (t, sid) in enumerate(zip(ODD_TRACE, ODD_SPAN)):
        server = Span(name="GET /x", kind="SERVER", start_time_unix_nano=T0 + i * S, end_time_unix_nano=T0 + i * S + 5,
                      trace_id=t, span_id=sid, resource={"service.name": "odd"})
        client = Span(name="GET /x", kind="CLIENT", start_time_unix_nano=T0 + i * S - 1,
                      end_time_unix_nano=T0 + i * S + 6,
                      trace_id=t, span_id=sid + "c", attributes={"server.address": "odd", "server.port": 80},
                      resource={"service.name": "caller"})
        server.parent_span_id = client.span_id
        out += [client, server]
    return out


def fields(s: Span) -> tuple:
    return (s.trace_id, s.span_id, s.parent_span_id, s.name, s.kind, s.start_time_unix_nano, s.end_time_unix_nano,
            s.status_code, s.status_message, s.attributes, s.resource)


def test_keys_are_the_hex_value_or_the_text_with_duckdbs_md5_numbers():
    assert id_key("00f067aa0ba902b7", 16) == (0x00F067AA0BA902B7, 0, None)
    assert id_key("4bf92f3577b34da6a3ce929d0e0e4736", 32) == (0x4BF92F3577B34DA6, 0xA3CE929D0E0E4736, None)
    con = duckdb.connect()
    for text in ODD_TRACE + ODD_SPAN:
        md5 = con.execute("SELECT md5_number_upper(?), md5_number_lower(?)", [text, text]).fetchall()[0]
        assert text_key(text) == md5
        assert id_key(text, 32) == (*text_key(text), text)


def test_odd_and_hex_ids_come_back_as_they_went_in_and_are_found_by_id():
    store = DuckDBStore(None)
    spans = odd_spans() + [s for i in range(5) for s in call(i)]
    store.append(copy.deepcopy(spans))
    got = store.spans(SpanFilter(limit=1000))
    assert sorted(map(fields, got), key=repr) == sorted(map(fields, spans), key=repr)
    for s in spans:
        assert sorted(map(fields, store.trace(s.trace_id)), key=repr) == sorted(
            (fields(x) for x in spans if x.trace_id == s.trace_id), key=repr)
        assert {x.trace_id for x in store.spans(SpanFilter(trace_id=s.trace_id))} == {s.trace_id}
    assert store.trace("T" * 31) == [] and store.trace("t".upper()) == []
    # traces() groups by id; the service map links a server to its caller by id, odd or not
    traces = store.traces(SpanFilter(service="odd"), limit=100)
    assert sorted(len(t) for t in traces) == [2] * 5 and all(len({s.trace_id for s in t}) == 1 for t in traces)
    tr = store.time_range()
    edges = {(e.client, e.server): e.count for e in store.service_map(TimeWindow(tr.start_ns, tr.end_ns + 1))}
    assert edges[("caller", "odd")] == 5 and edges[("frontend", "payments")] == 5
    store.close()


def test_relink_sets_odd_and_hex_parents_and_traces():
    store = DuckDBStore(None)
    spans = odd_spans()
    extra = call(0)
    store.append(spans + extra)
    # the "root" server (odd) gets a hex parent, a hex client an odd one; trace "t" becomes a hex one
    assert store.relink([("root", extra[0].span_id, {"guardian.link.kind": "x"}),
                         (extra[1].span_id, "a", {})], {"t": extra[0].trace_id}) == 2
    by_span = {s.span_id: s for s in store.spans(SpanFilter(limit=100))}
    assert by_span["root"].parent_span_id == extra[0].span_id
    assert by_span["root"].attributes == {"guardian.link.kind": "x"}
    assert by_span[extra[1].span_id].parent_span_id == "a"
    assert {s.span_id for s in store.trace(extra[0].trace_id)} == {"a", "ac"} | {s.span_id for s in extra}
    assert store.trace("t") == []
    store.close()


@pytest.mark.skipif(columns._otlp_wire is None or rows._rows is None, reason="the C extensions are not built")
def test_the_compiled_and_python_builders_make_the_same_table(monkeypatch):
    spans = odd_spans() + [s for i in range(20) for s in call(i, fail=i % 3 == 0)]
    spans[5].parent_span_id = ""  # an empty parent is no parent
    keys: dict[str, int] = {}

    def key(r):
        return keys.setdefault(columns.encode_json(r).decode(), len(keys))

    compiled = keyed_batch(rows.to_rows(copy.deepcopy(spans)), key)
    from_spans = keyed_batch(copy.deepcopy(spans), key)
    monkeypatch.setattr(columns, "_otlp_wire", None)
    python = keyed_batch(copy.deepcopy(spans), key)
    assert compiled.schema == from_spans.schema == python.schema == ID_SCHEMA
    assert compiled.to_pylist() == from_spans.to_pylist() == python.to_pylist()
    assert python.column("parent_key")[5].as_py() is None
    assert python.column("parent_text").null_count == len(spans) - 3  # ac, rootc, üc


# one byte off canonical at each end of the hex table's ranges ('/' ':' '`' 'g' 'A' 'F'), in the
# first or the second half of a trace id, or the last digit; and lengths one off
_EDGE_HEX = "0123456789abcdef"


def edge_ids(digits: int) -> list[str]:
    base = (_EDGE_HEX * 2)[:digits]
    out = [base, base[:-1], base + "0", "f" * digits, "0" * digits]
    for at in {0, digits // 2 - 1, digits // 2, digits - 1}:
        out += [base[:at] + c + base[at + 1:] for c in "/:`gAF\x00\xff"]
    return out


@pytest.mark.skipif(columns._otlp_wire is None, reason="the C extensions are not built")
@pytest.mark.parametrize("digits", [16, 32])
def test_the_compiled_id_keys_are_the_python_ones_at_every_edge_of_hex(digits):
    ids = edge_ids(digits) + [None, ""]
    compiled = columns._arrays(len(ids), columns._otlp_wire.ids(ids, digits, True))
    python = columns._py_ids(ids, digits, True)
    assert [a.to_pylist() for a in compiled[-1:]] == [a.to_pylist() for a in python[-1:]]  # texts
    canonical = [i for i, v in enumerate(ids) if v and id_key(v, digits)[2] is None]
    assert len(canonical) == 3  # base, all f, all 0: every other one keeps its text
    for c, p in zip(compiled[:-1], python[:-1]):  # keys: the compiled path leaves a text id's 0
        assert [c[i].as_py() for i in canonical] == [p[i].as_py() for i in canonical]


@pytest.mark.skipif(columns._otlp_wire is None or rows._rows is None, reason="the C extensions are not built")
def test_a_batch_whose_first_row_is_large_or_small_builds_the_same_table():
    """The compiled builder sizes a column's buffer from its first row: a large first row (past
    its cap) or a small one before large ones still give every row as it was."""
    def batch(sizes: list[int]) -> list[Span]:
        out = []
        for i, n in enumerate(sizes):
            s = call(i)[0]
            s.attributes = {"big": "x" * n}
            out.append(s)
        return out

    for sizes in ([5 << 20, 10, 3], [1, 100_000, 7, 1 << 20], [0] * 3 + [300] * 50):
        spans = batch(sizes)
        table = keyed_batch(rows.to_rows(copy.deepcopy(spans)), lambda r: 1)
        assert [len(columns.orjson.loads(a)["big"]) for a in table.column("attributes").to_pylist()] == sizes


@pytest.mark.skipif(columns._otlp_wire is None or rows._rows is None, reason="the C extensions are not built")
def test_a_held_table_keeps_its_rows_while_later_batches_are_built_and_dropped(monkeypatch):
    """The compiled builder hands the buffers it wrote to Arrow without a copy (each freed with the
    last array that uses it): on recorded hey traffic, tables still held (as the store holds appends
    for one insert) keep their rows while later batches are built and dropped (their memory freed
    and written again), and each is the table the Python builder makes."""
    from tests.capture.traces.test_link_c import recorded_spans

    spans = recorded_spans("nginx_hey_pair")
    batches = [spans[i:i + 480] for i in range(0, len(spans), 480)]
    assert len(batches) >= 4

    def key(r):
        return 1

    held = [keyed_batch(rows.to_rows(copy.deepcopy(b)), key) for b in batches[:2]]
    as_built = [t.to_pylist() for t in held]
    for b in batches[2:] * 3:
        keyed_batch(rows.to_rows(copy.deepcopy(b)), key)
    assert [t.to_pylist() for t in held] == as_built
    monkeypatch.setattr(columns, "_otlp_wire", None)
    assert as_built == [keyed_batch(copy.deepcopy(b), key).to_pylist() for b in batches[:2]]


def old_layout_file(path: str, spans: list[Span]) -> None:
    """A store file as the previous version wrote it: table `spans`, ids and resource as text."""
    con = duckdb.connect(path)
    con.execute("""CREATE TABLE spans (trace_id VARCHAR, span_id VARCHAR, parent_span_id VARCHAR, name VARCHAR,
        kind VARCHAR, start_ns BIGINT, end_ns BIGINT, duration_ns BIGINT, status_code VARCHAR,
        status_message VARCHAR, service VARCHAR, peer VARCHAR, attributes VARCHAR, resource VARCHAR)""")
    con.register("_batch", arrow_batch(spans))
    con.execute("INSERT INTO spans SELECT * FROM _batch")
    con.close()


def test_a_store_file_of_the_previous_layout_is_migrated_in_place(tmp_path):
    path = str(tmp_path / "old.duckdb")
    spans = odd_spans() + [s for i in range(30) for s in call(i, fail=i % 10 == 0)]
    old_layout_file(path, copy.deepcopy(spans))
    store = DuckDBStore(path)
    assert store.migrated == len(spans) == store.count()
    got = store.spans(SpanFilter(limit=1000))
    assert sorted(map(fields, got), key=repr) == sorted(map(fields, spans), key=repr)
    assert len(store.trace(spans[-1].trace_id)) == 4 and len(store.trace("t")) == 2
    # spans appended after the migration meet the migrated ones: same keys for the same id
    late = Span(name="late", kind="INTERNAL", start_time_unix_nano=T0, end_time_unix_nano=T0 + 1, trace_id="t",
                parent_span_id="a", resource={"service.name": "odd"})
    store.append([late])
    assert {s.name for s in store.trace("t")} == {"GET /x", "late"}
    # odd, caller, payments, frontend (two)
    assert store._con.execute("SELECT count(*) FROM resources").fetchall()[0][0] == 5
    store.close()
    again = DuckDBStore(path)  # already migrated: opened as it is
    assert again.migrated == 0 and again.count() == len(spans) + 1
    assert again._con.execute("SELECT count(*) FROM resources").fetchall()[0][0] == 5
    again.append(call(99))
    assert again._con.execute("SELECT count(*) FROM resources").fetchall()[0][0] == 5
    again.close()


def test_resources_no_span_refers_to_are_pruned(monkeypatch):
    from capture.store import duckdb_store

    monkeypatch.setattr(duckdb_store, "RESOURCES_PRUNE_AT", 10)
    store = DuckDBStore(None, max_spans=40)
    for pid in range(30):  # one process after another, each with its own resource
        store.append([Span(name="x", kind="SERVER", start_time_unix_nano=T0 + pid * S,
                           end_time_unix_nano=T0 + pid * S + 1,
                           resource={"service.name": "cgi", "process.pid": pid}) for _ in range(4)])
        assert store._con.execute("SELECT count(*) FROM resources").fetchall()[0][0] <= 11
    assert {s.resource["process.pid"] for s in store.spans(SpanFilter(limit=100))} == set(range(20, 30))
    store.close()


def test_a_lookup_by_trace_id_compares_keys():
    from capture.store.duckdb_store import _BY_TRACE, _select

    store = DuckDBStore(None)
    spans = [s for i in range(50) for s in call(i)]
    store.append(spans)
    assert len(store.trace(spans[0].trace_id)) == 4
    sql = "EXPLAIN " + _select(f"SELECT * FROM span_rows WHERE {_BY_TRACE}", "s.start_ns")
    plan = "\n".join(r[1] for r in store._con.execute(sql, list(id_key(spans[0].trace_id, 32))).fetchall())
    # the keys are compared where span_rows is read, not hex text made for every row
    scan = plan.split("span_rows", 1)[1]
    assert "trace_hi=" in scan.replace(" ", "") and "format" not in scan.split("Filters", 1)[1].split("╰", 1)[0], plan
    store.close()


def test_spans_read_carry_the_resource_the_view_joins_and_no_read_joins_it(tmp_path, monkeypatch):
    """Spans are read without a join of `resources` (each join's blocks keep glibc heap until the
    next drain: DuckDBStore._spans), yet carry what the `spans` view joins for them: after appends,
    a prune of resources no span refers to, and a restart from the file."""
    import orjson

    from capture.store import duckdb_store

    monkeypatch.setattr(duckdb_store, "RESOURCES_PRUNE_AT", 10)
    path = str(tmp_path / "spans.duckdb")
    store = DuckDBStore(path, max_spans=60)
    for pid in range(30):  # one process after another, each with its own resource
        spans = call(pid)
        for x in spans:
            x.resource = {"service.name": f"svc{pid % 3}", "process.pid": pid}
        store.append(spans)
    store.append(call(99))  # the resource call() gives, and one without any
    store.append([Span(name="bare", kind="SERVER", start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)])
    for s in (store, None):
        if s is None:
            store.close()
            s = store = DuckDBStore(path)  # the keys read back from the file
        joined = {sid: orjson.loads(r) if r else {} for sid, r in
                  s._rows("SELECT span_id, resource FROM spans")}
        read = s.spans(SpanFilter(limit=1000))
        assert len(read) == len(joined) == s.count() == 60 and {x.span_id: x.resource for x in read} == joined
        assert {x.span_id: x.resource for t in s.traces(SpanFilter(), limit=100) for x in t} == joined
        some = read[-5]
        assert [x.resource for x in s.trace(some.trace_id)] == [joined[x.span_id] for x in s.trace(some.trace_id)]
        assert {x.resource.get("process.pid") for x in read} >= set(range(17, 30))  # the last 60 spans' processes
    from capture.store.duckdb_store import _select

    sql = "EXPLAIN " + _select("SELECT * FROM span_rows LIMIT 10", "s.start_ns")
    plan = "\n".join(r[1] for r in store._con.execute(sql).fetchall())
    assert "JOIN" not in plan.upper() and "resources" not in plan, plan
    store.close()
