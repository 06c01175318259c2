"""LLM selection from env and the YAML config file."""
from __future__ import annotations

import pytest

from guardian.llm.config import DEFAULT_LOCAL_PORT, load_config
from guardian.llm.models import MODELS


def test_nothing_configured_means_deterministic():
    assert not load_config(env={}).enabled
    assert not load_config(env={"GUARDIAN_LLM": "off"}).enabled


def test_local_selects_the_local_server():
    c = load_config(env={"GUARDIAN_LLM": "local"})
    assert c.enabled and c.local_key == "0.5b"
    r = c.resolved()
    assert r.base_url == f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}/v1" and r.model == MODELS["0.5b"].name
    c = load_config(env={"GUARDIAN_LLM": "local:1.5b", "GUARDIAN_LLM_PORT": "9001"})
    assert c.local_key == "1.5b" and c.resolved().base_url == "http://127.0.0.1:9001/v1"
    assert load_config(env={"GUARDIAN_LLM": "local", "GUARDIAN_LLM_MODEL": "1.5b"}).local_key == "1.5b"
    with pytest.raises(ValueError, match="unknown local model"):
        _ = load_config(env={"GUARDIAN_LLM": "local:70b"}).local_key


def test_explicit_endpoint_wins(tmp_path):
    env = {"GUARDIAN_LLM_BASE_URL": "http://10.0.0.5:8000/v1", "GUARDIAN_LLM_MODEL": "qwen",
           "GUARDIAN_LLM_API_KEY": "sk-x"}
    c = load_config(env=env)
    assert c.enabled and c.local_key is None
    r = c.resolved()
    assert (r.base_url, r.model, r.api_key) == ("http://10.0.0.5:8000/v1", "qwen", "sk-x")
    assert load_config(env={"GUARDIAN_LLM": "openai"}).resolved().model == "gpt-4o-mini"


def test_yaml_file_then_env(tmp_path):
    f = tmp_path / "guardian.yaml"
    f.write_text("api: {port: 9}\nllm:\n  provider: local\n  max_steps: 3\n  model: 1.5b\n")
    c = load_config(env={"GUARDIAN_CONFIG": str(f)})
    assert (c.local_key, c.max_steps) == ("1.5b", 3)
    c = load_config(env={"GUARDIAN_CONFIG": str(f), "GUARDIAN_LLM_MAX_STEPS": "1"})
    assert c.max_steps == 1
    c = load_config(path=f, env={}, overrides={"max_steps": 0})
    assert c.max_steps == 0


def test_demo_keeps_an_explicit_choice():
    from guardian.llm.server import serve_if_installed

    for env in ({"GUARDIAN_LLM": "off"}, {"GUARDIAN_LLM_BASE_URL": "http://127.0.0.1:1/v1"}):
        before = dict(env)
        assert serve_if_installed(env) is None and env == before
