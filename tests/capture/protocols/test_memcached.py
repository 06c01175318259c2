"""Memcached parser, bytes only: text and binary protocols, hit/miss, noreply, errors, truncation, garbage."""
import struct

from capture.protocols.base import Side
from capture.protocols.memcached import MemcachedParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def binary(magic, op, key=b"", extras=b"", value=b"", status=0, opaque=0):
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", magic, op, len(key), len(extras), 0, status, len(body), opaque, 0) + body


def bench_sample():
    req = b"set a 0 0 3\r\nabc\r\nget a\r\nget b\r\ndelete a\r\n"
    resp = b"STORED\r\nVALUE a 0 3\r\nabc\r\nEND\r\nEND\r\nDELETED\r\n"
    return [(C, req), (S, resp)], 4


def test_get_hit_and_miss():
    p = MemcachedParser()
    p.feed(C, b"get k\r\nget nope\r\n", 1)
    recs = p.feed(S, b"VALUE k 0 2\r\nhi\r\nEND\r\nEND\r\n", 2)
    assert [(r.name, r.attributes["memcached.hit"], r.attributes["db.query.text"]) for r in recs] == [
        ("get", True, "get k"), ("get", False, "get nope")]


def test_storage_with_value_split_and_noreply():
    p = MemcachedParser()
    assert p.feed(C, b"set k 0 0 10\r\n01234", 1) == []
    assert p.feed(C, b"56789\r\n", 2) == []
    (noreply,) = p.feed(C, b"delete other noreply\r\n", 3)
    assert noreply.name == "delete" and noreply.status == "UNSET"
    (r,) = p.feed(S, b"STORED\r\n", 4)
    assert (r.name, r.start_ns, r.attributes["db.response.status_code"]) == ("set", 1, "STORED")


