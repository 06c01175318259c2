"""Executable files mapped by processes, from /proc/<pid>/maps (and /proc/<pid>/exe)."""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MappedFile:
    """A file as the kernel knows it: (dev, inode) identifies it across paths and mounts."""
    dev: int
    inode: int
    path: str  # openable from here: through /proc/<pid>/root for other mount namespaces


def _openable(pid: int, path: str) -> str:
    if os.path.exists(path):
        return path
    return f"/proc/{pid}/root{path}"  # a container's file: same inode, our path to it


def mapped_files(pid: int) -> list[MappedFile]:
    """Executable file mappings of `pid` (its binary and shared libraries), unique by inode."""
    seen: dict[tuple[int, int], MappedFile] = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            lines = f.readlines()
    except OSError:
        return []  # gone, or a kernel thread
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        path = parts[5].rstrip("\n")
        if path.endswith(" (deleted)"):
            continue  # replaced on disk: the path now names another file
        major, minor = (int(x, 16) for x in parts[3].split(":"))
        inode = int(parts[4])
        if inode == 0:
            continue
        key = (os.makedev(major, minor), inode)
        if key not in seen:
            seen[key] = MappedFile(key[0], inode, _openable(pid, path))
    return list(seen.values())


def file_identity(path: str) -> tuple[int, int] | None:
    """(dev, inode) of a file by path, as maps reports it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]
