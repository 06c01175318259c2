"""The bounded queue of span batches between a producer that must never wait (the capture thread,
the agent's worker handing spans to an exporter) and one consumer thread.

Bounded three times: in batches (the queue), in spans (every queued span is a Python object) and,
when the producer says what a batch holds, in bytes (a span's text varies: a SQL statement or a
URL is up to the capture's payload prefix, so the span count alone does not bound memory). `offer`
never blocks and says False when a bound is reached (the caller counts the drop; `refused_bytes`
counts the offers the byte bound refused); the consumer calls `taken(n)` once it is done with the n
spans it got. `put(None)` (blocking) tells the consumer to stop. A reserve past the bounds (a
quarter of the byte bound with the spans' reserve) is kept for what the producer offers with
`reserve=True` when the queue is full (the agent's overload shedding: errors and quiet processes'
spans, guardian/shed.py).
"""
from __future__ import annotations

import queue
import threading
from typing import Any


class BatchQueue:
    def __init__(self, max_batches: int, max_spans: int, reserve_spans: int = 0, max_bytes: int = 0):
        self._q: queue.Queue[tuple[list[Any], int] | None] = queue.Queue(maxsize=max_batches)
        self.max_spans, self.reserve_spans = max_spans, reserve_spans
        self.max_bytes = max_bytes  # 0: no byte bound
        self.reserve_bytes = max_bytes // 4 if reserve_spans else 0
        self.spans = 0  # offered and not yet taken
        self.bytes = 0  # what the producer said the batches offered and not yet taken hold
        self.refused_bytes = 0  # offers refused by the byte bound
        self._handed_bytes = 0  # of batches the consumer got and has not said it is done with
        self._lock = threading.Lock()

    def offer(self, batch: list[Any], reserve: bool = False, nbytes: int = 0) -> bool:
        n = len(batch)
        bound = self.max_spans + (self.reserve_spans if reserve else 0)
        with self._lock:
            if self.spans + n > bound:
                return False
            if self.max_bytes and self.bytes + nbytes > self.max_bytes + (self.reserve_bytes if reserve else 0):
                self.refused_bytes += 1
                return False
            self.spans += n
            self.bytes += nbytes
        try:
            self._q.put_nowait((batch, nbytes))
        except queue.Full:
            with self._lock:
                self.spans -= n
                self.bytes -= nbytes
            return False
        return True

    def room(self, n: int) -> bool:
        """Whether `offer` of n spans would be taken now as far as spans and batches go (the
        producer may skip making them)."""
        return (self.spans + n <= self.max_spans and not self._q.full()
                and (not self.max_bytes or self.bytes < self.max_bytes))

    def taken(self, n: int) -> None:
        """The consumer is done with n spans: those of every batch it got so far (one consumer)."""
        with self._lock:
            self.spans -= n
            self.bytes -= self._handed_bytes
            self._handed_bytes = 0

    def put(self, item: list[Any] | None) -> None:
        """A blocking put: the stop sentinel (None)."""
        self._q.put(None if item is None else (item, 0))

    def _out(self, item: tuple[list[Any], int] | None) -> list[Any] | None:
        if item is None:
            return None
        batch, nbytes = item
        if nbytes:
            with self._lock:
                self._handed_bytes += nbytes
        return batch

    def get(self, timeout: float | None = None) -> list[Any] | None:
        """The next batch (or None: stop); raises queue.Empty after `timeout`."""
        return self._out(self._q.get(timeout=timeout))

    def get_nowait(self) -> list[Any] | None:
        return self._out(self._q.get_nowait())

    def qsize(self) -> int:
        return self._q.qsize()
