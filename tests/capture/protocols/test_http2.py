"""HTTP/2 + gRPC parser, bytes only: frames, HPACK per direction, trailers, interleaved streams,
CONTINUATION, RST_STREAM, truncation, garbage and joining a connection mid-way."""
from hpack import Encoder
from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame, RstStreamFrame, SettingsFrame

from capture.protocols.base import Side
from capture.protocols.http2 import PREFACE, Http2Parser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER
GRPC_REQ = [(":method", "POST"), (":scheme", "http"), (":path", "/shop.Orders/Get"), (":authority", "svc"),
            ("content-type", "application/grpc"), ("te", "trailers")]


def headers(sid, block, end_stream=False, end_headers=True):
    f = HeadersFrame(sid, data=block)
    if end_headers:
        f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def data(sid, payload=b"\0\0\0\0\x02hi", end_stream=False):
    return DataFrame(sid, data=payload, flags=["END_STREAM"] if end_stream else []).serialize()


class Conn:
    """Both ends' HPACK encoders, to build realistic traffic."""

    def __init__(self):
        self.c, self.s = Encoder(), Encoder()

    def grpc_call(self, sid, status="0", message=""):
        req = headers(sid, self.c.encode(GRPC_REQ)) + data(sid, end_stream=True)
        trailers = [("grpc-status", status)] + ([("grpc-message", message)] if message else [])
        resp = (headers(sid, self.s.encode([(":status", "200"), ("content-type", "application/grpc")]))
                + data(sid) + headers(sid, self.s.encode(trailers), end_stream=True))
        return req, resp


def bench_sample():
    conn = Conn()
    chunks = [(C, PREFACE + SettingsFrame(0).serialize()), (S, SettingsFrame(0).serialize())]
    for sid in (1, 3, 5):
        req, resp = conn.grpc_call(sid)
        chunks += [(C, req), (S, resp)]
    return chunks, 3


def test_grpc_unary_call():
    conn, p = Conn(), Http2Parser()
    req, resp = conn.grpc_call(1)
    assert p.feed(C, PREFACE + SettingsFrame(0).serialize() + req, 1) == []
    (r,) = p.feed(S, SettingsFrame(0).serialize() + resp, 5)
    assert (r.name, r.start_ns, r.end_ns, r.status) == ("shop.Orders/Get", 1, 5, "UNSET")
    a = r.attributes
    assert a["rpc.system"] == "grpc" and a["rpc.service"] == "shop.Orders" and a["rpc.method"] == "Get"
    assert a["rpc.grpc.status_code"] == 0 and a["http.response.status_code"] == 200 and a["url.path"] == "/shop.Orders/Get"


def test_grpc_error_status_in_trailers():
    conn, p = Conn(), Http2Parser()
    req, resp = conn.grpc_call(1, status="5", message="order%2042 not found")
    p.feed(C, PREFACE + req, 1)
    (r,) = p.feed(S, resp, 2)
    assert r.status == "ERROR" and r.attributes["rpc.grpc.status_code"] == 5
    assert r.attributes["error.type"] == "NOT_FOUND" and r.status_message == "order 42 not found"


def test_interleaved_streams_pair_by_stream_id():
    conn, p = Conn(), Http2Parser()
    calls = {sid: conn.grpc_call(sid, status=str(sid % 3)) for sid in (5, 1, 3)}  # encoded in answer order
    p.feed(C, PREFACE, 0)
    for sid in (5, 1, 3):
        p.feed(C, calls[sid][0], 1)
    recs = []
    for sid, ts in ((5, 2), (1, 3), (3, 4)):  # answered in another order than stream ids
        recs += p.feed(S, calls[sid][1], ts)
    assert [(r.attributes["http2.stream_id"], r.attributes["rpc.grpc.status_code"]) for r in recs] == [
        (5, 2), (1, 1), (3, 0)]


def test_plain_http2_continuation_and_5xx():
    enc_c, enc_s, p = Encoder(), Encoder(), Http2Parser()
    block = enc_c.encode([(":method", "GET"), (":path", "/items/1?q=x"), (":scheme", "https"), (":authority", "a"),
                          ("x-big", "v" * 3000)])
    cont = ContinuationFrame(1, data=block[100:])
    cont.flags.add("END_HEADERS")
    p.feed(C, PREFACE + headers(1, block[:100], end_stream=True, end_headers=False) + cont.serialize(), 1)
    (r,) = p.feed(S, headers(1, enc_s.encode([(":status", "503")])) + data(1, b"down", end_stream=True), 2)
    assert r.name == "GET /items/1" and r.status == "ERROR" and r.attributes["http.response.status_code"] == 503
    assert r.attributes["url.path"] == "/items/1" and r.attributes["url.query"] == "q=x"


