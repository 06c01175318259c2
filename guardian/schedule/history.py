"""History of scheduled anomaly reports: the newest `max_items`, in a JSONL file when given one,
else in memory.

With a file, memory holds only where each kept record is (id, time, anomaly count, offset): a record
with an investigation weighs ~25 kB in Python, 500 of them 12 MB, and the file has them anyway.
The file is compacted to the newest `max_items` lines once it holds twice that many. Without a
file the records themselves are kept. Either way the oldest record goes when a new one comes past
the bound, and is counted (`evicted`: guardian_report_history_evicted on /metrics).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

from guardian.api.files import private_open

log = logging.getLogger(__name__)


class _At(NamedTuple):
    """Where one record of the file is, and what list() filters on."""

    id: str
    at_ns: int
    anomaly_count: int
    offset: int
    length: int


class ReportHistory:
    def __init__(self, path: str | None = None, max_items: int = 500):
        self.path = Path(path) if path else None
        self.max_items = max_items
        self.evicted = 0  # records dropped past max_items (from memory, and from the file when compacted)
        self._items: deque[dict[str, Any]] = deque(maxlen=max_items)  # without a file
        self._index: deque[_At] = deque(maxlen=max_items)  # with a file
        self._lines = 0  # lines in the file (compacted past 2 * max_items)
        self._torn = False  # the file ends in a torn line (a crash): the next record starts a new one
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            self._load()

    def _load(self) -> None:
        offset = 0
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    r = json.loads(line)
                    self._index.append(_At(r["id"], int(r["at_ns"]), int(r.get("anomaly_count", 0)), offset, len(line)))
                except (ValueError, KeyError, TypeError):  # a torn last line after a crash must not lose the rest
                    log.warning("%s:%d: skipping unreadable history line", self.path, n)
                offset += len(line)
                self._lines += 1
                self._torn = not line.endswith(b"\n")

    def __len__(self) -> int:
        return len(self._index) if self.path else len(self._items)

    def add(self, record: dict[str, Any]) -> int:
        """Keep `record`; the number of records dropped for it (0 or 1, more when the file is compacted)."""
        with self._lock:
            if not self.path:
                full = len(self._items) == self.max_items
                self._items.append(record)
                self.evicted += full
                return int(full)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = (json.dumps(record, default=str, separators=(",", ":")) + "\n").encode()
            with private_open(self.path, "ab") as f:
                if self._torn:
                    f.write(b"\n")
                    self._torn = False
                offset = f.seek(0, os.SEEK_END)
                f.write(data)
            full = len(self._index) == self.max_items
            self._index.append(_At(record["id"], int(record["at_ns"]), int(record.get("anomaly_count", 0)),
                                   offset, len(data)))
            self._lines += 1
            dropped = int(full)
            if self._lines >= 2 * self.max_items:
                self._compact()
            self.evicted += dropped
            return dropped

    def _compact(self) -> None:
        """The file rewritten with the indexed (newest) records only. Under the lock."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        index: list[_At] = []
        with open(self.path, "rb") as src, private_open(tmp, "wb") as dst:
            for at in self._index:
                src.seek(at.offset)
                index.append(at._replace(offset=dst.tell()))
                dst.write(src.read(at.length))
        os.replace(tmp, self.path)
        self._index = deque(index, maxlen=self.max_items)
        self._lines = len(index)

    def _read(self, ats: list[_At]) -> list[dict]:
        out = []
        with open(self.path, "rb") as f:
            for at in ats:
                f.seek(at.offset)
                try:
                    out.append(json.loads(f.read(at.length)))
                except ValueError:  # the file changed under us (edited by hand): skip, the rest stays
                    log.warning("%s: unreadable history record %s", self.path, at.id)
        return out

    def list(self, limit: int = 50, since_ns: int | None = None, only_anomalies: bool = False) -> list[dict]:
        """Newest first."""
        with self._lock:
            if not self.path:
                items = list(self._items)
                return [r for r in reversed(items) if (since_ns is None or r["at_ns"] >= since_ns)
                        and (not only_anomalies or r["anomaly_count"])][:limit]
            ats = [a for a in reversed(self._index) if (since_ns is None or a.at_ns >= since_ns)
                   and (not only_anomalies or a.anomaly_count)][:limit]
            return self._read(ats)

    def get(self, report_id: str) -> dict | None:
        with self._lock:
            if not self.path:
                return next((r for r in self._items if r["id"] == report_id), None)
            at = next((a for a in self._index if a.id == report_id), None)
            found = self._read([at]) if at is not None else []
            return found[0] if found else None
