"""How a service held its requests (tools.held) is said in the report, on the slowdown it names,
and read only there: a report that names no slowdown never runs it (recorded lab cases)."""
from __future__ import annotations

import pytest

from guardian.investigate import release
from tests.guardian.investigate.test_lab_recorded import report_of


@pytest.fixture
def held_calls(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = release.holds

    def counted(cur, base):
        calls.append(len(cur.spans))
        return real(cur, base)

    monkeypatch.setattr(release, "holds", counted)
    return calls


def test_a_service_held_on_its_cpu_period_is_said_on_its_slowdown(held_calls):
    """profile's CPU quota spent: its held requests resume on one period's lattice."""
    report, expected = report_of("mesh12-s11-010")
    rc = report.root_causes[0]
    assert rc.service == expected["service"] == "profile", report.summary
    assert "releases of profile's held requests fell on a" in rc.description
    assert "its CPU quota spent" in rc.description
    assert len(held_calls) == 1


@pytest.mark.parametrize("case", ["mesh12-s14-004", "shop-s24-000"])  # a wrong return; a calm window
def test_a_report_naming_no_slowdown_does_not_read_holds(held_calls, case):
    report, _ = report_of(case)
    assert not any(rc.kind in ("latency", "saturation") for rc in report.root_causes[:5]), report.summary
    assert held_calls == []