def test_rst_stream_is_an_error():
    conn, p = Conn(), Http2Parser()
    req, _ = conn.grpc_call(1)
    p.feed(C, PREFACE + req, 1)
    (r,) = p.feed(C, RstStreamFrame(1, error_code=8).serialize(), 2)  # CANCEL by the client
    assert r.status == "ERROR" and r.attributes["error.type"] == "RST_STREAM"


def test_frames_split_across_syscalls_and_truncated_data():
    conn, p = Conn(), Http2Parser()
    big = data(1, b"\0" + b"x" * 60000, end_stream=False)
    req = headers(1, conn.c.encode(GRPC_REQ))
    p.feed(C, PREFACE[:10], 1)
    p.feed(C, PREFACE[10:] + req[:5], 2)  # frame header split
    p.feed(C, req[5:], 3)
    p.feed(C, big[:4096], 4, size=len(big))  # the capture copied 4 kB of a 60 kB DATA frame
    p.feed(C, data(1, end_stream=True), 5)
    _, resp = conn.grpc_call(1)
    (r,) = p.feed(S, resp, 6)
    assert r.start_ns == 2 and r.attributes["rpc.method"] == "Get" and p.stats["garbage"] == 0


def test_joining_mid_connection_degrades_instead_of_dropping():
    conn = Conn()
    for sid in (1, 3):  # traffic before the capture: fills both dynamic tables
        conn.grpc_call(sid)
    p = Http2Parser()
    assert p.feed(C, b"\x00tail of an older frame", 1) == []  # joined inside a frame: resync
    req, resp = conn.grpc_call(5)
    p.feed(C, req, 2)
    (r,) = p.feed(S, resp, 3)
    a = r.attributes
    assert a["http2.unknown_headers"] > 0 and a["http2.stream_id"] == 5
    # headers that referenced the tables we never saw are unknown, not invented
    assert a.get("url.path") in (None, "/shop.Orders/Get")
    # a new path is sent as a literal (and indexed): it is kept, and later references to it resolve
    req2 = headers(7, conn.c.encode(GRPC_REQ[:2] + [(":path", "/shop.Orders/List")] + GRPC_REQ[3:]), end_stream=True)
    p.feed(C, req2, 4)
    _, resp2 = conn.grpc_call(7)
    (r2,) = p.feed(S, resp2, 5)
    assert r2.attributes["url.path"] == "/shop.Orders/List"


def test_close_reports_open_streams():
    conn, p = Conn(), Http2Parser()
    req, _ = conn.grpc_call(1)
    p.feed(C, PREFACE + req, 1)
    (r,) = p.close(9)
    assert r.status == "ERROR" and r.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(PREFACE) == C and detect(SettingsFrame(0, settings={4: 65535}).serialize()) == S
    assert detect(headers(1, Encoder().encode(GRPC_REQ))) == C
    assert detect(SettingsFrame(0, settings={4: 65535}).serialize()[:8]) is None
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == [b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]


def test_lost_bytes_past_the_current_frame_resync_instead_of_inventing_frames():
    conn, p = Conn(), Http2Parser()
    req, resp = conn.grpc_call(1)
    p.feed(C, PREFACE + req, 1)
    p.feed(C, b"", 2, size=300)  # the kernel reported a gap of whole frames (an iovec it did not copy)
    assert p.stats["lost_bytes"] == 1 and p.stats["garbage"] == 0
    req3, resp3 = conn.grpc_call(3)
    p.feed(C, req3, 3)  # starts with a frame header: resync here
    recs = p.feed(S, resp + resp3, 4)
    assert [r.attributes["http2.stream_id"] for r in recs] == [1, 3] and p.stats["resyncs"] == 1


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("http2", detect, samples) == []
    assert all(kernel_detect("http2")(data) for data in own[:1])  # the first message of the sample is detected


def written_records(iovecs, max_payload=4096):
    """The records bpf/guardian.bpf.c (iov_record) makes of one writev/sendmsg: (copied, size)."""
    out, copied, size = [], b"", 0
    for v in iovecs:
        if copied and len(copied) + len(v) > max_payload:  # does not fit: starts the next record
            out.append((copied, size))
            copied, size = b"", 0
        if len(v) > max_payload:  # bigger than a record: prefix copied, tail as uncopied length
            out.append((v[:max_payload], len(v)))
            continue
        copied, size = copied + v, size + len(v)
    return out + ([(copied, size)] if size else [])


