"""Saturation from waits needs evidence of a queue (guardian/investigate/candidates.py)."""
from __future__ import annotations

from capture.span import Span
from guardian.investigate.candidates import _merge
from guardian.investigate.rank import Candidate


def cand(kind: str, waits: list[float], error: bool = False) -> Candidate:
    spans = [Span(name="op", kind="SERVER", start_time_unix_nano=0, end_time_unix_nano=1,
                  status_code="ERROR" if error else "UNSET", resource={"service.name": "svc"})
             for _ in waits]
    return Candidate(key=("svc", "op"), kind=kind, votes=1.0, spans=spans, excess_ms=list(waits),
                     traces={str(i) for i in range(len(waits))}, ops={"op": 1.0})


def test_varying_waits_stay_saturation():
    [c] = _merge([cand("saturation", [300, 2400, 900, 1700, 500])])
    assert c.kind == "saturation"


def test_steady_waits_are_latency():
    [c] = _merge([cand("saturation", [600, 601, 602, 600, 599])])
    assert c.kind == "latency"


def test_too_few_requests_to_show_a_queue_are_latency():
    # the CI case: a 600 ms sleep before the first call seen in 2 sampled requests
    [c] = _merge([cand("saturation", [2.4, 600.1])])
    assert c.kind == "latency"


def test_failures_that_say_saturation_stay_saturation():
    [c] = _merge([cand("saturation", [600, 601], error=True)])
    assert c.kind == "saturation"


def test_latency_of_the_same_service_merges_into_one_candidate():
    out = _merge([cand("saturation", [600, 601, 602, 600]), cand("latency", [5.0])])
    assert [(c.kind, len(c.spans)) for c in out] == [("latency", 5)]