def test_errors():
    p = MemcachedParser()
    p.feed(C, b"incr k 1\r\nbogus\r\n", 1)
    assert p.stats["garbage"] == 1  # an unknown command word is not memcached: resync
    p = MemcachedParser()
    p.feed(C, b"incr k 1\r\n", 1)
    (r,) = p.feed(S, b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n", 2)
    assert r.status == "ERROR" and r.attributes["error.type"] == "CLIENT_ERROR" and "non-numeric" in r.status_message


def test_multi_get_and_pipelining():
    p = MemcachedParser()
    p.feed(C, b"get a b c\r\nset x 0 0 1\r\nx\r\ngets a\r\n", 1)
    recs = p.feed(S, b"VALUE a 0 1\r\n1\r\nVALUE c 0 1\r\n3\r\nEND\r\nSTORED\r\nVALUE a 0 1 99\r\n1\r\nEND\r\n", 2)
    assert [(r.name, r.attributes.get("db.response.returned_rows")) for r in recs] == [("get", 2), ("set", None),
                                                                                     ("gets", 1)]


def test_truncated_large_value():
    p = MemcachedParser()
    value = b"v" * 100_000
    raw = b"set big 0 0 100000\r\n" + value + b"\r\n"
    p.feed(C, raw[:4096], 1, size=len(raw))
    p.feed(C, b"get big\r\n", 2)
    reply = b"STORED\r\n"
    get_reply = b"VALUE big 0 100000\r\n" + value + b"\r\nEND\r\n"
    recs = p.feed(S, reply, 3) + p.feed(S, get_reply[:4096], 4, size=len(get_reply))
    assert [(r.name, r.attributes.get("memcached.hit")) for r in recs] == [("set", None), ("get", True)]


def test_binary_protocol_pairs_by_opaque_and_quiet_misses():
    p = MemcachedParser()
    p.feed(C, binary(0x80, 0x09, b"q1", opaque=1) + binary(0x80, 0x09, b"q2", opaque=2)
           + binary(0x80, 0x0A, opaque=3), 1)  # GETQ, GETQ, NOOP
    recs = p.feed(S, binary(0x81, 0x09, extras=b"\0\0\0\0", value=b"v", opaque=2) + binary(0x81, 0x0A, opaque=3), 2)
    assert [(r.name, r.attributes.get("memcached.hit"), r.attributes.get("db.query.text")) for r in recs] == [
        ("getq", False, "getq q1"), ("getq", True, "getq q2"), ("noop", None, None)]
    p.feed(C, binary(0x80, 0x05, b"n", extras=b"\0" * 20, opaque=4), 3)
    (r,) = p.feed(S, binary(0x81, 0x05, value=b"Non-numeric server-side value for incr or decr", status=6,
                            opaque=4), 4)
    assert r.status == "ERROR" and r.attributes["error.type"] == "non_numeric"


def test_mid_stream_and_garbage_resync():
    p = MemcachedParser()
    assert p.feed(S, b"lue\r\nEND\r\n", 1) == []  # tail of a reply we never saw the start of
    assert p.feed(C, b"\x00\x13garbage", 2) == []
    p.feed(C, b"get k\r\n", 3)
    (r,) = p.feed(S, b"END\r\n", 4)
    assert r.attributes["db.query.text"] == "get k" and r.attributes["memcached.hit"] is False


def test_close_reports_unanswered():
    p = MemcachedParser()
    p.feed(C, b"get k\r\n", 1)
    (r,) = p.close(5)
    assert r.status == "ERROR"


def test_detect():
    assert detect(b"get k\r\n") == C and detect(b"set k 0 0 1\r\nx\r\n") == C and detect(b"stats\r\n") == C
    assert detect(b"END\r\n") == S and detect(b"VALUE k 0 1\r\nx\r\nEND\r\n") == S
    assert detect(binary(0x80, 0x00, b"k")) == C and detect(binary(0x81, 0x00)) == S
    assert detect(b"get k") is None  # no CRLF: not a whole command line
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == [b"get key\r\n"]


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("memcached", detect, samples) == []
    assert all(kernel_detect("memcached")(data) for data in own[:1])  # the first message of the sample is detected


def test_binary_large_value_is_skipped_by_length_not_held():
    p = MemcachedParser()
    value = b"v" * (4 * 1024 * 1024)
    req = binary(0x80, 0x01, b"big", extras=b"\0" * 8, value=value, opaque=7)
    for i in range(0, len(req), 65536):  # a client writing 64 KiB at a time
        assert p.feed(C, req[i:i + 65536], 1 + i) == []
        assert len(p._dirs[C].buf) < 128 * 1024  # the value is skipped, not buffered
    p.feed(C, binary(0x80, 0x00, b"big", opaque=8), 2)
    reply = binary(0x81, 0x00, extras=b"\0" * 4, value=value, opaque=8)
    recs = p.feed(S, binary(0x81, 0x01, opaque=7), 3)
    for i in range(0, len(reply), 65536):
        recs += p.feed(S, reply[i:i + 65536], 4)
        assert len(p._dirs[S].buf) < 128 * 1024
    assert [(r.name, r.attributes.get("memcached.hit"), r.end_ns) for r in recs] == [("set", None, 3),
                                                                                   ("get", True, 4)]
    assert p.stats["garbage"] == 0 and not p._pending


def test_binary_error_text_is_bounded_and_body_over_the_limit_is_garbage():
    p = MemcachedParser()
    p.feed(C, binary(0x80, 0x01, b"k", extras=b"\0" * 8, value=b"x", opaque=1), 1)
    (r,) = p.feed(S, binary(0x81, 0x01, value=b"E" * 100_000, status=3, opaque=1), 2)
    assert r.status == "ERROR" and r.status_message == "E" * 256
    hdr = struct.pack(">BBHBBHIIQ", 0x80, 0x01, 0, 0, 0, 0, 0xFFFFFFF0, 9, 0)
    assert p.feed(C, hdr, 3) == [] and p.stats["garbage"] == 1


def test_meta_get_values_keep_the_stream_in_sync():
    p = MemcachedParser()
    p.feed(C, b"mg k v f\r\nmg nope v\r\nmg big v\r\nms k 2 T60\r\nhi\r\nmn\r\n", 1)
    big = b"x" * 300_000  # past the parser's wait: skipped by length, never held whole
    recs = p.feed(S, b"VA 5 f0\r\nhello\r\nEN\r\nVA %d\r\n" % len(big) + big[:1000], 2)
    recs += p.feed(S, big[1000:] + b"\r\nHD\r\nMN\r\n", 3)
    assert [(r.name, r.attributes.get("memcached.hit")) for r in recs] == [
        ("mg", True), ("mg", False), ("mg", True), ("ms", None), ("mn", None)]
    assert all(r.status == "UNSET" for r in recs) and p.idle()
    assert not any(k.startswith("lost") or k == "garbage" for k in p.stats if p.stats[k])
