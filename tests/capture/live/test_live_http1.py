"""Live eBPF capture of HTTP/1 between real clients and servers on loopback."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import requests

from support.http_servers import nginx_server, python_server, uvicorn_server
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf


def by_kind(spans, kind):
    return [s for s in spans if s["kind"] == kind]


def test_n_requests_give_exactly_n_server_and_n_client_spans():
    cases = [("GET", "/a", "x=1", 200), ("POST", "/orders", "", 201), ("GET", "/status/503", "", 503),
             ("PUT", "/status/404", "k=v&w=2", 404), ("DELETE", "/items/7", "", 200)] * 4
    bounds = {}
    with python_server() as (port, server):
        with live_capture(port=port) as cap:
            with requests.Session() as http:  # keep-alive: one connection for all
                for method, path, query, _status in cases:
                    url = f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else "")
                    t0 = time.monotonic_ns()
                    r = http.request(method, url, data=b"payload" if method in ("POST", "PUT") else None)
                    bounds.setdefault((method, path, query), []).append(time.monotonic_ns() - t0)
                    assert r.status_code in (200, 201, 404, 503)
    servers, clients = by_kind(cap.spans, "SERVER"), by_kind(cap.spans, "CLIENT")
    assert len(servers) == len(cases), cap.stats
    assert len(clients) == len(cases), cap.stats
    for spans in (servers, clients):
        got = sorted((s["attributes"]["http.request.method"], s["attributes"]["url.path"],
                      s["attributes"].get("url.query", "")) for s in spans)
        assert got == sorted((m, p, q) for m, p, q, _ in cases)
    for s in servers + clients:
        a = s["attributes"]
        key = (a["http.request.method"], a["url.path"], a.get("url.query", ""))
        assert s["end_time_unix_nano"] - s["start_time_unix_nano"] <= max(bounds[key])
        assert a["server.port"] == port and a["server.address"] == "127.0.0.1"
        assert a["network.protocol.name"] == "http" and a["network.protocol.version"] == "1.1"
        assert s["resource"]["process.pid"] > 0
    for s in servers:
        code = s["attributes"]["http.response.status_code"]
        assert s["status_code"] == ("ERROR" if code >= 500 else "UNSET")  # semconv: 4xx is fine for a server
        assert s["resource"]["process.pid"] == server.pid
    for s in clients:
        code = s["attributes"]["http.response.status_code"]
        assert s["status_code"] == ("ERROR" if code >= 400 else "UNSET")
    # every client span has a server span on the same connection (same 4-tuple)
    server_tuples = {(s["attributes"]["client.port"], s["attributes"]["url.path"]) for s in servers}
    assert all((c["attributes"]["client.port"], c["attributes"]["url.path"]) in server_tuples for c in clients)


def test_pipelined_requests_on_nginx():
    with nginx_server() as (port, _):
        with live_capture(port=port) as cap:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(b"".join(f"GET /api/p{i}?n={i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(6)))
                got, deadline = b"", time.monotonic() + 5
                while got.count(b"HTTP/1.1 200") < 6 and time.monotonic() < deadline:
                    got += s.recv(65536)
            assert got.count(b"HTTP/1.1 200") == 6
    for kind in ("SERVER", "CLIENT"):
        spans = sorted(by_kind(cap.spans, kind), key=lambda s: s["start_time_unix_nano"])
        assert [s["attributes"]["url.path"] for s in spans] == [f"/api/p{i}" for i in range(6)], kind
        assert [s["attributes"]["url.query"] for s in spans] == [f"n={i}" for i in range(6)]


def test_curl_processes_and_nginx_errors():
    with nginx_server() as (port, nginx):
        with live_capture(port=port) as cap:
            for path in ("/", "/fail", "/missing", "/api/x?y=1"):
                out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                      f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True)
                assert out.stdout in ("200", "503", "404")
    servers, clients = by_kind(cap.spans, "SERVER"), by_kind(cap.spans, "CLIENT")
    assert len(servers) == 4 and len(clients) == 4
    status = {s["attributes"]["url.path"]: (s["attributes"]["http.response.status_code"], s["status_code"])
              for s in servers}
    assert status == {"/": (200, "UNSET"), "/fail": (503, "ERROR"), "/missing": (404, "UNSET"),
                      "/api/x": (200, "UNSET")}
    assert {s["resource"]["process.executable.name"] for s in clients} == {"curl"}
    assert {s["resource"]["process.executable.name"] for s in servers} == {"nginx"}


def test_uvicorn_and_a_connection_older_than_the_capture():
    with uvicorn_server() as (port, _):
        http = requests.Session()
        assert http.get(f"http://127.0.0.1:{port}/items/1").status_code == 200  # opens the connection
        with live_capture(port=port) as cap:
            for i in range(5):
                assert http.get(f"http://127.0.0.1:{port}/items/{i}?q=z").json()["id"] == i
            assert http.get(f"http://127.0.0.1:{port}/boom").status_code == 500
        http.close()
    servers = by_kind(cap.spans, "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == ["/boom"] + [f"/items/{i}" for i in range(5)]
    assert {s["name"] for s in servers} == {"GET /items/{id}", "GET /boom"}
    assert [s["status_code"] for s in servers if s["attributes"]["url.path"] == "/boom"] == ["ERROR"]
    assert len(by_kind(cap.spans, "CLIENT")) == 6


def test_garbage_and_dying_clients_do_not_hurt_the_capture():
    with python_server() as (port, _):
        with live_capture(port=port) as cap:
            for payload in (b"\x00\xff" * 500, b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                            b"POST /x HTTP/1.1\r\nContent-Length: 5000\r\n\r\npartial"):
                with socket.create_connection(("127.0.0.1", port)) as s:
                    s.sendall(payload)
                    s.settimeout(0.3)
                    try:
                        s.recv(100)
                    except OSError:
                        pass
            # a client process killed while waiting for its response
            proc = subprocess.Popen(["curl", "-s", f"http://127.0.0.1:{port}/slow", "--max-time", "5"])
            time.sleep(0.2)
            proc.kill()
            proc.wait()
            ok = requests.get(f"http://127.0.0.1:{port}/after?z=1")
            assert ok.status_code == 200
    after = [s for s in cap.spans if s["attributes"].get("url.path") == "/after"]
    assert len(after) == 2, cap.stats  # the capture kept working: client + server span
    assert cap.stats.get("pipeline.parser_exceptions", 0) == 0


def numbered_requests(n: int, ringbuf_pages: int, paused: range = range(0)):
    """n keep-alive GETs /?i=<i> to nginx under a capture with a ring of `ringbuf_pages`;
    checks every request got exactly one SERVER and one CLIENT span; returns the capture.
    The agent is stopped (SIGSTOP) while the requests numbered `paused` are made: a reader
    that keeps up never lets a ring fill, so a test of what happens when it does has to make
    the reader fall behind rather than hope the host is slow."""
    with nginx_server() as (port, _):
        with live_capture(port=port, extra=("--ringbuf-pages", str(ringbuf_pages))) as cap:
            with requests.Session() as http:
                for i in range(n):
                    if i == paused.start and paused:
                        cap.proc.send_signal(signal.SIGSTOP)
                    assert http.get(f"http://127.0.0.1:{port}/?i={i}").status_code == 200
                    if i == paused.stop - 1 and paused:
                        cap.proc.send_signal(signal.SIGCONT)
    assert cap.stats.get("kernel.ringbuf_drops", 0) == 0, cap.stats
    for kind in ("SERVER", "CLIENT"):
        spans = by_kind(cap.spans, kind)
        assert sorted(int(s["attributes"]["url.query"][2:]) for s in spans) == list(range(n)), cap.stats
        assert all(s["attributes"]["http.response.status_code"] == 200 for s in spans)
    return cap


def test_a_small_ring_buffer_wraps_without_losing_or_garbling_events():
    """The agent reads the ring buffer from its mapping (capture/ringbuf.py): with a 512 KiB
    ring and ~1.7 MiB of events, records wrap around its end several times and must all
    arrive whole."""
    numbered_requests(700, ringbuf_pages=128)


def test_records_the_main_ring_refuses_arrive_in_order():
    """A record the main ring buffer refuses goes through the spill ring (bpf ringbuf_send)
    and is merged back by time (capture/ringbuf.py OrderedRings). With an 8 KiB main ring,
    smaller than a few requests' events, and the agent stopped for 100 requests, most of their
    records spill: every exchange must still pair request with response, nothing lost."""
    cap = numbered_requests(300, ringbuf_pages=2, paused=range(50, 150))
    assert cap.stats.get("kernel.ringbuf_spilled", 0) > 0, cap.stats
    assert cap.stats.get("conntrack.gaps", 0) == 0, cap.stats


FORKING_SERVER = textwrap.dedent("""
    import os, socket, sys
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", int(sys.argv[1])))
    srv.listen(64)
    print("listening", flush=True)
    while True:
        conn, _ = srv.accept()
        if os.fork() == 0:  # the child serves one request and is gone at once
            srv.close()
            req = conn.recv(65536)
            path = req.split(b" ")[1]
            conn.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\nConnection: close\\r\\n\\r\\n%s"
                         % (len(path), path))
            conn.close()
            os._exit(0)
        conn.close()
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
""")


def test_a_forked_child_serving_an_accepted_connection_is_captured():
    """Prefork/forking servers (PostgreSQL backends, too): the parent accepts, the child
    serves and exits. The child's socket was never opened in front of the capture; its
    4-tuple is read from the kernel's socket (bpf sock_from_fd at BTF offsets), not from a
    /proc the child no longer has by the time the agent looks."""
    n = 20
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", FORKING_SERVER, str(port)], stdout=subprocess.PIPE)
    try:
        assert server.stdout.readline().strip() == b"listening"
        with live_capture(port=port) as cap:
            for i in range(n):
                with socket.create_connection(("127.0.0.1", port)) as c:
                    c.sendall(f"GET /f/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                    reply = b""
                    while chunk := c.recv(4096):
                        reply += chunk
                    assert reply.endswith(f"/f/{i}".encode())
    finally:
        server.kill()
        server.wait()
    servers = by_kind(cap.spans, "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == sorted(f"/f/{i}" for i in range(n)), cap.stats
    assert all(s["attributes"]["server.port"] == port for s in servers)
    assert all(s["attributes"]["client.port"] not in (None, port) for s in servers)
    assert cap.stats.get("conntrack.tuple_unresolved", 0) == 0, cap.stats
