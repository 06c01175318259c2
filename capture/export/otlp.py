"""Spans to OTLP through the SDK's exporters, and RED metrics through its metrics pipeline.

Our spans are already finished (captured, not instrumented), so they are converted to SDK
ReadableSpans and handed to OTLPSpanExporter.export directly; no tracer is involved.
`OtlpSink` puts the network off the capture path: a bounded queue (capture.batchqueue, the
agent's own kind) and one sender thread.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from capture.batchqueue import BatchQueue
from capture.span import Span

log = logging.getLogger(__name__)
SCOPE = InstrumentationScope("guardian.capture", "0.1.0")
_KINDS = {k.name: k for k in SpanKind}
_STATUS = {"UNSET": StatusCode.UNSET, "OK": StatusCode.OK, "ERROR": StatusCode.ERROR}


def _attr(value: Any) -> Any:
    """OTLP attribute values are str/bool/int/float or lists of one of those."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
        return list(value)
    return str(value)


def to_readable(span: Span, resources: dict[tuple, Resource] | None = None) -> ReadableSpan:
    """One of our spans as an SDK ReadableSpan (resources: a cache, spans share few resources)."""
    ctx = SpanContext(int(span.trace_id, 16), int(span.span_id, 16), is_remote=False,
                      trace_flags=TraceFlags(TraceFlags.SAMPLED))
    parent = None
    if span.parent_span_id:
        parent = SpanContext(int(span.trace_id, 16), int(span.parent_span_id, 16), is_remote=True,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
    key = tuple(sorted((k, str(v)) for k, v in span.resource.items()))
    res = resources.get(key) if resources is not None else None
    if res is None:
        res = Resource({k: _attr(v) for k, v in span.resource.items()})
        if resources is not None:
            resources[key] = res
    status = Status(_STATUS.get(span.status_code, StatusCode.UNSET),
                    span.status_message or None if span.status_code == "ERROR" else None)
    return ReadableSpan(name=span.name, context=ctx, parent=parent, resource=res,
                        attributes={k: _attr(v) for k, v in span.attributes.items()},
                        kind=_KINDS.get(span.kind, SpanKind.INTERNAL), status=status,
                        start_time=span.start_time_unix_nano, end_time=span.end_time_unix_nano,
                        instrumentation_scope=SCOPE)


def make_span_exporter(endpoint: str, protocol: str = "grpc", headers: dict[str, str] | None = None,
                       timeout_s: float = 10.0, insecure: bool = True) -> SpanExporter:
    """The SDK's OTLP span exporter; for HTTP, `endpoint` is the base URL (/v1/traces is added)."""
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
        return OTLPSpanExporter(endpoint=url, headers=headers or {}, timeout=timeout_s)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, headers=headers or {}, timeout=timeout_s,
                            insecure=insecure)


class RedMetrics:
    """RED as OTLP metrics: a request counter and a duration histogram per service/operation/status."""

    def __init__(self, endpoint: str, protocol: str = "grpc", headers: dict[str, str] | None = None,
                 interval_s: float = 30.0, timeout_s: float = 10.0, insecure: bool = True):
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        if protocol == "http":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            url = endpoint if endpoint.rstrip("/").endswith("/v1/metrics") else endpoint.rstrip("/") + "/v1/metrics"
            exporter = OTLPMetricExporter(endpoint=url, headers=headers or {}, timeout=timeout_s)
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            exporter = OTLPMetricExporter(endpoint=endpoint, headers=headers or {}, timeout=timeout_s,
                                          insecure=insecure)
        self.reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval_s * 1000)
        self.provider = MeterProvider(metric_readers=[self.reader],
                                      resource=Resource({"service.name": "guardian-agent"}))
        meter = self.provider.get_meter("guardian.capture")
        self.requests = meter.create_counter("guardian.requests", unit="{request}",
                                             description="Requests served, by service/operation/status")
        self.duration = meter.create_histogram("guardian.request.duration", unit="s",
                                               description="Server-side request duration")

    def record(self, spans: Sequence[Span]) -> None:
        for s in spans:
            if s.kind not in ("SERVER", "CONSUMER"):
                continue
            attrs = {"service.name": s.service, "span.name": s.name, "status_code": s.status_code}
            self.requests.add(1, attrs)
            self.duration.record(max(s.duration_ns, 0) / 1e9, attrs)

    def flush(self, timeout_s: float = 10.0) -> bool:
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        self.provider.shutdown()


