"""The investigation tools as an MCP server (stdio, or streamable HTTP mounted at /mcp of the API).

Tool list and argument schemas come from tools.registry; a call runs in a worker thread
(the store is synchronous) and a bad call comes back as an MCP tool error whose content is
the registry's {"error", "hint"} JSON, so the calling agent can correct itself.
"""
from __future__ import annotations

import json
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from capture.store.api import SpanStore
from guardian import __version__

INSTRUCTIONS = (
    "Read-only tools over Guardian's store of captured requests (spans and traces). "
    "Start with services or anomalies, then narrow down; cite the trace ids results carry."
)


def _schema(spec: dict[str, Any]) -> dict[str, Any]:
    schema = spec.get("parameters") or spec.get("input_schema") or spec.get("args_schema") or {}
    return schema if schema.get("type") == "object" else {"type": "object", "properties": {}}


def build_server(store: SpanStore) -> Server:
    """A low-level MCP server whose tools are exactly tools.registry's."""

    async def on_list_tools(ctx, params) -> types.ListToolsResult:
        from tools.registry import list_tools

        return types.ListToolsResult(tools=[
            types.Tool(name=s["name"], description=s.get("description", ""), input_schema=_schema(s))
            for s in list_tools()
        ])

    async def on_call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        from tools.registry import call_tool

        args = params.arguments or {}
        result = await anyio.to_thread.run_sync(call_tool, store, params.name, dict(args))
        is_error = isinstance(result, dict) and "error" in result
        text = json.dumps(result, default=str, separators=(",", ":"))
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=result if isinstance(result, dict) else {"result": result},
            is_error=is_error,
        )

    return Server("guardian", version=__version__, instructions=INSTRUCTIONS,
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


async def serve_stdio(store: SpanStore) -> None:
    """Serve MCP on this process's stdin/stdout until the client closes it."""
    from mcp.server.stdio import stdio_server

    server = build_server(store)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def http_endpoint(store: SpanStore, loopback_only: bool) -> tuple[StreamableHTTPASGIApp, StreamableHTTPSessionManager]:
    """ASGI endpoint for streamable HTTP, and its session manager (run it in the app's lifespan).

    Without a token the API is loopback-only, so check Host/Origin against DNS rebinding;
    with a token the bearer check (done by the caller) is the protection.
    """
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=loopback_only,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    manager = StreamableHTTPSessionManager(app=build_server(store), security_settings=security,
                                           json_response=True)
    return StreamableHTTPASGIApp(manager), manager
