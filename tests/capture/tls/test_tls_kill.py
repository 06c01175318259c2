"""kill -9 of the agent while a traced Go TLS server is under load: it keeps serving, no probe stays."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from capture.prereqs import tracefs_root
from support import tls_targets as targets
from support.live import ROOT, ebpf_or_skip, free_port

pytestmark = pytest.mark.ebpf


def wrk(port: int, seconds: int) -> subprocess.Popen:
    return subprocess.Popen(["wrk", "-t1", "-c4", f"-d{seconds}s", "--latency",
                             f"https://127.0.0.1:{port}/load"], stdout=subprocess.PIPE, text=True)


def test_kill_9_of_the_agent_under_load(go_binary, certs, tmp_path):
    ebpf_or_skip()
    port = free_port()
    err = tmp_path / "capture.err"
    with targets.go_server(go_binary, port, *certs) as server:
        with open(err, "w") as e:
            agent = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "capture", "--json",
                                      "--port", str(port)], stdout=subprocess.DEVNULL, stderr=e, cwd=ROOT)
        try:
            deadline = time.monotonic() + 240
            while f"probes on {go_binary}" not in err.read_text() or "ready" not in err.read_text():
                assert agent.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "capture not attached in time"
                time.sleep(0.2)
            load = wrk(port, 6)
            time.sleep(2.5)  # the probes fire on every request meanwhile
            assert agent.poll() is None
            os.kill(agent.pid, signal.SIGKILL)
            agent.wait(timeout=30)
            out, _ = load.communicate(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
        requests = int(re.search(r"(\d+) requests in", out)[1])
        assert requests > 100, out
        assert "Non-2xx" not in out and "Socket errors" not in out, out
        assert server.poll() is None  # still running, and still answering
        assert targets.curl(port, "/after") == "200"
    events = (tracefs_root() / "uprobe_events").read_text() if tracefs_root() else ""
    assert f"_bcc_{agent.pid}" not in events
