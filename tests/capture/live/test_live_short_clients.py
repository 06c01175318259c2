"""Live eBPF capture of clients gone before the agent reads their first record.

Each DNS query below is made on a fresh socket that is closed at once (so the next socket gets
the same fd number) by a process that exits right after its last answer: by the time the agent
decodes the first record, /proc/<pid>/fd/<fd> names another socket or nothing. Every query
must still be one CLIENT span with the local port the client itself saw.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid

import pytest

from support.live import free_port, live_capture
from support.process import process

pytestmark = pytest.mark.ebpf
DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
RUN = uuid.uuid4().hex[:8]

# args: port, name prefix, rounds, transport. Prints "name local_port" per query.
CLIENT = r"""
import os, socket, struct, sys
port, prefix, rounds, transport = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
lines = []
for i in range(rounds):
    name = f"{prefix}-{i}.x.test"
    q = struct.pack(">6H", i + 1, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">2H", 1, 1)
    if transport == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("127.0.0.1", port))
        s.send(q)
        s.recv(512)
    else:
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(struct.pack(">H", len(q)) + q)
        s.recv(512)
    lines.append(f"{name} {s.getsockname()[1]}")
    s.close()
sys.stdout.write("\n".join(lines) + "\n")
sys.stdout.flush()
os._exit(0)
"""


def run_client(port: int, prefix: str, rounds: int, transport: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", CLIENT, str(port), prefix, str(rounds), transport],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return {name: int(lport) for name, lport in (line.split() for line in out.splitlines())}


def test_every_query_of_a_gone_client_is_a_span_with_its_own_ports():
    if not shutil.which(DNSMASQ) and not shutil.which("dnsmasq"):
        pytest.fail("dnsmasq missing: run `make setup`")
    port = free_port()
    cmd = [DNSMASQ, "--no-daemon", "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
           "--bind-interfaces", "--no-resolv", "--no-hosts", "--address=/x.test/10.1.2.3", "--user=root",
           "--pid-file="]
    expected: dict[str, tuple[int, str]] = {}
    with live_capture(port=port, extra=("--no-tls",)) as cap:
        with process(cmd, port):
            # one process, many sockets on the same fd number
            for name, lport in run_client(port, f"u{RUN}", 30, "udp").items():
                expected[name] = (lport, "udp")
            for name, lport in run_client(port, f"t{RUN}", 5, "tcp").items():
                expected[name] = (lport, "tcp")
            # many processes, one query each
            for k in range(8):
                for name, lport in run_client(port, f"p{k}{RUN}", 1, "udp").items():
                    expected[name] = (lport, "udp")
    assert len(expected) == 43
    clients: dict[str, list[dict]] = {}
    for s in cap.spans:
        name = s["attributes"].get("dns.question.name")
        if s["kind"] == "CLIENT" and name in expected:
            clients.setdefault(name, []).append(s["attributes"])
    missing = sorted(set(expected) - set(clients))
    assert not missing, (missing, cap.stats)
    wrong = {name: (expected[name], [(a.get("client.port"), a["network.transport"]) for a in got])
             for name, got in clients.items()
             if len(got) != 1 or got[0].get("client.port") != expected[name][0]
             or got[0]["network.transport"] != expected[name][1] or got[0].get("server.port") != port}
    assert not wrong, (wrong, cap.stats)
    assert not cap.stats.get("conntrack.tuple_unresolved"), cap.stats  # connections kept by --port
