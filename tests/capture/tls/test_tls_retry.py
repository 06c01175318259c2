"""A TLS write retried after WANT_WRITE is reported once, with its bytes once.

A non-blocking client sends a 2 MiB request body to a server that waits before reading: its send
buffer fills, SSL_write fails with WANT_WRITE and is called again with the same bytes, many
times. The plaintext goes up at the write's return with the bytes written, so a failed attempt
reports nothing; were an attempt's bytes reported twice, the parser would read them as the next
request and the GET after the POST on the same connection would not come out as its own span.
"""
from __future__ import annotations

import select
import socket
import ssl
import subprocess
import sys
import time

import pytest

from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

BODY = 2 * 1024 * 1024

SERVER = """
import socket, ssl, sys, time
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.create_server(("127.0.0.1", port))
print("ready", flush=True)
conn, _ = ls.accept()
s = ctx.wrap_socket(conn, server_side=True)
f = s.makefile("rb")
for i in range(2):
    head = b""
    while not head.endswith(b"\\r\\n\\r\\n"):
        head += f.readline()
    n = 0
    for line in head.split(b"\\r\\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":")[1])
    if i == 0:
        time.sleep(0.5)  # the client's send buffer fills: its SSL_write fails with WANT_WRITE
    got = len(f.read(n)) if n else 0
    body = b"%d" % got
    s.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
time.sleep(0.2)
"""


def _send_nonblocking(s: ssl.SSLSocket, data: bytes) -> int:
    """Send `data` retrying each WANT_WRITE with the same bytes; returns the retries."""
    view, retries = memoryview(data), 0
    while view:
        try:
            view = view[s.send(view):]
        except ssl.SSLWantWriteError:
            retries += 1
            select.select([], [s], [], 5)
        except ssl.SSLWantReadError:
            select.select([s], [], [], 5)
    return retries


def _read_response(s: ssl.SSLSocket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < int(
            data.split(b"Content-Length: ")[1].split(b"\r\n")[0]):
        try:
            chunk = s.recv(65536)
        except ssl.SSLWantReadError:
            select.select([s], [], [], 5)
            continue
        assert chunk, "connection closed"
        data += chunk
    return data.split(b"\r\n\r\n", 1)[1]


def test_write_retried_after_want_write_is_one_span(certs):
    cert, key = certs
    port = free_port()
    with live_capture(port=port) as cap:
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(cert), str(key), str(port)],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout.readline().strip() == "ready"
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            raw = socket.create_connection(("127.0.0.1", port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            with ctx.wrap_socket(raw) as s:
                s.setblocking(False)
                head = (f"POST /retry/big HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n").encode()
                retries = _send_nonblocking(s, head + b"x" * BODY)
                assert _read_response(s) == str(BODY).encode()
                _send_nonblocking(s, b"GET /retry/after HTTP/1.1\r\nHost: t\r\n\r\n")
                assert _read_response(s) == b"0"
            server.wait(timeout=10)
        finally:
            server.kill()
            server.wait()
        time.sleep(0.5)
    assert retries > 0, "the client's writes never had to be retried: the test did not exercise WANT_WRITE"
    for kind in ("CLIENT", "SERVER"):
        paths = [sp["attributes"].get("url.path") for sp in cap.spans if sp["kind"] == kind]
        assert paths == ["/retry/big", "/retry/after"], (kind, paths, retries)
        assert all(sp["attributes"].get("http.response.status_code") == 200
                   for sp in cap.spans if sp["kind"] == kind)
