"""Live eBPF capture of AMQP 0-9-1: pika against a private Debian rabbitmq-server node."""
from __future__ import annotations

import time

import pytest

from support.live import live_capture
from support.servers import rabbitmq_instance

pytestmark = pytest.mark.ebpf
QUEUE, EXCHANGE = "guardian-jobs", "guardian-events"


@pytest.fixture(scope="module")
def rabbitmq():
    with rabbitmq_instance() as server:  # MissingServer says what to install
        yield server["port"]


@pytest.fixture(scope="module")
def amqp_capture(rabbitmq):
    import pika

    params = pika.ConnectionParameters("127.0.0.1", rabbitmq, heartbeat=0)
    with live_capture(port=rabbitmq, extra=("--no-tls",)) as cap:
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.exchange_declare(EXCHANGE, exchange_type="direct")
        ch.queue_declare(QUEUE)
        ch.queue_bind(QUEUE, EXCHANGE, routing_key="new")
        ch.confirm_delivery()
        for i in range(3):
            ch.basic_publish(EXCHANGE, "new", b"job-%d" % i)
        method, _props, body = ch.basic_get(QUEUE)
        ch.basic_ack(method.delivery_tag)
        got = [body]
        for method, _props, body in ch.consume(QUEUE, inactivity_timeout=3):
            if method is None:
                break
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            if len(got) == 3:
                break
        ch.cancel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker):
            conn.channel().queue_declare("guardian-missing", passive=True)
        conn.close()
        time.sleep(0.5)
    cap.got = got
    return cap


def client(cap):
    return [s for s in cap.spans if s["kind"] == "CLIENT"]


def test_publishes_with_confirms(amqp_capture):
    pubs = [s for s in client(amqp_capture) if s["name"] == f"publish {EXCHANGE}"]
    assert len(pubs) == 3, [s["name"] for s in client(amqp_capture)]
    for s in pubs:
        a = s["attributes"]
        assert s["status_code"] == "UNSET" and a["messaging.system"] == "rabbitmq"
        assert (a["messaging.operation.type"], a["messaging.rabbitmq.destination.routing_key"],
                a["messaging.message.body.size"]) == ("publish", "new", 5)


def test_get_deliver_and_acks(amqp_capture):
    assert amqp_capture.got == [b"job-0", b"job-1", b"job-2"]
    names = [s["name"] for s in client(amqp_capture)]
    assert names.count(f"get {QUEUE}") == 1
    assert names.count(f"deliver {QUEUE}") == 2
    assert names.count(f"ack {QUEUE}") == 3
    for s in client(amqp_capture):
        if s["name"] == f"deliver {QUEUE}":
            assert s["attributes"]["messaging.operation.type"] == "receive"


def test_sync_methods_are_one_span_each(amqp_capture):
    names = [s["name"] for s in client(amqp_capture)]
    for expected in (f"exchange.declare {EXCHANGE}", f"queue.declare {QUEUE}", f"queue.bind {QUEUE}",
                     "confirm.select", f"basic.consume {QUEUE}", "connection.open", "connection.close"):
        assert names.count(expected) == 1, (expected, names)


def test_missing_queue_is_an_error(amqp_capture):
    (s,) = [s for s in client(amqp_capture) if s["name"] == "queue.declare guardian-missing"]
    assert s["status_code"] == "ERROR" and s["attributes"]["error.type"] == "NOT_FOUND"
    assert s["attributes"]["amqp.reply_code"] == 404


def test_broker_side_sees_the_publishes(amqp_capture):
    server = [s for s in amqp_capture.spans if s["kind"] == "SERVER" and s["name"] == f"publish {EXCHANGE}"]
    assert len(server) == 3
