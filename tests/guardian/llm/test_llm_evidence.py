"""What a cited trace supports (guardian.llm.answer.supported): where its time or failure starts."""
from __future__ import annotations

import pytest

from capture.span import Span
from capture.store.factory import open_store
from guardian.llm.answer import IdChecker, supported

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def call(trace: str, served: bool) -> list[Span]:
    """frontend waits 90 ms on a Redis HGETALL; with `served`, Redis's own span says it answered in 1 ms."""
    spans = [Span(name="GET /cart", kind="SERVER", start_time_unix_nano=T0, end_time_unix_nano=T0 + 100 * MS,
                  trace_id=trace, span_id=trace[:14] + "01", resource={"service.name": "frontend"}),
             Span(name="HGETALL", kind="CLIENT", start_time_unix_nano=T0 + 5 * MS, end_time_unix_nano=T0 + 95 * MS,
                  trace_id=trace, span_id=trace[:14] + "02", parent_span_id=trace[:14] + "01",
                  resource={"service.name": "frontend"}, attributes={"db.system": "redis"})]
    if served:
        spans.append(Span(name="HGETALL", kind="SERVER", start_time_unix_nano=T0 + 50 * MS,
                          end_time_unix_nano=T0 + 51 * MS, trace_id=trace, span_id=trace[:14] + "03",
                          parent_span_id=trace[:14] + "02", resource={"service.name": "redis"}))
    return spans


@pytest.fixture(scope="module")
def checker():
    store = open_store(None)
    store.append(call("a1" * 16, served=True) + call("b2" * 16, served=False))
    store.flush()
    yield IdChecker(store)
    store.close()


@pytest.mark.parametrize("service, kind, operation, ok", [
    ("redis", "latency", None, False),  # Redis answered in 1 ms: the wait is not its processing
    ("redis", "network", "HGETALL", True),  # ... but may be its network or ingress
    ("frontend", "latency", None, True),  # or the caller's own delay
])
def test_a_gap_before_a_fast_server_span_is_not_the_callees_processing(checker, service, kind, operation, ok):
    assert supported(checker, service, kind, ["a1" * 16], operation=operation) is ok


@pytest.mark.parametrize("service, operation, ok", [
    ("redis", "HGETALL", True),  # Redis has no span of its own: the client's wait is all it shows
    ("redis", None, True),
    ("redis", "GET", False),  # an operation the trace does not show is not supported by it
    ("postgresql", None, False),
])
def test_an_uncaptured_callee_is_blamed_for_the_wait_on_the_operation_shown(checker, service, operation, ok):
    assert supported(checker, service, "latency", ["b2" * 16], operation=operation) is ok
