"""ReplaySource: spans from a span file (capture/sources/spanfile.py), in batches, then idle.

The capture source for tests and demos on machines without eBPF; a Source like LiveCapture.
"""
from __future__ import annotations

import threading
from typing import Callable

from capture.sources.spanfile import read_spans, span_files
from capture.span import Span


class ReplaySource:
    def __init__(self, path: str, batch: int = 500):
        self.path, self.batch = path, batch
        self.sent = 0

    def start(self) -> None:
        for p in span_files(self.path):  # fail early and clearly on a missing file
            open(p).close()

    def run(self, on_spans: Callable[[list[Span]], None], stop: threading.Event) -> None:
        for batch in read_spans(self.path, self.batch):
            if stop.is_set():  # SIGTERM in the middle of a long recording
                return
            on_spans(batch)
            self.sent += len(batch)
        stop.wait()

    def stats(self) -> dict[str, int]:
        return {"replay.spans": self.sent}

    def close(self) -> None:
        pass
