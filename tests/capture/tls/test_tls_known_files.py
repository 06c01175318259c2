"""Live: a TLS binary an earlier start found is probed at the next start, before it runs again,
so a client that talks in its first moment after exec is seen from its first request (probed at
its exec instead, its first calls go unseen while the agent reads it: hundreds of milliseconds
when the agent is busy and the host loaded)."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from support import tls_targets as targets
from support.tls_targets import wait_for_log
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

REQUESTS = 5


def test_a_client_seen_at_an_earlier_start_is_probed_at_start(tmp_path, go_binary, certs):
    cert, key = certs
    client = tmp_path / "go-known"  # a file no agent has seen yet
    shutil.copy(go_binary, client)
    port = free_port()
    url = f"https://127.0.0.1:{port}/known"
    with targets.go_server(go_binary, port, cert, key):
        with live_capture(port=port) as first:
            run = subprocess.Popen([str(client), "client", "-url", url + "/first", "-n", "1", "-wait-stdin"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            wait_for_log(first, f"probes on {client}")
            run.communicate(b"go\n", timeout=60)
            assert run.returncode == 0
        with live_capture(port=port) as second:
            # probed at start: before any process of the file runs
            wait_for_log(second, f"probes on {client}")
            go = subprocess.run([str(client), "client", "-url", url + "/second", "-n", str(REQUESTS)],
                                capture_output=True, timeout=60)
            assert go.returncode == 0, go.stderr
    learned = [line for line in first.stderr.splitlines() if f"probes on {client}" in line]
    assert len(learned) == 1 and "after its exec" in learned[0], learned
    known = [line for line in second.stderr.splitlines() if f"probes on {client}" in line]
    assert len(known) == 1 and "after its exec" not in known[0], known
    clients = [s for s in second.spans if s["kind"] == "CLIENT"
               and s["attributes"].get("url.path", "").startswith("/known/second")]
    assert len(clients) == REQUESTS, [s["attributes"]["url.path"] for s in clients]
    assert {s["attributes"].get("tls.library") for s in clients} == {"go"}
