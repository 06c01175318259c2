"""Live: a server already blocked in accept() when the capture starts has its next connection
captured (the kernel never saw that accept's sys_enter; accept's exit reads the new socket's
4-tuple from the kernel's socket, bpf sock_from_fd)."""
from __future__ import annotations

import http.client
import sys
import textwrap
import time
from pathlib import Path

import pytest

from support.process import process
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

ACCEPT4 = 288  # x86-64 syscall number: Python's socket.accept()

# One blocking accept() at a time, bytes through read()/write() (not recv/send, which would
# make the kernel side track an unknown fd on its own): one HTTP/1.1 exchange per connection.
BLOCKING_SERVER = textwrap.dedent('''
    import os, socket, sys
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    s.listen()
    while True:
        c, _ = s.accept()
        data = b""
        while b"\\r\\n\\r\\n" not in data:
            chunk = os.read(c.fileno(), 4096)
            if not chunk:
                break
            data += chunk
        if data:
            body = b"blocked in accept " + data.split(b" ")[1] + b"\\n"
            os.write(c.fileno(), b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n"
                     % len(body) + body)
        c.close()
''')


def wait_in_accept(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/syscall").read_text().split()[0] != str(ACCEPT4):
        assert time.monotonic() < deadline, "the server is not blocked in accept4()"
        time.sleep(0.05)


def test_server_blocked_in_accept_before_start_has_its_next_connection_captured():
    port = free_port()
    with process([sys.executable, "-c", BLOCKING_SERVER, str(port)], port) as server:
        wait_in_accept(server.pid)  # the readiness probe's connection is served and gone
        with live_capture(port=port) as cap:
            wait_in_accept(server.pid)  # still the accept() that started before the capture
            for i in range(3):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", f"/blocked-{i}")
                resp = conn.getresponse()
                assert resp.status == 200 and resp.read() == f"blocked in accept /blocked-{i}\n".encode()
                conn.close()
    paths = {kind: sorted(s["attributes"]["url.path"] for s in cap.spans if s["kind"] == kind)
             for kind in ("SERVER", "CLIENT")}
    assert paths == {"SERVER": ["/blocked-0", "/blocked-1", "/blocked-2"],
                     "CLIENT": ["/blocked-0", "/blocked-1", "/blocked-2"]}, cap.stats
    first = next(s for s in cap.spans if s["kind"] == "SERVER" and s["attributes"]["url.path"] == "/blocked-0")
    assert first["resource"]["process.pid"] == server.pid
    assert first["attributes"]["server.port"] == port
    clients = {s["attributes"]["url.path"]: s for s in cap.spans if s["kind"] == "CLIENT"}
    assert first["attributes"]["client.port"] == clients["/blocked-0"]["attributes"]["client.port"]
