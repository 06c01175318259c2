"""Conntrack NAT lookups and per-node scope on real namespaces: a DNAT "ClusterIP" entry read
back (also after the client exited), and scope decisions by netns and cgroup."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from capture.enrich.nat import NAT_SERVER, NatTable, parse
from capture.scope import Scope, from_config
from capture.span import Span
from support.netsim import CLUSTER_IP, leftovers, topology

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")

LINE = ("ipv4     2 tcp      6 119 ESTABLISHED src=10.77.0.1 dst=10.96.0.10 sport=54266 dport=80 "
        "src=10.77.0.2 dst=10.77.0.1 sport=8080 dport=54266 [ASSURED] mark=0 zone=0 use=2")
PLAIN = ("ipv4     2 tcp      6 119 ESTABLISHED src=10.77.0.1 dst=10.77.0.3 sport=4000 dport=81 "
         "src=10.77.0.3 dst=10.77.0.1 sport=81 dport=4000 [ASSURED] mark=0 zone=0 use=2")


def test_parse_keeps_rewritten_entries_only():
    table = parse([LINE, PLAIN, "garbage", "ipv4 2 tcp 6 1 src=1.2.3.4"])
    assert table == {("tcp", "10.77.0.1", 54266, "10.96.0.10", 80): ("tcp", "10.77.0.2", 8080, "10.77.0.1", 54266)}


CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=5)
print(s.getsockname()[1], flush=True)
time.sleep(30)
"""


def test_clusterip_entry_read_from_the_clients_namespace_even_after_it_exited():
    with topology(2) as topo:
        a, b = topo.nodes
        topo.cluster_ip(a, CLUSTER_IP, 80, b, 8080)
        srv = subprocess.Popen(b.run(sys.executable, "-m", "http.server", "8080", "--bind", b.ip),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        cli = subprocess.Popen(a.run(sys.executable, "-c", CLIENT, CLUSTER_IP), stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(50):
                line = cli.stdout.readline().strip()
                if line:
                    break
            lport = int(line)
            span = Span(name="GET /", kind="CLIENT", start_time_unix_nano=1, end_time_unix_nano=2,
                        attributes={"client.address": a.ip, "client.port": lport, "server.address": CLUSTER_IP,
                                    "server.port": 80, "network.transport": "tcp"},
                        resource={"process.pid": cli.pid})
            nat = NatTable()
            nat.annotate([span])  # by the client's own /proc/<pid>/net (ip netns exec's pid: same netns)
            assert (span.attributes.get(NAT_SERVER[0]), span.attributes.get(NAT_SERVER[1])) == (b.ip, 8080)
            cli.kill()
            cli.wait()
            late = Span(name="GET /", kind="CLIENT", start_time_unix_nano=1, end_time_unix_nano=2,
                        attributes=dict(span.attributes), resource={"process.pid": cli.pid})
            for k in NAT_SERVER:
                late.attributes.pop(k)
            NatTable().annotate([late])
            assert NAT_SERVER[0] not in late.attributes  # the pid is gone and no namespace known
            NatTable(netns=[a.netns_path]).annotate([late])
            assert late.attributes[NAT_SERVER[0]] == b.ip and late.attributes[NAT_SERVER[1]] == 8080
        finally:
            cli.kill()
            srv.kill()
            srv.wait()
    assert not leftovers()


def test_scope_by_netns_and_cgroup():
    with topology(1) as topo:
        (n,) = topo.nodes
        inside = subprocess.Popen(n.run("sleep", "30"))
        try:
            time.sleep(0.3)
            pid = int(subprocess.run(["ip", "netns", "pids", n.netns], capture_output=True, text=True)
                      .stdout.split()[0])
            scope = from_config({"netns": n.netns_path, "node_name": "node-1"})
            assert scope.allows(pid) and not scope.allows(os.getpid()) and not scope.allows(2 ** 22 + 7)
            spans = [Span(name="x", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2,
                          resource={"process.pid": p, "host.name": "vm"}) for p in (pid, os.getpid())]
            kept = scope.keep(spans + [Span(name="y", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2)])
            assert [s.resource["process.pid"] for s in kept] == [pid] and scope.dropped == 2
            assert kept[0].resource["host.name"] == "node-1" and spans[1].resource["host.name"] == "vm"
            # A process gone before its spans arrive: its end of the connection decides.
            gone = 2 ** 22 + 11
            late = [Span(name="GET /", kind="CLIENT", start_time_unix_nano=1, end_time_unix_nano=2,
                         attributes={"client.address": ip, "server.address": "10.96.0.10"},
                         resource={"process.pid": gone}) for ip in (n.ip, "10.77.0.99", "127.0.0.1")]
            assert [s.attributes["client.address"] for s in scope.keep(late)] == [n.ip]
        finally:
            inside.kill()
            inside.wait()
    # Our deepest cgroup path (cgroup v2: the one line; v1/hybrid: the deepest hierarchy's).
    mine = max((line.split(":", 2)[-1] for line in open("/proc/self/cgroup").read().split()), key=len)
    assert Scope(cgroup="/sys/fs/cgroup" + mine).allows(os.getpid())
    assert not Scope(cgroup=mine.rstrip("/") + "-not-this-one").allows(os.getpid())
    assert from_config({}) is None
