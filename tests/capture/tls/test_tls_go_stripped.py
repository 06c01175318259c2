"""Live TLS plaintext capture from a Go server and client built with -ldflags="-s -w".

No .symtab: crypto/tls is located through .gopclntab. The server runs before the capture
(found in /proc maps), the client starts after it (found at exec).
"""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter

import pytest
from elftools.elf.elffile import ELFFile

from capture.tls import elf
from support import tls_targets as targets
from support.tls_targets import wait_for_log
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf

N_OK, N_MISSING = 5, 2  # requests on one keep-alive connection each


@pytest.fixture(scope="module")
def captured(tmp_path_factory, go_stripped, certs):
    d = tmp_path_factory.mktemp("tls-stripped")
    server_bin, client_bin = d / "go-stripped-server", d / "go-stripped-client"
    shutil.copy(go_stripped, server_bin)  # two files: each is found its own way
    shutil.copy(go_stripped, client_bin)
    port = free_port()
    with targets.go_server(server_bin, port, *certs) as server:
        with live_capture(port=port) as cap:
            wait_for_log(cap, f"probes on {server_bin}")
            for path, n in (("/stripped/ok", N_OK), ("/missing", N_MISSING)):
                client = subprocess.Popen([str(client_bin), "client", "-url", f"https://127.0.0.1:{port}{path}",
                                           "-n", str(n), "-wait-stdin"], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True)
                wait_for_log(cap, f"probes on {client_bin}")  # attached after exec, before it talks
                out, _ = client.communicate("go\n", timeout=60)
                assert client.returncode == 0 and out.split() == [str(200 if path != "/missing" else 404)] * n
    return port, cap, server.pid, server_bin, client_bin


def test_the_binary_really_is_stripped(go_stripped):
    with open(go_stripped, "rb") as f:
        e = ELFFile(f)
        assert e.get_section_by_name(".symtab") is None and e.get_section_by_name(".debug_info") is None
    assert elf.inspect(str(go_stripped)).go.located_by == ".gopclntab"


@pytest.mark.parametrize("kind", ["SERVER", "CLIENT"])
def test_every_request_is_one_span_with_method_path_status(captured, kind):
    port, cap, server_pid, _, _ = captured
    spans = [s for s in cap.spans if s["kind"] == kind]
    got = Counter((s["attributes"]["http.request.method"], s["attributes"]["url.path"],
                   s["attributes"]["http.response.status_code"]) for s in spans)
    assert got == {("GET", "/stripped/ok", 200): N_OK, ("GET", "/missing", 404): N_MISSING}
    for s in spans:
        assert s["attributes"]["tls.library"] == "go"
        assert s["attributes"]["server.port"] == port
    if kind == "SERVER":
        assert {s["resource"]["process.pid"] for s in spans} == {server_pid}


def test_only_plaintext_from_the_stripped_probes(captured):
    _, cap, _, server_bin, client_bin = captured
    assert len(cap.spans) == 2 * (N_OK + N_MISSING)  # no span from the ciphertext on the socket
    assert cap.stats.get("conntrack.gaps", 0) == 0
    assert cap.stats["tls.kernel.plaintext"] > 0
    assert cap.stderr.count(f"probes on {server_bin}") == 1 and cap.stderr.count(f"probes on {client_bin}") == 1
    assert f"in {server_bin} not captured" not in cap.stderr and f"in {client_bin} not captured" not in cap.stderr
