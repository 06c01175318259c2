"""Live TLS plaintext capture from real programs: Go, nginx+curl/requests/httpx, node, asyncio.

One capture on one port serves every scenario (servers take turns on the port) to keep
CI time down; each scenario's requests carry their own path prefix.
"""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest
import requests
import urllib3

from support import tls_targets as targets
from support.tls_targets import wait_for_log
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf


@pytest.fixture(scope="module")
def captured(tmp_path_factory, go_binary, certs):
    """Every scenario inside one capture on one port (servers take turns on it)."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = certs
    early = d / "go-early"  # running before the capture: found in /proc maps
    late = d / "go-late"  # started after it: found through the exec tracepoint
    shutil.copy(go_binary, early)
    shutil.copy(go_binary, late)
    port = free_port()
    urllib3.disable_warnings()
    pids = {}
    with targets.go_server(early, port, cert, key) as go_early:
        pids["go"] = go_early.pid
        with live_capture(port=port) as cap:
            wait_for_log(cap, f"probes on {early}")
            for n in (2, 1):  # two processes of one file: its probes are attached once
                client = subprocess.Popen([str(late), "client", "-url", f"https://127.0.0.1:{port}/go/go-{n}",
                                           "-n", str(n), "-wait-stdin"], stdin=subprocess.PIPE,
                                          stdout=subprocess.DEVNULL)
                # attaching takes a moment after exec: a process that talks at once is missed
                wait_for_log(cap, f"probes on {late}")
                client.communicate(b"go\n", timeout=60)
                assert client.returncode == 0
            assert targets.curl(port, "/go/curl") == "200"
            go_early.terminate()
            go_early.wait(timeout=10)
            with targets.nginx_tls(port, cert, key, d) as nginx:
                pids["nginx"] = children(nginx.pid)
                assert [targets.curl(port, f"/nginx/curl-{i}") for i in range(2)] == ["200", "200"]
                with requests.Session() as s:
                    for i in range(3):
                        r = s.get(f"https://127.0.0.1:{port}/nginx/requests-{i}", verify=False)
                        assert r.status_code == 200
                with httpx.Client(verify=False) as c:
                    assert c.get(f"https://127.0.0.1:{port}/nginx/httpx-0").status_code == 200
            with targets.node_server(port, cert, key) as node:
                pids["node"] = node.pid
                targets.node_client(port, "/node/node-", 3)
            with targets.asyncio_server(port, cert, key) as aio:
                pids["asyncio"] = aio.pid
                assert [targets.curl(port, f"/aio/curl-{i}") for i in range(2)] == ["200", "200"]
    return port, cap, pids, late


def children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def spans_under(cap, prefix: str, kind: str) -> list[dict]:
    return [s for s in cap.spans if s["kind"] == kind
            and s["attributes"].get("url.path", "").startswith(prefix)]


def libraries(spans) -> Counter:
    return Counter(s["attributes"].get("tls.library") for s in spans)


def test_go_server_found_in_proc_maps_and_go_client_found_at_exec(captured):
    port, cap, pids, late = captured
    servers = spans_under(cap, "/go/", "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == ["/go/curl", "/go/go-1", "/go/go-2", "/go/go-2"]
    assert libraries(servers) == {"go": 4}
    assert {s["resource"]["process.pid"] for s in servers} == {pids["go"]}
    clients = spans_under(cap, "/go/go-", "CLIENT")
    assert sorted(s["attributes"]["url.path"] for s in clients) == ["/go/go-1", "/go/go-2", "/go/go-2"]
    assert libraries(clients) == {"go": 3}
    assert libraries(spans_under(cap, "/go/curl", "CLIENT")) == {"openssl": 1}
    for s in servers + clients:
        assert s["attributes"]["server.port"] == port
        assert s["attributes"]["http.response.status_code"] == 200
    # both client processes ran one file: its probes were attached once
    assert cap.stderr.count(f"probes on {late}") == 1


def test_client_and_server_spans_share_the_connection(captured):
    cap = captured[1]
    servers = {(s["attributes"]["client.port"], s["attributes"]["url.path"]) for s in cap.spans
               if s["kind"] == "SERVER"}
    clients = [s for s in cap.spans if s["kind"] == "CLIENT"]
    expected = ["/go/go-2", "/go/go-2", "/go/go-1", "/go/curl", "/nginx/curl-0", "/nginx/curl-1",
                "/nginx/requests-0", "/nginx/requests-1", "/nginx/requests-2", "/nginx/httpx-0",
                "/node/node-0", "/node/node-1", "/node/node-2", "/aio/curl-0", "/aio/curl-1"]
    assert sorted(s["attributes"]["url.path"] for s in clients) == sorted(expected)
    assert all((c["attributes"]["client.port"], c["attributes"]["url.path"]) in servers for c in clients)


def test_client_spans_contain_their_server_spans(captured):
    """Plaintext written is stamped when SSL_write/Write was called, read when it returned: a
    caller's span starts before and ends after its callee's, whichever side uses a fd BIO."""
    cap = captured[1]
    by_exchange: dict[tuple, dict[str, list[dict]]] = {}
    for s in cap.spans:
        key = (s["attributes"]["client.port"], s["attributes"]["url.path"])
        by_exchange.setdefault(key, {"SERVER": [], "CLIENT": []})[s["kind"]].append(s)
    pairs = 0
    for key, kinds in by_exchange.items():
        servers, clients = (sorted(kinds[k], key=lambda s: s["start_time_unix_nano"]) for k in ("SERVER", "CLIENT"))
        assert len(servers) == len(clients), key
        for c, s in zip(clients, servers):
            assert c["start_time_unix_nano"] <= s["start_time_unix_nano"] <= s["end_time_unix_nano"] \
                <= c["end_time_unix_nano"], (key, c["attributes"].get("tls.library"), s["attributes"].get("tls.library"))
            pairs += 1
    assert pairs == 15


def test_ciphertext_makes_no_spans(captured):
    port, cap, _, _ = captured
    assert len(cap.spans) == 30
    for s in cap.spans:  # every span on the port came from plaintext uprobes
        assert s["attributes"].get("tls.library") in ("openssl", "go", "node"), s
        assert s["attributes"]["server.port"] == port
    assert cap.stats.get("conntrack.gaps", 0) == 0  # ciphertext did not move stream positions
    assert cap.stats["tls.kernel.plaintext"] > 0


def test_nginx_with_curl_requests_httpx(captured):
    _, cap, pids, _ = captured
    servers = spans_under(cap, "/nginx/", "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == sorted(
        ["/nginx/curl-0", "/nginx/curl-1", "/nginx/requests-0", "/nginx/requests-1", "/nginx/requests-2",
         "/nginx/httpx-0"])
    assert libraries(servers) == {"openssl": 6}
    assert {s["resource"]["process.pid"] for s in servers} <= pids["nginx"]  # its workers
    clients = spans_under(cap, "/nginx/", "CLIENT")
    assert sorted(s["attributes"]["url.path"] for s in clients) == sorted(s["attributes"]["url.path"] for s in servers)
    assert libraries(clients) == {"openssl": 6}  # curl: SSL_write/SSL_read; Python: the _ex calls


def test_node_memory_bios_both_sides(captured):
    _, cap, pids, _ = captured
    servers = spans_under(cap, "/node/", "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == ["/node/node-0", "/node/node-1", "/node/node-2"]
    assert libraries(servers) == {"node": 3}
    assert {s["resource"]["process.pid"] for s in servers} == {pids["node"]}
    clients = spans_under(cap, "/node/", "CLIENT")
    assert libraries(clients) == {"node": 3}


def test_asyncio_server_memory_bio(captured):
    _, cap, pids, _ = captured
    servers = spans_under(cap, "/aio/", "SERVER")
    assert sorted(s["attributes"]["url.path"] for s in servers) == ["/aio/curl-0", "/aio/curl-1"]
    assert libraries(servers) == {"openssl": 2}
    assert {s["resource"]["process.pid"] for s in servers} == {pids["asyncio"]}
