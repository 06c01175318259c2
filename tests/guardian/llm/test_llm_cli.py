"""`guardian llm status|stop` without a model server."""
from __future__ import annotations

from guardian.cli.main import main


def test_status_reports_models_server_and_engine(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUARDIAN_MODEL_CACHE", str(tmp_path / "models"))
    monkeypatch.setenv("GUARDIAN_LLM", "local:1.5b")
    monkeypatch.setenv("GUARDIAN_LLM_PORT", "1")  # nothing listens there
    assert main(["llm", "status"]) == 0
    out = capsys.readouterr().out
    assert out.count("not installed (make setup-llm)") == 2
    assert "server on 127.0.0.1:1: down" in out
    assert "agent engine: llm, model qwen2.5-coder-1.5b-instruct-q4_k_m at http://127.0.0.1:1/v1" in out


def test_stop_without_a_background_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GUARDIAN_MODEL_CACHE", str(tmp_path / "models"))
    assert main(["llm", "stop"]) == 1
    assert "no background server" in capsys.readouterr().out
