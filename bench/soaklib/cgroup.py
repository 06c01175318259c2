"""A cgroup of the soak's own: the soak process joins it first, so every process it starts (the
shop, the servers, the agent) is inside, and the agent's capture.scope keeps only their spans.

A directory in the cgroup v2 hierarchy (unified, alone or beside v1 controllers) with no
controller enabled: it labels processes and limits nothing. Leaving moves the soak back to the
parent and removes the directory once its other members have exited."""
from __future__ import annotations

import os
import time
from pathlib import Path

ROOTS = ("/sys/fs/cgroup/unified", "/sys/fs/cgroup")


def v2_root() -> Path | None:
    for root in map(Path, ROOTS):
        if (root / "cgroup.procs").exists() and (root / "cgroup.controllers").exists():
            return root
    return None


def own_path(pid: int | None = None) -> str | None:
    """This process's path in the v2 hierarchy (the `0::` line of /proc/PID/cgroup)."""
    with open(f"/proc/{pid or 'self'}/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line.rstrip("\n")[3:]
    return None


class SoakCgroup:
    def __init__(self, name: str) -> None:
        root = v2_root()
        if root is None:
            raise OSError("no cgroup v2 hierarchy mounted (needed to scope the agent to the soak)")
        parent = own_path() or "/"
        self.root = root
        self.parent_dir = root / parent.lstrip("/")
        self.path = (parent.rstrip("/") + "/" + name)  # what /proc/PID/cgroup and capture.scope name
        self.dir = root / self.path.lstrip("/")

    def join(self) -> "SoakCgroup":
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))
        return self

    def members(self) -> list[int]:
        try:
            return [int(x) for x in (self.dir / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def leave(self, wait_s: float = 10.0) -> bool:
        """Back to the parent; the directory goes once nothing else is in it (True when removed)."""
        try:
            (self.parent_dir / "cgroup.procs").write_text(str(os.getpid()))
        except OSError:
            return False
        deadline = time.monotonic() + wait_s
        while self.members() and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            self.dir.rmdir()
            return True
        except OSError:
            return False
