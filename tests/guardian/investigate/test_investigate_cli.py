"""`guardian investigate` and `guardian anomalies` on recorded data: absolute windows, JSON."""
from __future__ import annotations

import json
from pathlib import Path

from guardian.cli.main import main
from capture.store.window import fmt_ns

SCENARIO = Path(__file__).resolve().parents[3] / "evals" / "scenarios" / "redis_slow"
EXPECTED = json.loads((SCENARIO / "expected.json").read_text())


def test_investigate_json(capsys):
    assert main(["investigate", "Cart and checkout requests are slow", "--spans", str(SCENARIO),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["root_causes"][0]["service"] == "redis"
    assert report["root_causes"][0]["kind"] == "latency"
    assert report["root_causes"][0]["evidence"][0]["trace_id"]
    assert report["blast_radius"]["services"] and report["suggested_fix"]


def test_investigate_absolute_window_markdown(capsys):
    fault = EXPECTED["fault_start_ns"]
    start, end = fmt_ns(fault - 60 * 10**9), fmt_ns(fault + 120 * 10**9)
    assert main(["investigate", "what is slow?", "--spans", str(SCENARIO), "--start", start,
                 "--end", end]) == 0
    out = capsys.readouterr().out
    assert "## Root causes" in out and "**redis**" in out
    assert start in out  # the window asked for is the window reported


def test_investigate_bad_window_and_empty_store(capsys, tmp_path):
    assert main(["investigate", "q", "--spans", str(SCENARIO), "--since", "ages"]) == 2
    assert "bad duration" in capsys.readouterr().err
    assert main(["investigate", "q", "--spans", str(SCENARIO), "--since", "5m",
                 "--start", "2026-01-15T10:00:00Z"]) == 2
    assert main(["investigate", "q", "--store", str(tmp_path / "empty.db")]) == 1
    assert "empty" in capsys.readouterr().err


def test_anomalies_cli(capsys):
    assert main(["anomalies", "--spans", str(SCENARIO), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["anomalies"] and data["baseline"]["end_ns"] <= data["window"]["start_ns"]
    assert any(a["service"] == "redis" and a["kind"] == "latency" for a in data["anomalies"])
    assert main(["anomalies", "--spans", str(SCENARIO), "--service", "reporting"]) == 0
    assert "no anomalies" in capsys.readouterr().out  # the red herring did not change
