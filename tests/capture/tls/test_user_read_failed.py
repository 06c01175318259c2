"""A user buffer the kernel cannot read is counted, per CPU and in total (kernel.user_read_failed).

bpf_probe_read_user does not fault pages in. An SSL write's plaintext is read at the call's entry,
before OpenSSL touches it: written from an anonymous mapping never touched, its pages are not
resident there, and the read fails. The bytes then count in the stream position (userspace sees
them as lost, a gap) instead of vanishing without one.
"""
from __future__ import annotations

import mmap
import socket
import ssl
import threading

import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture
from tests.capture.tls.test_tls_older_session import wait_for_probes_on

pytestmark = pytest.mark.ebpf

UNTOUCHED = 4 * mmap.PAGESIZE


def serve(ls: socket.socket, ctx: ssl.SSLContext, got: list[int]) -> None:
    conn = ctx.wrap_socket(ls.accept()[0], server_side=True)
    f = conn.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    n = 0
    while n < UNTOUCHED and (chunk := conn.recv(65536)):
        n += len(chunk)
    got.append(n)
    conn.close()


def test_an_unreadable_user_buffer_is_counted_as_lost(tmp_path):
    cert, key = targets.make_certs(tmp_path)
    port = free_port()
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    libssl = next(line.split()[-1] for line in open("/proc/self/maps") if "libssl" in line)
    got: list[int] = []
    with socket.create_server(("127.0.0.1", port)) as ls:
        with live_capture(port=port) as cap:
            wait_for_probes_on(cap, libssl)
            server = threading.Thread(target=serve, args=(ls, sctx, got), daemon=True)
            server.start()
            cctx = ssl._create_unverified_context()
            with cctx.wrap_socket(socket.create_connection(("127.0.0.1", port))) as c:
                c.sendall(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")  # ties the SSL object to its socket
                assert c.recv(4096).endswith(b"ok")
                untouched = mmap.mmap(-1, UNTOUCHED)  # anonymous, no page resident until touched
                c.sendall(memoryview(untouched))
                server.join(30)
                untouched.close()
    assert got == [UNTOUCHED]
    stats = cap.stats
    assert stats.get("kernel.user_read_failed", 0) >= 1, {k: v for k, v in stats.items() if k.startswith("kernel.")}
    per_cpu = [v for k, v in stats.items() if k.startswith("kernel.cpu") and k.endswith(".user_read_failed")]
    assert len(per_cpu) >= 1 and sum(per_cpu) == stats["kernel.user_read_failed"]
    assert any(s["attributes"].get("url.path") == "/first" for s in cap.spans)
