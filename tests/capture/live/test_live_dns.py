"""Live eBPF capture of DNS: dig (UDP and TCP) and glibc getaddrinfo against a real dnsmasq.

dnsmasq starts inside the capture so its sockets are tracked from socket() (UDP). getaddrinfo
cannot take a port, so it runs in a private network namespace whose resolv.conf (bind-mounted
by `ip netns exec` from /etc/netns/<name>/) points at a dnsmasq listening on port 53 there.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support.process import process
from support.live import free_port, live_capture

pytestmark = pytest.mark.ebpf
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
RUN = uuid.uuid4().hex[:8]  # our names only: other tests on this host resolve names too
OK_NAME, GONE_NAME, TCP_NAME = f"ok-{RUN}.x.test", f"gone-{RUN}.nx.test", f"tcp-{RUN}.x.test"


def dnsmasq_cmd(port: int, listen: str = "127.0.0.1") -> list[str]:
    return [DNSMASQ, "--no-daemon", "--keep-in-foreground", f"--port={port}", f"--listen-address={listen}",
            "--bind-interfaces", "--no-resolv", "--no-hosts", "--address=/x.test/10.1.2.3",
            "--address=/x.test/fd00::123", "--address=/nx.test/", "--user=root", "--pid-file="]


def dig(port: int, name: str, *opts: str) -> str:
    return subprocess.run(["dig", "@127.0.0.1", "-p", str(port), name, "+tries=1", "+time=3", *opts],
                          capture_output=True, text=True, timeout=20, check=True).stdout


@pytest.fixture(scope="module")
def dig_capture():
    for tool in (DNSMASQ, shutil.which("dig")):
        if not tool or not Path(tool).exists():
            pytest.fail("dnsmasq/dig missing: run `make setup`")
    port = free_port()
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        with process(dnsmasq_cmd(port), port):
            outputs = {
                "a": dig(port, OK_NAME, "A"),
                "aaaa": dig(port, OK_NAME, "AAAA"),
                "nx": dig(port, GONE_NAME, "A"),
                "tcp": dig(port, TCP_NAME, "A", "+tcp"),
            }
    cap.port, cap.outputs = port, outputs
    return cap


def ours(spans, name, kind):
    return [s for s in spans if s["kind"] == kind and s["attributes"].get("dns.question.name") == name]


def test_every_dig_query_is_one_client_span(dig_capture):
    spans = dig_capture.spans
    assert "10.1.2.3" in dig_capture.outputs["a"] and "NXDOMAIN" in dig_capture.outputs["nx"]
    (a,) = [s for s in ours(spans, OK_NAME, "CLIENT") if s["attributes"]["dns.question.type"] == "A"]
    (aaaa,) = [s for s in ours(spans, OK_NAME, "CLIENT") if s["attributes"]["dns.question.type"] == "AAAA"]
    assert a["attributes"]["dns.answers"] == ["10.1.2.3"] and a["status_code"] == "UNSET"
    assert aaaa["attributes"]["dns.answers"] == ["fd00::123"]
    for s in (a, aaaa):
        # dig has exited before the agent reads its first record: both ends come from the kernel
        assert s["attributes"]["network.transport"] == "udp"
        assert s["attributes"]["server.port"] == dig_capture.port and s["attributes"]["client.port"] > 0
        assert 0 < s["end_time_unix_nano"] - s["start_time_unix_nano"] < 3e9
    (nx,) = ours(spans, GONE_NAME, "CLIENT")
    assert nx["status_code"] == "ERROR" and nx["attributes"]["error.type"] == "NXDOMAIN"


def test_dig_over_tcp(dig_capture):
    (s,) = ours(dig_capture.spans, TCP_NAME, "CLIENT")
    assert s["attributes"]["network.transport"] == "tcp" and s["attributes"]["dns.answers"] == ["10.1.2.3"]
    assert s["attributes"]["server.port"] == dig_capture.port and s["status_code"] == "UNSET"


def test_dnsmasq_side_sees_each_udp_query_once(dig_capture):
    # dnsmasq's unconnected UDP socket: the local end is the kernel socket's, the peer per datagram
    servers = [s for s in dig_capture.spans if s["kind"] == "SERVER" and s["attributes"]["network.transport"] == "udp"]
    got = sorted((s["attributes"]["dns.question.name"], s["attributes"]["dns.question.type"],
                  s["attributes"].get("dns.response_code")) for s in servers)
    assert got == sorted([(OK_NAME, "A", "NOERROR"), (OK_NAME, "AAAA", "NOERROR"), (GONE_NAME, "A", "NXDOMAIN")]), \
        dig_capture.stats
    assert all(s["attributes"]["server.port"] == dig_capture.port for s in servers)


GAI = "import socket,sys; print(sorted({a[4][0] for a in socket.getaddrinfo(sys.argv[1], 80, type=socket.SOCK_STREAM)}))"


def test_getaddrinfo_in_a_network_namespace():
    """glibc sends A and AAAA together with sendmmsg(): both must come out as spans."""
    if not shutil.which("ip"):
        pytest.fail("iproute2 missing: run `make setup`")
    ns = f"guardian-dns-{RUN}"
    etc = Path("/etc/netns") / ns
    name = f"gai-{RUN}.x.test"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=20)
    try:
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
        inns = ["ip", "netns", "exec", ns]
        subprocess.run([*inns, "ip", "link", "set", "lo", "up"], check=True, timeout=20)
        server = subprocess.Popen([*inns, *dnsmasq_cmd(53)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            with live_capture(port=53, extra=("--no-tls",)) as cap:
                out = subprocess.run([*inns, sys.executable, "-c", GAI, name], capture_output=True, text=True,
                                     timeout=30, env=dict(os.environ, PYTHONPATH=""))
        finally:
            server.terminate()
            server.wait(timeout=10)
        assert out.returncode == 0, out.stderr
        assert "10.1.2.3" in out.stdout and "fd00::123" in out.stdout
        clients = ours(cap.spans, name, "CLIENT")
        assert sorted(s["attributes"]["dns.question.type"] for s in clients) == ["A", "AAAA"], cap.stats
        for s in clients:
            assert s["attributes"]["dns.response_code"] == "NOERROR" and s["status_code"] == "UNSET"
            assert s["attributes"]["network.transport"] == "udp"
            assert s["attributes"]["server.port"] == 53 and s["attributes"]["client.port"] > 0
        # both processes live in another network namespace than the agent (whose /proc/net shows
        # neither socket): both ends of each exchange come from the kernel's socket
        servers = ours(cap.spans, name, "SERVER")
        assert sorted(s["attributes"]["dns.question.type"] for s in servers) == ["A", "AAAA"], cap.stats
        for s in servers:
            assert s["attributes"]["network.transport"] == "udp" and s["attributes"]["server.port"] == 53
            assert s["attributes"]["client.port"] == clients[0]["attributes"]["client.port"]
        assert not cap.stats.get("conntrack.tuple_unresolved"), cap.stats
    finally:
        subprocess.run(["ip", "netns", "delete", ns], timeout=20)
        shutil.rmtree(etc, ignore_errors=True)
