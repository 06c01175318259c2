"""The kernel's NAT for a CLIENT span's connection, from its conntrack table: where a virtual
address (a Service ClusterIP rewritten by iptables DNAT) really led, as `guardian.nat.*`.

Read-only: /proc/<pid>/net/nf_conntrack (the client's network namespace), then the namespaces
the agent is scoped to (read from a short-lived thread that joins it: the client may have
exited, its connection's entry lives on), then the host's (/proc/1/net/..., where kube-proxy's
rules rewrite pod traffic). Only rewritten entries are kept; a table is re-read at most every
`max_age_s`. Nothing is written to packets or headers.
"""
from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import Iterable

from capture.span import Span

NAT_SERVER = ("guardian.nat.server.address", "guardian.nat.server.port")
NAT_CLIENT = ("guardian.nat.client.address", "guardian.nat.client.port")
Tuple = tuple[str, str, int, str, int]  # proto, src, sport, dst, dport


def parse(lines: Iterable[str]) -> dict[Tuple, Tuple]:
    """original tuple -> reply tuple, for entries whose addresses were rewritten.

    Line shape: `ipv4 2 tcp 6 431999 ESTABLISHED src=A dst=B sport=P dport=Q src=C dst=D
    sport=R dport=S [ASSURED] ...`: the first four keys are the original direction, the
    next four the reply direction (C:R is the real server, D:S the client it answers)."""
    out: dict[Tuple, Tuple] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 8 or parts[2] not in ("tcp", "udp"):
            continue
        kv = [p.split("=", 1) for p in parts if p.startswith(("src=", "dst=", "sport=", "dport="))]
        if len(kv) < 8:
            continue
        try:
            o = (parts[2], kv[0][1], int(kv[2][1]), kv[1][1], int(kv[3][1]))
            r = (parts[2], kv[4][1], int(kv[6][1]), kv[5][1], int(kv[7][1]))
        except (ValueError, IndexError):
            continue
        if (r[1], r[2]) != (o[3], o[4]) or (r[3], r[4]) != (o[1], o[2]):
            out[o] = r
    return out


def _plain(addr: object) -> str:
    s = str(addr)
    return s[7:] if s.startswith("::ffff:") else s


_CLONE_NEWNET = 0x40000000


def read_in_netns(netns_path: str) -> list[str]:
    """/proc/net/nf_conntrack as seen from a namespace (a thread joins it, then ends)."""
    out: list[str] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(netns_path, os.O_RDONLY)
            try:
                if libc.setns(fd, _CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed", netns_path)
            finally:
                os.close(fd)
            with open("/proc/thread-self/net/nf_conntrack") as f:
                out.extend(f)
        except OSError as e:
            err.append(e)

    t = threading.Thread(target=run, name="nat-read", daemon=True)
    t.start()
    t.join(5)
    if err:
        raise err[0]
    return out


class NatTable:
    def __init__(self, max_age_s: float = 0.5, proc: str = "/proc", netns: Iterable[str] = ()):
        self.max_age_s = max_age_s
        self.proc = proc
        self.netns = [p for p in netns if p]
        self._ns_tables: dict[str, tuple[float, dict[Tuple, Tuple]]] = {}
        self._tables: dict[int, tuple[float, dict[Tuple, Tuple]]] = {}  # netns inode -> table
        self.annotated = 0
        self.read_errors = 0

    def _table(self, pid: object) -> dict[Tuple, Tuple]:
        path = f"{self.proc}/{pid}/net/nf_conntrack"
        try:
            ino = os.stat(f"{self.proc}/{pid}/ns/net").st_ino
        except OSError:
            return {}
        hit = self._tables.get(ino)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.max_age_s:
            return hit[1]
        try:
            with open(path) as f:
                table = parse(f)
        except OSError:
            self.read_errors += 1
            table = {}
        self._tables[ino] = (now, table)
        return table

    def _ns_table(self, path: str) -> dict[Tuple, Tuple]:
        now = time.monotonic()
        hit = self._ns_tables.get(path)
        if hit is not None and now - hit[0] < self.max_age_s:
            return hit[1]
        try:
            table = parse(read_in_netns(path))
        except OSError:
            self.read_errors += 1
            table = {}
        self._ns_tables[path] = (now, table)
        return table

    def lookup(self, pid: object, proto: str, src: str, sport: int, dst: str, dport: int) -> Tuple | None:
        key = (proto, src, sport, dst, dport)
        r = self._table(pid).get(key)
        for path in self.netns:
            if r is None:
                r = self._ns_table(path).get(key)
        return r if r is not None else self._table(1).get(key)

    def annotate(self, spans: list[Span]) -> None:
        """Add `guardian.nat.*` to CLIENT spans whose connection the kernel rewrote."""
        for s in spans:
            if s.kind not in ("CLIENT", "PRODUCER"):
                continue
            a = s.attributes
            pid = s.resource.get("process.pid")
            try:
                r = self.lookup(pid if pid else 1, str(a.get("network.transport", "tcp")),
                                _plain(a["client.address"]), int(a["client.port"]),
                                _plain(a["server.address"]), int(a["server.port"]))
            except (KeyError, TypeError, ValueError):
                continue
            if r is None:
                continue
            self.annotated += 1
            a[NAT_SERVER[0]], a[NAT_SERVER[1]] = r[1], r[2]
            if (r[3], r[4]) != (_plain(a["client.address"]), int(a["client.port"])):
                a[NAT_CLIENT[0]], a[NAT_CLIENT[1]] = r[3], r[4]
