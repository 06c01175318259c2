"""What every capture source (live eBPF, a replayed span file) offers the agent: the Source protocol."""
from __future__ import annotations

import threading
from typing import Callable, Protocol, runtime_checkable

from capture.span import Span


@runtime_checkable
class Source(Protocol):
    """Start once, then hand span batches to `on_spans` until `stop` is set; counters for /metrics."""

    def start(self) -> None:
        """Fail early (CaptureUnavailable, OSError, ValueError) when the source cannot run here."""

    def run(self, on_spans: Callable[[list[Span]], None], stop: threading.Event) -> None:
        """Block, calling on_spans with each batch, until stop is set."""

    def stats(self) -> dict[str, int]:
        """Counters of this source (names are Prometheus-friendly)."""

    def close(self) -> None:
        """Release kernel objects, files, threads."""
