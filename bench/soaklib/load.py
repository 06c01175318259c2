"""The soak's own servers (nginx HTTP/1 + h2c, Redis, Memcached, NATS on free loopback
ports) and a mixed-protocol load of real clients against them (plus the shop's PostgreSQL
and RabbitMQ when the shop runs), counting every request's outcome per phase.

It does not judge the agent: the harness compares the counts between phases."""
from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable

from guardian.demo.procs import Proc, port_open, spawn, wait_until
from support import nginx
from support.ports import free_port


class Servers:
    """Started in order, stopped in reverse; ports in `ports`."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "soak-servers"
        self.logs = workdir / "logs"
        self.ports: dict[str, int] = {}
        self.procs: list[Proc] = []

    def _start(self, name: str, argv: list[str], port: int) -> None:
        proc = spawn(f"soak-{name}", argv, self.logs / f"soak-{name}.log", env={"OTEL_SERVICE_NAME": f"soak-{name}"})
        self.procs.append(proc)
        wait_until(proc, lambda: port_open(port), 30, f"soak {name}")

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        p = self.ports = {k: free_port() for k in ("http1", "http2", "redis", "memcached", "nats")}
        (self.dir / "nginx.conf").write_text(nginx.conf(self.dir, [
            f"listen 127.0.0.1:{p['http1']}; {nginx.API_ECHO}",
            f"listen 127.0.0.1:{p['http2']} http2; {nginx.API_ECHO}"], connections=1024))
        self._start("nginx", ["nginx", "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)], p["http1"])
        wait_until(None, lambda: port_open(p["http2"]), 10, "nginx h2c")
        self._start("redis", ["redis-server", "--port", str(p["redis"]), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--set-proc-title", "no"], p["redis"])
        self._start("memcached", ["memcached", "-l", "127.0.0.1", "-p", str(p["memcached"]), "-U", "0",
                                  "-u", "nobody"], p["memcached"])
        self._start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(p["nats"])], p["nats"])

    def dead(self) -> list[str]:
        return [p.name for p in self.procs if not p.alive()]

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


class Tally:
    """ok / failed counts per (phase, client) and failures by type; thread-safe."""

    def __init__(self, phase: Callable[[], str]) -> None:
        self.phase = phase
        self.lock = threading.Lock()
        self.ok: Counter[tuple[str, str]] = Counter()
        self.failed: Counter[tuple[str, str]] = Counter()
        self.kinds: dict[str, Counter[str]] = defaultdict(Counter)  # phase -> "client: Error" -> n

    def add(self, client: str, phase: str, error: BaseException | None) -> None:
        with self.lock:
            if error is None:
                self.ok[(phase, client)] += 1
            else:
                self.failed[(phase, client)] += 1
                self.kinds[phase][f"{client}: {type(error).__name__}: {str(error)[:80]}"] += 1


class Client:
    """One real client doing one small exchange per op; reconnects after a failure."""

    name = "?"

    def connect(self) -> None: ...

    def op(self) -> None: ...

    def close(self) -> None: ...


class Http1(Client):
    name = "http1"

    def __init__(self, port: int, http2: bool = False) -> None:
        self.port, self.http2 = port, http2
        self.name = "http2" if http2 else "http1"
        self.c = None

    def connect(self) -> None:
        import httpx

        self.c = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0,
                              http1=not self.http2, http2=self.http2)

    def op(self) -> None:
        r = self.c.get(f"/api/item/{random.randint(1, 1000)}?q=soak")
        if r.status_code != 200 or not r.text.startswith("ok "):
            raise RuntimeError(f"HTTP {r.status_code}")

    def close(self) -> None:
        if self.c is not None:
            self.c.close()


class Redis(Client):
    name = "redis"

    def __init__(self, port: int) -> None:
        self.port, self.r = port, None

    def connect(self) -> None:
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def op(self) -> None:
        k = f"soak:{random.randint(1, 200)}"
        self.r.set(k, "v" * random.randint(1, 2000))
        if self.r.get(k) is None:
            raise RuntimeError("GET after SET returned nil")
        if self.r.get("soak:missing") is not None:  # a cache miss: a nil reply
            raise RuntimeError("miss returned a value")
        p = self.r.pipeline(transaction=False)
        p.incr("soak:n").lpush("soak:l", "x").ltrim("soak:l", 0, 50)
        p.execute()

    def close(self) -> None:
        if self.r is not None:
            self.r.close()


class _Line(Client):
    """A text protocol over one socket."""

    def __init__(self, port: int) -> None:
        self.port, self.s, self.buf = port, None, b""

    def connect(self) -> None:
        self.s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.buf = b""

    def until(self, end: bytes) -> bytes:
        while end not in self.buf:
            got = self.s.recv(65536)
            if not got:
                raise ConnectionError("server closed")
            self.buf += got
        i = self.buf.index(end) + len(end)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def close(self) -> None:
        if self.s is not None:
            self.s.close()


class Memcached(_Line):
    name = "memcached"

    def op(self) -> None:
        k, v = f"soak{random.randint(1, 100)}", b"x" * random.randint(1, 3000)
        self.s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k.encode(), len(v), v))
        if self.until(b"\r\n") != b"STORED\r\n":
            raise RuntimeError("set not STORED")
        self.s.sendall(b"get %s soakmiss\r\n" % k.encode())
        if not self.until(b"END\r\n").startswith(b"VALUE "):
            raise RuntimeError("get without VALUE")


class Nats(_Line):
    name = "nats"

    def connect(self) -> None:
        super().connect()
        self.until(b"\r\n")  # INFO
        self.s.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\nSUB soak.x 1\r\n')

    def op(self) -> None:
        body = b"m" * random.randint(1, 1000)
        self.s.sendall(b"PUB soak.x %d\r\n%s\r\nPING\r\n" % (len(body), body))
        got = self.until(b"PONG\r\n")
        if b"MSG soak.x 1" not in got:
            raise RuntimeError("published message not delivered before PONG")


class Postgres(Client):
    name = "postgres"

    def __init__(self, port: int) -> None:
        self.port, self.conn = port, None

    def connect(self) -> None:
        import psycopg

        self.conn = psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="shop",
                                    autocommit=True, connect_timeout=5)
        self.conn.execute("SET statement_timeout = 5000")

    def op(self) -> None:
        n = random.randint(1, 200000)
        row = self.conn.execute("SELECT sku, price_cents FROM products WHERE id = %s", (n,)).fetchone()
        if row is None:
            raise RuntimeError(f"product {n} missing")
        self.conn.execute("SELECT count(*) FROM generate_series(1, %s)", (random.randint(1, 500),)).fetchone()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


class Amqp(Client):
    name = "amqp"

    def __init__(self, port: int) -> None:
        self.port, self.conn, self.ch = port, None, None

    def connect(self) -> None:
        import pika

        self.conn = pika.BlockingConnection(pika.ConnectionParameters(
            "127.0.0.1", self.port, socket_timeout=5, blocked_connection_timeout=5))
        self.ch = self.conn.channel()
        self.ch.queue_declare("soak", auto_delete=True)

    def op(self) -> None:
        body = b"o" * random.randint(1, 2000)
        self.ch.basic_publish("", "soak", body)
        for _ in range(50):
            method, _props, got = self.ch.basic_get("soak", auto_ack=True)
            if method is not None:
                return
            time.sleep(0.02)
        raise RuntimeError("published message not back from the queue")

    def close(self) -> None:
        try:
            if self.conn is not None and self.conn.is_open:
                self.conn.close()
        except Exception:  # noqa: BLE001 - closing after a failure may fail again
            pass


def run_client(client: Client, rate: float, tally: Tally, stop: threading.Event) -> None:
    """`rate` ops per second until stop; a failed op (or connect) is counted, then reconnect."""
    connected = False
    nxt = time.monotonic()
    while not stop.is_set():
        nxt += 1.0 / rate
        phase = tally.phase()
        try:
            if not connected:
                client.connect()
                connected = True
            client.op()
            tally.add(client.name, phase, None)
        except Exception as e:  # noqa: BLE001 - every failure is a data point
            if not stop.is_set():
                tally.add(client.name, phase, e)
            client.close()
            connected = False
        stop.wait(max(0.0, nxt - time.monotonic()))
    client.close()


def clients(ports: dict[str, int], shop_ports=None) -> list[Client]:
    out: list[Client] = [Http1(ports["http1"]), Http1(ports["http2"], http2=True), Redis(ports["redis"]),
                         Memcached(ports["memcached"]), Nats(ports["nats"])]
    if shop_ports is not None:
        out += [Postgres(shop_ports.postgres), Amqp(shop_ports.amqp)]
    return out


def start(clients_: list[Client], rate: float, tally: Tally, stop: threading.Event) -> list[threading.Thread]:
    threads = [threading.Thread(target=run_client, args=(c, rate, tally, stop), name=f"soak-{c.name}", daemon=True)
               for c in clients_]
    for t in threads:
        t.start()
    return threads
