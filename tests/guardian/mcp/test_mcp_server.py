"""The tools as an MCP server, driven by the mcp client library: in process, over streamable
HTTP behind the API's token (a real uvicorn server), and over stdio (`guardian mcp`)."""
from __future__ import annotations

import json
import os
import sys

import anyio
import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from serving_support import AUTH, TOKEN, running

from guardian.api.main import create_app
from guardian.mcp_server import build_server
from tools.registry import TOOLS


async def _exercise(client: Client) -> None:
    listed = await client.list_tools()
    by_name = {t.name: t for t in listed.tools}
    assert set(by_name) == set(TOOLS)
    assert by_name["anomalies"].input_schema["type"] == "object"
    assert "since" in by_name["anomalies"].input_schema["properties"]

    ok = await client.call_tool("anomalies", {"since": "10m"})
    assert not ok.is_error
    found = ok.structured_content["anomalies"]
    assert any(a["service"] == "payments" for a in found) and found[0]["trace_ids"]
    assert json.loads(ok.content[0].text) == ok.structured_content

    bad = await client.call_tool("anomalies", {"since": "banana"})
    assert bad.is_error and bad.structured_content["hint"]
    unknown = await client.call_tool("rm_rf", {})
    assert unknown.is_error and "unknown tool" in unknown.structured_content["error"]


def test_in_process(store):
    async def main():
        async with Client(build_server(store)) as client:
            await _exercise(client)

    anyio.run(main)


def test_streamable_http_behind_the_token(store):
    app = create_app(store, {"api": {"token": TOKEN}})
    with running(app) as url:
        async def main():
            async with httpx2.AsyncClient(headers=AUTH, timeout=30) as http:
                async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
                    await _exercise(client)
            async with httpx2.AsyncClient() as anonymous:
                r = await anonymous.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                assert r.status_code == 401

        anyio.run(main)


def test_stdio_via_the_cli(store_file):
    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "guardian.cli.main", "mcp", "--store", store_file],
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})

    async def main():
        with anyio.fail_after(60):
            async with Client(params) as client:
                await _exercise(client)

    anyio.run(main)


def test_without_a_token_mcp_is_loopback_and_checks_the_host(store):
    app = create_app(store, {"api": {"token": None}})
    with running(app) as url:
        async def main():
            async with Client(f"{url}/mcp") as client:
                assert {t.name for t in (await client.list_tools()).tools} == set(TOOLS)
            async with httpx2.AsyncClient() as http:  # a DNS-rebinding page would send its own Host
                r = await http.post(f"{url}/mcp", headers={"Host": "evil.example"},
                                    json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
                assert r.status_code in (400, 403, 421)

        anyio.run(main)
