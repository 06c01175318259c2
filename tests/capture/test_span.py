"""The span's JSON line (the public shape of `guardian capture --json`) and its ids."""
from __future__ import annotations

import json

from capture.span import Span, new_ids

KEYS = ["trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_unix_nano",
        "end_time_unix_nano", "status_code", "attributes", "resource"]


def span(**kw) -> Span:
    return Span(name="GET /", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2, **kw)


def test_json_line_is_to_json_and_a_newline_with_the_public_keys_in_order():
    s = span(attributes={"http.response.status_code": 200, "url.path": "/é"}, resource={"service.name": "x"})
    line = s.json_line()
    assert line.endswith(b"\n") and line[:-1].decode() == s.to_json()
    assert list(json.loads(line)) == KEYS
    assert list(json.loads(span(status_message="boom").json_line())) == KEYS + ["status_message"]


def test_keys_that_are_not_strings_and_ints_beyond_64_bits_still_serialize():
    s = span(attributes={1: "a", "big": 2**70}, resource={"r": {2: 3}})
    got = json.loads(s.json_line())
    assert got["attributes"] == {"1": "a", "big": 2**70} and got["resource"] == {"r": {"2": 3}}
    assert json.loads(span(attributes={7: "x"}).to_json())["attributes"] == {"7": "x"}


def test_new_ids_are_hex_of_otel_sizes_and_differ():
    ids = {new_ids() for _ in range(1000)}
    assert len(ids) == 1000
    for trace_id, span_id in ids:
        assert len(trace_id) == 32 and len(span_id) == 16 and int(trace_id, 16) >= 0 and int(span_id, 16) > 0
