"""Seeded generator of realistic multi-service traffic with injected faults (for evals and bench).

Topology: frontend -> inventory/recommendations/checkout; checkout -> redis, inventory,
DNS, payments, postgresql, rabbitmq -> fulfillment. Two red herrings are always on:
recommendations fails ~15% of calls and reporting runs a 1.5 s query, before and during.
Spans follow what the capture emits (OpenTelemetry semconv; CLIENT parent of SERVER).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Iterator

from capture.span import Span

MS = 1_000_000


@dataclass
class Fault:
    """What changes after the fault starts; empty = healthy traffic."""

    slow: dict[str, tuple[float, float]] = field(default_factory=dict)  # "svc op" -> ms range
    extra_self_ms: dict[str, float] = field(default_factory=dict)  # service -> added own time
    # service -> steady own time added before its first downstream call (a slow step, a sleep)
    before_calls_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, tuple[float, int, str, str]] = field(default_factory=dict)  # key -> p, code, msg, type
    dns_fail: float = 0.0
    tls_fail: float = 0.0
    pool_wait_ms: tuple[float, float] | None = None  # checkout waits for a DB connection
    pool_timeout: float = 0.0  # share of those waits that time out
    consumer_stopped: bool = False
    # db system -> ms range its calls wait unread before it begins them (a stalled server);
    # the system's SERVER spans are captured too (before and during), linked to the calls
    stalls: dict[str, tuple[float, float]] = field(default_factory=dict)
    # the queue as eBPF capture sees it: the broker's own spans, and the consumer's deliveries
    # and acks as its calls to the broker, each its own trace (not linked to the publish)
    broker_seen: bool = False


class _Gen:
    def __init__(self, seed: int, fault: Fault, fault_start_ns: int):
        self.rng = random.Random(seed)
        self.fault, self.fault_start = fault, fault_start_ns
        self.tag = seed & 0xFFFFFFFF
        self.n = 0
        self.out: list[Span] = []
        self.active = False

    def ids(self) -> tuple[str, str]:
        self.n += 1
        return f"{self.tag:08x}{self.n:024x}", f"{self.tag:04x}{self.n:012x}"

    def dur(self, ms: float, key: str) -> int:
        if self.active and key in self.fault.slow:
            return int(self.rng.uniform(*self.fault.slow[key]) * MS)
        return int(ms * math.exp(self.rng.gauss(0, 0.25)) * MS)

    def fail(self, key: str) -> tuple[int, str, str] | None:
        if self.active and key in self.fault.errors:
            p, code, msg, etype = self.fault.errors[key]
            if self.rng.random() < p:
                return code, msg, etype
        return None

    def span(self, trace: str, parent: str | None, service: str, name: str, kind: str, t: int,
             d: int, attrs: dict, error: tuple[str, str | None] | None = None,
             span_id: str | None = None) -> Span:
        sid = span_id or self.ids()[1]
        s = Span(name=name, kind=kind, start_time_unix_nano=t, end_time_unix_nano=t + d,
                 status_code="ERROR" if error else "OK", attributes=attrs,
                 resource={"service.name": service, "k8s.namespace.name": "shop",
                           "k8s.pod.name": f"{service}-7d9f-{self.tag % 97:02d}"},
                 trace_id=trace, span_id=sid, parent_span_id=parent,
                 status_message=error[0] if error else "")
        if error and error[1]:
            s.attributes["error.type"] = error[1]
        self.out.append(s)
        return s

    # -- call kinds ------------------------------------------------------------------------
    def db(self, trace, parent, caller, t, system, op, table, sql, ms) -> tuple[int, bool]:
        key = f"{system} {op} {table}" if system != "redis" else f"redis {op}"
        d = self.dur(ms, key)
        err = self.fail(key)
        port = {"postgresql": 5432, "redis": 6379}[system]
        host = {"postgresql": "postgres", "redis": "redis"}[system]
        name = f"{op} {table}" if system != "redis" else op
        attrs = {"db.system": system, "db.operation.name": op, "db.query.text": sql,
                 "server.address": host, "server.port": port}
        if table and system != "redis":
            attrs["db.collection.name"] = table
        cid = None
        if system in self.fault.stalls:  # the server side is seen: its span under the call
            cid = self.ids()[1]
            unread = int(self.rng.uniform(*self.fault.stalls[system]) * MS) if self.active else 0
            net = int(self.rng.uniform(0.05, 0.2) * MS)
            self.span(trace, cid, host, name, "SERVER", t + net // 2 + unread, d, dict(attrs),
                      (err[1], err[2]) if err else None)
            d += net + unread
        self.span(trace, parent, caller, name, "CLIENT", t, d, attrs,
                  (err[1], err[2]) if err else None, span_id=cid)
        return d, err is not None

    def http(self, trace, parent, caller, callee, method, path, t, body) -> tuple[int, int]:
        """CLIENT span in caller, SERVER span in callee running `body`; (client ns, status)."""
        _, cid = self.ids()
        net = int(self.rng.uniform(0.2, 0.6) * MS)
        sd, status = self.server(trace, cid, callee, method, path, t + net // 2, body)
        self.span(trace, parent, caller, f"{method} {path}", "CLIENT", t, sd + net,
                  {"http.request.method": method, "url.path": path, "server.address": callee,
                   "server.port": 8080, "http.response.status_code": status},
                  (f"HTTP {status}", str(status)) if status >= 500 else None, span_id=cid)
        return sd + net, status

    def server(self, trace, parent, service, method, path, t, body) -> tuple[int, int]:
        """SERVER span; body(trace, span_id, t) -> (elapsed ns, status, message) runs inside it."""
        _, sid = self.ids()
        own = int(self.rng.uniform(0.3, 1.5) * MS)
        before = own // 2
        if self.active and service in self.fault.before_calls_ms:
            before += int(self.fault.before_calls_ms[service] * self.rng.uniform(0.95, 1.05) * MS)
            own += before - own // 2
        elapsed, status, msg = body(trace, sid, t + before)
        if self.active and service in self.fault.extra_self_ms:  # work after the calls return
            own += int(self.fault.extra_self_ms[service] * self.rng.uniform(0.8, 1.3) * MS)
        err = self.fail(f"{service} {method} {path}")
        if err:
            status, msg = err[0], err[1]
        attrs = {"http.request.method": method, "url.path": path, "http.route": path,
                 "http.response.status_code": status}
        self.span(trace, parent, service, f"{method} {path}", "SERVER", t, own + elapsed, attrs,
                  (msg, None) if status >= 500 else None, span_id=sid)
        return own + elapsed, status

    def dns(self, trace, parent, caller, t, name) -> tuple[int, bool]:
        failed = self.active and self.rng.random() < self.fault.dns_fail
        d = int(self.rng.uniform(0.3, 1.2) * MS) + (int(self.rng.uniform(2, 5) * 1e3 * MS) if failed else 0)
        self.span(trace, parent, caller, "DNS A", "CLIENT", t, d,
                  {"dns.question.name": name, "server.address": "coredns", "server.port": 53,
                   "network.transport": "udp"},
                  ("SERVFAIL: lookup timed out", "SERVFAIL") if failed else None)
        return d, not failed

    # -- service bodies: (trace, span id, t) -> (elapsed ns, status, message) -----------------
    def inventory_stock(self, trace, sid, t):
        d, err = self.db(trace, sid, "inventory", t, "postgresql", "SELECT", "products",
                         "SELECT id, stock FROM products WHERE id = $1", 4)
        return d, 500 if err else 200, "database error" if err else ""

    def inventory_reserve(self, trace, sid, t):
        d, err = self.db(trace, sid, "inventory", t, "postgresql", "UPDATE", "stock",
                         "UPDATE stock SET reserved = reserved + $1 WHERE product_id = $2", 5)
        return d, 500 if err else 200, "reserve failed: database error" if err else ""

    def recommendations(self, trace, sid, t):
        work = self.dur(25, "recommendations")
        if self.rng.random() < 0.15:  # red herring: always this noisy
            return work, 500, "model not loaded: feature store timeout"
        return work, 200, ""

    def payments_charge(self, trace, sid, t):
        work = self.dur(30, "payments charge")
        d, err = self.db(trace, sid, "payments", t + work, "postgresql", "INSERT", "payments",
                         "INSERT INTO payments (order_id, amount, status) VALUES ($1, $2, $3)", 3)
        return work + d, 500 if err else 200, "payment not recorded" if err else ""

    def checkout_cart(self, trace, sid, t):
        d, err = self.db(trace, sid, "checkout", t, "redis", "HGETALL", "", "HGETALL cart:{id}", 0.8)
        return d, 500 if err else 200, "cart unavailable" if err else ""

    def checkout_orders(self, trace, sid, t):
        f, cur = self.fault, t
        if self.active and f.pool_wait_ms:
            if self.rng.random() < f.pool_timeout:
                return 3000 * MS, 503, "timeout acquiring connection from pool (size 10, 10 in use)"
            cur += int(self.rng.uniform(*f.pool_wait_ms) * MS)
        d, _ = self.db(trace, sid, "checkout", cur, "redis", "GET", "", "GET session:{id}", 0.8)
        cur += d
        d, st = self.http(trace, sid, "checkout", "inventory", "POST", "/reserve", cur,
                          self.inventory_reserve)
        cur += d
        if st >= 500:
            return cur - t, 502, "inventory reserve failed"
        d, ok = self.dns(trace, sid, "checkout", cur, "payments.shop.svc.cluster.local")
        cur += d
        if not ok:
            return cur - t, 503, "upstream connect error: cannot resolve payments"
        if self.active and self.rng.random() < f.tls_fail:
            d = int(self.rng.uniform(2, 6) * MS)
            self.span(trace, sid, "checkout", "POST /charge", "CLIENT", cur, d,
                      {"http.request.method": "POST", "url.path": "/charge",
                       "server.address": "payments", "server.port": 443},
                      ("x509: certificate has expired or is not yet valid", "tls_handshake_failure"))
            return cur + d - t, 502, "payment provider unavailable"
        d, st = self.http(trace, sid, "checkout", "payments", "POST", "/charge", cur,
                          self.payments_charge)
        cur += d
        if st >= 500:
            return cur - t, 502, "payment failed"
        for op, table, sql, ms in (
                ("INSERT", "orders", "INSERT INTO orders (user_id, total) VALUES ($1, $2)", 3),
                ("SELECT", "orders", "SELECT * FROM orders WHERE user_id = $1 ORDER BY created_at"
                                     " DESC LIMIT 5", 6)):
            d, err = self.db(trace, sid, "checkout", cur, "postgresql", op, table, sql, ms)
            cur += d
            if err:
                return cur - t, 500, "order not saved: database error"
        cur += self.publish(trace, sid, cur)
        return cur - t, 200, ""

    def publish(self, trace, parent, t) -> int:
        d = int(self.rng.uniform(0.3, 1.0) * MS)
        msg = {"messaging.system": "rabbitmq", "messaging.destination.name": "orders",
               "server.address": "rabbitmq", "server.port": 5672}
        p = self.span(trace, parent, "checkout", "publish orders", "PRODUCER", t, d,
                      dict(msg, **{"messaging.operation.type": "publish"}))
        if self.fault.broker_seen:
            self.span(trace, p.span_id, "rabbitmq", "publish orders", "SERVER", t + d // 4, d // 2,
                      dict(msg, **{"messaging.operation.type": "publish"}))
            if not (self.active and self.fault.consumer_stopped):
                self.fetched(t + d + int(self.rng.uniform(5, 60) * MS), msg)
            return d
        if not (self.active and self.fault.consumer_stopped):
            ct = t + d + int(self.rng.uniform(5, 60) * MS)
            _, sid = self.ids()
            dd, _ = self.db(trace, sid, "fulfillment", ct + MS, "postgresql", "UPDATE", "orders",
                            "UPDATE orders SET status = 'queued' WHERE id = $1", 3)
            self.span(trace, p.span_id, "fulfillment", "process orders", "CONSUMER", ct,
                      dd + int(self.rng.uniform(2, 8) * MS),
                      dict(msg, **{"messaging.operation.type": "process"}), span_id=sid)
        return d

    def fetched(self, t: int, msg: dict) -> None:
        """The consumer's side of one message when it fetches: deliver, record, ack."""
        for op, kind in (("deliver", "receive"), ("UPDATE", ""), ("ack", "settle")):
            trace, _ = self.ids()
            if op == "UPDATE":
                d, _ = self.db(trace, None, "fulfillment", t, "postgresql", "UPDATE", "orders",
                               "UPDATE orders SET status = 'queued' WHERE id = $1", 3)
            else:
                d, cid = int(self.rng.uniform(0.1, 0.4) * MS), self.ids()[1]
                attrs = dict(msg, **{"messaging.operation.type": kind})
                self.span(trace, cid, "rabbitmq", f"{op} orders", "SERVER", t + d // 4, d // 2, dict(attrs))
                self.span(trace, None, "fulfillment", f"{op} orders", "CLIENT", t, d, attrs, span_id=cid)
            t += d + int(self.rng.uniform(0.2, 1.0) * MS)

    def frontend_products(self, trace, sid, t):
        d1, st = self.http(trace, sid, "frontend", "inventory", "GET", "/stock", t,
                           self.inventory_stock)
        d2, _ = self.http(trace, sid, "frontend", "recommendations", "GET", "/recommendations",
                          t + d1, self.recommendations)  # failures tolerated: shown without recs
        return d1 + d2, 502 if st >= 500 else 200, "stock unavailable" if st >= 500 else ""

    def frontend_cart(self, trace, sid, t):
        d, st = self.http(trace, sid, "frontend", "checkout", "GET", "/cart", t, self.checkout_cart)
        return d, 502 if st >= 500 else 200, "cart unavailable" if st >= 500 else ""

    def frontend_checkout(self, trace, sid, t):
        d, st = self.http(trace, sid, "frontend", "checkout", "POST", "/orders", t,
                          self.checkout_orders)
        return d, 502 if st >= 500 else 200, "checkout failed" if st >= 500 else ""

    def reporting(self, trace, sid, t):
        d, _ = self.db(trace, sid, "reporting", t, "postgresql", "SELECT", "sales",
                       "SELECT date_trunc('day', created_at), sum(total) FROM orders GROUP BY 1", 1500)
        if self.rng.random() < 0.4:  # red herring: always broken
            return d, 500, "report template missing"
        return d, 200, ""


ENTRIES = (("GET", "/products", 0.40, "frontend_products"), ("GET", "/cart", 0.25, "frontend_cart"),
           ("POST", "/checkout", 0.35, "frontend_checkout"))


def generate(fault: Fault | None, seed: int, start_ns: int, duration_s: float, rate: float = 1.0,
             fault_at: float = 0.5) -> Iterator[list[Span]]:
    """Batches of spans (one per request) for `duration_s` of traffic at `rate` req/s."""
    g = _Gen(seed, fault or Fault(), start_ns + int(duration_s * fault_at * 1e9))
    end = start_ns + int(duration_s * 1e9)
    t, t_rep = start_ns, start_ns
    while True:
        t += int(g.rng.expovariate(rate) * 1e9)
        while t_rep < t:  # the reporting job runs on its own, whatever the fault
            trace, _ = g.ids()
            g.server(trace, None, "reporting", "GET", "/report", t_rep, g.reporting)
            t_rep += int(g.rng.expovariate(0.1) * 1e9)
        if t >= end:
            break
        g.active = fault is not None and t >= g.fault_start
        r, acc = g.rng.random(), 0.0
        for method, path, share, body in ENTRIES:
            acc += share
            if r < acc:
                break
        trace, _ = g.ids()
        g.server(trace, None, "frontend", method, path, t, getattr(g, body))
        yield g.out
        g.out = []
