"""A TLS session older than the capture: its writes still go up, once each, in time order.

OpenSSL's internal write goes up at its entry (no return probe). A session whose handshake ran
before the capture started has no socket tied to its SSL* at its first write after the start:
that write goes up at its first send of application data, stamped at its entry. Here both ends
(Python's ssl module: SSL_read_ex/SSL_write_ex over a socket BIO) handshake and talk before the
capture, then talk again; had the client's first later write been dropped, its span would be
missing, and had it been stamped at its send, it could start after the server's.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

from support import tls_targets as targets
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

SERVER = textwrap.dedent('''
    import socket, ssl, sys
    cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.create_server(("127.0.0.1", port))
    print("ready", flush=True)
    s = ctx.wrap_socket(ls.accept()[0], server_side=True)
    f = s.makefile("rb")
    for n in range(4):
        if n == 1:  # not blocked inside SSL_read when the probes attach: that call is not seen
            sys.stdin.readline()
        line = f.readline()
        path = line.split(b" ")[1]
        while f.readline() not in (b"\\r\\n", b""):
            pass
        s.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(path), path))
''')

CLIENT = textwrap.dedent('''
    import http.client, ssl, sys
    port = int(sys.argv[1])
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ssl._create_unverified_context())
    def get(path):
        c.request("GET", path)
        r = c.getresponse()
        assert r.read() == path.encode()
    get("/early")
    print("talked", flush=True)
    sys.stdin.readline()  # the capture is ready
    for i in range(3):
        get(f"/late-{i}")
    print("done", flush=True)
''')


def wait_for_probes_on(cap, path: str, timeout: float = 180.0) -> None:
    """Until the capture logged its probes on `path`'s file (logged under any of its names)."""
    deadline = time.monotonic() + timeout
    while not any(os.path.exists(p) and os.path.samefile(p, path)
                  for p in re.findall(r"probes on (\S+)", cap.err_path.read_text())):
        assert time.monotonic() < deadline, f"no probes on {path} after {timeout}s"
        time.sleep(0.1)


def test_session_older_than_the_capture(tmp_path):
    cert, key = targets.make_certs(tmp_path)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(cert), str(key), str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    client = None
    try:
        assert server.stdout.readline().strip() == "ready"
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(port)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        assert client.stdout.readline().strip() == "talked"
        libssl = next(line.split()[-1] for line in open(f"/proc/{client.pid}/maps") if "libssl" in line)
        with live_capture(port=port) as cap:
            wait_for_probes_on(cap, libssl)
            for p in (server, client):
                p.stdin.write("go\n")
                p.stdin.flush()
            assert client.stdout.readline().strip() == "done"
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait(timeout=10)
    paths = {kind: sorted(s["attributes"].get("url.path") for s in cap.spans if s["kind"] == kind)
             for kind in ("CLIENT", "SERVER")}
    late = ["/late-0", "/late-1", "/late-2"]
    assert paths == {"CLIENT": late, "SERVER": late}
    by_path = {(s["kind"], s["attributes"]["url.path"]): s for s in cap.spans}
    for p in late:
        c, s = by_path["CLIENT", p], by_path["SERVER", p]
        assert c["start_time_unix_nano"] <= s["start_time_unix_nano"] <= s["end_time_unix_nano"] \
            <= c["end_time_unix_nano"], p
        assert c["attributes"]["http.response.status_code"] == 200
        assert c["attributes"].get("tls.library") == s["attributes"].get("tls.library") == "openssl"
