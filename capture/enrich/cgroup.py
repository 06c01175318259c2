"""Container id and systemd unit from a process's cgroup paths (/proc/PID/cgroup).

Runtimes name the leaf cgroup after the container: docker-<id>.scope, cri-containerd-<id>.scope,
crio-<id>.scope, libpod-<id>.scope (systemd driver) or /docker/<id>, /kubepods/.../<id>
(cgroupfs driver). Ids are 64 hex characters.
"""
from __future__ import annotations

import os
import re

_CONTAINER_ID = re.compile(r"(?:^|[-/:])([0-9a-f]{64})(?:\.scope)?$")
_UNIT = re.compile(r"/system\.slice/(?:.*/)?([^/]+)\.service(?:/|$)")


def cgroup_paths(text: str) -> list[str]:
    """Paths of every hierarchy in a /proc/PID/cgroup file ("id:controllers:path" lines)."""
    return [line.split(":", 2)[2] for line in text.splitlines() if line.count(":") >= 2]


def container_id(paths: list[str]) -> str | None:
    for path in paths:
        for part in reversed(path.rstrip("/").split("/")):
            m = _CONTAINER_ID.search(part)
            if m:
                return m.group(1)
    return None


def systemd_unit(paths: list[str]) -> str | None:
    """The .service unit (without suffix) a process runs in, if it runs in one."""
    for path in paths:
        m = _UNIT.search(path)
        if m:
            return m.group(1)
    return None


def cgroup_dir_by_id(cgroup_id: int, root: str = "/sys/fs/cgroup") -> str | None:
    """The cgroup v2 directory whose inode is cgroup_id (what bpf_get_current_cgroup_id returns)."""
    for base in (os.path.join(root, "unified"), root):
        if not os.path.isdir(base):
            continue
        for dirpath, _dirs, _files in os.walk(base):
            try:
                if os.stat(dirpath).st_ino == cgroup_id:
                    return dirpath[len(base):] or "/"
            except OSError:
                continue
    return None
