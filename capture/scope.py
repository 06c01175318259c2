"""Which processes an agent answers for: those of one network namespace or one cgroup subtree
(a node's, or a pod set's), so several agents on one machine act as separate nodes.

The kernel makes the first cut (bpf/scope.h: records of other processes never reach the ring,
and a scoped agent's TLS probes go into in-scope processes only); this judges what reaches
userspace anyway, per pid from /proc (the namespace inode, the cgroup path), cached for `ttl_s`. A
process already gone when its spans arrive (a short client, a capture running behind) is
judged by the span's own end of the connection: in scope when that address belongs to the
namespace (its non-loopback addresses, re-read every `ttl_s`). Spans out of scope are dropped;
with a node name, the kept ones carry it as host.name.
"""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import orjson

from capture.span import Span

V2_ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")  # hybrid hosts mount v2 beside v1


def normalize_cgroup(path: str) -> str:
    """A cgroup as /proc/PID/cgroup's v2 line names it ("/a/b"), also from /sys/fs/cgroup/a/b."""
    out = "/" + path.strip("/")
    for root in V2_ROOTS:
        if out == root or out.startswith(root + "/"):
            return out[len(root):] or "/"
    return out


def cgroup_identity(path: str) -> tuple[int, int]:
    """(id, depth) of a v2 cgroup, what the kernel's bpf_get_current_ancestor_cgroup_id compares:
    the id is its directory's inode number. OSError when there is no such cgroup."""
    rel = normalize_cgroup(path)
    for root in V2_ROOTS:
        if os.path.exists(f"{root}/cgroup.controllers"):
            try:
                st = os.stat(root + rel.rstrip("/") if rel != "/" else root)
            except FileNotFoundError:
                raise OSError(f"no cgroup {rel} in the cgroup v2 hierarchy at {root}") from None
            return st.st_ino, len([p for p in rel.split("/") if p])
    raise OSError("no cgroup v2 hierarchy mounted")


def in_cgroup(pid: int, cgroup: str, proc: str = "/proc") -> bool:
    """Whether process `pid` is in the v2 subtree `cgroup` (normalized); OSError when it is gone."""
    with open(f"{proc}/{pid}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                path = line.rstrip("\n")[3:]
                return path == cgroup or cgroup == "/" or path.startswith(cgroup.rstrip("/") + "/")
    return False


class Scope:
    def __init__(self, netns: str | None = None, cgroup: str | None = None, node_name: str | None = None,
                 ttl_s: float = 30.0, proc: str = "/proc"):
        self.netns = netns
        self.netns_ino = os.stat(netns).st_ino if netns else None
        self._addrs: tuple[float, frozenset[str]] = (0.0, frozenset())
        self.cgroup = normalize_cgroup(cgroup) if cgroup else None
        self.node_name = node_name
        self.ttl_s = ttl_s
        self.proc = proc
        self._verdict: dict[int, tuple[float, bool]] = {}
        self._stamped: dict[int, tuple[dict, dict]] = {}  # id(resource) -> (resource, stamped copy)
        self.dropped = 0

    def _in_cgroup(self, pid: int) -> bool:
        with open(f"{self.proc}/{pid}/cgroup") as f:
            for line in f:
                path = line.rstrip("\n").split(":", 2)[-1]
                if path == self.cgroup or path.startswith(self.cgroup.rstrip("/") + "/"):
                    return True
        return False

    def _verdict_of(self, pid: int) -> bool | None:
        """In or out from /proc; None when the process is gone and was never seen."""
        now = time.monotonic()
        hit = self._verdict.get(pid)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            ok = ((self.netns_ino is None or os.stat(f"{self.proc}/{pid}/ns/net").st_ino == self.netns_ino)
                  and (self.cgroup is None or self._in_cgroup(pid)))
        except OSError:
            return hit[1] if hit is not None else None
        if len(self._verdict) > 65536:
            self._verdict.clear()
        self._verdict[pid] = (now, ok)
        return ok

    def allows(self, pid: int) -> bool:
        return bool(self._verdict_of(pid))

    def addresses(self) -> frozenset[str]:
        """The namespace's own (non-loopback) addresses."""
        now = time.monotonic()
        if self.netns is None or now - self._addrs[0] < self.ttl_s:
            return self._addrs[1]
        try:
            out = subprocess.run(["nsenter", f"--net={self.netns}", "ip", "-o", "addr", "show"],
                                 capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        addrs = set()
        for line in out.splitlines():
            parts = line.split()
            if len(parts) > 3 and parts[1] != "lo" and parts[2] in ("inet", "inet6"):
                addrs.add(parts[3].split("/")[0])
        self._addrs = (now, frozenset(addrs))
        return self._addrs[1]

    def _local_end_inside(self, s: Span) -> bool:
        if self.netns is None or self.cgroup is not None:
            return False
        a = s.attributes
        if a is None:  # a compact row (capture.rows): its attributes as JSON text
            a = orjson.loads(s.attrs_json)
        local = a.get("server.address") if s.kind in ("SERVER", "CONSUMER") else a.get("client.address")
        local = str(local or "")
        return (local[7:] if local.startswith("::ffff:") else local) in self.addresses()

    def _stamp(self, res: dict[str, Any]) -> dict[str, Any]:
        hit = self._stamped.get(id(res))
        if hit is not None and hit[0] is res:
            return hit[1]
        out = {**res, "host.name": self.node_name}
        if len(self._stamped) > 65536:
            self._stamped.clear()
        self._stamped[id(res)] = (res, out)
        return out

    def keep(self, spans: list[Span]) -> list[Span]:
        """The spans of processes in scope (pid from resource process.pid; none: out)."""
        out = []
        for s in spans:
            pid = s.resource.get("process.pid")
            ok = self._verdict_of(int(pid)) if pid is not None else None
            if ok or ok is None and self._local_end_inside(s):
                if self.node_name:
                    s.resource = self._stamp(s.resource)
                out.append(s)
        self.dropped += len(spans) - len(out)
        return out


def from_config(cfg: dict[str, Any] | None) -> Scope | None:
    """A Scope from the capture.scope section ({netns, cgroup, node_name}), None when empty."""
    if not cfg or not (cfg.get("netns") or cfg.get("cgroup")):
        return None
    return Scope(cfg.get("netns"), cfg.get("cgroup"), cfg.get("node_name"))
