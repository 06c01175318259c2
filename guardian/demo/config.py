"""Ports and directories of one demo run, and the port-conflict check."""
from __future__ import annotations

import socket
from dataclasses import dataclass, field, fields
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEMO_SRC = REPO / "demo"
BUILD_CACHE = DEMO_SRC / ".run"  # git-ignored: the compiled Go service lives here

# The private DNS zone the services resolve each other in (served by dnsmasq).
ZONE = "shop.local"


@dataclass
class Ports:
    """Loopback TCP ports; dns is also UDP. Defaults sit in a quiet range."""

    frontend: int = 18080
    inventory: int = 18443
    payments: int = 18444
    recommend: int = 18051
    postgres: int = 18432
    redis: int = 18379
    amqp: int = 18672
    amqp_dist: int = 18673
    epmd: int = 18369
    dns: int = 18053
    api: int = 18800

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def update(self, spec: str) -> None:
        """Apply "name=port,name=port" (e.g. "frontend=9080,api=9800")."""
        for item in filter(None, (s.strip() for s in spec.split(","))):
            name, _, value = item.partition("=")
            if name not in self.names():
                raise ValueError(f"unknown port name {name!r}; known: {', '.join(self.names())}")
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"bad port for {name}: {value!r}")
            setattr(self, name, int(value))

    def shifted(self, offset: int) -> "Ports":
        return Ports(**{n: getattr(self, n) + offset for n in self.names()})


@dataclass
class DemoConfig:
    ports: Ports = field(default_factory=Ports)
    workdir: Path = Path("/tmp/guardian-demo")  # data dirs, logs, certs, control files
    rate: float = 8.0  # load generator requests per second
    agent: bool = True  # run `guardian agent` (eBPF) alongside

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def control(self) -> Path:
        return self.workdir / "control"


def port_conflicts(ports: Ports) -> list[str]:
    """Ports already taken (TCP, plus UDP for dns), as readable lines; [] when all are free."""
    problems = []
    values = [(n, getattr(ports, n)) for n in ports.names()]
    seen: dict[int, str] = {}
    for name, port in values:
        if port in seen:
            problems.append(f"port {port} is given to both {seen[port]} and {name}")
        seen[port] = name
    for name, port in values:
        kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if name == "dns" else [])
        for kind in kinds:
            with socket.socket(socket.AF_INET, kind) as s:
                # REUSEADDR: a port in TIME_WAIT from a previous run is free to listen on.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", port))
                except OSError as e:
                    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                    problems.append(f"{name}: 127.0.0.1:{port}/{proto} is in use ({e.strerror}); "
                                    f"choose another with --ports {name}=PORT or --port-offset N")
    return problems
