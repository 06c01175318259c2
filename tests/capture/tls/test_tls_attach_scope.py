"""Which process a TLS file's probes go into (capture/tls/attach.py), on real processes and the
system's OpenSSL, the kernel's links replaced by a recorder: unscoped, one attach per file for
every process (pid -1); scoped, one per process in scope and none for the others, removed when the
process is gone."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from capture.tls import attach, links

HOLD_SSL = [sys.executable, "-c", "import ssl, time; print('up', flush=True); time.sleep(60)"]


@pytest.fixture
def recorded(monkeypatch):
    calls: list[tuple[str, int]] = []
    closed: list[int] = []

    def attach_file(programs, path, probes, pid):
        calls.append((path, pid))
        return [1000 + len(calls)], list(probes), []

    monkeypatch.setattr(links, "Programs", lambda bpf: None)
    monkeypatch.setattr(links, "attach_file", attach_file)
    monkeypatch.setattr(links, "close", lambda fds: closed.extend(fds))
    return calls, closed


def _python_with_ssl():
    proc = subprocess.Popen(HOLD_SSL, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "up\n"
    return proc


def _libssl_calls(calls):
    return [pid for path, pid in calls if "libssl" in path]


def test_unscoped_probes_a_file_once_for_every_process(recorded):
    calls, _ = recorded
    a, b = _python_with_ssl(), _python_with_ssl()
    try:
        t = attach.TlsAttacher(bpf=None, memo_dir="off")
        t._scan(a.pid)
        t._scan(b.pid)
    finally:
        a.kill(), b.kill()
    assert _libssl_calls(calls) == [-1]


def test_scoped_probes_go_into_processes_in_scope_only_and_leave_with_them(recorded):
    calls, closed = recorded
    inside, outside = _python_with_ssl(), _python_with_ssl()
    try:
        t = attach.TlsAttacher(bpf=None, memo_dir="off", scope=lambda pid: pid == inside.pid)
        t._scan(inside.pid)
        t._scan(outside.pid)
        assert _libssl_calls(calls) == [inside.pid]
        assert len({f.pid for f in t.files.values()}) == 1
        held = [fd for f in t.files.values() for fd in f.links]
        inside.kill()
        inside.wait()
        time.sleep(0.05)
        t._rescan_scope()
        assert sorted(closed) == sorted(held) and not t.files
        assert t.stats["scope_processes_unprobed"] == 1
    finally:
        inside.kill(), outside.kill()


def test_a_pid_in_a_scope_and_a_pid_filter_the_filter_wins(recorded):
    calls, _ = recorded
    proc = _python_with_ssl()
    try:
        t = attach.TlsAttacher(bpf=None, pid=proc.pid, memo_dir="off", scope=lambda pid: False)
        t._scan(proc.pid)
    finally:
        proc.kill()
    assert _libssl_calls(calls) == [proc.pid]
