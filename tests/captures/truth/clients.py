"""The real work recorded for the truth captures of HTTP/1, HTTP/2 + gRPC, Kafka, AMQP, MongoDB, NATS,
Memcached and DNS (record.py takes the pcaps). Not a test module: each function drives real clients
against a real server on loopback and returns what the clients saw, where tshark has no dissector."""
from __future__ import annotations

import socket
import struct
import subprocess
import time


def http1_work(port: int) -> None:
    base = f"http://127.0.0.1:{port}"
    # one keep-alive connection: several URLs, a 404, a 503, a body
    subprocess.run(["curl", "-s", f"{base}/", f"{base}/missing", f"{base}/fail", f"{base}/big.html",
                    f"{base}/api/items?id=7"], check=True, capture_output=True, timeout=30)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-X", "POST", "--data", "name=ada&role=admin",
                    f"{base}/api/orders"], check=True, timeout=30)
    subprocess.run(["curl", "-s", "-o", "/dev/null", "-I", f"{base}/index.html"], check=True, timeout=30)
    # pipelined requests on one connection (what curl no longer does)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /api/p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /api/p2 HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while s.recv(65536):
            pass
    subprocess.run(["hey", "-n", "40", "-c", "2", f"{base}/api/load"], check=True, capture_output=True, timeout=60)


def http2_work(port: int) -> None:
    import httpx

    base = f"http://127.0.0.1:{port}"
    # curl 7.88 fails re-using a prior-knowledge connection (exit 16): one URL per curl
    for path in ("/", "/fail"):
        subprocess.run(["curl", "-s", "--http2-prior-knowledge", base + path], check=True, capture_output=True,
                       timeout=30)
    with httpx.Client(http1=False, http2=True) as c:  # prior knowledge: h2c without upgrade, streams 1, 3, ...
        for path in ("/api/h1?x=1", "/big.html", "/missing", "/fail"):
            c.get(base + path)
        c.post(base + "/api/post", content=b"x" * 3000)
    # h2load: 30 requests on 2 connections, up to 4 streams at once on each
    subprocess.run(["h2load", "-n", "30", "-c", "2", "-m", "4", f"{base}/api/load"], check=True, capture_output=True,
                   timeout=60)


def grpc_work(port: int) -> None:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        say = ch.unary_unary("/guardian.Echo/Say")
        fail = ch.unary_unary("/guardian.Echo/Fail")
        for i in range(3):
            say(b"hello %d" % i, timeout=10)
        try:
            fail(b"x", timeout=10)
        except grpc.RpcError:
            pass
        say(b"y" * 20000, timeout=10)


