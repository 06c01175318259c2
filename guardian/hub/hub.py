"""The hub process: OTLP receivers -> ingest (cross-node linking) -> store, and its /metrics.

`guardian hub` wraps this with the API (guardian.api.main.create_app over the same store), so
the investigator, Slack and schedules see every node's spans.
"""
from __future__ import annotations

import gc
import sys
from typing import Any, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from capture.store.api import SpanStore
from guardian.hub.ingest import Ingest
from guardian.hub.receiver import GrpcReceiver, HttpReceiver


def tune_process() -> None:
    """Settings for a process that is a hub (`guardian hub`, bench.hub_ingest). The linker's
    window holds hundreds of thousands of spans: at the default thresholds the collector walks
    them again and again, and spans make no reference cycles worth chasing that often. The
    receivers' threads take the GIL back after every socket call: a shorter switch interval
    lets them in between the link thread's batches (python -m bench.hub_ingest)."""
    gc.set_threshold(50_000, 20, 20)
    sys.setswitchinterval(0.001)


class Hub:
    def __init__(self, store: SpanStore, host: str = "0.0.0.0", grpc_port: int | None = 4317,
                 http_port: int | None = 4318, linker: Any = None, **ingest_kw: Any):
        self.store = store
        self.linker = linker
        self.ingest = Ingest(store, linker, **ingest_kw)
        self.grpc = GrpcReceiver(self.ingest, host, grpc_port) if grpc_port is not None else None
        self.http = HttpReceiver(self.ingest, host, http_port) if http_port is not None else None

    def start(self) -> "Hub":
        for r in (self.grpc, self.http):
            if r is not None:
                r.start()
        return self

    def stop(self) -> None:
        for r in (self.grpc, self.http):
            if r is not None:
                r.stop()
        self.ingest.close()


class HubMetrics:
    """A Prometheus collector over the hub's counters (register it on the API's registry)."""

    def __init__(self, hub: Hub):
        self.hub = hub

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[Any]:
        i = self.hub.ingest
        counters = {
            "guardian_hub_spans_received": ("spans accepted by the OTLP receivers", i.received),
            "guardian_hub_spans_rejected": ("spans refused in accepted requests (bad ids, no name)", i.rejected),
            "guardian_hub_malformed_requests": ("OTLP requests that could not be decoded", i.malformed),
            "guardian_hub_throttled_requests": ("requests answered retry-later (ingest queue full)", i.throttled),
            "guardian_hub_spans_stored": ("spans written to the store", i.stored),
            "guardian_hub_spans_relinked": ("stored spans given their parent when the other half came late",
                                            i.relinked),
            "guardian_hub_store_errors": ("store appends that failed", i.store_errors),
        }
        linker = self.hub.linker
        for key, value in (getattr(linker, "stats", None) or {}).items():
            counters[f"guardian_hub_links_{key}"] = (f"cross-node links: {key}", value)
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            yield c
        for stage, seconds in i.seconds.items():
            c = CounterMetricFamily(f"guardian_hub_{stage}_seconds", f"seconds the hub spent in {stage}")
            c.add_metric([], seconds)
            yield c
        g = GaugeMetricFamily("guardian_hub_ingest_queue_spans", "spans waiting to be linked and stored")
        g.add_metric([], i.queued)
        yield g
