"""`guardian capture` stops within 5 s of SIGTERM with TLS probes attached (OpenSSL and Go files)
while a saturating HTTPS client keeps its ring buffer full: the TLS part of a stop (removing the
probes, the attacher's worker) on top of the data path's (tests/capture/live/test_live_stop.py)."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture
from support.tls_targets import wait_for_log

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]


def test_sigterm_with_tls_probes_and_a_full_backlog_exits_within_five_seconds(tmp_path, go_binary, certs):
    cert, key = certs
    port, go_port = free_port(), free_port()
    with targets.go_server(go_binary, go_port, cert, key), targets.nginx_tls(port, cert, key, tmp_path):
        with live_capture(port=port, extra=("--ringbuf-pages", "64")) as cap:
            wait_for_log(cap, f"probes on {go_binary}")
            wrk = subprocess.Popen(["wrk", "-t1", "-c50", "-d12s", f"https://127.0.0.1:{port}/"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(4)  # the agent is behind: the 256 KiB ring stays full
                start = time.monotonic()
                cap.proc.send_signal(signal.SIGTERM)
                cap.proc.wait(timeout=60)
                took = time.monotonic() - start
                assert wrk.poll() is None, "the load ended before the stop: nothing was measured"
            finally:
                wrk.wait()
    assert took < 5.0, f"exit took {took:.1f} s after SIGTERM"
    stats = cap.stats
    assert stats["tls.files_probed"] >= 2 and stats["tls.probes"] >= 10, stats
    assert stats["tls.kernel.plaintext"] > 0, "the TLS probes saw no plaintext: they were not in the load's path"
    assert stats["kernel.ringbuf_drops"] > 0, "the ring was never full: the test measured nothing"
    assert any(s["kind"] == "SERVER" for s in cap.spans)
