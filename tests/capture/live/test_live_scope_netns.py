"""Live eBPF capture scoped to a network namespace in the kernel (bpf/scope.h): a server and its
client in a namespace the test creates are captured; a server and client pair outside it never
becomes a ring record (`guardian capture` judges nothing in userspace: a span of theirs could only
come from a record) and the kernel counts the calls it did not follow."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from support.live import free_port, live_capture
from support.process import process

pytestmark = pytest.mark.ebpf

INNER_PORT = 38080  # the namespace's own loopback: no other test's server is there


@pytest.fixture
def netns():
    """A fresh network namespace with its loopback up, deleted after (its processes first)."""
    name = f"gscope-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "pids", name], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in(ns: str | None, cmd: list[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd] if ns else cmd


def _get(ns: str | None, port: int, n: int) -> None:
    client = [sys.executable, "-c",
              "import sys, urllib.request\n"
              "for i in range(int(sys.argv[2])):\n"
              "    urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/scope-{i}', timeout=10).read()\n",
              str(port), str(n)]
    subprocess.run(_in(ns, client), check=True, timeout=60)


def _wait_inside(ns: str, port: int, timeout_s: float = 20.0) -> None:
    probe = [sys.executable, "-c", "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)",
             str(port)]
    deadline = time.monotonic() + timeout_s
    while subprocess.run(_in(ns, probe), capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {ns}:{port}")
        time.sleep(0.1)


def test_only_the_namespaces_processes_become_spans_and_the_kernel_drops_the_rest(netns, tmp_path):
    for i in range(20):
        (tmp_path / f"scope-{i}").write_text("x")
    outer = free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    inner_srv = subprocess.Popen(_in(netns, [*server, str(INNER_PORT)]), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
    try:
        _wait_inside(netns, INNER_PORT)
        with process([*server, str(outer)], outer):
            with live_capture(extra=("--netns", f"/var/run/netns/{netns}", "--no-tls")) as cap:
                _get(netns, INNER_PORT, 10)
                _get(None, outer, 20)  # outside: server and client
    finally:
        inner_srv.terminate()
        inner_srv.wait(10)
    assert cap.stats.get("scope.netns_in_kernel") == 1, cap.stats
    assert cap.stats.get("kernel.scope_skipped", 0) > 0, cap.stats
    ports = [(s["kind"], int(s["attributes"].get("server.port") or 0)) for s in cap.spans]
    assert not [p for p in ports if p[1] == outer], "spans of processes outside the namespace"
    assert sum(1 for k, p in ports if k == "SERVER" and p == INNER_PORT) == 10, (ports, cap.stats)
    assert sum(1 for k, p in ports if k == "CLIENT" and p == INNER_PORT) == 10, ports
