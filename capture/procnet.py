"""Sockets from /proc: the 4-tuple of a (pid, fd) and the connections open before we started.

Used where the kernel side could not read the socket (no BTF offsets for it, a socket not
yet bound) and to seed the connections open before we started. Reads are cached briefly: a burst of new connections costs one read.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

ESTABLISHED = "01"


@dataclass(frozen=True, slots=True)
class SockEntry:
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    inode: int
    transport: str  # "tcp" / "udp"


def _addr(hex_addr: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:  # four little-endian 32-bit words
        words = struct.unpack("<4I", raw)
        raw6 = struct.pack(">4I", *words)
        ip = socket.inet_ntop(socket.AF_INET6, raw6)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[7:]
    return ip, int(port_hex, 16)


def read_table(root: str = "/proc") -> dict[int, SockEntry]:
    """inode -> socket entry, over tcp, tcp6, udp, udp6 of the current net namespace."""
    entries: dict[int, SockEntry] = {}
    for name in ("tcp", "tcp6", "udp", "udp6"):
        try:
            with open(f"{root}/net/{name}") as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) < 10:
                        continue
                    inode = int(parts[9])
                    if inode:
                        entries[inode] = SockEntry(_addr(parts[1]), _addr(parts[2]), parts[3], inode,
                                                   "udp" if name.startswith("udp") else "tcp")
        except (OSError, ValueError, StopIteration):
            continue
    return entries


def socket_inode(pid: int, fd: int, root: str = "/proc") -> int | None:
    try:
        link = os.readlink(f"{root}/{pid}/fd/{fd}")
    except OSError:
        return None
    if link.startswith("socket:["):
        return int(link[8:-1])
    return None


class SocketTable:
    """Cached view of the socket tables (refreshed at most every `max_age_s`)."""

    def __init__(self, max_age_s: float = 0.2, root: str = "/proc") -> None:
        self.max_age_s = max_age_s
        self.root = root
        self._table: dict[int, SockEntry] = {}
        self._by_remote: dict[tuple[str, int], SockEntry] = {}
        self._at = 0.0

    def _fresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._at > self.max_age_s:
            self._table = read_table(self.root)
            self._by_remote = {e.remote: e for e in self._table.values() if e.state == ESTABLISHED}
            self._at = now

    def lookup(self, pid: int, fd: int, remote: tuple[str, int] | None = None,
               inode: int | None = None) -> SockEntry | None:
        """The socket `inode` if given (the fd may name another socket by now), else the one
        behind (pid, fd); else the established socket whose peer is `remote`."""
        if inode is None:
            inode = socket_inode(pid, fd, self.root)
        for force in (False, True):
            self._fresh(force)
            if inode is not None and inode in self._table:
                return self._table[inode]
            if remote is not None and remote in self._by_remote:
                return self._by_remote[remote]
        return None

    def established(self) -> list[tuple[int, int, SockEntry]]:
        """(pid, fd, entry) of every established TCP socket of every process."""
        self._fresh(force=True)
        tcp = {i: e for i, e in self._table.items() if e.transport == "tcp" and e.state == ESTABLISHED}
        found = []
        for pid_s in os.listdir(self.root):
            if not pid_s.isdigit():
                continue
            fd_dir = f"{self.root}/{pid_s}/fd"
            try:
                fds = os.listdir(fd_dir)
            except OSError:
                continue
            for fd_s in fds:
                inode = socket_inode(int(pid_s), int(fd_s), self.root)
                if inode in tcp:
                    found.append((int(pid_s), int(fd_s), tcp[inode]))
        return found
