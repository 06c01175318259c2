"""Canary secrets sent on the wire never reach a sink: span JSON, the store, OTLP, the API,
the Markdown/Slack report, or the tool results an LLM reads. Real parser bytes in, public
functions out; the same run with scrubbing off shows every canary does reach the spans.
"""
import json
import struct

import pytest
from fastapi.testclient import TestClient
from hpack import Encoder
from hyperframe.frame import DataFrame, HeadersFrame
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from capture import scrub
from capture.connection import Connection
from capture.export.otlp import to_readable
from capture.pipeline import Pipeline
from capture.store.duckdb_store import DuckDBStore
from guardian.api.main import create_app
from guardian.investigate.engine import investigate
from guardian.llm.toolbox import Toolbox
from guardian.slack.format import to_mrkdwn
from tools.registry import TOOLS

CANARIES = [f"CANARY{i:02d}x7q" for i in range(12)]


def _pg(t, body=b""):
    return t + struct.pack(">I", len(body) + 4) + body


def _my(seq, payload):
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def _resp(*args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _h2_headers(sid, block, end_stream):
    f = HeadersFrame(sid, data=block)
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def conversations():
    """(protocol, [(is_client, bytes)]) of real wire traffic carrying the canaries."""
    c = [x.encode() for x in CANARIES]
    pg_ok = _pg(b"C", b"ALTER ROLE\0") + _pg(b"Z", b"I")
    enc_c, enc_s = Encoder(), Encoder()
    h2_req = _h2_headers(1, enc_c.encode([(":method", "GET"), (":scheme", "http"), (":authority", "api"),
                                          (":path", f"/v1/items?page=2&access_token={CANARIES[10]}")]), True)
    h2_resp = _h2_headers(1, enc_s.encode([(":status", "200")]), False) + \
        DataFrame(1, data=b"ok", flags=["END_STREAM"]).serialize()
    return [
        ("HTTP1", [(True, b"GET http://svc:" + c[0] + b"@api.local/orders?id=7&api_key=" + c[1]
                    + b" HTTP/1.1\r\nHost: api.local\r\n\r\n"),
                   (False, b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")]),
        ("HTTP2", [(True, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_req), (False, h2_resp)]),
        ("POSTGRES", [(True, _pg(b"Q", b"ALTER USER app WITH PASSWORD '" + c[2] + b"'\0")), (False, pg_ok),
                      (True, _pg(b"Q", b"CREATE ROLE r LOGIN PASSWORD '" + c[3] + b"'\0")), (False, pg_ok)]),
        ("MYSQL", [(True, _my(0, b"\x03CREATE USER 'u'@'%' IDENTIFIED BY '" + c[4] + b"'")),
                   (False, _my(1, b"\x00\x00\x00\x02\x00\x00\x00")),
                   # a bound value (COM_STMT_EXECUTE in real life) the server echoes in its error
                   (True, _my(0, b"\x03INSERT INTO users (email) VALUES (@email)")),
                   (False, _my(1, b"\xff\x26\x04#23000Duplicate entry '" + c[5] + b"' for key 'users.email'"))]),
        ("REDIS", [(True, _resp(b"SET", b"session:1", c[6]) + _resp(b"ACL", b"SETUSER", b"alice", b"on", b">" + c[7])
                    + _resp(b"CONFIG", b"SET", b"requirepass", c[8])
                    + _resp(b"SENTINEL", b"SET", b"mymaster", b"auth-pass", c[9])
                    + _resp(b"AUTH", c[11])),
                   (False, b"+OK\r\n+OK\r\n+OK\r\n+OK\r\n+OK\r\n")]),
    ]


def capture_spans():
    spans = []
    pipe = Pipeline(spans.extend)
    for i, (proto, chunks) in enumerate(conversations()):
        conn = Connection(conn_id=i + 1, pid=100 + i, protocol=proto, role="CLIENT",
                          local=("10.0.0.1", 40000 + i), remote=("10.0.0.2", 5000 + i),
                          resource={"service.name": "shop"})
        ts = 1_700_000_000_000_000_000 + i * 1_000_000
        for is_client, data in chunks:
            ts += 1000
            pipe.data(conn, is_client, data, ts)
        pipe.close(conn, ts + 10)
    pipe.flush()
    return spans


def leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


@pytest.fixture(scope="module")
def spans():
    scrub.configure(scrub.ScrubConfig())
    return capture_spans()


def test_every_conversation_became_spans(spans):
    names = {s.attributes.get("db.system") or s.attributes.get("network.protocol.name") for s in spans}
    assert {"http", "postgresql", "mysql", "redis"} <= names and len(spans) >= 11


def test_without_scrubbing_the_canaries_do_reach_spans():
    scrub.configure(scrub.ScrubConfig(enabled=False))
    try:
        raw = json.dumps([s.to_dict() for s in capture_spans()])
    finally:
        scrub.configure(scrub.ScrubConfig())
    # AUTH and CONFIG arguments are dropped by the Redis parser itself; every other canary needs the scrub
    assert set(leaks(raw)) == set(CANARIES) - {CANARIES[8], CANARIES[11]}


def test_span_json(spans):
    assert leaks(json.dumps([s.to_dict() for s in spans])) == []


def test_store_otlp_api_report_and_llm_tool_results(spans, tmp_path):
    store = DuckDBStore(str(tmp_path / "spans.duckdb"))
    store.append(spans)
    store.flush()
    stored = [s for t in {s.trace_id for s in spans} for s in store.trace(t)]
    assert len(stored) == len(spans)
    assert leaks(json.dumps([s.to_dict() for s in stored])) == []

    otlp = encode_spans([to_readable(s) for s in spans]).SerializeToString()
    assert leaks(otlp.decode("latin-1")) == []

    client = TestClient(create_app(store, mcp=False), base_url="http://127.0.0.1")
    bodies = [client.get(f"/v1/traces/{s.trace_id}").text for s in spans]
    window = store.time_range()
    args = {"start": str(window.start_ns), "end": str(window.end_ns + 1)} if window else {}
    for name in TOOLS:
        bodies.append(client.post(f"/v1/tools/{name}", json=args).text)
    assert "PASSWORD '?'" in "".join(bodies[:len(spans)])  # the API did serve the scrubbed spans
    assert leaks("\n".join(bodies)) == []

    report = investigate(store, "why do logins fail?", engine="deterministic")
    md = report.to_markdown()
    assert md and leaks(md + to_mrkdwn(md) + report.model_dump_json()) == []

    box = Toolbox(store, {k: v for k, v in args.items()})
    prompt_text = "\n".join(box.call(name, {}) for name in TOOLS)
    assert leaks(prompt_text) == []
    store.close()
