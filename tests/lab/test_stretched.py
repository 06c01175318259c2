"""lab.stretched on made-up spans: a span that ends just after the next request on its connection
began counts; one that ends before it, a short one, and one of another connection do not."""
from __future__ import annotations

import gzip
import json

from lab import stretched

MS = 1_000_000


def _span(kind: str, start_ms: float, end_ms: float, port: int = 40000, pid: int = 7) -> dict:
    return {"kind": kind, "start_time_unix_nano": int(start_ms * MS), "end_time_unix_nano": int(end_ms * MS),
            "attributes": {"db.system": "postgresql", "client.port": port, "server.port": 5432,
                           "network.transport": "tcp"}, "resource": {"process.pid": pid}}


def test_spans_ended_by_the_next_request_on_their_connection(tmp_path):
    spans = [_span("CLIENT", 0, 2001), _span("CLIENT", 2000, 2001),  # idle 2 s, ended by the next use
             _span("CLIENT", 3000, 3400), _span("CLIENT", 3500, 3501),  # slow, but over before the next
             _span("CLIENT", 4000, 4001), _span("CLIENT", 4000.5, 4001),  # short
             _span("SERVER", 5000, 7001, port=40001), _span("CLIENT", 7000, 7001, port=40001)]  # another kind
    assert stretched.stretched(spans, 100 * MS, 5 * MS) == [spans[0]]
    case = tmp_path / "case-1"
    case.mkdir()
    with gzip.open(case / "spans.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps(s) + "\n" for s in spans))
    assert stretched.count(tmp_path) == {"postgresql CLIENT": {"spans": 7, "stretched": 1, "cases": 1},
                                         "postgresql SERVER": {"spans": 1, "stretched": 0, "cases": 0}}
