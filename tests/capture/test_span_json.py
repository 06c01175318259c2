"""Differential test of `guardian capture --json`'s C writer (capture/_spanjson.c) against its
specification, Span.json_line(): the same bytes, ids included, for the spans of recorded ring-buffer
traffic (both paths) and for hostile values (every character, edge integers, what it leaves to
json_line: floats, big ints, lone surrogates, keys that are not strings, other types)."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from bench.events import feed_all, load, recorded_tracker
from capture import span as span_module
from capture.live import BATCH
from capture.pipeline import Pipeline
from capture.span import Span, json_lines

FIXTURES = Path(__file__).parent / "fixtures"
built = pytest.mark.skipif(span_module._spanjson is None, reason="capture._spanjson not built (see test below)")


def test_the_extension_is_built():
    assert span_module._spanjson is not None, "capture._spanjson is not built: python setup.py build_ext --inplace"


def recorded_spans(name: str, compiled: bool) -> list[Span]:
    header, records = load(str(FIXTURES / name))
    out: list[Span] = []
    pipeline = Pipeline(out.extend)
    feed_all(recorded_tracker(header, pipeline, compiled), pipeline, records, BATCH)
    return out


def spec(spans) -> bytes:
    return b"".join(s.json_line() for s in spans)


@built
@pytest.mark.parametrize("name", ["nginx_hey.events.gz", "nginx_hey_pair.events.gz", "redis_bench.events.gz",
                                  "redis_bench_pair.events.gz"])
@pytest.mark.parametrize("compiled", [True, False], ids=["c-path", "python-path"])
def test_recorded_spans_are_written_byte_for_byte_as_json_line(name, compiled):
    spans = recorded_spans(name, compiled)
    assert len(spans) > 900
    got = json_lines(spans)
    assert got == spec(spans)
    head = spans[:300]
    for k in (1, 7, BATCH):  # batch boundaries change nothing
        assert b"".join(json_lines(head[i:i + k]) for i in range(0, len(head), k)) == spec(head)


def span(**kw) -> Span:
    base = dict(name="GET /", kind="SERVER", start_time_unix_nano=1_700_000_000_123_456_789,
                end_time_unix_nano=1_700_000_000_223_456_789)
    return Span(**{**base, **kw})


EVERY_CHAR = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)

DEEP: list = [1]
for _ in range(80):  # deeper than the C writer goes (it leaves such spans to json_line)
    DEEP = [DEEP]

HOSTILE = [
    {"text": "".join(chr(c) for c in range(0x80)) + "\u2028\u2029é€😀"},
    {"every": EVERY_CHAR[:70_000]},
    {"every": EVERY_CHAR[70_000:]},
    {"q": '"\\"\\\\', "long": "a" * 9 + '"' + "b" * 17 + "\n" + "c" * 7, "empty": ""},
    {"i": 0, "neg": -1, "min": -2**63, "max": 2**63 - 1, "u64": 2**64 - 1, "ten": 10, "99": 99, "100": 100},
    {"t": True, "f": False, "n": None, "nested": {"a": [1, "x", [None, {"b": ()}]], "t": (1, 2)}},
    {"big": 2**64},
    {"under": -2**63 - 1},
    {"float": 1.5},
    {"exp": 1e16},
    {"surrogate": "a\udc80b"},
    {7: "int key"},
    {"deep": DEEP},
    {"bytes": b"\x00raw"},
    {"set": frozenset()},
    {"sub": type("Name", (str,), {})("subclassed")},
    {"bool_sub": type("Flag", (int,), {})(3)},
]


@built
@pytest.mark.parametrize("attributes", HOSTILE, ids=lambda a: next(iter(a)) if a else "empty")
def test_hostile_attribute_values_give_json_line_bytes(attributes):
    spans = [span(attributes=attributes, resource={"service.name": "svc", "r": attributes}),
             span(attributes={"ok": 1}, status_message="boom", parent_span_id="00f067aa0ba902b7",
                  status_code="ERROR"),
             span(attributes=attributes, status_message="")]
    assert json_lines(spans) == spec(spans)


@built
def test_what_is_not_a_plain_span_goes_through_its_own_json_line():
    class Marked(Span):
        __slots__ = ()

        def json_line(self) -> bytes:
            return b"marked\n"

    class Row:
        def json_line(self) -> bytes:
            return b'{"row":1}\n'

    spans = [span(), Marked("n", "CLIENT", 1, 2), Row(), span(status_message=0), span(name=3.25),
             span(resource=None), span(kind="X" * 100_000)]
    assert json_lines(spans) == b"".join(s.json_line() for s in spans)
    assert json_lines([]) == b""
    one = span(attributes={"http.request.method": "GET"})
    assert json.loads(json_lines([one])) == one.to_dict()


@built
def test_a_span_that_cannot_be_written_raises_as_json_line_does():
    broken = span()
    del broken.kind
    with pytest.raises(AttributeError):
        json_lines([span(), broken])


@built
def test_a_shared_resource_changed_between_batches_is_written_as_it_is_now():
    resource = {"service.name": "svc", "process.pid": 7}
    nested = {"service.name": "nested", "list": [1]}
    spans = [span(resource=resource), span(resource=nested), span(resource=dict(resource))]
    assert json_lines(spans) == spec(spans)
    resource["process.pid"] = 8  # in place: the same dict object
    nested["list"].append(2)  # inside a value: the dict's own version does not change
    assert json_lines(spans) == spec(spans) and b'"process.pid":8' in json_lines(spans[:1])
    resource.clear()
    resource.update({"service.name": "other"})
    assert json_lines(spans) == spec(spans)
    for i in range(200):  # dicts made and freed: one at a recycled address is a new dict
        spans = [span(resource={"service.name": f"s{i}", "i": i})]
        assert json_lines(spans) == spec(spans)


@built
def test_lines_written_to_a_file_descriptor_are_the_lines_and_a_gone_reader_raises():
    import os

    from capture.span import write_json_lines

    spans = recorded_spans("nginx_hey_pair.events.gz", True)[:400]
    r, w = os.pipe()
    try:
        with os.fdopen(r, "rb") as reader:
            import threading

            got: list[bytes] = []
            t = threading.Thread(target=lambda: got.append(reader.read()))
            t.start()  # the pipe holds less than the lines: the writer waits for the reader
            write_json_lines(w, spans)
            write_json_lines(w, spans[:3])
            os.close(w)
            t.join(10)
        assert got == [spec(spans) + spec(spans[:3])]
        r, w = os.pipe()
        os.close(r)
        with pytest.raises(BrokenPipeError):
            write_json_lines(w, spans)
    finally:
        with contextlib.suppress(OSError):
            os.close(w)
