"""The hub's ingest: decoded spans -> cross-node linking -> the store, off the receivers' threads.

Receivers `offer()` span batches to a bounded queue and answer at once; when the queue is full
they answer "retry later" (OTLP's retryable status), so agents keep the batch in their own
on-disk queue instead of the hub growing without bound. One writer thread links and appends
in large batches (the store's inserts are columnar).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from capture.span import Span
from capture.store.api import SpanStore

log = logging.getLogger(__name__)


class Ingest:
    def __init__(self, store: SpanStore, linker: Any = None, max_queue_spans: int = 200_000,
                 batch_spans: int = 20_000, idle_s: float = 0.2):
        self.store = store
        self.linker = linker  # has add(spans) -> ready, idle() -> ready, flush() -> ready
        self.max_queue_spans = max_queue_spans
        self.batch_spans = batch_spans
        self.idle_s = idle_s
        self._q: deque[list[Span]] = deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._stop = False
        self.received = 0  # spans accepted from receivers
        self.rejected = 0  # spans refused by the decoder (bad ids, no name)
        self.malformed = 0  # requests that were not OTLP at all
        self.throttled = 0  # requests answered "retry later" because the queue was full
        self.stored = 0
        self.store_errors = 0
        self._busy = False
        self._thread = threading.Thread(target=self._run, name="hub-ingest", daemon=True)
        self._thread.start()

    def offer(self, spans: list[Span]) -> bool:
        """Queue a batch; False when full (the receiver answers retryable: nothing is lost)."""
        with self._cv:
            if self._queued and self._queued + len(spans) > self.max_queue_spans:
                self.throttled += 1
                return False
            self._q.append(spans)
            self._queued += len(spans)
            self.received += len(spans)
            self._cv.notify()
        return True

    @property
    def queued(self) -> int:
        return self._queued

    def _take(self) -> list[Span] | None:
        with self._cv:
            if not self._q and not self._stop:
                self._cv.wait(self.idle_s)
            out: list[Span] = []
            while self._q and len(out) < self.batch_spans:
                out.extend(self._q.popleft())
            self._queued -= len(out)
            if not out and self._stop:
                return None
            return out

    def _store(self, spans: list[Span]) -> None:
        if not spans:
            return
        try:
            self.stored += self.store.append(spans)
        except Exception as e:  # noqa: BLE001 - one bad batch must not stop the hub
            self.store_errors += 1
            log.warning("store append failed (%d spans): %s", len(spans), e)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            self._busy = True
            if self.linker is None:
                self._store(batch)
            elif batch:
                self._store(self.linker.add(batch))
            else:
                self._store(self.linker.idle())
            self._busy = False
        if self.linker is not None:
            self._store(self.linker.flush())

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything offered so far is stored (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = self.linker.pending if self.linker is not None else 0
            if not self._queued and not pending and not self._busy:
                return True
            time.sleep(0.05)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout_s)
