"""The demo shop (guardian/demo) as a lab topology: its launcher, its services, and the
lab's fault mechanisms aimed at them (plus the demo's own switches where one fits)."""
from __future__ import annotations

import random
import signal
from pathlib import Path

from guardian.demo import infra, services
from guardian.demo.config import DemoConfig, Ports
from guardian.demo.system import ShopSystem
from lab import faults as F
from lab.certs import expired_cert
from lab.topology import FaultPlan, Herring, neighbours, port_aliases

EDGES = [("loadgen", "frontend"), ("frontend", "inventory"), ("frontend", "payments"),
         ("frontend", "recommend"), ("frontend", "redis"), ("frontend", "rabbitmq"),
         ("frontend", "dnsmasq"), ("recommend", "redis"), ("recommend", "dnsmasq"),
         ("inventory", "postgres"), ("order-worker", "rabbitmq"), ("order-worker", "postgres"),
         ("order-worker", "dnsmasq"), ("batch-job", "postgres")]

BASE_RATE = 4.0


class Shop:
    name = "shop"
    edges = EDGES
    always_herrings: list[str] = []
    features = ["the shop", "product pages", "checkout"]

    def __init__(self, workdir: str | None = None, port_base: int | None = None) -> None:
        ports = Ports().shifted((port_base or 21000) - 18000)
        self.cfg = DemoConfig(ports=ports, workdir=Path(workdir or "/tmp/guardian-lab-shop"),
                              rate=BASE_RATE, agent=False)
        self.shop = ShopSystem(self.cfg, print)
        p = self.cfg.ports
        self.ports = {"frontend": p.frontend, "inventory": p.inventory, "payments": p.payments,
                      "recommend": p.recommend, "postgres": p.postgres, "redis": p.redis,
                      "rabbitmq": p.amqp, "dnsmasq": p.dns}

    # ---- lifecycle ----
    def prepare(self, progress) -> None:
        """Fresh workdir, certificates, the Go build: nothing running yet."""
        self.shop.progress = progress
        self.shop.prepare()
        certs = self.cfg.workdir / "certs"
        # the "bad" certificate becomes one the shop's CA signed but that expired yesterday
        expired_cert(certs / "ca.crt", certs / "ca.key", certs / "bad.crt", certs / "bad.key",
                     "inventory.shop.local")

    def start(self, progress) -> None:
        try:
            self.shop.start_infra()
            self.shop.start_services()
            self.shop.start_loadgen()
        except BaseException:
            self.shop.stop()
            raise

    def stop(self) -> None:
        self.shop.stop()

    def dead(self) -> list[str]:
        return self.shop.dead()

    def restart_dead(self) -> list[str]:
        return []

    def set_load(self, factor: float) -> None:
        rate = round(BASE_RATE * factor, 2)
        if rate == self.cfg.rate and "loadgen" in self.shop.procs:
            return
        self.shop.procs.pop("loadgen").stop()
        self.cfg.rate = rate
        self.shop.start_loadgen()

    def pid(self, name: str) -> int:
        proc = {"order-worker": "order-worker"}.get(name, name)
        return self.shop.procs[proc].pid

    # ---- faults ----
    def _truth(self, svc: str) -> dict:
        return {"aliases": port_aliases(self, svc) + (["redis-server", "redis-check-rdb"] if svc == "redis" else [])
                + (["postgresql"] if svc == "postgres" else []) + (["dns"] if svc == "dnsmasq" else [])}

    def plans(self) -> list[FaultPlan]:
        out: list[FaultPlan] = []
        feat = {"inventory": "product pages", "payments": "checkout", "recommend": "product pages",
                "redis": "the shop", "postgres": "product pages", "frontend": "the shop"}
        for svc in ("inventory", "payments", "recommend", "redis", "postgres"):
            port = self.ports[svc]
            t = self._truth(svc)
            out += [
                FaultPlan("network_delay", svc, "network", lambda r, s, port=port: F.Shape(
                    port, {"mild": 128, "medium": 64, "strong": 24}[s]), "slow", feat[svc],
                    kind_aliases=["latency"], **t),
                FaultPlan("network_loss", svc, "network", lambda r, s, port=port: F.Loss(
                    port, {"mild": 15, "medium": 25, "strong": 40}[s]), "slow", feat[svc],
                    kind_aliases=["latency", "error"], **t),
                FaultPlan("network_jitter", svc, "network", lambda r, s, port=port: F.Shape(
                    port, {"mild": 48, "medium": 24, "strong": 12}[s], 100_000, r.randrange(10**6)),
                    "slow", feat[svc], kind_aliases=["latency"], **t),
            ]
        for svc in ("inventory", "payments", "recommend", "frontend"):
            t = self._truth(svc)
            out += [
                FaultPlan("cpu_contention", svc, "saturation", lambda r, s, svc=svc: F.CpuContention(
                    svc, self.pid(svc), 4, F.CONTENTION_SHARE[s]), "slow", feat[svc],
                    kind_aliases=["latency"], **t),
                FaultPlan("cpu_throttle", svc, "saturation", lambda r, s, svc=svc: F.CpuThrottle(
                    svc, self.pid(svc), {"mild": 0.004, "medium": 0.002, "strong": 0.001}[s], 1_000_000),
                    "slow", feat[svc],
                    kind_aliases=["latency"], **t),
            ]
        for svc in ("inventory", "payments", "recommend", "redis", "postgres"):
            out.append(FaultPlan("process_pause", svc, "latency", lambda r, s, svc=svc: F.Pause(
                self.pid(svc), {"mild": 0.15, "medium": 0.3, "strong": 0.6}[s], 0.4), "slow", feat[svc],
                kind_aliases=["saturation"], **self._truth(svc)))
        ctl = self.cfg.control
        sock = str(self.cfg.workdir / "postgres")
        pg = self.ports["postgres"]
        out += [
            FaultPlan("process_pause", "order-worker", "traffic", lambda r, s: F.Pause(
                self.pid("order-worker"), 0, 0), "backlog", "orders", **self._truth("order-worker")),
            FaultPlan("exception", "payments", "error", lambda r, s: F.Switch(ctl / "payments", "error"),
                      "failing", "checkout", operation="POST /charge", **self._truth("payments")),
            FaultPlan("slow_query", "postgres", "latency", lambda r, s: F.Sql(
                sock, pg, "shop", "DROP INDEX IF EXISTS products_sku_idx",
                "CREATE UNIQUE INDEX IF NOT EXISTS products_sku_idx ON products (sku)"), "slow", "product pages",
                **self._truth("postgres")),
            FaultPlan("lock_contention", "postgres", "latency", lambda r, s: F.Sql(
                sock, pg, "shop", "BEGIN; LOCK TABLE products IN SHARE ROW EXCLUSIVE MODE", "", hold=True),
                "slow", "checkout", operation="UPDATE products", kind_aliases=["saturation"],
                **self._truth("postgres")),
            FaultPlan("pool_exhaustion", "inventory", "saturation", lambda r, s: F.Switch(ctl / "inventory", "leak"),
                      "failing", "product pages", kind_aliases=["error", "latency"], **self._truth("inventory")),
            FaultPlan("dns_failure", "dnsmasq", "dependency", lambda r, s: F.Hosts(
                infra.hosts_file(self.cfg), self.pid("dnsmasq"),
                {f"{h}.shop.local": "127.0.0.1" for h in infra.SERVICE_HOSTS}, ["payments.shop.local"]),
                "failing", "checkout", kind_aliases=["error"], **self._truth("dnsmasq")),
            FaultPlan("tls_expiry", "inventory", "dependency", lambda r, s: F.Switch(ctl / "inventory", "bad-cert"),
                      "failing", "the shop", kind_aliases=["error"], **self._truth("inventory")),
        ]
        return out

    def herrings(self) -> list[Herring]:
        return [Herring("recommend", lambda r: Restart(self, "recommend")),
                Herring("batch-job", lambda r: BatchJob(self.cfg, r), batch=True)]

    def neighbours(self, svc: str) -> list[str]:
        return neighbours(self.edges, svc)


