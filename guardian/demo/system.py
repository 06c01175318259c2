"""The whole shop as one object: start everything in dependency order with progress
lines, and stop everything (in reverse) so that nothing is left running."""
from __future__ import annotations

import shutil
import time
from typing import Callable

from guardian.demo import infra, services
from guardian.demo.config import DemoConfig, port_conflicts
from guardian.demo.procs import DemoError, Proc

Progress = Callable[[str], None]


class ShopSystem:
    def __init__(self, cfg: DemoConfig, progress: Progress = print) -> None:
        self.cfg = cfg
        self.progress = progress
        self.procs: dict[str, Proc] = {}

    def _step(self, what: str, start: Callable[[], Proc | list[Proc]]) -> None:
        self.progress(f"starting {what} …")
        t = time.monotonic()
        got = start()
        for p in got if isinstance(got, list) else [got]:
            self.procs[p.name] = p
        self.progress(f"ready    {what} ({time.monotonic() - t:.1f}s)")

    def start(self, loadgen: bool = True) -> None:
        try:
            self.prepare()
            self.start_infra()
            self.start_services()
            if loadgen:
                self.start_loadgen()
        except BaseException:
            self.stop()
            raise

    def prepare(self) -> None:
        """Check ports, make a fresh workdir, certificates and the Go build."""
        cfg = self.cfg
        problems = port_conflicts(cfg.ports)
        if problems:
            raise DemoError("ports in use:\n  " + "\n  ".join(problems))
        if cfg.workdir.exists():
            shutil.rmtree(cfg.workdir)
        cfg.logs.mkdir(parents=True)
        cfg.control.mkdir(parents=True)
        self.progress("preparing TLS certificates and building inventory (Go) …")
        services.make_certs(cfg)
        self._inventory = services.build_inventory()

    def start_infra(self) -> None:
        cfg, p = self.cfg, self.cfg.ports
        self._step(f"dnsmasq (shop.local DNS) on :{p.dns}", lambda: infra.start_dnsmasq(cfg))
        self._step(f"PostgreSQL on :{p.postgres} (seeding 200k products)", lambda: infra.start_postgres(cfg))
        self._step(f"Redis on :{p.redis}", lambda: infra.start_redis(cfg))
        self._step(f"RabbitMQ on :{p.amqp}", lambda: infra.start_rabbitmq(cfg))

    def start_services(self) -> None:
        cfg, p = self.cfg, self.cfg.ports
        self._step(f"inventory (Go, HTTPS) on :{p.inventory}", lambda: services.start_inventory(cfg, self._inventory))
        self._step(f"payments (Node, HTTPS) on :{p.payments}", lambda: services.start_payments(cfg))
        self._step(f"recommend (Python gRPC) on :{p.recommend}", lambda: services.start_recommend(cfg))
        self._step("order-worker (RabbitMQ consumer)", lambda: services.start_worker(cfg))
        self._step(f"frontend (FastAPI) on :{p.frontend}", lambda: services.start_frontend(cfg))

    def start_loadgen(self, every_s: float = 5.0) -> None:
        self.procs["loadgen"] = services.start_loadgen(self.cfg, every_s)
        self.progress(f"ready    load generator ({self.cfg.rate:g} req/s against the frontend)")

    def add(self, proc: Proc) -> None:
        """Adopt a process (e.g. the agent) so that stop() stops it too."""
        self.procs[proc.name] = proc

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.alive()]

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            proc.stop()
        self.procs.clear()
