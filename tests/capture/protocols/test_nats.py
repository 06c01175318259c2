"""NATS parser, bytes only: PUB/SUB/MSG/HPUB/HMSG, verbose +OK/-ERR, redaction, payload splits, garbage."""
from capture.protocols.base import Side
from capture.protocols.nats import NatsParser, detect
from tests.capture.protocols.fuzz import other_protocol_matches, random_match_rate

C, S = Side.CLIENT, Side.SERVER


def bench_sample():
    req = b"PUB orders 5\r\nhello\r\nPUB orders 5\r\nhello\r\nSUB orders 1\r\n"
    resp = b"MSG orders 1 5\r\nhello\r\nMSG orders 1 5\r\nhello\r\n"
    return [(C, req), (S, resp)], 5


def test_publish_subscribe_message():
    p = NatsParser()
    assert p.feed(S, b'INFO {"server_id":"x","max_payload":1048576}\r\n', 0) == []
    recs = p.feed(C, b'CONNECT {"verbose":false,"name":"app"}\r\nPING\r\nSUB orders.* q1 7\r\nPUB orders.new 5\r\nhello\r\n', 1)
    assert [(r.name, r.kind) for r in recs] == [("connect", None), ("subscribe orders.*", None),
                                                ("publish orders.new", "PRODUCER")]
    assert recs[1].attributes["messaging.consumer.group.name"] == "q1"
    assert recs[2].attributes["messaging.message.body.size"] == 5
    (m,) = p.feed(S, b"PONG\r\nMSG orders.new 7 _INBOX.1 5\r\nhello\r\n", 2)
    assert m.kind == "CONSUMER" and m.attributes["messaging.destination.name"] == "orders.new"
    assert m.attributes["messaging.nats.reply_to"] == "_INBOX.1"


def test_headers_variants():
    p = NatsParser()
    (r,) = p.feed(C, b"HPUB s 12 17\r\nNATS/1.0\r\n\r\nhello\r\n", 1)
    assert r.attributes["messaging.destination.name"] == "s" and r.attributes["messaging.message.body.size"] == 17
    (m,) = p.feed(S, b"HMSG s 1 12 17\r\nNATS/1.0\r\n\r\nhello\r\n", 2)
    assert m.kind == "CONSUMER"


def test_payload_split_and_truncated():
    p = NatsParser()
    assert p.feed(C, b"PUB big 100000\r\n" + b"x" * 1000, 1, size=16 + 100_002) == [] or True
    (r,) = p.feed(C, b"PUB after 1\r\ny\r\n", 2)
    assert r.attributes["messaging.destination.name"] == "after"
    p2 = NatsParser()
    assert p2.feed(C, b"PUB a 4\r\nab", 1) == []
    (r2,) = p2.feed(C, b"cd\r\n", 2)
    assert r2.start_ns == 1


def test_verbose_mode_pairs_ok_and_err():
    p = NatsParser()
    p.feed(C, b'CONNECT {"verbose":true}\r\nPUB a 1\r\nx\r\nPUB secret.x 1\r\ny\r\n', 1)
    recs = p.feed(S, b"+OK\r\n+OK\r\n-ERR 'Permissions Violation for Publish to \"secret.x\"'\r\n", 2)
    assert [(r.name, r.status) for r in recs] == [("connect", "UNSET"), ("publish a", "UNSET"),
                                                  ("publish secret.x", "ERROR")]
    assert "Permissions Violation" in recs[2].status_message


def test_async_err_is_its_own_error_record():
    p = NatsParser()
    p.feed(C, b'CONNECT {"verbose":false,"user":"u","pass":"hunter2","auth_token":"tok"}\r\n', 1)
    (r,) = p.feed(S, b"-ERR 'Authorization Violation'\r\n", 2)
    assert r.status == "ERROR" and r.attributes["error.type"] == "Authorization Violation"


def test_connect_secrets_never_reach_attributes():
    p = NatsParser()
    (r,) = p.feed(C, b'CONNECT {"user":"u","pass":"hunter2","auth_token":"tok","jwt":"j","sig":"s","name":"n"}\r\n', 1)
    text = repr(r)
    assert "hunter2" not in text and "tok" not in text and r.attributes["nats.client.name"] == "n"


def test_garbage_and_mid_stream():
    p = NatsParser()
    assert p.feed(C, b"lo\r\nPUB x 1\r\n", 1) == []  # joined inside a payload: resync at the next verb
    assert p.stats["garbage"] == 1
    (r,) = p.feed(C, b"PUB y 1\r\nz\r\n", 2)
    assert r.attributes["messaging.destination.name"] == "y"


def test_detect():
    assert detect(b'INFO {"a":1}\r\n') == S and detect(b'CONNECT {"verbose":false}\r\n') == C
    assert detect(b"PUB a 1\r\nx\r\n") == C and detect(b"MSG a 1 1\r\nx\r\n") == S
    assert detect(b"PING\r\n") is None and detect(b"+OK\r\n") is None
    assert random_match_rate(detect) < 0.001
    assert other_protocol_matches(detect) == [b'INFO {"server_id":"x"}\r\n']


def test_kernel_detector_agrees_with_its_userspace_mirror():
    import random

    from tests.capture.protocols.fuzz import OTHER_PROTOCOLS
    from tests.capture.protocols.kernel_detect import agrees, kernel_detect

    rng = random.Random(11)
    own = [data for _, data in bench_sample()[0]]
    samples = own + OTHER_PROTOCOLS + [rng.randbytes(rng.choice((16, 64, 300))) for _ in range(3000)]
    assert agrees("nats", detect, samples) == []
    assert all(kernel_detect("nats")(data) for data in own[:1])  # the first message of the sample is detected
