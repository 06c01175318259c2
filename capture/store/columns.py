"""A batch of spans as the Arrow tables the store engines insert: ClickHouse takes COLUMNS (ids as
hex text) as an ArrowStream, DuckDB scans ID_COLUMNS (ids as 64-bit keys, resource as a key) in
place. Row rules (service, peer, JSON text, id keys) live here once.

Id keys (DuckDB): an OTLP id in its canonical form (lowercase hex, 32 digits for a trace, 16 for a
span) is its value as one or two UBIGINTs and no text; any other string (an imported file's, a
test's "t") keeps its text beside keys taken from its MD5 (DuckDB's md5_number_upper/lower, so
the store can compute the same in SQL when it migrates a file). Equal ids <=> equal keys and equal
texts (IS NOT DISTINCT FROM: canonical ids have NULL text)."""
from __future__ import annotations

import hashlib
import re
from operator import attrgetter
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from capture.span import Span
from capture.store.api import PEER_KINDS, peer_name

COLUMNS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
           "duration_ns", "status_code", "status_message", "service", "peer",
           "attributes", "resource")
SCHEMA = pa.schema([(c, pa.int64() if c.endswith("_ns") else pa.string()) for c in COLUMNS])
ID_COLUMNS = ("trace_hi", "trace_lo", "span_key", "parent_key", "name", "kind", "start_ns", "end_ns",
              "duration_ns", "status_code", "status_message", "service", "peer", "attributes",
              "resource_key", "trace_text", "span_text", "parent_text")
ID_SCHEMA = pa.schema([(c, pa.uint64() if c in ("trace_hi", "trace_lo", "span_key", "parent_key")
                        else pa.int64() if c.endswith("_ns") or c == "resource_key" else pa.string())
                       for c in ID_COLUMNS])
_JSON_OPTS = orjson.OPT_NON_STR_KEYS
_get = {f: attrgetter(f) for f in ("trace_id", "span_id", "parent_span_id", "name", "kind",
                                   "start_time_unix_nano", "end_time_unix_nano", "status_code",
                                   "status_message", "attributes", "resource")}


_peer = attrgetter("peer")


def encode_json(value: dict[str, Any]) -> bytes:
    """Attributes or resource as the stores keep them: JSON text, any value (str() at worst)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTS)


def _row_attributes(r: Any) -> str:
    """A Row's attributes (JSON text as received) with those the hub added merged in."""
    extra = r.attributes
    text = r.attrs_json
    if not extra:
        return text
    if '"guardian.link.' in text:  # the sender set one of them too: the hub's value wins
        return with_attributes(text, extra)
    return text[:-1] + ("," if len(text) > 2 else "") + encode_json(extra)[1:].decode()


def _resource_columns(r: dict[str, Any]) -> tuple[str, str]:
    return encode_json(r).decode(), str(r.get("service.name", "unknown"))


def arrow_rows(batch: list, nulls: bool = True) -> pa.Table:
    """`arrow_batch` of the hub's Rows (capture.export.otlp_wire.decode_rows): attributes are
    JSON text and peers were read when decoded; the column buffers are filled in C."""
    if _otlp_wire is not None:
        arrays = _arrays(len(batch), _otlp_wire.columns(batch, _resource_columns, _row_attributes, nulls))
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
    by_id: dict[int, tuple[str, str]] = {}
    resources = list(map(_get["resource"], batch))
    for r in resources:
        if id(r) not in by_id:
            by_id[id(r)] = _resource_columns(r)
    res = [by_id[id(r)] for r in resources]
    starts = list(map(_get["start_time_unix_nano"], batch))
    ends = list(map(_get["end_time_unix_nano"], batch))
    peers = list(map(_peer, batch))
    parents = list(map(_get["parent_span_id"], batch))
    messages = list(map(_get["status_message"], batch))
    if not nulls:
        peers = [p or "" for p in peers]
        parents = [p or "" for p in parents]
    cols = [
        list(map(_get["trace_id"], batch)), list(map(_get["span_id"], batch)), parents,
        list(map(_get["name"], batch)), list(map(_get["kind"], batch)), starts, ends,
        pc.subtract(pa.array(ends, pa.int64()), pa.array(starts, pa.int64())),
        list(map(_get["status_code"], batch)), messages, [r[1] for r in res], peers,
        list(map(_row_attributes, batch)), [r[0] for r in res],
    ]
    return pa.Table.from_arrays([c if isinstance(c, pa.Array) else pa.array(c, f.type)
                                 for c, f in zip(cols, SCHEMA)], schema=SCHEMA)