def kafka_work(port: int, topic: str = "truth-orders") -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    boot = f"127.0.0.1:{port}"
    admin = KafkaAdminClient(bootstrap_servers=boot, client_id="truth-admin")
    admin.create_topics([NewTopic(topic, 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=boot, linger_ms=0, acks=1, client_id="truth-producer")
    for i in range(3):
        producer.send(topic, b"order-%d" % i).get(timeout=15)
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset="earliest", group_id=None,
                             consumer_timeout_ms=2000, client_id="truth-consumer")
    assert len(list(consumer)) == 3
    consumer.close()


def amqp_work(port: int, queue: str = "truth-jobs") -> None:
    import pika

    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.queue_declare(queue)
    ch.exchange_declare("truth-events", "fanout")
    ch.queue_bind(queue, "truth-events")
    ch.confirm_delivery()
    for i in range(3):
        ch.basic_publish("", queue, b"job-%d" % i)
    ch.basic_publish("truth-events", "", b"event")
    assert ch.basic_get(queue, auto_ack=True)[2] == b"job-0"
    try:
        ch.queue_declare("truth-no-such-queue", passive=True)  # 404: the server closes the channel
    except pika.exceptions.ChannelClosedByBroker:
        pass
    ch = conn.channel()
    ch.queue_purge(queue)
    conn.close()


def mongo_work(port: int) -> None:
    import pymongo
    from pymongo.errors import DuplicateKeyError, OperationFailure

    client = pymongo.MongoClient("127.0.0.1", port, directConnection=True, serverSelectionTimeoutMS=20000)
    users = client["truth"]["users"]
    users.insert_one({"_id": 1, "name": "ada"})
    users.find_one({"_id": 1})
    users.update_one({"_id": 1}, {"$set": {"name": "grace"}})
    users.count_documents({})
    try:
        users.insert_one({"_id": 1, "name": "dup"})
    except DuplicateKeyError:
        pass
    try:
        client["truth"].command("truthNoSuchCommand")
    except OperationFailure:
        pass
    users.insert_many([{"_id": i, "v": "x" * 100} for i in range(2, 30)])
    list(users.find({}, batch_size=10))  # find + getMore
    users.delete_one({"_id": 1})
    client.close()


def nats_work(port: int, user: str, password: str) -> dict:
    """Returns what the client did (tshark 4.0 has no NATS dissector: this is the oracle)."""
    import asyncio

    import nats

    async def go() -> dict:
        nc = await nats.connect(f"nats://{user}:{password}@127.0.0.1:{port}")
        got = {"truth.events": 0, "truth.rpc": 0}

        async def handler(msg):
            got[msg.subject] += 1

        async def responder(msg):
            got[msg.subject] += 1
            await msg.respond(b"pong")

        sub = await nc.subscribe("truth.events", cb=handler)
        await nc.subscribe("truth.rpc", cb=responder)
        for i in range(4):
            await nc.publish("truth.events", b"e%d" % i)
        reply = await nc.request("truth.rpc", b"ping", timeout=5)  # nats-py subscribes its _INBOX.* first
        await nc.flush()
        await asyncio.sleep(0.3)
        await sub.unsubscribe()
        await nc.close()
        assert reply.data == b"pong"
        # what this one connection did, by subject (the reply went to and came back from the inbox)
        return {"subscribe": {"truth.events": 1, "truth.rpc": 1, "_INBOX": 1},
                "publish": {"truth.events": 4, "truth.rpc": 1, "_INBOX": 1},
                "receive": {**got, "_INBOX": 1}, "unsubscribe": 1}

    return asyncio.run(go())


def _mc_binary(magic: int, op: int, key: bytes = b"", extras: bytes = b"", value: bytes = b"",
               opaque: int = 0) -> bytes:
    body = extras + key + value
    return struct.pack(">BBHBBHIIQ", magic, op, len(key), len(extras), 0, 0, len(body), opaque, 0) + body


def _exchange(s: socket.socket, data: bytes, until: bytes | int) -> bytes:
    s.sendall(data)
    buf = b""
    while (len(buf) < until) if isinstance(until, int) else not buf.endswith(until):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def memcached_work(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:  # text protocol
        _exchange(s, b"set user:1 0 0 5\r\nalice\r\n", b"\r\n")
        _exchange(s, b"get user:1\r\n", b"END\r\n")
        _exchange(s, b"get nope\r\n", b"END\r\n")
        _exchange(s, b"get user:1 nope\r\n", b"END\r\n")
        _exchange(s, b"incr user:1 1\r\n", b"\r\n")  # CLIENT_ERROR: not a number
        _exchange(s, b"add user:1 0 0 1\r\nx\r\n", b"\r\n")  # NOT_STORED
        _exchange(s, b"set big 0 0 10000\r\n" + b"v" * 10000 + b"\r\n", b"\r\n")
        _exchange(s, b"get big\r\n", b"END\r\n")
        _exchange(s, b"delete user:1\r\n", b"\r\n")
        _exchange(s, b"delete user:1\r\n", b"\r\n")  # NOT_FOUND
        _exchange(s, b"bogus\r\n", b"\r\n")  # ERROR
    with socket.create_connection(("127.0.0.1", port)) as s:  # binary protocol
        _exchange(s, _mc_binary(0x80, 0x01, b"bk", b"\0" * 8, b"binval", 1), 24)
        _exchange(s, _mc_binary(0x80, 0x00, b"bk", opaque=2), 24 + 4 + 6)
        _exchange(s, _mc_binary(0x80, 0x00, b"bmiss", opaque=3), 24 + 9)  # Not found
        # a value over the parser's 64 KiB wait: skipped by length, never held whole
        _exchange(s, _mc_binary(0x80, 0x01, b"bbig", b"\0" * 8, b"w" * 66000, 4), 24)
        _exchange(s, _mc_binary(0x80, 0x00, b"bbig", opaque=5), 24 + 4 + 66000)
        _exchange(s, _mc_binary(0x80, 0x0a, opaque=6), 24)  # noop


def dns_work(port: int) -> None:
    def dig(name: str, *opts: str) -> None:
        subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "+tries=1", "+time=3", *opts],
                       capture_output=True, check=True, timeout=20)

    dig("ok.x.test", "A")
    dig("ok.x.test", "AAAA")
    dig("gone.nx.test", "A")
    dig("ok.x.test", "MX")
    dig("tcp.x.test", "A", "+tcp")
    dig("other.x.test", "A", "+tcp")
    time.sleep(0.2)
