"""`guardian investigate` and `guardian anomalies` against a running `guardian agent`: --api, the default
source (the local agent's API when it answers, else the store file) and the agent's locked store file."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from support.agent_proc import ROOT, AgentProcess
from support.ports import free_port

SCENARIO = Path(ROOT) / "evals" / "scenarios" / "redis_slow"
TOKEN = "s3cret-t0ken"


def guardian(*args: str, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "OTEL_"))}
    return subprocess.run([sys.executable, "-m", "guardian.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**clean, **env})


def test_investigate_and_anomalies_reach_a_running_agent(tmp_path):
    store = tmp_path / "agent.duckdb"
    local = json.loads(guardian("anomalies", "--spans", str(SCENARIO), "--json").stdout)
    agent = AgentProcess("--store", str(store), "--replay", str(SCENARIO / "spans.jsonl.gz"),
                         env={"GUARDIAN_API_TOKEN": TOKEN, "GUARDIAN_LINKER_WINDOW_S": "0.2"})
    try:
        with gzip.open(SCENARIO / "spans.jsonl.gz", "rt") as f:
            total = sum(1 for line in f if line.strip())
        deadline = time.monotonic() + 120
        while agent.json("/healthz")["spans"] < total and time.monotonic() < deadline:
            time.sleep(0.2)  # /metrics wants the token; /healthz counts the stored spans without one
        assert agent.json("/healthz")["spans"] == total

        r = guardian("anomalies", "--api", agent.url, "--json", GUARDIAN_API_TOKEN=TOKEN)
        assert r.returncode == 0, r.stderr
        remote = json.loads(r.stdout)
        assert any(a["service"] == "redis" and a["kind"] == "latency" for a in remote["anomalies"])
        assert remote["window"] == local["window"] and remote["baseline"] == local["baseline"]

        r = guardian("investigate", "Cart and checkout requests are slow", "--api", agent.url, "--json",
                     "--engine", "deterministic", GUARDIAN_API_TOKEN=TOKEN)
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert report["root_causes"][0]["service"] == "redis" and report["root_causes"][0]["evidence"]

        # Markdown over the API too, and the token is required.
        r = guardian("investigate", "what is slow?", "--api", agent.url, GUARDIAN_API_TOKEN=TOKEN)
        assert r.returncode == 0 and "## Root causes" in r.stdout and "**redis**" in r.stdout, r.stderr
        r = guardian("anomalies", "--api", agent.url)
        assert r.returncode == 1 and "wants a token" in r.stderr

        # No source given: the agent the configuration points at answers, and the command says so.
        r = guardian("anomalies", "--json", GUARDIAN_API_TOKEN=TOKEN, GUARDIAN_API__PORT=str(agent.port),
                     GUARDIAN_STORE_PATH=str(store))
        assert r.returncode == 0 and f"reading from the agent API at {agent.url}" in r.stderr, r.stderr
        assert json.loads(r.stdout)["anomalies"] == remote["anomalies"]

        # The store file the agent holds is refused with the way out, not a traceback.
        r = guardian("investigate", "q", "--store", str(store))
        assert r.returncode == 2 and "use --api" in r.stderr and "Traceback" not in r.stderr
    finally:
        assert agent.stop() == 0

    # Agent gone: the default falls back to the configured store file, and says so.
    r = guardian("anomalies", "--json", GUARDIAN_API__PORT=str(free_port()), GUARDIAN_STORE_PATH=str(store))
    assert r.returncode == 0 and f"reading the store {store}" in r.stderr, r.stderr
    assert any(a["service"] == "redis" and a["kind"] == "latency" for a in json.loads(r.stdout)["anomalies"])


def test_no_source_at_all_says_what_to_pass(tmp_path):
    r = guardian("investigate", "q", GUARDIAN_API__PORT=str(free_port()))
    assert r.returncode == 2 and "pass --api URL, --store PATH or --spans FILE" in r.stderr
    r = guardian("anomalies", "--store", "a.db", "--spans", "b.jsonl")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
