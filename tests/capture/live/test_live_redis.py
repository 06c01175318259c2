"""Live eBPF capture of Redis (RESP2 and RESP3) between redis-py / redis-cli and a real redis-server."""
from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter

import pytest
import redis

from support.live import live_capture

pytestmark = pytest.mark.ebpf


SETUP = ("AUTH", "HELLO", "CLIENT ")  # what redis-py sends on its own when it connects


def ops(spans, pid, kind="CLIENT", setup=False):
    names = (s["attributes"].get("db.operation.name", "") for s in spans
             if s["resource"].get("process.pid") == pid and s["kind"] == kind)
    return Counter(n for n in names if n.startswith(SETUP) == setup)


@pytest.fixture(scope="module")
def traffic(redis_server):
    port, pw = redis_server["port"], redis_server["password"]
    expected = Counter()
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        r = redis.Redis(host="127.0.0.1", port=port, password=pw)
        r.set("k1", "v1")
        r.get("k1")
        r.get("missing")
        r.incr("counter")
        r.hset("h", "f", "x")
        r.lpush("l", *range(50))
        r.lrange("l", 0, -1)
        with pytest.raises(redis.ResponseError):
            r.incr("k1")  # not an integer: an error reply
        expected.update({"SET": 1, "GET": 2, "INCRBY": 2, "HSET": 1, "LPUSH": 1, "LRANGE": 1})
        pipe = r.pipeline(transaction=False)
        for i in range(20):
            pipe.set(f"p{i}", "x" * 10)
        pipe.get("p0")
        pipe.execute()
        expected.update({"SET": 20, "GET": 1})
        r.set("big", b"z" * 100_000)  # split over several syscalls and truncated by the capture
        assert len(r.get("big")) == 100_000
        expected.update({"SET": 1, "GET": 1})
        # pub/sub on a second connection
        sub = r.pubsub()
        sub.subscribe("news")
        deadline = time.monotonic() + 5
        while sub.get_message(timeout=0.2) is None and time.monotonic() < deadline:
            pass  # the subscribe confirmation
        r.publish("news", "hello")
        msg = None
        while msg is None and time.monotonic() < deadline:
            msg = sub.get_message(timeout=0.2)
        assert msg and msg["data"] == b"hello"
        sub.close()
        expected.update({"SUBSCRIBE": 1, "PUBLISH": 1})
        # RESP3: HELLO 3 AUTH user password
        r3 = redis.Redis(host="127.0.0.1", port=port, password=pw, protocol=3)
        r3.set("r3", "1")
        r3.hgetall("h")
        expected.update({"SET": 1, "HGETALL": 1})
        r.close()
        r3.close()
        cli = subprocess.run(["redis-cli", "-p", str(port), "-a", pw, "--no-auth-warning", "GET", "k1"],
                             capture_output=True, text=True, timeout=10)
        assert cli.stdout.strip() == "v1"
    return cap, expected, cli


def test_every_redis_py_command_is_one_client_span(traffic, redis_server):
    cap, expected, _ = traffic
    got = ops(cap.spans, os.getpid())
    assert got == expected, (got - expected, expected - got, cap.stats)
    setup = ops(cap.spans, os.getpid(), setup=True)
    assert setup["HELLO"] + setup["AUTH"] == 3, setup  # three connections, each authenticates once
    server = ops(cap.spans, redis_server["pid"], kind="SERVER")
    assert server["SET"] == expected["SET"] and server["LRANGE"] == 1 and server["PUBLISH"] == 1


def test_errors_pipelines_and_attributes(traffic):
    cap, _, _ = traffic
    mine = [s for s in cap.spans if s["resource"].get("process.pid") == os.getpid() and s["kind"] == "CLIENT"]
    errors = [s for s in mine if s["status_code"] == "ERROR" and not s["name"].startswith(SETUP)]
    assert [(s["name"], s["attributes"]["error.type"]) for s in errors] == [("INCRBY", "ERR")]
    assert "not an integer" in errors[0]["status_message"]
    for s in mine:
        a = s["attributes"]
        assert a["db.system"] == "redis" and a["server.port"] == traffic[0].spans[0]["attributes"]["server.port"]
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"]
    texts = {s["attributes"]["db.query.text"] for s in mine}
    # values are scrubbed before spans (capture/scrub.py): the key stays
    assert "SET k1 ?" in texts and "GET missing" in texts and "LRANGE l 0 -1" in texts
    assert sum(1 for s in mine if s["attributes"]["db.query.text"].startswith("SET p")) == 20


def test_pubsub_message_is_a_consumer_span(traffic):
    cap, _, _ = traffic
    consumers = [s for s in cap.spans if s["kind"] == "CONSUMER" and s["resource"].get("process.pid") == os.getpid()]
    assert len(consumers) == 1
    a = consumers[0]["attributes"]
    assert a["messaging.destination.name"] == "news" and a["messaging.operation.type"] == "receive"


def test_redis_cli_command_is_seen(traffic):
    cap, _, cli = traffic
    cli_spans = [s for s in cap.spans if s["kind"] == "CLIENT" and s["resource"].get("process.pid") not in (os.getpid(),)
                 and s["attributes"].get("db.query.text") == "GET k1"]
    assert len(cli_spans) == 1


def test_passwords_never_reach_spans(traffic):
    cap, _, _ = traffic
    dump = json.dumps(cap.spans)
    assert "s3cr3t-Pa55" not in dump
    auth = [s for s in cap.spans if s["attributes"].get("db.operation.name") in ("AUTH", "HELLO")]
    assert auth and all("?" in s["attributes"]["db.query.text"] for s in auth)
