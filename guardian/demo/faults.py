"""The faults the demo can inject, each a real change to the running system, with how to
undo it and what Guardian's top root cause should say about it.

`services`/`kinds` are the expected top root cause (guardian.report.Kind); a peer seen only
from its clients may also be named by address (`127.0.0.1:<its port>`, see `blames`).
`route` and `symptom` are what the load generator should feel.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from guardian.demo import infra
from guardian.demo.config import Ports
from guardian.demo.system import ShopSystem


@dataclass
class Fault:
    name: str
    description: str
    services: tuple[str, ...]  # the top root cause must name one of these (or "name:port")
    kinds: tuple[str, ...]  # ... with one of these kinds
    route: str  # load generator route that feels it
    symptom: str  # "errors" | "latency" | "backlog"
    question: str
    inject: Callable[[ShopSystem], None] = field(repr=False)
    reset: Callable[[ShopSystem], None] = field(repr=False)
    port: str | None = None  # Ports field of the culprit, for address-named peers
    ops: tuple[str, ...] = ()  # operation prefixes that name the culprit whichever side reports it

    def names(self, service: str | None, ports: Ports) -> bool:
        svc = str(service or "")
        if self.port and svc == f"127.0.0.1:{getattr(ports, self.port)}":
            return True
        return svc in self.services or svc.rsplit(":", 1)[0] in self.services

    def blames(self, root_cause: dict, ports: Ports) -> bool:
        """Does a report's root cause name this fault's service and kind?"""
        op = str(root_cause.get("operation") or "")
        named = self.names(root_cause.get("service"), ports) or (self.ops and op.startswith(self.ops))
        return bool(named) and root_cause.get("kind") in self.kinds


def _control(service: str, mode: str) -> Callable[[ShopSystem], None]:
    """Flip a service's fault switch (the file its code polls every 250 ms)."""
    def apply(shop: ShopSystem) -> None:
        path = shop.cfg.control / service
        tmp = path.with_suffix(".tmp")
        tmp.write_text(mode)
        os.replace(tmp, path)
        time.sleep(0.5)  # every runtime has seen it
    return apply


def _sql(statement: str) -> Callable[[ShopSystem], None]:
    """Run DDL over PostgreSQL's unix socket (not loopback TCP: not part of the observed traffic)."""
    def apply(shop: ShopSystem) -> None:
        import psycopg

        with psycopg.connect(host=str(shop.cfg.workdir / "postgres"), port=shop.cfg.ports.postgres,
                             user="postgres", dbname="shop", autocommit=True) as conn:
            conn.execute(statement)
    return apply


def _signal(proc: str, sig: int) -> Callable[[ShopSystem], None]:
    def apply(shop: ShopSystem) -> None:
        os.kill(shop.procs[proc].pid, sig)
    return apply


def _dns(missing: tuple[str, ...]) -> Callable[[ShopSystem], None]:
    """Rewrite the zone without `missing` names and make dnsmasq re-read it (SIGHUP)."""
    def apply(shop: ShopSystem) -> None:
        infra.write_hosts(shop.cfg, missing)
        os.kill(shop.procs["dnsmasq"].pid, signal.SIGHUP)
        time.sleep(1.2)  # answers cached by clients expire (TTL 1 s)
    return apply


class _Stalls:
    """Redis freezing for 150 ms of every 200 ms (SIGSTOP/SIGCONT), as under a blocking
    command, a fork for a snapshot on a big dataset, or swapping: every command waits."""

    def __init__(self) -> None:
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def inject(self, shop: ShopSystem) -> None:
        pid = shop.procs["redis"].pid
        self._stop = stop = threading.Event()

        def loop() -> None:
            try:
                while not stop.is_set():
                    os.kill(pid, signal.SIGSTOP)
                    stop.wait(0.15)
                    os.kill(pid, signal.SIGCONT)
                    stop.wait(0.05)
            except ProcessLookupError:
                pass
            finally:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass

        self._thread = threading.Thread(target=loop, name="redis-stalls", daemon=True)
        self._thread.start()

    def reset(self, shop: ShopSystem) -> None:
        if self._stop:
            self._stop.set()
            self._thread.join(2)
            self._stop = self._thread = None


_stalls = _Stalls()

FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("slow-query", "the index on products.sku is dropped: inventory's product lookups and "
          "reservations become sequential scans of 200k rows",
          ("postgresql", "postgres"), ("latency",), "product", "latency",
          "why did product pages get slow?",
          _sql("DROP INDEX IF EXISTS products_sku_idx"),
          _sql("CREATE UNIQUE INDEX IF NOT EXISTS products_sku_idx ON products (sku)"), "postgres"),
    Fault("downstream-5xx", "payments answers 503 (its card processor is down): checkouts fail",
          ("payments",), ("error",), "checkout", "errors",
          "why are checkouts failing?", _control("payments", "error"), _control("payments", ""), "payments"),
    Fault("service-latency", "recommend (gRPC) takes 600 ms per call: product pages slow down",
          ("recommend",), ("latency",), "product", "latency",
          "why are product pages slow?", _control("recommend", "slow"), _control("recommend", ""), "recommend"),
    Fault("redis-slow", "redis-server stalls 150 ms of every 200 ms: every cache call waits",
          # redis-check-rdb: Debian's redis-server is a symlink to it (the executable's name)
          ("redis", "redis-server", "redis-check-rdb"), ("latency",), "browse", "latency",
          "why is the shop slow?", _stalls.inject, _stalls.reset, "redis"),
    Fault("consumer-stopped", "the order worker hangs (SIGSTOP): orders pile up in RabbitMQ",
          ("order-worker",), ("traffic",), "checkout", "backlog",
          "are orders being processed?", _signal("order-worker", signal.SIGSTOP),
          _signal("order-worker", signal.SIGCONT)),
    Fault("dns-failure", "payments.shop.local disappears from DNS (NXDOMAIN): checkouts fail",
          ("dnsmasq", "dns"), ("dependency", "error"), "checkout", "errors",
          "why are checkouts failing?", _dns(("payments",)), _dns(()), "dns", ("DNS ",)),
    Fault("tls-failure", "inventory serves a certificate its clients don't trust: every TLS "
          "handshake to it fails",
          ("inventory",), ("dependency", "error"), "product", "errors",
          "why is the shop failing?", _control("inventory", "bad-cert"), _control("inventory", ""), "inventory"),
    Fault("pool-exhaustion", "inventory leaks database transactions until its pool of 8 "
          "connections is exhausted: requests wait, then fail",
          ("inventory",), ("saturation",), "product", "errors",
          "why is inventory failing?", _control("inventory", "leak"), _control("inventory", "")),
)}


def symptom_seen(fault: Fault, before: dict, during: dict) -> bool:
    """Did the load generator feel the fault? (stats lines from services.last_stats)"""
    b, d = before.get(fault.route) or {}, during.get(fault.route) or {}
    if fault.symptom == "errors":
        return d.get("errors", 0) >= max(2, 0.3 * d.get("count", 0))
    if fault.symptom == "latency":
        # a median half again as long and 10 ms longer is felt: the fault adds about the same
        # time on any host (a sequential scan, a stall) while the page's baseline carries its
        # host's speed and load (a product page of 15 ms on one run, 25 ms on another)
        base = max(b.get("p50_ms") or 0, 1.0)
        return (d.get("p50_ms") or 0) > max(1.5 * base, base + 10)
    return True  # backlog: not visible to shoppers; checked on the queue
