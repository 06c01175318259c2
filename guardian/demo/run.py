"""One demo session: the shop, `guardian agent` watching it with eBPF, then a fault that
Guardian's scheduled anomaly detection has to find, and the investigation of it."""
from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
import yaml

from guardian.demo.config import REPO, DemoConfig
from guardian.demo.faults import Fault
from guardian.demo.procs import DemoError, Proc, spawn, wait_until
from guardian.demo.system import Progress, ShopSystem

# service.name of everything the demo runs (OTEL_SERVICE_NAME or the executable): an
# anomaly report "found the fault" only when it names one of these.
SHOP_SERVICES = ("frontend", "inventory", "payments", "recommend", "order-worker", "loadgen",
                 "postgres", "redis", "redis-server", "rabbitmq", "dnsmasq")


# Spans reach the store after the linker waited for their peers (agent linker.window_s, 5 s):
# a window ending "now" misses its last seconds, which reads as a traffic drop everywhere.
STORE_LAG_S = 7.0


@dataclass
class Detection:
    report: dict[str, Any]  # the scheduled anomaly report (GET /v1/reports/{id})
    after_s: float  # seconds from injection to that report

    @property
    def top(self) -> dict[str, Any]:
        return _shop_anomalies(self.report)[0]


def _shop_anomalies(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in report.get("anomalies", [])
            if a.get("service") in SHOP_SERVICES or a.get("caller") in SHOP_SERVICES]


class DemoRun:
    def __init__(self, cfg: DemoConfig, progress: Progress = print, interval_s: float = 10.0,
                 window_s: int = 20) -> None:
        self.cfg, self.progress = cfg, progress
        self.shop = ShopSystem(cfg, progress)
        self.interval_s, self.window_s = interval_s, window_s
        self.token = secrets.token_urlsafe(16)
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{cfg.ports.api}", timeout=60,
                                headers={"Authorization": f"Bearer {self.token}"})

    def start(self) -> None:
        """The agent first (it compiles its probes while the servers start), so that it sees
        every connection the services open from their first byte (HTTP/2 and AMQP state)."""
        try:
            self.shop.prepare()
            agent = self.spawn_agent() if self.cfg.agent else None
            self.shop.start_infra()
            if agent:
                self.wait_agent(agent)
            self.shop.start_services()
            self.shop.start_loadgen()
        except BaseException:
            self.stop()
            raise

    def spawn_agent(self) -> Proc:
        """`guardian agent` on the whole host with scheduled anomaly reports every interval_s."""
        conf = self.cfg.workdir / "guardian.yaml"
        conf.write_text(yaml.safe_dump({
            "api": {"port": self.cfg.ports.api, "token": self.token, "host": "127.0.0.1"},
            "schedule": {"interval_s": self.interval_s, "window": f"{self.window_s}s",
                         "history_path": str(self.cfg.workdir / "reports.jsonl")},
            "store": {"path": str(self.cfg.workdir / "guardian.duckdb")},
            "log": {"format": "text", "level": "WARNING"},
        }))
        self.progress(f"starting guardian agent (eBPF capture + API on :{self.cfg.ports.api}) in the background …")
        self._agent_t0 = time.monotonic()
        proc = spawn("guardian-agent", [sys.executable, "-m", "guardian.cli.main", "agent", "--config", str(conf)],
                     self.cfg.logs / "guardian-agent.log", cwd=REPO)
        self.shop.add(proc)
        return proc

    def wait_agent(self, proc: Proc) -> None:
        self.progress("waiting for guardian agent (compiling and attaching eBPF probes) …")
        wait_until(proc, lambda: any(line.strip() == "ready" for line in proc.tail(200).splitlines()),
                   300, "guardian agent")  # BCC compiles the probes at start: slow on a busy host
        wait_until(proc, lambda: self.api.get("/healthz").status_code == 200, 30, "guardian API")
        self.progress(f"ready    guardian agent ({time.monotonic() - self._agent_t0:.1f}s)")
        self.progress(f"console  http://127.0.0.1:{self.cfg.ports.api}/  (sign in with the API token: {self.token})")

    def wait(self, seconds: float, why: str) -> None:
        self.progress(f"{why} ({seconds:.0f}s) …")
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            dead = self.shop.dead()
            if dead:
                raise DemoError(f"stopped unexpectedly: {', '.join(dead)} (logs in {self.cfg.logs})")
            time.sleep(min(1.0, max(end - time.monotonic(), 0)))

    def inject(self, fault: Fault) -> float:
        self.progress(f"injecting fault {fault.name}: {fault.description}")
        fault.inject(self.shop)
        return time.time()

    def reset(self, fault: Fault) -> None:
        self.progress(f"resetting fault {fault.name}")
        fault.reset(self.shop)

    def detect(self, since: float, timeout: float = 90.0) -> Detection:
        """Wait for a scheduled report made after `since` whose window is mostly after it
        and that names a shop service."""
        self.progress("waiting for Guardian's scheduled anomaly detection …")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.api.get("/v1/reports", params={"since": f"{since:.3f}", "anomalies_only": "true"})
            r.raise_for_status()
            for rep in reversed(r.json()["reports"]):  # oldest first
                fault_share = (rep["window"]["end_ns"] / 1e9 - since) / max(self.window_s, 1)
                if fault_share >= 0.4 and _shop_anomalies(rep):
                    det = Detection(rep, rep["at_ns"] / 1e9 - since)
                    self.progress(f"detected after {det.after_s:.0f}s: {det.top.get('description')}")
                    return det
            time.sleep(1.0)
        raise DemoError(f"Guardian's anomaly reports found nothing about the shop within {timeout:.0f}s "
                        f"(agent log: {self.cfg.logs / 'guardian-agent.log'})")

    def investigate(self, question: str, since: float, min_fault_s: float = 20.0) -> dict[str, Any]:
        """POST /v1/investigate over [since - 1 s, now - STORE_LAG_S] (its baseline: the
        equal window before), once that window holds at least min_fault_s of the fault."""
        wait = since + min_fault_s + STORE_LAG_S - time.time()
        if wait > 0:
            self.wait(wait, "letting the fault's spans reach the store")
        self.progress(f"investigating: {question!r} …")
        body = {"question": question, "start": f"{since - 1:.3f}", "end": f"{time.time() - STORE_LAG_S:.3f}"}
        r = self.api.post("/v1/investigate", json=body, timeout=180)
        if r.status_code != 200:
            raise DemoError(f"investigation failed: {r.status_code} {r.text[:500]}")
        return r.json()

    def stop(self) -> None:
        self.progress("stopping everything …")
        self.shop.stop()
        self.api.close()
