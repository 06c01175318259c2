"""A few "nodes" on one machine: network namespaces on a bridge (itself in a namespace we make),
private addresses that exist only inside them, and an iptables DNAT "ClusterIP".

Nothing is added to the root namespace: the bridge lives in its own namespace, so traffic
between nodes never leaves the namespaces made here. `topology()` removes everything it made
(processes left inside, namespaces, and with them their veths, bridge and iptables rules),
also when the body fails.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

SUBNET = "10.77.0"  # inside our namespaces only
CLUSTER_IP = "10.96.0.10"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass
class Node:
    name: str  # node name as agents report it
    netns: str  # `ip netns` name
    ip: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def run(self, *args: str) -> list[str]:
        """argv that runs `args` inside this node's namespace."""
        return ["ip", "netns", "exec", self.netns, *args]


@dataclass
class Topology:
    nodes: list[Node]
    switch: str
    rules: list[str] = field(default_factory=list)

    def cluster_ip(self, on: Node, vip: str, vport: int, to: Node, port: int) -> None:
        """A Service ClusterIP as kube-proxy makes it: DNAT of vip:vport to a pod, on the client's node."""
        sh(*on.run("ip", "route", "replace", f"{vip}/32", "dev", "eth0"))
        sh(*on.run("iptables", "-t", "nat", "-A", "OUTPUT", "-d", f"{vip}/32", "-p", "tcp",
                   "--dport", str(vport), "-j", "DNAT", "--to-destination", f"{to.ip}:{port}"))
        self.rules.append(f"{on.netns}: {vip}:{vport} -> {to.ip}:{port}")


def _cleanup(names: list[str]) -> None:
    for ns in names:
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for p in pids:
            try:
                os.kill(int(p), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    time.sleep(0.1 if names else 0)
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)


@contextmanager
def topology(n: int = 3, prefix: str = "gcl") -> Iterator[Topology]:
    tag = uuid.uuid4().hex[:4]
    switch = f"{prefix}-{tag}-sw"
    made: list[str] = []
    try:
        sh("ip", "netns", "add", switch)
        made.append(switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        sh("ip", "-n", switch, "link", "set", "lo", "up")
        nodes = []
        for i in range(1, n + 1):
            ns = f"{prefix}-{tag}-n{i}"
            sh("ip", "netns", "add", ns)
            made.append(ns)
            node = Node(name=f"node-{i}", netns=ns, ip=f"{SUBNET}.{i}")
            # veth created inside the switch namespace, one end moved to the node's: the root
            # namespace never holds either end.
            sh("ip", "-n", switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
               "netns", ns)
            sh("ip", "-n", switch, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", switch, "link", "set", f"p{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"{node.ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            nodes.append(node)
        yield Topology(nodes, switch)
    finally:
        _cleanup(made)


def leftovers(prefix: str = "gcl") -> list[str]:
    """Namespaces of ours still there (tests assert none after a run)."""
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines()
            if line.startswith(prefix + "-")]
