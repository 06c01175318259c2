"""History of scheduled anomaly reports: newest kept in memory, optionally appended to a JSONL file.

The file is the durable copy (reloaded on start, last `max_items` lines); queries read memory.
"""
from __future__ import annotations

import json
import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

from guardian.api.files import private_open

log = logging.getLogger(__name__)


class ReportHistory:
    def __init__(self, path: str | None = None, max_items: int = 500):
        self.path = Path(path) if path else None
        self._items: deque[dict[str, Any]] = deque(maxlen=max_items)
        self._lock = threading.Lock()
        if self.path and self.path.exists():
            for n, line in enumerate(self.path.read_text().splitlines(), 1):
                try:
                    self._items.append(json.loads(line))
                except ValueError:  # a torn last line after a crash must not lose the rest
                    log.warning("%s:%d: skipping unreadable history line", self.path, n)

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._items.append(record)
            if self.path:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with private_open(self.path) as f:
                    f.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")

    def list(self, limit: int = 50, since_ns: int | None = None, only_anomalies: bool = False) -> list[dict]:
        """Newest first."""
        with self._lock:
            items = list(self._items)
        out = [r for r in reversed(items)
               if (since_ns is None or r["at_ns"] >= since_ns) and (not only_anomalies or r["anomaly_count"])]
        return out[:limit]

    def get(self, report_id: str) -> dict | None:
        with self._lock:
            return next((r for r in self._items if r["id"] == report_id), None)
