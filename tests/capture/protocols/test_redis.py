"""Redis parser, bytes only: RESP2/RESP3, pipelines, errors, pub/sub, truncation, garbage, mid-stream."""
from capture.protocols.base import Side
from capture.protocols.redis import RedisParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def cmd(*args: bytes | str) -> bytes:
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def bench_sample():
    """One pipelined round trip for bench/parsers.py: (chunks, records they complete)."""
    req = b"".join(cmd("SET", f"key:{i}", "value") for i in range(5)) + cmd("GET", "key:1") + cmd("INCR", "n")
    resp = b"+OK\r\n" * 5 + b"$5\r\nvalue\r\n:7\r\n"
    return [(C, req), (S, resp)], 7


def test_command_and_reply():
    p = RedisParser()
    assert p.feed(C, cmd("SET", "k", "v"), 10) == []
    (r,) = p.feed(S, b"+OK\r\n", 30)
    assert (r.name, r.start_ns, r.end_ns, r.status) == ("SET", 10, 30, "UNSET")
    assert r.attributes == {"db.system": "redis", "db.operation.name": "SET", "db.query.text": "SET k v"}


def test_error_reply_is_an_error():
    p = RedisParser()
    p.feed(C, cmd("INCR", "k"), 1)
    (r,) = p.feed(S, b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n", 2)
    assert r.status == "ERROR" and r.attributes["error.type"] == "WRONGTYPE"
    assert r.status_message.startswith("WRONGTYPE Operation")


def test_pipeline_each_command_its_own_record_in_order():
    p = RedisParser()
    p.feed(C, b"".join(cmd("GET", f"k{i}") for i in range(100)), 1)
    reply = b"".join(b"$2\r\nv%d\r\n" % (i % 10) if i % 3 else b"$-1\r\n" for i in range(100))
    recs = p.feed(S, reply[:37], 2) + p.feed(S, reply[37:], 3)  # a reply split mid-value
    assert [r.attributes["db.query.text"] for r in recs] == [f"GET k{i}" for i in range(100)]


def test_command_split_across_syscalls_and_length_alone():
    p = RedisParser()
    raw = cmd("SET", "key", "x" * 1000)
    assert p.feed(C, raw[:4], 1) == [] and p.feed(C, raw[4:9], 2) == [] and p.feed(C, raw[9:], 3) == []
    (r,) = p.feed(S, b"+OK\r\n", 4)
    assert r.start_ns == 1 and r.name == "SET"


def test_truncated_copy_of_a_large_value_keeps_framing():
    p = RedisParser()
    raw = cmd("SET", "big", "z" * 100_000)
    p.feed(C, raw[:4096], 1, size=len(raw))  # the capture copied 4 kB of a 100 kB write
    p.feed(C, cmd("GET", "big"), 1)
    big_reply = b"$100000\r\n" + b"z" * 100_000 + b"\r\n"
    recs = p.feed(S, b"+OK\r\n" + big_reply[:4096], 2, size=5 + len(big_reply))
    assert [r.name for r in recs] == ["SET", "GET"]
    assert recs[0].attributes["db.query.text"].startswith("SET big zzz")


def test_resp3_types_and_attribute_frames():
    p = RedisParser()
    p.feed(C, cmd("HELLO", "3") + cmd("HGETALL", "h") + cmd("SMEMBERS", "s") + cmd("GET", "d"), 1)
    reply = (b"%1\r\n+server\r\n+redis\r\n" + b"%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n,2.5\r\n"
             + b"|1\r\n+ttl\r\n:3\r\n~2\r\n+x\r\n#t\r\n" + b"_\r\n")
    recs = p.feed(S, reply, 2)
    assert [r.name for r in recs] == ["HELLO", "HGETALL", "SMEMBERS", "GET"]
    assert all(r.status == "UNSET" for r in recs)
    p.feed(C, cmd("GET", "x"), 3)
    (r,) = p.feed(S, b"!21\r\nSYNTAX invalid syntax\r\n", 4)
    assert r.status == "ERROR" and r.attributes["error.type"] == "SYNTAX"


def test_pubsub_confirmations_and_pushed_messages():
    p = RedisParser()
    p.feed(C, cmd("SUBSCRIBE", "a", "b"), 1)
    recs = p.feed(S, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"
                  b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n", 2)
    assert [r.name for r in recs] == ["SUBSCRIBE"]  # one span for one command, two confirmations
    (m,) = p.feed(S, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n", 3)
    assert m.kind == "CONSUMER" and m.attributes["messaging.destination.name"] == "a"
    (m3,) = p.feed(S, b">3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nhi\r\n", 4)  # RESP3 push
    assert m3.attributes["messaging.destination.name"] == "b"
    p.feed(C, cmd("PUBLISH", "a", "x"), 5)
    (pub,) = p.feed(S, b":1\r\n", 6)
    assert pub.attributes["messaging.destination.name"] == "a" and pub.attributes["messaging.operation.type"] == "send"


def test_auth_and_hello_arguments_are_redacted():
    p = RedisParser()
    p.feed(C, cmd("AUTH", "user", "hunter2") + cmd("HELLO", "3", "AUTH", "default", "hunter2")
           + cmd("CONFIG", "SET", "requirepass", "hunter2"), 1)
    recs = p.feed(S, b"+OK\r\n%0\r\n+OK\r\n", 2)
    assert [r.attributes["db.query.text"] for r in recs] == ["AUTH ? ?", "HELLO ? ? ? ?", "CONFIG SET ? ?"]
    assert "hunter2" not in repr(recs)


def test_inline_commands_with_quotes():
    p = RedisParser()
    p.feed(C, b'SET key "my value with spaces"\r\nSET k2 \'it\\\'s\'\r\nPING\r\n', 1)
    recs = p.feed(S, b"+OK\r\n+OK\r\n+PONG\r\n", 2)
    assert [r.attributes["db.query.text"] for r in recs] == ["SET key my value with spaces", "SET k2 it's", "PING"]


def test_garbage_resyncs_and_drops_pending():
    p = RedisParser()
    p.feed(C, cmd("GET", "a"), 1)
    assert p.feed(S, b"\x00\x01\x02garbage\r\n", 2) == []
    assert p.stats["garbage"] == 1
    assert p.feed(S, b"+OK\r\n", 3) == []  # nothing pending: no mispairing
    p.feed(C, cmd("GET", "b"), 4)
    (r,) = p.feed(S, b"$1\r\nx\r\n", 5)
    assert r.attributes["db.query.text"] == "GET b"


def test_mid_stream_join_starts_at_next_message():
    p = RedisParser()
    assert p.feed(S, b"alue\r\n", 1) == []  # the tail of a reply whose command we never saw
    p.feed(C, b"3\r\nfoo\r\n", 2)  # tail of a command
    p.feed(C, cmd("GET", "k"), 3)
    (r,) = p.feed(S, b"$1\r\nv\r\n", 4)
    assert r.attributes["db.query.text"] == "GET k"


def test_close_reports_unanswered_commands():
    p = RedisParser()
    p.feed(C, cmd("BLPOP", "q", "0"), 1)
    (r,) = p.close(9)
    assert r.status == "ERROR" and r.attributes["error.type"] == "no_response"


def test_detect():
    assert detect(cmd("PING")) == C and detect(b"+OK\r\n") == S and detect(b"-ERR x\r\n") == S
    assert detect(b":12\r\n") == S and detect(b"hello") is None
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == [b"*1\r\n$4\r\nPING\r\n", b"+OK\r\n"]


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("redis", detect, samples) == []
    assert all(kernel_detect("redis")(data) for data in own[:1])  # the first message of the sample is detected


def test_nil_replies_are_answers_not_errors():
    # $-1: a cache miss; *-1: a timed-out BLPOP or an aborted EXEC. Both are replies.
    p = RedisParser()
    p.feed(C, cmd("GET", "missing") + cmd("BLPOP", "q", "1") + cmd("GET", "k"), 1)
    recs = p.feed(S, b"$-1\r\n*-1\r\n_\r\n", 2)
    assert [(r.name, r.status, r.end_ns) for r in recs] == [("GET", "UNSET", 2), ("BLPOP", "UNSET", 2),
                                                            ("GET", "UNSET", 2)]
    assert all("error.type" not in r.attributes for r in recs)
    p.feed(C, cmd("GET", "late"), 3)
    (closed,) = p.close(4)
    assert closed.status == "ERROR" and closed.attributes["error.type"] == "no_response"


def unsubscribed(channel: str, left: int) -> bytes:
    return b"*3\r\n$11\r\nunsubscribe\r\n$%d\r\n%s\r\n:%d\r\n" % (len(channel), channel.encode(), left)


def test_unsubscribe_from_several_channels_leaves_subscribed_mode():
    for args in (("a", "b", "c"), ()):  # named channels, or all of them (one confirmation each)
        p = RedisParser()
        p.feed(C, cmd("SUBSCRIBE", "a", "b", "c"), 1)
        p.feed(S, b"".join(b"*3\r\n$9\r\nsubscribe\r\n$1\r\n%s\r\n:%d\r\n" % (c, i + 1)
                           for i, c in enumerate((b"a", b"b", b"c"))), 2)
        p.feed(C, cmd("UNSUBSCRIBE", *args) + cmd("GET", "k"), 3)
        recs = p.feed(S, unsubscribed("a", 2) + unsubscribed("b", 1) + unsubscribed("c", 0) + b"$1\r\nv\r\n", 4)
        assert [r.name for r in recs] == ["UNSUBSCRIBE", "GET"], args
        assert p.idle() and p.stats.get("responses_without_request", 0) == 0
        # a reply shaped like a message is now an answer, not a pushed message
        p.feed(C, cmd("LRANGE", "l", "0", "-1"), 5)
        (r,) = p.feed(S, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n", 6)
        assert r.name == "LRANGE" and r.kind != "CONSUMER"
