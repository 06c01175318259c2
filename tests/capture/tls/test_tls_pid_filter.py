"""Live: with --pid, the TLS uprobes go into that process only. Another process using the same
OpenSSL file takes no breakpoint at all: the kernel never maps its uprobe trampoline page
([uprobes] in /proc/PID/maps, made at a process's first uprobe hit) there."""
from __future__ import annotations

from pathlib import Path

import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf


def uprobe_hit(pid: int) -> bool:
    return "[uprobes]" in Path(f"/proc/{pid}/maps").read_text()


def other_captures(own: int) -> list[int]:
    """Other `guardian capture` or `guardian agent` processes on the host: theirs probe every
    OpenSSL user."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if d.name.isdigit() and int(d.name) != own and b"guardian.cli.main" in cmd and (b"capture" in cmd or b"agent" in cmd):
            out.append(int(d.name))
    return out


def test_pid_filter_puts_no_probe_in_other_processes(certs):
    cert, key = certs
    port_in, port_out = free_port(), free_port()
    with targets.asyncio_server(port_in, cert, key) as inside, targets.asyncio_server(port_out, cert, key) as outside:
        with live_capture(pid=inside.pid) as cap:
            for i in range(5):
                assert targets.curl(port_in, f"/in/{i}") == "200"
                assert targets.curl(port_out, f"/out/{i}") == "200"
            took_probes = uprobe_hit(inside.pid), uprobe_hit(outside.pid)
            others = other_captures(cap.proc.pid)
    servers = [s for s in cap.spans if s["kind"] == "SERVER"]
    assert sorted(s["attributes"]["url.path"] for s in servers) == [f"/in/{i}" for i in range(5)], cap.stats
    assert {s["resource"]["process.pid"] for s in servers} == {inside.pid}
    assert took_probes[0]
    # a capture run by someone else on a shared host probes the outside process too (never in CI)
    assert not took_probes[1] or others
