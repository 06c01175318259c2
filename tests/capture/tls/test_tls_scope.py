"""Live: a capture scoped to a cgroup puts its TLS uprobes into the scope's processes only (one
attach per process). A process outside using the same OpenSSL file takes no breakpoint at all (the
kernel never maps its uprobe trampoline page, [uprobes] in /proc/PID/maps, made at a process's
first uprobe hit); one that joins the scope later is probed by the attacher's rescan."""
from __future__ import annotations

import sys
import time

import pytest

from capture.tls.attach import SCOPE_RESCAN_S
from support import tls_targets as targets
from support.cgroups import inside, temp_cgroup
from support.live import free_port, live_capture
from support.process import process

from .test_tls_pid_filter import other_captures, uprobe_hit

pytestmark = pytest.mark.ebpf


def _server(port: int, cert, key) -> list[str]:
    return [sys.executable, "-c", targets.ASYNCIO_SERVER, str(cert), str(key), str(port)]


def test_scoped_capture_probes_only_the_scopes_processes(certs):
    cert, key = certs
    port_in, port_out, port_late = free_port(), free_port(), free_port()
    with temp_cgroup() as (path, d):
        with process(inside(d, _server(port_in, cert, key)), port_in) as in_srv, \
                process(_server(port_out, cert, key), port_out) as out_srv, \
                process(_server(port_late, cert, key), port_late) as late_srv:
            with live_capture(extra=("--cgroup", path)) as cap:
                for i in range(5):
                    assert targets.curl(port_in, f"/in/{i}") == "200"
                    assert targets.curl(port_out, f"/out/{i}") == "200"
                took_probes = uprobe_hit(in_srv.pid), uprobe_hit(out_srv.pid)
                others = other_captures(cap.proc.pid)
                (d / "cgroup.procs").write_text(str(late_srv.pid))  # joins the scope now
                time.sleep(SCOPE_RESCAN_S * 2.5)
                for i in range(3):
                    assert targets.curl(port_late, f"/late/{i}") == "200"
    servers = [s for s in cap.spans if s["kind"] == "SERVER"]
    paths = sorted(s["attributes"]["url.path"] for s in servers)
    assert paths == sorted([f"/in/{i}" for i in range(5)] + [f"/late/{i}" for i in range(3)]), cap.stats
    assert {s["resource"]["process.pid"] for s in servers} == {in_srv.pid, late_srv.pid}
    assert cap.stats.get("tls.processes_probed", 0) >= 2, cap.stats
    assert took_probes[0]
    # a capture run by someone else on a shared host probes the outside process too (never in CI)
    assert not took_probes[1] or others
