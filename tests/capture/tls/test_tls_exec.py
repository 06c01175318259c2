"""Live: TLS clients that talk in their first moment after exec.

A dynamically linked OpenSSL (curl, Python) is probed in its library file at start: a new
process that maps it has the breakpoints from its first call, nothing to wait for. A binary
never seen before (Go, statically linked TLS) is probed when the agent has read it after
its exec; the time that takes is measured and reported (tls.exec_to_probes_ms_max).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from support import tls_targets as targets
from support.tls_targets import wait_for_log
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

PY_CLIENT = """
import ssl, sys, urllib.request
ctx = ssl._create_unverified_context()
urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}{sys.argv[2]}", context=ctx).read()
"""
GO_REQUESTS, GO_EVERY_MS = 40, 10  # from its first moment on, for 400 ms
EXEC_TO_PROBES_MS = 150  # bound on a loaded 2-core host (the test reports the time it saw)


@pytest.fixture(scope="module")
def captured(tmp_path_factory, go_binary, certs):
    d = tmp_path_factory.mktemp("tlsexec")
    cert, key = certs
    server_bin, fresh = d / "go-server", d / "go-fresh"  # fresh: a file the agent never saw
    shutil.copy(go_binary, server_bin)
    shutil.copy(go_binary, fresh)
    port = free_port()
    with targets.go_server(server_bin, port, cert, key):
        with live_capture(port=port) as cap:
            wait_for_log(cap, f"probes on {server_bin}")
            for i in range(3):  # each one a new process, talking at once
                assert targets.curl(port, f"/exec/curl-{i}") == "200"
                subprocess.run([sys.executable, "-c", PY_CLIENT, str(port), f"/exec/py-{i}"], check=True,
                               timeout=60)
            go = subprocess.run([str(fresh), "client", "-url", f"https://127.0.0.1:{port}/exec/go",
                                 "-n", str(GO_REQUESTS), "-every", f"{GO_EVERY_MS}ms", "-numbered"],
                                capture_output=True, timeout=60)
            assert go.returncode == 0, go.stderr
            wait_for_log(cap, f"probes on {fresh}")
    return cap, fresh


def paths(cap, kind: str, prefix: str) -> list[str]:
    return sorted(s["attributes"]["url.path"] for s in cap.spans
                  if s["kind"] == kind and s["attributes"]["url.path"].startswith(prefix))


def test_dynamic_openssl_clients_are_seen_from_their_first_call(captured):
    cap, _ = captured
    assert paths(cap, "CLIENT", "/exec/curl-") == [f"/exec/curl-{i}" for i in range(3)]
    assert paths(cap, "CLIENT", "/exec/py-") == [f"/exec/py-{i}" for i in range(3)]
    assert paths(cap, "SERVER", "/exec/curl-") == [f"/exec/curl-{i}" for i in range(3)]


def test_new_go_binary_is_probed_milliseconds_after_exec(captured):
    cap, fresh = captured
    took = float(re.search(rf"probes on {re.escape(str(fresh))}, ([\d.]+) ms after its exec", cap.stderr)[1])
    print(next(line for line in cap.stderr.splitlines() if f"probes on {fresh}" in line))
    assert took < EXEC_TO_PROBES_MS
    assert cap.stats["tls.exec_to_probes_ms_max"] >= took
    every = [f"/exec/go-{i}" for i in range(GO_REQUESTS)]
    assert sorted(paths(cap, "SERVER", "/exec/go-")) == sorted(every)  # the server was probed before
    # the fresh client: what it said before its probes is missed, everything after is seen
    seen = [p for p in every if p in paths(cap, "CLIENT", "/exec/go-")]
    missed = GO_REQUESTS - len(seen)
    print(f"fresh Go client: probes {took} ms after exec, first {missed} of {GO_REQUESTS} requests "
          f"({GO_EVERY_MS} ms apart) missed")
    assert seen == every[missed:]
    assert missed * GO_EVERY_MS <= took + GO_EVERY_MS
