"""A bounded on-disk FIFO of encoded span batches: what the agent has not yet shipped.

One file per batch, named `<seq>-<spans>.otlp`, written to a temporary name and renamed so a
crash never leaves half a batch; files left by an earlier run are sent first. Bounded by
bytes: a batch that does not fit is refused (the caller counts it), never blocks.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path


class Spool:
    def __init__(self, directory: str | os.PathLike, max_bytes: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.nonempty = threading.Condition(self._lock)
        self._items: list[tuple[int, int, int]] = []  # (seq, spans, bytes), oldest first
        for f in self.dir.glob("*.otlp.tmp"):
            f.unlink(missing_ok=True)
        for f in self.dir.glob("*.otlp"):
            try:
                seq, n = (int(x) for x in f.name[:-5].split("-"))
            except ValueError:
                continue
            self._items.append((seq, n, f.stat().st_size))
        self._items.sort()
        self._next = self._items[-1][0] + 1 if self._items else 0
        self.bytes = sum(i[2] for i in self._items)
        self.spans = sum(i[1] for i in self._items)

    def _path(self, seq: int, n: int) -> Path:
        return self.dir / f"{seq:016d}-{n}.otlp"

    def put(self, body: bytes, spans: int) -> bool:
        """Append one batch; False (nothing written) when it would pass max_bytes."""
        with self._lock:
            if self.bytes + len(body) > self.max_bytes:
                return False
            seq = self._next
            self._next += 1
        path = self._path(seq, spans)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        with self._lock:
            self._items.append((seq, spans, len(body)))
            self._items.sort()  # two writers may finish out of order
            self.bytes += len(body)
            self.spans += spans
            self.nonempty.notify_all()
        return True

    def oldest(self, wait_s: float = 0.0) -> tuple[int, int, bytes] | None:
        """(seq, spans, body) of the oldest batch, waiting up to wait_s for one; it stays queued."""
        with self._lock:
            if not self._items and wait_s > 0:
                self.nonempty.wait(wait_s)
            if not self._items:
                return None
            seq, n, _ = self._items[0]
        return seq, n, self._path(seq, n).read_bytes()

    def remove(self, seq: int) -> None:
        with self._lock:
            for i, (s, n, size) in enumerate(self._items):
                if s == seq:
                    del self._items[i]
                    self.bytes -= size
                    self.spans -= n
                    self._path(s, n).unlink(missing_ok=True)
                    return

    def batches(self) -> int:
        with self._lock:
            return len(self._items)
