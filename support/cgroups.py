"""A cgroup v2 directory for a live test (no controllers: it only labels processes), and commands
run inside it."""
from __future__ import annotations

import uuid
from contextlib import contextmanager
from pathlib import Path

from capture.scope import V2_ROOTS


def v2_root() -> Path:
    for root in map(Path, V2_ROOTS):
        if (root / "cgroup.controllers").exists():
            return root
    raise RuntimeError("no cgroup v2 hierarchy mounted (the kernel's scope needs one)")


@contextmanager
def temp_cgroup(prefix: str = "guardian-test-scope"):
    """Yields (its path as /proc/PID/cgroup names it, its directory); removed after, its
    leftover processes moved back to the root first."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    d = v2_root() / name
    d.mkdir()
    try:
        yield "/" + name, d
    finally:
        for pid in (d / "cgroup.procs").read_text().split():
            try:
                (d.parent / "cgroup.procs").write_text(pid)
            except OSError:
                pass
        d.rmdir()


def inside(d: Path, cmd: list[str]) -> list[str]:
    """`cmd` run from a shell that first moves itself into cgroup dir `d` (exec keeps the cgroup)."""
    return ["sh", "-c", f'echo $$ > {d}/cgroup.procs && exec "$@"', "sh", *cmd]
