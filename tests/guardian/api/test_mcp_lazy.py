"""/mcp is built at its first request: an API nobody asks over MCP never imports the MCP SDK."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = """
import sys
from fastapi.testclient import TestClient
from capture.store.duckdb_store import DuckDBStore
from guardian.api.main import create_app

app = create_app(DuckDBStore(), {"api": {"token": None}})
with TestClient(app, base_url="http://127.0.0.1:8080") as client:
    assert client.get("/healthz").status_code == 200
    print("before", any(m == "mcp" or m.startswith("mcp.") for m in sys.modules))
    r = client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
        headers={"Accept": "application/json, text/event-stream", "Host": "127.0.0.1:8080"})
    print("after", "mcp" in sys.modules, r.status_code, r.json()["result"]["serverInfo"]["name"])
"""


def test_the_mcp_sdk_is_imported_at_the_first_mcp_request_only():
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["before False", "after True 200 guardian"]
