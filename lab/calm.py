"""What happens in a no-fault window besides nothing (`lab.record --calm KINDS`): the red
herrings a calm window carries in real life. None of them is an incident; the investigator
should name no cause. Each is a mechanism (apply/remove) over a running topology."""
from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

from guardian.demo.procs import spawn

REPO = Path(__file__).resolve().parents[1]
# batch, restart: the topology's own herrings; cold: the first window after the topology's start
# (short baseline); past-end: the window runs on past the recorded data; the rest are below
# as Guardian names the bad client's process (`python -m` module): its red_herrings label
BAD_CLIENT = "lab.services.badclient"
KINDS = ("plain", "batch", "restart", "load-up", "load-down", "drift", "bad-client", "cold", "past-end")


class LoadStep:
    """Traffic doubles (or halves) for every entry route at once, and stays so."""

    def __init__(self, topo, factor: float, by: float) -> None:
        self.topo, self.factor, self.by = topo, factor, by

    def apply(self) -> None:
        self.topo.set_load(round(self.factor * self.by, 2))

    def remove(self) -> None:
        pass


class Drift:
    """Traffic creeping up (or down) across baseline and window, a step every few seconds
    (a diurnal curve, compressed): rates and latency move with it, nothing breaks."""

    def __init__(self, topo, factor: float, to: float, seconds: float, steps: int = 10) -> None:
        self.topo, self.factor, self.to, self.seconds, self.steps = topo, factor, to, seconds, steps
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _run(self) -> None:
        for k in range(1, self.steps + 1):
            if self.stop.wait(self.seconds / self.steps):
                return
            self.topo.set_load(round(self.factor * (1 + (self.to - 1) * k / self.steps), 2))

    def apply(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def remove(self) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join(5)


class BadClient:
    """A client asking an entry service for a route it does not have (4xx), a few a second."""

    def __init__(self, port: int, logs: Path, rng: random.Random) -> None:
        self.port, self.logs, self.rate = port, logs, rng.choice((1.0, 2.0, 4.0))
        self.proc = None

    def apply(self) -> None:
        env = {"PYTHONPATH": str(REPO), "LAB_PORT": str(self.port), "LAB_RATE": str(self.rate),
               "LAB_NAME": "bad-client"}
        self.proc = spawn("bad-client", [sys.executable, "-m", "lab.services.badclient"],
                          self.logs / "bad-client.log", env=env, cwd=REPO)

    def remove(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None


def entry_port(topo) -> int:
    """The port of the service people reach first (the load generator's first entry)."""
    first = next(b for a, b in topo.edges if a == "loadgen") if not hasattr(topo, "spec") \
        else topo.spec["entries"][0][0]
    return topo.ports[first]