class Restart:
    """An unrelated service restarted in the window (a deploy): its traffic stops and resumes."""

    def __init__(self, shop: Shop, name: str) -> None:
        self.shop, self.name = shop, name

    def apply(self) -> None:
        self.shop.shop.procs.pop(self.name).stop()
        starter = getattr(services, f"start_{self.name}")
        self.shop.shop.procs[self.name] = starter(self.shop.cfg)

    def remove(self) -> None:
        pass


class BatchJob:
    """A reporting job hammering PostgreSQL with aggregate queries for a while (its own spans
    are slow; the shop's are not much affected)."""

    def __init__(self, cfg: DemoConfig, rng: random.Random) -> None:
        self.cfg, self.rng = cfg, rng
        self.proc = None

    def apply(self) -> None:
        import sys

        from guardian.demo.procs import spawn

        env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OTEL_SERVICE_NAME": "batch-job",
               "LAB_PG": f"127.0.0.1:{self.cfg.ports.postgres}", "LAB_DB": "shop",
               "LAB_SQL": "SELECT name, count(*), sum(stock) FROM products GROUP BY name ORDER BY 2 DESC LIMIT 5"}
        self.proc = spawn("batch-job", [sys.executable, "-m", "lab.services.batch"], self.cfg.logs / "batch.log", env=env)

    def remove(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None


_ = signal  # SIGSTOP lives in lab.faults
