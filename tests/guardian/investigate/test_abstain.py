"""The bar between a cause and nothing found, per class of false alarm: a change that lasted
one burst (a restart, a host's hiccup) names nothing; the same change lasting names its cause."""
from __future__ import annotations

import pytest

from guardian.investigate import deterministic
from tests.guardian.investigate.mesh import Mesh
from tests.guardian.investigate.test_classes import top


@pytest.mark.parametrize("fault, seed", [("exception:pay", 31), ("exception:pay", 32), ("exception:pay", 33)])
def test_one_burst_of_failures_names_no_cause(fault, seed):
    """A service failing for 3 s of a two-minute window, as while it restarts:
    the calls before and after are as in the baseline."""
    report = top(Mesh(fault, seed=seed, burst_s=3).build(), "Is anything wrong?")
    assert report.root_causes == [], report.summary
    assert "one burst" in report.summary, report.summary


@pytest.mark.parametrize("fault, kind", [("exception:pay", "error"), ("slow:pay", "latency")])
def test_the_same_change_lasting_names_its_cause(fault, kind):
    report = top(Mesh(fault, seed=31).build(), "Is anything wrong?")
    rc = report.root_causes[0]
    assert rc.service == "pay" and rc.kind in (kind, "saturation"), report.summary


def test_without_the_bar_the_burst_would_be_named(monkeypatch):
    """The burst case is one the score alone names: the bar is what keeps it quiet."""
    monkeypatch.setattr(deterministic, "_burst", lambda walker, c, covered: None)
    report = top(Mesh("exception:pay", seed=31, burst_s=3).build(), "Is anything wrong?")
    assert report.root_causes and report.root_causes[0].service == "pay", report.summary


def test_closed_connections_retried_at_once_name_no_cause():
    """After a restart of bank, pay's pooled connections to it are closed: each call fails at
    once with no answer, pay asks again on a new connection, and every order succeeds."""
    report = top(Mesh("closed:bank", seed=34).build(), "Is anything wrong?")
    assert not any(rc.service == "bank" for rc in report.root_causes), report.summary


def test_unanswered_calls_that_fail_the_requests_name_the_callee():
    """The same calls failing at once, but pay gives up and the orders fail: that is felt."""
    report = top(Mesh("refused:bank", seed=34).build(), "Is anything wrong?")
    rc = report.root_causes[0]
    assert rc.service == "bank" and rc.kind in ("error", "dependency"), report.summary


def test_without_the_bar_the_closed_connections_would_be_named(monkeypatch):
    monkeypatch.setattr(deterministic, "_absorbed", lambda walker, c: False)
    report = top(Mesh("closed:bank", seed=34).build(), "Is anything wrong?")
    assert report.root_causes and report.root_causes[0].service == "bank", report.summary
