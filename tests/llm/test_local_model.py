"""The agent against a real local model (Qwen2.5-Coder via llama.cpp): real tool calls, checked report.

Few and bounded: each model turn takes seconds to minutes on 2 shared cores.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from capture.store.api import SpanFilter
from guardian.evals.scenarios import load_store, write_scenarios
from guardian.investigate.deterministic import investigate as deterministic
from guardian.llm.agent import prompt, run
from guardian.llm.config import LLMConfig
from guardian.llm.server import free_port, health, served_models
from guardian.llm.toolbox import SMALL_MODEL_TOOLS, openai_tools

pytestmark = [pytest.mark.llm, pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenarios")
    write_scenarios(root, ["payments_5xx"])
    d = root / "payments_5xx"
    store = load_store(d)
    yield store, (d / "question.txt").read_text().strip(), json.loads((d / "expected.json").read_text())
    store.close()


def test_chat_template_yields_real_tool_calls(local_server, incident):
    """Our template makes llama.cpp parse the model's fenced json into tool_calls (and warms the
    server's prompt cache with the agent's own system prompt and tools)."""
    store, _, _ = incident
    tid = store.spans(SpanFilter(service="payments", status_code="ERROR", limit=1))[0].trace_id
    client = openai.OpenAI(base_url=local_server.base_url, api_key="local", timeout=600, max_retries=0)
    resp = client.chat.completions.create(
        model=local_server.model, temperature=0, max_tokens=120,
        tools=openai_tools(SMALL_MODEL_TOOLS, brief=True), tool_choice="auto",
        messages=[{"role": "system", "content": prompt("agent_system")},
                  {"role": "user", "content": f"Open the trace {tid} with get_trace."}])
    calls = resp.choices[0].message.tool_calls
    assert calls, resp.choices[0].message.content
    assert calls[0].function.name == "get_trace"
    assert json.loads(calls[0].function.arguments)["trace_id"] == tid


def test_agent_on_recorded_incident(local_server, incident):
    store, question, expected = incident
    findings = deterministic(store, question, None)
    cfg = LLMConfig(provider=f"local:{local_server.key}", local_port=local_server.port, max_steps=2,
                    timeout_s=600)
    res = run(store, question, None, findings, cfg)
    rep = res.report
    assert res.error is None, res.error
    assert rep.engine.type == "llm" and rep.engine.model == local_server.model
    assert res.native_tool_calls >= 1 and res.tool_calls >= 1 and res.steps <= 2
    top = rep.root_causes[0]
    assert (top.service, top.kind) == (expected["service"], expected["kind"])
    cited = [e for rc in rep.root_causes for e in rc.evidence]
    assert cited and any(e.verified for e in cited)
    for e in cited:  # verified means the store holds it; unverified means it does not
        assert e.verified == bool(store.trace(e.trace_id))


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_guardian_llm_serve_cli(local_server, stop_signal):
    """`guardian llm serve` starts the server on loopback, waits for /health, and stops it on
    Ctrl-C or SIGTERM — Ctrl-C even when it was started with SIGINT ignored, as a background
    job of a shell starts it."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "llm", "serve", "--model",
                             local_server.key, "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2], start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()
        assert f"serving {local_server.model} on http://127.0.0.1:{port}/v1" in line
        assert "GUARDIAN_LLM=local" in proc.stdout.readline()
        assert health(port) and served_models(port) == [local_server.model]
    finally:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # never leave a model server behind
            raise
    deadline = time.monotonic() + 20
    while health(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not health(port)


def test_demo_serves_the_installed_model(local_server):
    """make demo: with the model installed and nothing configured, the local model is selected."""
    from guardian.llm.config import load_config
    from guardian.llm.server import serve_if_installed

    env: dict[str, str] = {}
    server = serve_if_installed(env)
    try:
        assert server is not None and env["GUARDIAN_LLM"] == f"local:{server.key}"
        cfg = load_config(env=env)
        assert cfg.resolved().base_url == server.base_url and health(server.port)
    finally:
        server.stop()
    assert not health(server.port)
