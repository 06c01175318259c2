"""Live eBPF capture scoped to a cgroup in the kernel (bpf/scope.h): a server and its clients in a
cgroup v2 directory the test creates are captured; the same traffic from processes outside it never
becomes a ring record (0 spans of it) and the kernel counts what it did not follow. The cgroup
removed and made again (a new id) is followed without a restart."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.cgroups import inside, temp_cgroup
from support.live import free_port, live_capture
from support.process import process

pytestmark = pytest.mark.ebpf


@pytest.fixture
def cgroup():
    with temp_cgroup() as made:
        yield made


def _get(port: int, n: int, cgroup_dir: Path | None) -> None:
    client = [sys.executable, "-c",
              "import sys, urllib.request\n"
              "for i in range(int(sys.argv[2])):\n"
              "    urllib.request.urlopen(f'http://127.0.0.1:{sys.argv[1]}/scope-{i}', timeout=10).read()\n",
              str(port), str(n)]
    subprocess.run(inside(cgroup_dir, client) if cgroup_dir else client, check=True, timeout=60)


def test_only_the_cgroups_processes_become_spans_and_the_kernel_counts_the_rest(cgroup, tmp_path):
    path, d = cgroup
    (tmp_path / "scope-0").write_text("x")
    for i in range(1, 20):
        (tmp_path / f"scope-{i}").write_text("x")
    inner, outer = free_port(), free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path)]
    with process(inside(d, [*server, str(inner)]), inner), process([*server, str(outer)], outer) as out_srv:
        assert str(out_srv.pid) not in (d / "cgroup.procs").read_text()
        with live_capture(extra=("--cgroup", path, "--no-tls")) as cap:
            _get(inner, 10, d)
            _get(outer, 20, None)  # outside: server and client
            _get(inner, 10, None)  # client outside, server inside: only the SERVER side
    assert cap.stats.get("kernel.scope_skipped", 0) > 0, cap.stats
    ports = [(s["kind"], int(s["attributes"].get("server.port") or 0)) for s in cap.spans]
    assert not [p for p in ports if p[1] == outer], "spans of processes outside the cgroup"
    servers = sum(1 for k, p in ports if k == "SERVER" and p == inner)
    clients = sum(1 for k, p in ports if k == "CLIENT" and p == inner)
    assert servers == 20, ports  # every request the inside server answered
    assert clients == 10, ports  # only the inside client's
    assert os.path.isdir(d)


def test_the_cgroup_removed_and_made_again_is_followed(cgroup, tmp_path):
    from capture.live import SCOPE_CHECK_S

    path, d = cgroup
    for i in range(10):
        (tmp_path / f"scope-{i}").write_text("x")
    port = free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(tmp_path), str(port)]
    with live_capture(extra=("--cgroup", path, "--no-tls")) as cap:
        old = os.stat(d).st_ino
        d.rmdir()
        d.mkdir()  # the same path, a new cgroup: a new id for the kernel's check
        assert os.stat(d).st_ino != old
        time.sleep(SCOPE_CHECK_S * 2.5)
        with process(inside(d, server), port):
            _get(port, 10, d)
    ports = [(s["kind"], int(s["attributes"].get("server.port") or 0)) for s in cap.spans]
    assert sum(1 for k, p in ports if k == "SERVER" and p == port) == 10, (ports, cap.stats)
    assert sum(1 for k, p in ports if k == "CLIENT" and p == port) == 10, ports
    assert cap.stats.get("scope.cgroup_recreated") == 1, cap.stats
