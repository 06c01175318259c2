"""Failures too few for any rate test (guardian/investigate/rare.py): one or two requests of a
quiet service failing on its own error answer, or on a wrong value it answered with success,
are named and say how unsure they are; failures a calm day has (transport, gateways passing a
callee's failure on, an operation that failed in the baseline too) name nothing."""
from __future__ import annotations

import dataclasses

import pytest

from capture.span import Span
from guardian.investigate.rare import felt, own_answer
from tests.guardian.investigate.mesh import Mesh
from tests.guardian.investigate.test_classes import top

QUESTION = "Orders fail since a while, why?"


def few_failures(fault: str, keep: int, seed: int = 6) -> list[Span]:
    """The mesh with fault, but only the first `keep` failing requests kept: a quiet service
    fails a handful of times while its callers' other requests go through."""
    spans = Mesh(fault, seed=seed).build()
    starts: dict[str, int] = {}
    for s in spans:
        if s.status_code == "ERROR":
            starts[s.trace_id] = min(starts.get(s.trace_id, s.start_time_unix_nano), s.start_time_unix_nano)
    drop = set(sorted(starts, key=starts.get)[keep:])
    return [s for s in spans if s.trace_id not in drop]


@pytest.mark.parametrize("keep", [1, 2])
def test_an_exception_too_rare_to_test_is_named_saying_so(keep):
    spans = few_failures("exception:pay", keep)
    assert len({s.trace_id for s in spans if s.status_code == "ERROR"}) == keep
    rc = top(spans, QUESTION).root_causes[0]
    assert (rc.service, rc.kind) == ("pay", "error"), rc
    assert "too few to test" in rc.description and "sure" in rc.description


def test_a_wrong_value_too_rare_to_test_blames_the_callee_that_answered_it():
    rc = top(few_failures("wrong:stock", 2), QUESTION).root_causes[0]
    assert (rc.service, rc.kind) == ("stock", "error"), rc
    assert "answered with success" in rc.description


def _fail(spans: list[Span], trace_ids: set[str], service: str, code: int, message: str) -> list[Span]:
    """Requests of trace_ids failing at service with code (and their callers with a 502)."""
    out = []
    for s in spans:
        if s.trace_id in trace_ids and s.kind in ("SERVER", "CLIENT") and s.name in ("POST /pay", "POST /order"):
            mine = s.service == service or (s.kind == "CLIENT" and s.name == "POST /pay")
            c = code if mine else 502
            s = dataclasses.replace(s, status_code="ERROR", status_message=message,
                                    attributes={**s.attributes, "http.response.status_code": c})
        out.append(s)
    return out


def test_an_operation_that_failed_in_the_baseline_too_names_nothing():
    spans = Mesh(None, seed=11).build()
    roots = sorted((s for s in spans if s.parent_span_id is None), key=lambda s: s.start_time_unix_nano)
    # two failures of pay early (the baseline) and two late (the window): the same few as ever
    picked = {roots[10].trace_id, roots[40].trace_id, roots[-40].trace_id, roots[-10].trace_id}
    report = top(_fail(spans, picked, "pay", 500, "HTTP 500"), QUESTION)
    assert report.root_causes == [], report.summary


def test_gateway_and_transport_failures_are_not_a_services_own_answer():
    s = Span(name="GET /x", kind="SERVER", start_time_unix_nano=1, end_time_unix_nano=2,
             status_code="ERROR", attributes={"http.response.status_code": 500})
    assert own_answer(s)
    assert own_answer(dataclasses.replace(s, attributes={"http.response.status_code": 503}))
    assert own_answer(dataclasses.replace(s, attributes={"rpc.grpc.status_code": 13}))
    assert not own_answer(dataclasses.replace(s, attributes={"http.response.status_code": 502}))
    assert not own_answer(dataclasses.replace(s, attributes={"http.response.status_code": 504}))
    assert not own_answer(dataclasses.replace(s, attributes={"rpc.grpc.status_code": 4}))
    assert not own_answer(dataclasses.replace(s, attributes={}, status_message="connection closed"))
    assert not own_answer(dataclasses.replace(s, attributes={"db.response.status_code": "ERR"}))


def test_a_failure_its_callers_request_did_not_feel_names_nothing():
    """pay answered 500 twice in the window, but gateway's requests succeeded anyway (it
    retried, or did without): nobody felt it."""
    spans = Mesh(None, seed=12).build()
    roots = sorted((s for s in spans if s.parent_span_id is None), key=lambda s: s.start_time_unix_nano)
    picked = {roots[-40].trace_id, roots[-10].trace_id}
    out = [dataclasses.replace(s, status_code="ERROR", status_message="HTTP 500",
                               attributes={**s.attributes, "http.response.status_code": 500})
           if s.trace_id in picked and s.service == "pay" and s.kind == "SERVER" else s for s in spans]
    from tools.trace import Tree

    tree = Tree([s for s in out if s.trace_id == roots[-10].trace_id])
    assert not felt(tree, next(s for s in tree.spans if s.status_code == "ERROR"))
    assert top(out, QUESTION).root_causes == []
