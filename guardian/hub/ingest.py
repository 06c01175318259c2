"""The hub's ingest: decoded spans -> cross-node linking -> the store, off the receivers' threads.

Receivers `offer()` span batches to a bounded queue and answer at once; when the queue is full
they answer "retry later" (OTLP's retryable status), so agents keep the batch in their own
on-disk queue instead of the hub growing without bound. A link thread links in large batches
and hands what the linker releases to a store thread through a short queue: the store's
insert (columnar, mostly outside the GIL) overlaps with decoding and linking. When the store
falls behind, the short queue blocks the linker, the offer queue fills and agents are told to
retry: memory stays bounded end to end. Links the linker makes to spans already stored (their
other half came late) reach the store thread in the same queue, after the rows they change.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from capture.span import Span
from capture.store.api import SpanStore

log = logging.getLogger(__name__)


@dataclass
class Relink:
    """Links to spans already handed to the store (SpanStore.relink's arguments)."""

    parents: list[tuple[str, str, dict]]
    traces: dict[str, str]


class Ingest:
    def __init__(self, store: SpanStore, linker: Any = None, max_queue_spans: int = 200_000,
                 batch_spans: int = 20_000, idle_s: float = 0.2, store_batches: int = 4):
        self.store = store
        self.linker = linker  # has add(spans) -> ready, idle() -> ready, flush() -> ready
        self.max_queue_spans = max_queue_spans
        self.batch_spans = batch_spans
        self.idle_s = idle_s
        self._q: deque[list[Span]] = deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._stop = False
        self._ready: deque[list[Span] | Relink] = deque()  # linked, waiting for the store thread
        self._ready_cv = threading.Condition()
        self._store_batches = store_batches
        self._linking = self._storing = False
        self._link_done = False
        self.received = 0  # spans accepted from receivers
        self.rejected = 0  # spans refused by the decoder (bad ids, no name)
        self.malformed = 0  # requests that were not OTLP at all
        self.throttled = 0  # requests answered "retry later" because the queue was full
        self.stored = 0
        self.relinked = 0  # stored spans given their parent afterwards
        self.store_errors = 0
        # Seconds of work per stage (where the hub's time goes: /metrics, bench.hub_ingest).
        self.seconds = {"decode": 0.0, "link": 0.0, "store": 0.0}
        self._thread = threading.Thread(target=self._run, name="hub-link", daemon=True)
        self._store_thread = threading.Thread(target=self._store_run, name="hub-store", daemon=True)
        self._thread.start()
        self._store_thread.start()

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

    def decoded(self, seconds: float) -> None:
        """Receivers report the time they spent decoding."""
        with self._cv:
            self.seconds["decode"] += seconds

    @property
    def queued(self) -> int:
        """Spans waiting to be linked or stored."""
        return self._queued + sum(len(b) for b in list(self._ready) if isinstance(b, list))

    def _take(self) -> list[Span] | None:
        with self._cv:
            if not self._q and not self._stop:
                self._cv.wait(self.idle_s)
            self._linking = True  # before the queue empties: drain() never sees neither
            out: list[Span] = []
            while self._q and len(out) < self.batch_spans:
                out.extend(self._q.popleft())
            self._queued -= len(out)
            if not out and self._stop:
                self._linking = False
                return None
            return out

    def _hand(self, spans: list[Span] | Relink) -> None:
        """To the store thread; waits while it has enough to do (backpressure). The linker may
        release more than a batch at once (a window's worth): it goes in batch-sized pieces, so
        what waits for the store stays within store_batches x batch_spans."""
        if isinstance(spans, list):
            if not spans:
                return
            if len(spans) > self.batch_spans:
                for i in range(0, len(spans), self.batch_spans):
                    self._hand(spans[i:i + self.batch_spans])
                return
        with self._ready_cv:
            while len(self._ready) >= self._store_batches:
                self._ready_cv.wait(0.5)
            self._ready.append(spans)
            self._ready_cv.notify_all()

    def _hand_late(self) -> None:
        take = getattr(self.linker, "take_late", None)
        if take is not None:
            parents, traces = take()
            if parents or traces:
                self._hand(Relink(parents, traces))

    def _run(self) -> None:
        linker = self.linker
        while True:
            batch = self._take()
            if batch is None:
                break
            t = time.perf_counter()
            if linker is None:
                ready = batch
            elif batch:
                ready = linker.add(batch)
            else:
                ready = linker.idle()
            self.seconds["link"] += time.perf_counter() - t
            self._hand(ready)
            self._hand_late()
            self._linking = False
        if linker is not None:
            t = time.perf_counter()
            rest = linker.flush()
            self.seconds["link"] += time.perf_counter() - t
            self._hand(rest)
            self._hand_late()
        with self._ready_cv:
            self._link_done = True
            self._ready_cv.notify_all()

    def _store_run(self) -> None:
        while True:
            with self._ready_cv:
                while not self._ready and not self._link_done:
                    self._ready_cv.wait(self.idle_s)
                if not self._ready:
                    return
                self._storing = True
                spans = self._ready.popleft()
                self._ready_cv.notify_all()
            t = time.perf_counter()
            try:
                if isinstance(spans, Relink):
                    self.relinked += self.store.relink(spans.parents, spans.traces)
                else:
                    self.stored += self.store.append(spans)
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the hub
                self.store_errors += 1
                log.warning("store write failed (%s): %s", type(spans).__name__, e)
            self.seconds["store"] += time.perf_counter() - t
            self._storing = False

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything offered so far is stored (tests, benchmarks)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pending = self.linker.pending if self.linker is not None else 0
            if not (self._queued or pending or self._linking or self._ready or self._storing):
                return True
            time.sleep(0.05)
        return False

    def close(self, timeout_s: float = 30.0) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout_s
        self._thread.join(timeout_s)
        self._store_thread.join(max(deadline - time.monotonic(), 0.1))