def arrow_batch(batch: list[Span], nulls: bool = True) -> pa.Table:
    """One column per field, built column by column (several times faster than row by row).
    `nulls=False` writes "" where a span has no parent, message or peer (ClickHouse's
    non-Nullable String); DuckDB keeps NULL."""
    if batch and hasattr(batch[0], "attrs_json"):
        return arrow_rows(batch, nulls)
    enc = encode_json
    by_id: dict[int, tuple[bytes, str]] = {}  # spans of one process share one resource dict
    resources = list(map(_get["resource"], batch))
    for r in resources:
        if id(r) not in by_id:
            by_id[id(r)] = (enc(r), str(r.get("service.name", "unknown")))
    res = [by_id[id(r)] for r in resources]
    starts = list(map(_get["start_time_unix_nano"], batch))
    ends = list(map(_get["end_time_unix_nano"], batch))
    kinds = list(map(_get["kind"], batch))
    attrs = list(map(_get["attributes"], batch))
    empty = None if nulls else ""
    peers = [peer_name(a) if k in PEER_KINDS else empty for k, a in zip(kinds, attrs)]
    parents = list(map(_get["parent_span_id"], batch))
    messages = list(map(_get["status_message"], batch))
    if not nulls:
        peers = [p or "" for p in peers]
        parents = [p or "" for p in parents]
        messages = [m or "" for m in messages]
    cols = [
        list(map(_get["trace_id"], batch)), list(map(_get["span_id"], batch)), parents,
        list(map(_get["name"], batch)), kinds, starts, ends, [e - b for b, e in zip(starts, ends)],
        list(map(_get["status_code"], batch)), messages, [r[1] for r in res], peers,
        list(map(enc, attrs)), [r[0] for r in res],
    ]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, SCHEMA)], schema=SCHEMA)


_CANONICAL = {16: re.compile(r"[0-9a-f]{16}"), 32: re.compile(r"[0-9a-f]{32}")}


def text_key(text: str) -> tuple[int, int]:
    """The keys of a non-canonical id: DuckDB's md5_number_upper and md5_number_lower of its text."""
    d = hashlib.md5(text.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")


def id_key(value: str, digits: int) -> tuple[int, int, str | None]:
    """(high key, low key, text or None) of a trace (digits=32) or span id (16; low key 0)."""
    if _CANONICAL[digits].fullmatch(value):
        return (int(value[:16], 16), int(value[16:], 16) if digits == 32 else 0, None)
    hi, lo = text_key(value)
    return (hi, lo if digits == 32 else 0, value)


def _py_ids(values: list, digits: int, empty_null: bool) -> list[pa.Array]:
    none = (None, None, None)
    his, los, texts = zip(*(none if v is None or (empty_null and v == "") else id_key(v, digits)
                            for v in values)) if values else ((), (), ())
    out = [pa.array(his, pa.uint64())] + ([pa.array(los, pa.uint64())] if digits == 32 else [])
    return out + [pa.array(texts, pa.string())]


def _arrays(n: int, items: list) -> list[pa.Array]:
    """_otlp_wire's column buffers as Arrow arrays."""
    arrays = []
    for kind, *bufs in items:
        if kind == "i":
            arrays.append(pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(bufs[0])]))
        elif kind == "u":
            values, valid, null_count = bufs
            arrays.append(pa.Array.from_buffers(pa.uint64(), n, [valid if valid is None else pa.py_buffer(valid),
                                                                 pa.py_buffer(values)], null_count))
        else:
            offsets, data, valid, null_count = bufs
            arrays.append(pa.Array.from_buffers(
                pa.string(), n, [valid if valid is None else pa.py_buffer(valid),
                                 pa.py_buffer(offsets), pa.py_buffer(data)], null_count))
    return arrays


