"""The lab's configurable service, Python flavour: HTTP routes made of steps (calls to other
services, SQL through a small connection pool, Redis commands, queue pushes, CPU work), queue
consumers, and the fault switch. Config: JSON file at $LAB_CONFIG (see lab/topologies/mesh.py).
"""
from __future__ import annotations

import http.client
import json
import os
import queue
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from demo.shoplib import name_process

CFG = json.load(open(os.environ["LAB_CONFIG"]))
NAME = CFG["name"]
name_process(NAME)

import dns.exception  # noqa: E402
import dns.resolver  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402


class StepError(Exception):
    def __init__(self, status: int, msg: str) -> None:
        super().__init__(msg)
        self.status = status


class Switch:
    """The fault the lab set for this service ({} when healthy), re-read every 250 ms."""

    def __init__(self) -> None:
        self.path = os.path.join(CFG["control"], NAME)
        self.value: dict = {}
        self.at = 0.0

    def get(self, route: str) -> dict:
        now = time.monotonic()
        if now - self.at > 0.25:
            self.at = now
            try:
                text = open(self.path).read().strip()
                self.value = json.loads(text) if text else {}
            except (OSError, ValueError):
                self.value = {}
        v = self.value
        if v and v.get("route") in (route, "*") and random.random() < v.get("p", 1.0):
            return v
        return {}


switch = Switch()


class Resolver:
    """Peers' names through the lab's dnsmasq (1 s TTL), as a stub resolver would."""

    def __init__(self) -> None:
        self.r = dns.resolver.Resolver(configure=False)
        host, port = CFG["dns"].rsplit(":", 1)
        self.r.nameservers, self.r.port = [host], int(port)
        self.r.timeout = self.r.lifetime = 1.0
        self.cache: dict[str, tuple[str, float]] = {}

    def resolve(self, name: str) -> str:
        hit = self.cache.get(name)
        if hit and hit[1] > time.monotonic():
            return hit[0]
        try:
            ans = self.r.resolve(name, "A")
        except dns.exception.DNSException as e:
            raise StepError(502, f"cannot resolve {name}: {type(e).__name__}") from e
        self.cache[name] = (ans[0].address, time.monotonic() + ans.rrset.ttl)
        return ans[0].address


resolver = Resolver()
local = threading.local()


def _conn(peer: str, timeout: float) -> http.client.HTTPConnection:
    conns = getattr(local, "conns", None)
    if conns is None:
        conns = local.conns = {}
    host, port = CFG["peers"][peer].rsplit(":", 1)
    addr = resolver.resolve(host) if CFG.get("use_dns") else "127.0.0.1"
    c = conns.get((peer, addr))
    if c is None:
        c = conns[(peer, addr)] = http.client.HTTPConnection(addr, int(port), timeout=timeout)
    c.timeout = timeout
    return c


def _exchange(peer: str, method: str, path: str, timeout: float) -> tuple[http.client.HTTPResponse, bytes]:
    """One request on this thread's kept-alive connection; a connection the server closed
    while idle is replaced once, as HTTP clients do (not a retry of the call)."""
    body = b"{}" if method == "POST" else None
    headers = {"Content-Type": "application/json"} if body else {}
    for attempt in (0, 1):
        c = _conn(peer, timeout)
        reused = c.sock is not None
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return r, r.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            _drop(c)
            if not reused or attempt:
                raise
        except (OSError, http.client.HTTPException):
            _drop(c)
            raise
    raise AssertionError("unreachable")


def _drop(c: http.client.HTTPConnection) -> None:
    c.close()
    for k, v in list(local.conns.items()):
        if v is c:
            del local.conns[k]


def call(step: dict) -> object:
    """One HTTP call, with the step's timeout and retries; the answer must carry a number."""
    peer = step["call"]
    method, path = step["route"].split(" ", 1)
    tries = 1 + step.get("retries", 0)
    last = ""
    for _ in range(tries):
        try:
            r, data = _exchange(peer, method, path, step.get("timeout", 2.0))
        except (OSError, http.client.HTTPException) as e:
            last = f"{peer}: {type(e).__name__}"
            continue
        if r.status >= 500:
            last = f"{peer} answered {r.status}"
            continue
        try:
            value = json.loads(data)["value"]
        except (ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, (int, float)):
            raise StepError(500, f"bad value from {peer}: {value!r}")
        return value
    raise StepError(502, last)


