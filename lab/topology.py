"""What the recorder needs from a topology: start/stop, the ports to keep spans of, the
call graph, the load knob, the faults it can inject and the red herrings it can stage."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

Progress = Callable[[str], None]

STRENGTHS = ("mild", "medium", "strong")
LOADS = {"low": 0.5, "normal": 1.0, "high": 1.8}


class Mechanism(Protocol):
    def apply(self) -> None: ...
    def remove(self) -> None: ...


@dataclass
class FaultPlan:
    """One fault a topology can inject, with its ground truth."""

    fault_class: str
    service: str  # as Guardian names it
    kind: str
    make: Callable[[random.Random, str], Mechanism]  # (rng, strength) -> mechanism
    symptom: str  # "slow" | "failing" | "backlog": what a person would notice
    feature: str  # where they notice it ("checkout", "the home page")
    operation: str | None = None
    kind_aliases: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)


@dataclass
class Herring:
    """Something made noisy on purpose (a batch job, a restart) that is not the cause."""

    service: str
    make: Callable[[random.Random], Mechanism]
    batch: bool = False  # a batch job (else a restart)


class Topology(Protocol):
    name: str
    edges: list[tuple[str, str]]  # caller -> callee, as Guardian names them
    ports: dict[str, int]  # service -> listening port (spans are kept when server.port is one)
    always_herrings: list[str]  # services that are noisy all the time (always slow)
    features: list[str]  # what people call the entry points (no-fault questions)

    def prepare(self, progress: Progress) -> None: ...
    def start(self, progress: Progress) -> None: ...
    def neighbours(self, service: str) -> list[str]: ...
    def stop(self) -> None: ...
    def set_load(self, factor: float) -> None: ...
    def plans(self) -> list[FaultPlan]: ...
    def herrings(self) -> list[Herring]: ...
    def dead(self) -> list[str]: ...
    def restart_dead(self) -> list[str]: ...


def neighbours(edges: list[tuple[str, str]], service: str) -> list[str]:
    return sorted({b for a, b in edges if a == service} | {a for a, b in edges if b == service})


def port_aliases(topo: Any, service: str) -> list[str]:
    port = topo.ports.get(service)
    return [f"{service}:{port}", f"127.0.0.1:{port}"] if port else []
