"""Record the truth captures: real clients doing real work against real servers on loopback, taken
with tcpdump. Not a test: run it (as root, after `make setup`) to regenerate the pcaps next to it.

Run: .venv/bin/python -m tests.captures.truth.record [redis] [postgresql] [mysql] [http] [http2] [grpc]
     [kafka] [amqp] [mongodb] [nats] [memcached] [dns]   (the work of the last nine is in clients.py)
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _counts(text: str) -> tuple[int, int] | None:
    """(captured, received by filter) from the last statistics tcpdump printed."""
    got = [int(line.split()[0]) for line in text.splitlines()
           if line.split()[:1] and line.split()[0].isdigit() and ("captured" in line or "received by filter" in line)]
    return (got[-2], got[-1]) if len(got) >= 2 else None


@contextmanager
def tcpdump(path: Path, port: int, transport: str = "tcp"):
    """tcpdump on lo around the block. On a loaded host it may lag behind: it is asked for its
    statistics (SIGUSR1) until it has kept every packet its filter saw (on lo the filter sees each
    packet twice, out and in, and tcpdump keeps one), and a recording that still misses some is refused."""
    path.parent.mkdir(exist_ok=True)
    what = f"port {port}" if transport == "any" else f"{transport} port {port}"
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-B", "16384", "-Z", "root",
                             "-w", str(path), what], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = b""
    while b"listening on" not in err:  # traffic before it listens is lost
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("tcpdump did not start")
        err += line
    os.set_blocking(proc.stderr.fileno(), False)
    time.sleep(0.3)
    try:
        yield
    finally:
        text = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            text += (proc.stderr.read() or b"").decode(errors="replace")
            counts = _counts(text)
            if counts and 2 * counts[0] == counts[1]:
                break
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        text += (proc.stderr.read() or b"").decode(errors="replace")
        counts = _counts(text)
        if not counts or 2 * counts[0] != counts[1]:
            raise RuntimeError(f"tcpdump lost packets, record again: {text.strip()[-300:]}")


def redis_work(port: int, password: str) -> None:
    import redis

    r = redis.Redis(port=port, password=password)
    r.set("user:1", "alice")
    r.get("user:1")
    r.get("missing")  # nil bulk
    r.hset("h", mapping={"a": "1", "b": "2"})
    r.hgetall("h")
    try:
        r.incrby("user:1", 1)  # WRONGTYPE-like error: not an integer
    except redis.ResponseError:
        pass
    try:
        r.execute_command("NOSUCHCOMMAND", "x")
    except redis.ResponseError:
        pass
    r.blpop(["empty-list"], timeout=0.1)  # nil array (*-1)
    p = r.pipeline(transaction=False)
    for i in range(20):
        p.set(f"k{i}", i)
        p.get(f"k{i}")
    p.execute()
    r.set("big", b"v" * 40000)
    r.get("big")
    ps = r.pubsub()
    ps.subscribe("news")
    ps.get_message(timeout=1)
    r.publish("news", "hello")
    ps.get_message(timeout=1)
    ps.unsubscribe("news")
    ps.get_message(timeout=1)
    ps.close()
    r.close()
    subprocess.run(["redis-benchmark", "-p", str(port), "-a", password, "-n", "40", "-c", "2", "-P", "4",
                    "-t", "set,get,lpush,lrange_100", "-q"], check=True, capture_output=True)


def postgres_work(server: dict) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=server["port"], user=server["user"],
                         password=server["password"], dbname=server["dbname"]) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS items (id int primary key, name text)")
        cur.execute("INSERT INTO items VALUES (%s, %s) ON CONFLICT DO NOTHING", (1, "one"))
        cur.execute("SELECT * FROM items WHERE id = %s", (1,))
        cur.fetchall()
        for sql in ("SELECT * FROM nope", "SELEC 1", "INSERT INTO items VALUES (1, 'dup')"):
            try:
                cur.execute(sql)
            except psycopg.Error:
                pass
        cur.execute("SELECT repeat('x', 60000)")  # a large row
        cur.fetchall()
        with cur.copy("COPY items (id, name) FROM STDIN") as copy:
            for i in range(2, 50):
                copy.write_row((i, f"n{i}"))
        with cur.copy("COPY (SELECT * FROM items) TO STDOUT") as copy:
            for _ in copy:
                pass
        cur.execute("SELECT count(*) FROM items", prepare=True)
        cur.execute("SELECT count(*) FROM items", prepare=True)
        cur.execute("DROP TABLE items")
    env = dict(os.environ, PGPASSWORD=server["password"])
    args = ["-h", "127.0.0.1", "-p", str(server["port"]), "-U", server["user"]]
    subprocess.run(["/usr/lib/postgresql/15/bin/pgbench", *args, "-i", "-s", "1", "-I", "dt",
                    "--unlogged-tables", server["dbname"]], env=env, check=True, capture_output=True)
    script = HERE / "postgresql" / "pgbench.sql"
    subprocess.run(["/usr/lib/postgresql/15/bin/pgbench", *args, "-n", "-t", "5", "-c", "1", "-f", str(script),
                    server["dbname"]], env=env, check=True, capture_output=True)


@contextmanager
def mysql_work(server: dict) -> None:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=server["port"], user=server["user"],
                           password=server["password"], database=server["database"], autocommit=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE items (id INT PRIMARY KEY, name TEXT)")
    cur.executemany("INSERT INTO items VALUES (%s, %s)", [(i, f"n{i}") for i in range(5)])
    cur.execute("SELECT * FROM items WHERE id < %s", (3,))
    cur.fetchall()
    for sql in ("SELECT * FROM nope", "SELEC 1", "INSERT INTO items VALUES (1, 'dup')"):
        try:
            cur.execute(sql)
        except pymysql.MySQLError:
            pass
    cur.execute("SELECT REPEAT('x', 60000)")
    cur.fetchall()
    cur.execute("UPDATE items SET name = 'm' WHERE id > 2")
    conn.ping()
    conn.close()
    subprocess.run(["mariadb", "-h", "127.0.0.1", "-P", str(server["port"]), "-u", server["user"],
                    f"-p{server['password']}", server["database"], "-e",
                    "SELECT COUNT(*) FROM items; SHOW TABLES; DELETE FROM items WHERE id = 0; DROP TABLE items"],
                   check=True, capture_output=True)


def main(names: list[str]) -> None:
    from support.http_servers import nginx_server
    from support.servers import (dnsmasq_instance, grpc_instance, kafka_instance, mariadb_instance,
                                 memcached_instance, mongo_instance, nats_instance, postgres_instance,
                                 rabbitmq_instance, redis_instance)
    from tests.captures.truth import clients

    if "redis" in names:
        with redis_instance() as srv, tcpdump(HERE / "redis" / "redis-py.pcap", srv["port"]):
            redis_work(srv["port"], srv["password"])
    if "postgresql" in names:
        with postgres_instance() as srv, tcpdump(HERE / "postgresql" / "psycopg.pcap", srv["port"]):
            postgres_work(srv)
    if "mysql" in names:
        with mariadb_instance() as srv, tcpdump(HERE / "mysql" / "pymysql.pcap", srv["port"]):
            mysql_work(srv)
    if "http" in names:
        with nginx_server() as (port, _), tcpdump(HERE / "http" / "curl-nginx.pcap", port):
            clients.http1_work(port)
    if "http2" in names:
        with nginx_server(http2=True) as (port, _), tcpdump(HERE / "http2" / "h2c-nginx.pcap", port):
            clients.http2_work(port)
    if "grpc" in names:
        with grpc_instance() as srv, tcpdump(HERE / "http2" / "grpcio.pcap", srv["port"]):
            clients.grpc_work(srv["port"])
    if "kafka" in names:
        with kafka_instance() as srv, tcpdump(HERE / "kafka" / "kafka-python.pcap", srv["port"]):
            clients.kafka_work(srv["port"])
    if "amqp" in names:
        with rabbitmq_instance() as srv, tcpdump(HERE / "amqp" / "pika.pcap", srv["port"]):
            clients.amqp_work(srv["port"])
    if "mongodb" in names:
        with mongo_instance() as srv, tcpdump(HERE / "mongodb" / "pymongo.pcap", srv["port"]):
            clients.mongo_work(srv["port"])
    if "nats" in names:
        with nats_instance() as srv, tcpdump(HERE / "nats" / "nats-py.pcap", srv["port"]):
            did = clients.nats_work(srv["port"], srv["user"], srv["password"])
        (HERE / "nats" / "nats-py.json").write_text(json.dumps(did, indent=1) + "\n")
    if "memcached" in names:
        with memcached_instance() as srv, tcpdump(HERE / "memcached" / "text-binary.pcap", srv["port"]):
            clients.memcached_work(srv["port"])
    if "dns" in names:
        with dnsmasq_instance() as srv, tcpdump(HERE / "dns" / "dig-dnsmasq.pcap", srv["port"], "any"):
            clients.dns_work(srv["port"])


if __name__ == "__main__":
    main(sys.argv[1:] or ["redis", "postgresql", "mysql", "http", "http2", "grpc", "kafka", "amqp", "mongodb",
                          "nats", "memcached", "dns"])