def test_grpc_core_iovecs_walked_in_records_skip_big_data_by_length():
    # grpc C-core: frame headers, HPACK blocks and message slices are separate iovecs; a 21 kB
    # message spans two DATA frames, each slice's tail beyond a record is never copied
    conn, p = Conn(), Http2Parser()
    msg = b"\0" + (21000).to_bytes(4, "big") + b"x" * 21000
    first, second = msg[:16384], msg[16384:]
    iovecs = []
    for sid in (1, 3):
        frames = data(sid, first)[:9], first[:5], first[5:], data(sid, second, end_stream=True)[:9], second
        iovecs += [headers(sid, conn.c.encode(GRPC_REQ)), *frames]
    records = written_records(iovecs)
    assert len(records) > 2 and any(len(c) < n for c, n in records)
    p.feed(C, PREFACE, 0)
    for ts, (copied, size) in enumerate(records, 1):
        assert p.feed(C, copied, ts, size=size) == []
    for sid in (1, 3):
        _, resp = conn.grpc_call(sid)
        (r,) = p.feed(S, resp, 20 + sid)
        assert r.attributes["rpc.method"] == "Get" and "http2.unknown_headers" not in r.attributes
    assert p.stats["lost_bytes"] == 0 and p.stats["garbage"] == 0 and p.stats["degraded_header_blocks"] == 0


def test_hpack_table_is_bounded_by_settings_and_max_table():
    from hyperframe.frame import SettingsFrame as _Settings
    from capture.protocols.http2 import MAX_TABLE
    p = Http2Parser()
    # the client allows the server a 2^30-byte table; the server then asks for it
    p.feed(C, PREFACE + _Settings(0, settings={0x1: 1 << 30}).serialize(), 1)
    grow = b"\x3f\xe1\xff\xff\x03"  # dynamic table size update to 2^30 (5-bit prefix integer)
    enc = Encoder()
    req = headers(1, enc.encode([(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "a")]),
                  end_stream=True)
    p.feed(C, req, 2)
    big = [("x-%d" % i, "v" * 1000) for i in range(200)]
    resp = headers(1, grow + Encoder().encode([(":status", "200")] + big), end_stream=True)
    (r,) = p.feed(S, resp, 3)
    assert r.attributes["http.response.status_code"] == 200
    table = p._dirs[S].hpack.decoder.header_table
    assert table.maxsize <= MAX_TABLE and table._current_size <= MAX_TABLE
    assert p.stats["hpack_table_capped"] >= 1


def test_large_data_frames_are_skipped_not_buffered():
    c = Conn()
    req, resp = c.grpc_call(1)
    p = Http2Parser()
    p.feed(C, PREFACE + req, 1)
    head = resp[: resp.index(data(1))]
    body = DataFrame(1, data=b"z" * 4_000_000).serialize()
    p.feed(S, head, 2)
    for i in range(0, len(body), 16384):
        assert p.feed(S, body[i:i + 16384], 3 + i) == []
        assert len(p._dirs[S].buf) <= 16384
    trailers = headers(1, c.s.encode([("grpc-status", "0")]), end_stream=True)
    (r,) = p.feed(S, trailers, 10**9)
    assert r.end_ns == 10**9 and r.status != "ERROR"


def test_status_headers_that_are_not_ascii_numbers_are_left_out():
    # str.isdigit() takes "50³"; int() raises on it and on thousands of digits (found by bench.fuzz)
    for status, grpc_status in (("50\u00b3", "1\u00b2"), ("5" * 5000, "9" * 5000), ("２００", "０")):
        conn, p = Conn(), Http2Parser()
        req = headers(1, conn.c.encode(GRPC_REQ)) + data(1, end_stream=True)
        resp = (headers(1, conn.s.encode([(":status", status), ("content-type", "application/grpc")]))
                + data(1) + headers(1, conn.s.encode([("grpc-status", grpc_status)]), end_stream=True))
        p.feed(C, PREFACE + SettingsFrame(0).serialize() + req, 1)
        (r,) = p.feed(S, SettingsFrame(0).serialize() + resp, 2)
        assert "http.response.status_code" not in r.attributes and "rpc.grpc.status_code" not in r.attributes
        assert r.name == "shop.Orders/Get"
