"""Kafka, AMQP 0-9-1 and NATS: Guardian's spans against an independent view of the same recordings.

Kafka and AMQP against tshark; tshark 4.0 has no NATS dissector, so NATS is compared with what the
client itself did (record.py writes it next to the pcap). Differences: docs/protocol-truth.md.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict

from tests.captures.truth.oracle import HERE, guardian_spans, server_port, tshark

# Kafka API keys (kafka.apache.org/protocol#protocol_api_keys), the ones the recording uses
_KAFKA_APIS = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions", 19: "CreateTopics"}


def kafka_oracle(pcap) -> dict[str, list[tuple[str, int]]]:
    """client port -> (API name, correlation id) of each request that got its response, in order."""
    port = server_port(pcap)
    rows = tshark("-r", str(pcap), "-d", f"tcp.port=={port},kafka", "-Y", "kafka", "-T", "fields",
                  "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "kafka.request_key", "-e", "kafka.correlation_id",
                  "-E", "occurrence=f")
    asked: dict[str, dict[int, str]] = defaultdict(dict)
    out: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for line in rows.splitlines():
        src, dst, key, corr = (line.split("\t") + [""] * 4)[:4]
        if dst == port:
            asked[src][int(corr)] = _KAFKA_APIS.get(int(key), key)
        elif int(corr) in asked[dst]:
            out[dst].append((asked[dst].pop(int(corr)), int(corr)))
    return out


def test_kafka_requests_match_tshark():
    pcap = HERE / "kafka" / "kafka-python.pcap"
    oracle = kafka_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, want in oracle.items():
        assert [s.attributes["messaging.operation.name"] for s in spans[conn]] == [api for api, _ in want], conn
        # tshark 4.0 misreads some flexible-version responses' error fields (CreateTopics v7: "418",
        # Metadata v12: "-27576", no such Kafka codes): the clients succeeded, so none is an error
        assert all(s.status_code != "ERROR" for s in spans[conn]), conn
    ops = Counter(api for v in oracle.values() for api, _ in v)
    assert ops["Produce"] == 3 and ops["CreateTopics"] == 1 and ops["Fetch"] >= 1
    produced = [s for v in spans.values() for s in v if s.name.startswith("Produce")]
    assert {s.attributes["messaging.destination.name"] for s in produced} == {"truth-orders"}


# AMQP 0-9-1 (class, method) ids, from the specification
_AMQP = {(10, 40): "connection.open", (10, 50): "connection.close", (20, 10): "channel.open",
         (20, 40): "channel.close", (40, 10): "exchange.declare", (50, 10): "queue.declare",
         (50, 20): "queue.bind", (50, 30): "queue.purge", (60, 40): "publish", (60, 70): "get",
         (85, 10): "confirm.select"}
_AMQP_REPLIES = {(10, 11), (10, 31), (20, 41), (10, 51)}  # start-ok, tune-ok, close-ok: answers, not requests


def amqp_oracle(pcap) -> dict[str, list[tuple[str, int]]]:
    """client port -> (method, reply code or 0) of each client request, in order; a request the server
    answers with channel.close / connection.close gets that close's reply code."""
    port = server_port(pcap)
    rows = tshark("-r", str(pcap), "-d", f"tcp.port=={port},amqp", "-Y", "amqp", "-T", "fields",
                  "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "amqp.method.class", "-e", "amqp.method.method",
                  "-e", "amqp.method.arguments.reply_code", "-E", "occurrence=a", "-E", "aggregator=|")
    out: dict[str, list[list]] = defaultdict(list)
    for line in rows.splitlines():
        src, dst, classes, methods, codes = (line.split("\t") + [""] * 5)[:5]
        codes_it = iter(codes.split("|"))
        for c, m in zip(classes.split("|"), methods.split("|")):
            if not c:
                continue  # a content header or body frame
            cm = (int(c), int(m))
            code = int(next(codes_it) or 0) if cm in ((20, 40), (10, 50)) else 0
            if dst == port and cm not in _AMQP_REPLIES:
                out[src].append([_AMQP.get(cm, f"{c}.{m}"), code])
            elif src == port and cm in ((20, 40), (10, 50)) and out[dst]:
                out[dst][-1][1] = code  # the server closed the channel: the last request failed
    return {k: [tuple(x) for x in v] for k, v in out.items()}


def test_amqp_methods_and_reply_codes_match_tshark():
    pcap = HERE / "amqp" / "pika.pcap"
    oracle = amqp_oracle(pcap)
    spans = guardian_spans(pcap)
    assert oracle and set(oracle) == set(spans)
    for conn, want in oracle.items():
        got = [(s.attributes["messaging.operation.name"],
                int(s.attributes.get("amqp.reply_code", 0)) if s.status_code == "ERROR" else 0)
               for s in spans[conn]]
        # the client's own channel.close / connection.close carry reply code 200 (a normal close)
        assert got == [(m, 0 if code == 200 else code) for m, code in want], conn
    flat = [x for v in oracle.values() for x in v]
    assert ("queue.declare", 404) in flat and sum(m == "publish" for m, _ in flat) == 4


def test_nats_operations_match_what_the_client_did():
    pcap = HERE / "nats" / "nats-py.pcap"
    did = json.loads((HERE / "nats" / "nats-py.json").read_text())
    spans = [s for v in guardian_spans(pcap).values() for s in v]

    def by_subject(op: str) -> dict[str, int]:
        c: Counter = Counter()
        for s in spans:
            if s.attributes["messaging.operation.name"] == op:
                subject = s.attributes["messaging.destination.name"]
                c["_INBOX" if subject.startswith("_INBOX.") else subject] += 1
        return dict(c)

    assert by_subject("publish") == did["publish"]
    assert by_subject("receive") == did["receive"]
    assert by_subject("subscribe") == did["subscribe"]
    assert sum(s.attributes["messaging.operation.name"] == "unsubscribe" for s in spans) == did["unsubscribe"]
    assert all(s.status_code != "ERROR" for s in spans)
    assert {s.kind for s in spans if s.attributes["messaging.operation.name"] == "receive"} == {"CONSUMER"}
