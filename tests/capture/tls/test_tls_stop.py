"""`guardian capture --pid` stops within 5 s of SIGTERM with TLS probes attached while saturating
clients keep its ring buffer full: one nginx worker serving plain HTTP (which fills the small ring)
and HTTPS (whose plaintext comes from the OpenSSL probes) at once. The TLS part of a stop (removing
the probes, the attacher's worker) on top of the data path's (tests/capture/live/test_live_stop.py)."""
from __future__ import annotations

import shutil
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture
from support.process import process

pytestmark = [pytest.mark.ebpf, pytest.mark.slow]


def nginx_plain_and_tls(d: Path, port: int, tls_port: int, cert: Path, key: Path):
    conf = d / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""
        worker_processes 1;
        daemon off;
        pid {d}/nginx.pid;
        error_log {d}/error.log;
        events {{ worker_connections 4096; }}
        http {{
            access_log off;
            keepalive_requests 1000000;
            client_body_temp_path {d}/body;
            server {{
                listen 127.0.0.1:{port};
                listen 127.0.0.1:{tls_port} ssl;
                ssl_certificate {cert};
                ssl_certificate_key {key};
                location / {{ default_type text/plain; return 200 "nginx $request_uri\\n"; }}
            }}
        }}
    """))
    return process([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf), "-p", str(d)], tls_port)


def test_sigterm_with_tls_probes_and_a_full_backlog_exits_within_five_seconds(tmp_path, certs):
    cert, key = certs
    port, tls_port = free_port(), free_port()
    with nginx_plain_and_tls(tmp_path, port, tls_port, cert, key) as nginx:
        worker = int(Path(f"/proc/{nginx.pid}/task/{nginx.pid}/children").read_text().split()[0])
        with live_capture(pid=worker, extra=("--ringbuf-pages", "4")) as cap:
            targets.wait_for_log(cap, "TLS openssl:")
            loads = [subprocess.Popen(["wrk", "-t1", "-c20", "-d14s", url], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
                     for url in (f"http://127.0.0.1:{port}/", f"https://127.0.0.1:{tls_port}/")]
            try:
                time.sleep(2)
                # stopped for 2 s, the agent finds its 16 KiB ring and the spill ring full (a
                # reader that keeps up never lets them fill) and the load goes on while it drains
                cap.proc.send_signal(signal.SIGSTOP)
                time.sleep(2)
                cap.proc.send_signal(signal.SIGCONT)
                start = time.monotonic()
                cap.proc.send_signal(signal.SIGTERM)
                cap.proc.wait(timeout=60)
                took = time.monotonic() - start
                load_lasted = all(w.poll() is None for w in loads)
            finally:
                for w in loads:
                    w.wait()
    stats = cap.stats
    assert stats["tls.probes"] >= 4, stats  # libssl: handshake, internal read + its return, internal write
    # uprobes that bcc made at the same places (another agent, bcc's tools) make the kernel refuse
    # the links; those are removed one by one, slowly: this test needs a host without them
    assert stats.get("tls.probes_one_by_one", 0) == 0, cap.stderr[-800:]
    assert took < 5.0, f"exit took {took:.1f} s after SIGTERM"
    assert load_lasted, "the load ended before the stop: nothing was measured"
    assert stats["tls.kernel.plaintext"] > 0, "the TLS probes saw no plaintext: they were not in the load's path"
    assert stats["kernel.ringbuf_spilled"] + stats["kernel.ringbuf_drops"] > 0, "the ring was never full"
    assert any(s["kind"] == "SERVER" for s in cap.spans)