def _ids(values: list, digits: int, empty_null: bool) -> list[pa.Array]:
    if _otlp_wire is not None:
        return _arrays(len(values), _otlp_wire.ids(values, digits, empty_null))
    return _py_ids(values, digits, empty_null)


def _text_keys(table: pa.Table) -> pa.Table:
    """Keys for the rows whose id kept its text (the compiled path leaves them 0): rare."""
    for text_col, key_cols in (("trace_text", ("trace_hi", "trace_lo")), ("span_text", ("span_key",)),
                               ("parent_text", ("parent_key",))):
        texts = table.column(text_col)
        if texts.null_count == len(texts):
            continue
        keys = [None if t is None else text_key(t) for t in texts.to_pylist()]
        for half, col in enumerate(key_cols):
            old = table.column(col).to_pylist()
            new = [o if k is None else k[half] for k, o in zip(keys, old)]
            table = table.set_column(table.schema.get_field_index(col), col, pa.array(new, pa.uint64()))
    return table


def keyed_batch(batch: list, resource_key: Callable[[dict[str, Any]], int]) -> pa.Table:
    """ID_COLUMNS of Spans or Rows (DuckDB's store): ids as keys, each resource as
    `resource_key(resource)` (asked once per resource dict of the batch)."""
    if batch and hasattr(batch[0], "attrs_json") and _otlp_wire is not None:
        def resource(r: dict[str, Any]) -> tuple[int, str]:
            return resource_key(r), str(r.get("service.name", "unknown"))
        arrays = _arrays(len(batch), _otlp_wire.columns(batch, resource, _row_attributes, True, True))
        return _text_keys(pa.Table.from_arrays(arrays, schema=ID_SCHEMA))
    table = arrow_batch(batch) if not batch or not hasattr(batch[0], "attrs_json") else arrow_rows(batch)
    by_id: dict[int, int] = {}
    keys = []
    for r in map(_get["resource"], batch):
        if (k := by_id.get(id(r))) is None:
            k = by_id[id(r)] = resource_key(r)
        keys.append(k)
    cols = (_ids(list(map(_get["trace_id"], batch)), 32, False)
            + _ids(list(map(_get["span_id"], batch)), 16, False)
            + _ids(list(map(_get["parent_span_id"], batch)), 16, True))
    trace_hi, trace_lo, trace_text, span_key, span_text, parent_key, parent_text = cols
    arrays = [trace_hi, trace_lo, span_key, parent_key]
    arrays += [table.column(c) for c in ID_COLUMNS[4:14]]
    arrays += [pa.array(keys, pa.int64()), trace_text, span_text, parent_text]
    return _text_keys(pa.Table.from_arrays(arrays, schema=ID_SCHEMA))


def with_attributes(text: str | None, extra: dict[str, Any]) -> str:
    """A stored attributes column with `extra` merged in (a link made after the row was written)."""
    attrs = orjson.loads(text) if text else {}
    attrs.update(extra)
    return encode_json(attrs).decode()


def span_of_row(row: tuple) -> Span:
    """A span back from the columns both engines select (trace_id .. resource, no service/peer)."""
    return Span(trace_id=row[0], span_id=row[1], parent_span_id=row[2] or None, name=row[3],
                kind=row[4], start_time_unix_nano=row[5], end_time_unix_nano=row[6],
                status_code=row[7], status_message=row[8] or "",
                attributes=orjson.loads(row[9]) if row[9] else {},
                resource=orjson.loads(row[10]) if row[10] else {})


try:
    from capture.export import _otlp_wire
except ImportError:  # no compiler at set-up: Rows do not exist either
    _otlp_wire = None