class Pool:
    """A fixed pool of PostgreSQL connections; waiting for one is bounded."""

    def __init__(self, size: int) -> None:
        self.q: queue.Queue = queue.Queue()
        self.size = size
        host, port = CFG["pg"].rsplit(":", 1)
        self.kw = dict(host=host, port=int(port), user="postgres", dbname=CFG["db"], autocommit=True)
        for _ in range(size):
            self.q.put(None)  # connected lazily

    def run(self, sql: str, hold_s: float = 0.0) -> int:
        try:
            conn = self.q.get(timeout=CFG.get("pool_wait_s", 2.0))
        except queue.Empty:
            raise StepError(503, "connection pool exhausted") from None
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(**self.kw)
            cur = conn.execute(sql.replace("$R", str(random.randint(1, 20000))))
            n = len(cur.fetchall()) if cur.description else cur.rowcount
            if hold_s:
                time.sleep(hold_s)  # a leaked transaction: the connection is not given back for a while
            return n
        except psycopg.Error as e:
            conn = None
            raise StepError(500, f"database: {type(e).__name__}") from e
        finally:
            self.q.put(conn)


pool = Pool(CFG.get("pool", 4)) if CFG.get("pg") else None
rds = None
if CFG.get("redis"):
    rh, rp = CFG["redis"].rsplit(":", 1)
    rds = redis.Redis(rh, int(rp), socket_timeout=2)
fanout = ThreadPoolExecutor(16)


def work(ms: float) -> None:
    end = time.thread_time() + ms / 1000
    x = 0
    while time.thread_time() < end:
        x += sum(i * i for i in range(200))


def run_steps(steps: list, fault: dict) -> int:
    total = 0
    for st in steps:
        if "call" in st:
            total += int(call(st))
        elif "par" in st:
            for f in [fanout.submit(call, s) for s in st["par"]]:
                total += int(f.result())
        elif "sql" in st:
            hold = fault.get("ms", 0) / 1000 if fault.get("mode") == "leak" else 0.0
            total += pool.run(st["sql"], hold)
        elif "redis" in st:
            try:
                rds.execute_command(*[a.replace("$R", str(random.randint(1, 500))) for a in st["redis"]])
            except redis.RedisError as e:
                raise StepError(500, f"redis: {type(e).__name__}") from e
            total += 1
        elif "push" in st:
            rds.lpush(st["push"], json.dumps({"from": NAME, "at": time.time()}))
        elif "work" in st:
            work(st["work"])
        elif "sleep" in st:
            time.sleep(st["sleep"] / 1000 * random.uniform(0.7, 1.3))
    return total


def handle(route: str) -> tuple[int, dict]:
    steps = CFG["routes"].get(route)
    if steps is None:
        return 404, {"ok": False, "error": "no such route"}
    fault = switch.get(route)
    mode = fault.get("mode")
    if mode == "slow":
        time.sleep(fault.get("ms", 500) / 1000)
    if mode == "error":
        return 500, {"ok": False, "error": f"{fault.get('exc', 'RuntimeError')} in {route}"}
    try:
        value = run_steps(steps, fault)
    except StepError as e:
        return e.status, {"ok": False, "error": str(e)}
    if mode == "wrong":
        return 200, {"ok": True, "value": None}
    return 200, {"ok": True, "value": value}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        route = f"{self.command} {self.path.split('?')[0]}"
        status, body = (200, {"ok": True, "value": 1}) if self.path == "/healthz" else handle(route)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _serve

    def log_message(self, *args) -> None:
        pass


def consume(qname: str, steps: list) -> None:
    """A queue consumer: BRPOP a job, run the steps (errors are logged and dropped)."""
    r = redis.Redis(rh, int(rp), socket_timeout=5)
    while True:
        try:
            item = r.brpop([qname], timeout=1)
            if item:
                run_steps(steps, switch.get(f"consume {qname}"))
        except (StepError, redis.RedisError) as e:
            print(f"{NAME}: job failed: {e}", flush=True)
            time.sleep(0.1)


def main() -> None:
    for qname, steps in CFG.get("consume", {}).items():
        for _ in range(CFG.get("consumers", 1)):
            threading.Thread(target=consume, args=(qname, steps), daemon=True).start()
    if CFG.get("port"):
        srv = ThreadingHTTPServer(("127.0.0.1", CFG["port"]), Handler)
        srv.daemon_threads = True
        srv.request_queue_size = 128
        print(f"{NAME} listening on {CFG['port']}", flush=True)
        srv.serve_forever()
    else:
        print(f"{NAME} consuming", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
