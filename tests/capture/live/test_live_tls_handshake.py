"""Live eBPF capture of TLS handshakes between real programs on loopback: an untrusted
certificate gives exactly one ERROR "TLS handshake" span per attempt on each side (OpenSSL's
plaintext alerts on TLS 1.2 and 1.3, Go's encrypted TLS 1.3 alert), a trusted one gives the
usual HTTP spans and no handshake span.

One capture on one port serves every scenario (servers take turns on it) to keep CI time
down; servers start inside the capture so none sits in an accept() the probes missed."""
from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from support import tls_targets as targets
from support.process import process
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

TLSDIAL = Path(__file__).with_name("tlsdial")
ATTEMPTS = 2
PY_TLS_SERVER = """
import socket, ssl, sys, threading
cert, key, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.create_server(("127.0.0.1", port))
def serve(sock):
    try:
        with ctx.wrap_socket(sock, server_side=True) as s:
            s.recv(4096)
            s.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
    except (ssl.SSLError, OSError):
        sock.close()
while True:
    threading.Thread(target=serve, args=(ls.accept()[0],), daemon=True).start()
"""


def make_cert(d: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost: untrusted unless a client is given it as its CA."""
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def build_tlsdial(out: Path) -> Path:
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOCACHE": str(out.parent / "gocache"),
           "GOPATH": str(out.parent / "gopath"), "CGO_ENABLED": "0", "GOPROXY": "off"}
    subprocess.run(["go", "build", "-o", str(out), "."], cwd=TLSDIAL, env=env, check=True, capture_output=True,
                   timeout=240)
    return out


def curl(port: int, *args: str) -> str:
    out = subprocess.run(["curl", "-s", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}", *args,
                          f"https://localhost:{port}/curl"], capture_output=True, text=True, timeout=30)
    return out.stdout


def dial(binary: Path, port: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), "-addr", f"127.0.0.1:{port}", "-n", str(ATTEMPTS), *args],
                          capture_output=True, text=True, timeout=60)


def wait_for_log(cap, text: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in cap.err_path.read_text():
        assert time.monotonic() < deadline, f"not in the capture log after {timeout}s: {text}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    d = tmp_path_factory.mktemp("tlshandshake")
    cert, key = make_cert(d)
    tlsdial = build_tlsdial(d / "tlsdial")
    go_server = targets.build_go(d / "tlstarget")
    port = free_port()
    pids: dict[str, int] = {}
    with live_capture(port=port) as cap:
        with process([sys.executable, "-c", PY_TLS_SERVER, str(cert), str(key), str(port)], port) as py:
            pids["python"] = py.pid
            for _ in range(ATTEMPTS):
                assert curl(port, "--tlsv1.2", "--tls-max", "1.2") == "000"
                assert curl(port, "--tlsv1.3") == "000"
            assert dial(tlsdial, port, "-max", "1.2").returncode == 1
            assert dial(tlsdial, port, "-max", "1.3").returncode == 1
            for _ in range(ATTEMPTS):
                assert curl(port, "--cacert", str(cert)) == "200"
            ok = dial(tlsdial, port, "-ca", str(cert))
            assert ok.returncode == 0, ok.stdout
        with targets.go_server(go_server, port, cert, key) as go:
            pids["go"] = go.pid
            wait_for_log(cap, f"probes on {go_server}")
            for _ in range(ATTEMPTS):  # Python's ssl (OpenSSL) client against a Go server, as in the demo
                with pytest.raises(httpx.ConnectError):
                    httpx.get(f"https://localhost:{port}/httpx")
            r = httpx.get(f"https://localhost:{port}/httpx-ok", verify=ssl.create_default_context(cafile=str(cert)))
            assert r.status_code == 200
    return cap, port, pids


def handshakes(spans, kind: str) -> list[dict]:
    return [s for s in spans if s["name"] == "TLS handshake" and s["kind"] == kind]


def exe(s: dict) -> str:
    if s["resource"].get("process.pid") == os.getpid():
        return "httpx"  # this test process
    return s["resource"].get("process.executable.name", "")


def test_untrusted_certificate_one_client_span_per_attempt(captured):
    cap, port, _ = captured
    got = Counter((exe(s), s["attributes"]["tls.protocol.version"], s["attributes"]["error.type"])
                  for s in handshakes(cap.spans, "CLIENT"))
    assert got == {
        ("curl", "1.2", "tls alert: unknown_ca"): ATTEMPTS,
        ("curl", "1.3", "tls alert: unknown_ca"): ATTEMPTS,
        ("tlsdial", "1.2", "tls alert: bad_certificate"): ATTEMPTS,
        ("tlsdial", "1.3", "tls alert: encrypted"): ATTEMPTS,  # Go encrypts its TLS 1.3 alert
        ("httpx", "1.3", "tls alert: unknown_ca"): ATTEMPTS,
    }, (got, cap.stats)
    for s in handshakes(cap.spans, "CLIENT"):
        a = s["attributes"]
        assert s["status_code"] == "ERROR" and s["status_message"]
        assert a["server.port"] == port and a["server.address"] == "127.0.0.1"
        assert a["network.transport"] == "tcp" and a["client.port"] > 0
        assert a["tls.server_name"] == "localhost"
        assert s["end_time_unix_nano"] >= s["start_time_unix_nano"]


def test_untrusted_certificate_one_server_span_per_attempt(captured):
    cap, port, pids = captured
    servers = handshakes(cap.spans, "SERVER")
    by_pid = Counter(s["resource"]["process.pid"] for s in servers)
    assert by_pid == {pids["python"]: 4 * ATTEMPTS, pids["go"]: ATTEMPTS}, (by_pid, cap.stats)
    # each server span is the other end of a client span (same connection)
    client_ports = {s["attributes"]["client.port"]: s for s in handshakes(cap.spans, "CLIENT")}
    for s in servers:
        a = s["attributes"]
        assert s["status_code"] == "ERROR" and a["server.port"] == port
        peer = client_ports[a["client.port"]]
        assert a["error.type"] == peer["attributes"]["error.type"]


def test_trusted_certificate_gives_http_spans_and_no_handshake_span(captured):
    cap, port, pids = captured
    ok_paths = {"/curl", "/tlsdial/0", "/tlsdial/1", "/httpx-ok"}
    http = [s for s in cap.spans if s["attributes"].get("url.path") in ok_paths]
    assert Counter((s["kind"], s["attributes"]["url.path"]) for s in http if exe(s) == "curl") == \
        {("CLIENT", "/curl"): ATTEMPTS}
    assert Counter(s["attributes"]["url.path"] for s in http
                   if s["kind"] == "SERVER" and s["resource"]["process.pid"] == pids["python"])["/curl"] == ATTEMPTS
    assert [s["attributes"]["http.response.status_code"] for s in http
            if s["kind"] == "SERVER" and s["resource"]["process.pid"] == pids["go"]] == [200]
    # exactly the failed attempts have handshake spans: 5 failing clients, 5 server ends
    assert len(handshakes(cap.spans, "CLIENT")) == 5 * ATTEMPTS
    assert len(handshakes(cap.spans, "SERVER")) == 5 * ATTEMPTS
    assert cap.stats["pipeline.tls_handshake.handshakes_ok"] >= 2 * (ATTEMPTS + 2)
    # the handshake parser saw only TLS records, and no plaintext parser saw ciphertext
    assert cap.stats.get("pipeline.tls_handshake.garbage_chunks", 0) == 0, cap.stats
    assert cap.stats.get("pipeline.http1.garbage", 0) == 0, cap.stats
    assert cap.stats.get("pipeline.parser_exceptions", 0) == 0
    # plaintext positions continue the handshake's (gaps only where the ring buffer dropped)
    assert cap.stats.get("conntrack.gaps", 0) == 0 or cap.stats.get("kernel.ringbuf_drops", 0) > 0, cap.stats