# spans waiting for the exporter, at most: a batch is what the linker released at once (thousands
# under load), so a slow collector would otherwise hold queue_size of them as Python objects
MAX_QUEUED_SPANS = 16_384


class OtlpSink:
    """Non-blocking export: `submit(spans)` queues a batch (dropped, and counted, when the queue
    holds `queue_size` batches or `max_spans` spans)."""

    def __init__(self, exporter: SpanExporter, metrics: RedMetrics | None = None, queue_size: int = 64,
                 max_spans: int = MAX_QUEUED_SPANS):
        self.exporter = exporter
        self.metrics = metrics
        self._q = BatchQueue(queue_size, max_spans)
        self.exported = 0
        self.failed = 0
        self.dropped = 0
        self._resources: dict[tuple, Resource] = {}
        self._thread = threading.Thread(target=self._run, name="otlp-export", daemon=True)
        self._thread.start()

    def submit(self, spans: list[Span]) -> None:
        if not spans:
            return
        if self.metrics is not None:
            self.metrics.record(spans)
        if not self._q.offer(spans):
            self.dropped += len(spans)

    @property
    def queued_spans(self) -> int:
        return self._q.spans

    @property
    def max_spans(self) -> int:
        return self._q.max_spans

    @max_spans.setter
    def max_spans(self, n: int) -> None:
        self._q.max_spans = n

    def queued(self) -> int:
        return self._q.qsize()

    def _run(self) -> None:
        while True:
            batch = self._q.get()
            if batch is None:
                return
            try:
                self._send(batch)
            finally:
                self._q.taken(len(batch))

    def _send(self, batch: list[Span]) -> None:
        if len(self._resources) > 10_000:
            self._resources.clear()
        try:
            result = self.exporter.export([to_readable(s, self._resources) for s in batch])
        except Exception as e:  # noqa: BLE001 - exporter errors must never stop the agent
            log.warning("OTLP export failed: %s", e)
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self.exported += len(batch)
        else:
            self.failed += len(batch)

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is queued, then shut the exporters down."""
        self._q.put(None)
        self._thread.join(timeout_s)
        if self.metrics is not None:
            self.metrics.flush(timeout_s)
            self.metrics.shutdown()
        self.exporter.shutdown()


def from_config(cfg: Any, netns: str | None = None) -> Any:
    """An OtlpSink from an ExportConfig, or None when no endpoint is configured; with a
    queue_dir, a Shipper instead (on-disk queue, retries: nothing lost while the hub is down)."""
    if not cfg.otlp_endpoint:
        return None
    if getattr(cfg, "queue_dir", None):
        from capture.export.shipper import shipper_from_config

        metrics = None
        if cfg.metrics:
            metrics = RedMetrics(cfg.otlp_endpoint, cfg.otlp_protocol, cfg.otlp_headers,
                                 cfg.metrics_interval_s, cfg.timeout_s, cfg.otlp_insecure)
        return shipper_from_config(cfg, metrics, netns)
    exporter = make_span_exporter(cfg.otlp_endpoint, cfg.otlp_protocol, cfg.otlp_headers,
                                  cfg.timeout_s, cfg.otlp_insecure)
    metrics = None
    if cfg.metrics:
        metrics = RedMetrics(cfg.otlp_endpoint, cfg.otlp_protocol, cfg.otlp_headers,
                             cfg.metrics_interval_s, cfg.timeout_s, cfg.otlp_insecure)
    return OtlpSink(exporter, metrics, cfg.queue_size)
