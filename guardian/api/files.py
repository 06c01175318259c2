"""Files that hold captured data are private to their owner (0600): the store, report history, memory.

`private_open` creates a file 0600 from the start (no window in which it is world-readable);
`restrict_store` tightens a store file someone else created (and its write-ahead log).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO

PRIVATE = 0o600


def private_open(path: str | os.PathLike, mode: str = "a") -> IO[str]:
    """open() for text append/write that creates the file 0600 and tightens an existing one."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE)
    os.fchmod(fd, PRIVATE)
    return os.fdopen(fd, mode)


def make_private(path: str | os.PathLike) -> None:
    """chmod 0600 if it exists (touching it first if not), so later opens keep it private."""
    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT, PRIVATE))
    os.chmod(p, PRIVATE)


def restrict_store(store: object) -> None:
    path = getattr(store, "path", None)
    if not path or str(path) == ":memory:":
        return
    for p in (Path(path), Path(f"{path}.wal")):
        if p.exists():
            os.chmod(p, PRIVATE)
