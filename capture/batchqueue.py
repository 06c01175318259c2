"""The bounded queue of span batches between a producer that must never wait (the capture thread,
the agent's worker handing spans to an exporter) and one consumer thread.

Bounded twice: in batches (the queue) and in spans (every queued span is a Python object, so
the span count is what bounds memory). `offer` never blocks and says False when either bound
is reached (the caller counts the drop); the consumer calls `taken(n)` once it is done with n
spans. `put(None)` (blocking) tells the consumer to stop. A reserve of spans past the bound is
kept for what the producer offers with `reserve=True` when the queue is full (the agent's
overload shedding: errors and quiet processes' spans, guardian/shed.py).
"""
from __future__ import annotations

import queue
import threading
from typing import Any


class BatchQueue:
    def __init__(self, max_batches: int, max_spans: int, reserve_spans: int = 0):
        self._q: queue.Queue[list[Any] | None] = queue.Queue(maxsize=max_batches)
        self.max_spans, self.reserve_spans = max_spans, reserve_spans
        self.spans = 0  # offered and not yet taken
        self._lock = threading.Lock()

    def offer(self, batch: list[Any], reserve: bool = False) -> bool:
        n = len(batch)
        bound = self.max_spans + (self.reserve_spans if reserve else 0)
        with self._lock:
            if self.spans + n > bound:
                return False
            self.spans += n
        try:
            self._q.put_nowait(batch)
        except queue.Full:
            self.taken(n)
            return False
        return True

    def room(self, n: int) -> bool:
        """Whether `offer` of n spans would be taken now (the producer may skip making them)."""
        return self.spans + n <= self.max_spans and not self._q.full()

    def taken(self, n: int) -> None:
        with self._lock:
            self.spans -= n

    def put(self, item: list[Any] | None) -> None:
        """A blocking put: the stop sentinel (None)."""
        self._q.put(item)

    def get(self, timeout: float | None = None) -> list[Any] | None:
        """The next batch (or None: stop); raises queue.Empty after `timeout`."""
        return self._q.get(timeout=timeout)

    def get_nowait(self) -> list[Any] | None:
        return self._q.get_nowait()

    def qsize(self) -> int:
        return self._q.qsize()
