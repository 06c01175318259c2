"""`guardian demo` options that need no running system: faults list, ports, conflicts."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from guardian.demo.config import Ports, port_conflicts
from guardian.demo.faults import FAULTS

EXPECTED_FAULTS = {"slow-query", "downstream-5xx", "service-latency", "redis-slow", "consumer-stopped",
                   "dns-failure", "tls-failure", "pool-exhaustion"}


def guardian(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guardian.cli.main", "demo", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_list_faults_names_every_fault():
    out = guardian("--list-faults")
    assert out.returncode == 0, out.stderr
    listed = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    assert listed == EXPECTED_FAULTS == set(FAULTS)


def test_ports_option_parses_and_rejects():
    p = Ports()
    p.update("frontend=9080, api=9800")
    assert (p.frontend, p.api, p.redis) == (9080, 9800, Ports().redis)
    for bad in ("nosuch=1", "redis=0", "redis=70000", "redis=x"):
        with pytest.raises(ValueError):
            Ports().update(bad)
    out = guardian("--ports", "nosuch=1")
    assert out.returncode == 2 and "unknown port name 'nosuch'" in out.stderr


def test_port_in_use_gives_a_clear_message():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        ports = Ports().shifted(0)
        ports.update(f"redis={taken}")
        problems = port_conflicts(ports)
        assert any(f"redis: 127.0.0.1:{taken}/tcp is in use" in p and "--ports redis=PORT" in p
                   for p in problems), problems
        out = guardian("--no-agent", "--ports", f"redis={taken}", "--workdir", "/tmp/guardian-demo-conflict")
        assert out.returncode == 1
        assert f"redis: 127.0.0.1:{taken}/tcp is in use" in out.stderr


def test_duplicate_ports_are_reported():
    ports = Ports()
    ports.update(f"payments={ports.inventory}")
    assert any("given to both inventory and payments" in p for p in port_conflicts(ports))


def test_a_latency_fault_is_felt_by_what_it_adds_not_by_the_hosts_baseline():
    from guardian.demo.faults import FAULTS, symptom_seen

    slow = FAULTS["slow-query"]
    seen = lambda b, d: symptom_seen(slow, {slow.route: {"p50_ms": b}}, {slow.route: {"p50_ms": d}})  # noqa: E731
    assert seen(24.4, 38.7) and seen(15.0, 26.0)  # the same scan on a slower and a faster host
    assert not seen(24.4, 30.0)  # a quarter longer: noise
    assert not seen(2.0, 8.0)  # four times a tiny median, 6 ms: nobody feels it
