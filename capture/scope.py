"""Which processes an agent answers for: those of one network namespace or one cgroup subtree
(a node's, or a pod set's), so several agents on one machine act as separate nodes.

Decided per pid from /proc (the namespace inode, the cgroup path), cached for `ttl_s`;
a process that is gone is out. Spans of processes out of scope are dropped; with a node name,
the kept ones carry it as host.name (and k8s.node.name when set).
"""
from __future__ import annotations

import os
import time
from typing import Any

from capture.span import Span


class Scope:
    def __init__(self, netns: str | None = None, cgroup: str | None = None, node_name: str | None = None,
                 ttl_s: float = 30.0, proc: str = "/proc"):
        self.netns_ino = os.stat(netns).st_ino if netns else None
        self.cgroup = "/" + cgroup.strip("/") if cgroup else None
        if self.cgroup and self.cgroup.startswith("/sys/fs/cgroup"):
            self.cgroup = self.cgroup[len("/sys/fs/cgroup"):] or "/"
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

    def allows(self, pid: int) -> bool:
        now = time.monotonic()
        hit = self._verdict.get(pid)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        try:
            ok = ((self.netns_ino is None or os.stat(f"{self.proc}/{pid}/ns/net").st_ino == self.netns_ino)
                  and (self.cgroup is None or self._in_cgroup(pid)))
        except OSError:
            ok = False
        if len(self._verdict) > 65536:
            self._verdict.clear()
        self._verdict[pid] = (now, ok)
        return ok

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
            if pid is not None and self.allows(int(pid)):
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
