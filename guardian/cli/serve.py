"""`guardian serve`: the HTTP API (+ Slack, schedules, MCP at /mcp) over a store;
`guardian mcp`: the tools as an MCP server on stdin/stdout."""
from __future__ import annotations

import argparse
import logging
import signal
import sys

log = logging.getLogger("guardian.serve")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the HTTP API, Slack endpoints, scheduled reports and MCP",
                       description="Serve Guardian's HTTP API over a span store. Without an API token "
                                   "(GUARDIAN_API_TOKEN or api.token) it binds to loopback only.")
    p.add_argument("--store", metavar="PATH", help="store file (default: an empty in-memory store)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1, or api.host from the config)")
    p.add_argument("--port", type=int, help="port (default 8080, or api.port from the config)")
    p.set_defaults(func=serve)

    m = sub.add_parser("mcp", help="serve the investigation tools as an MCP server on stdio",
                       description="MCP server (stdio) exposing Guardian's tools over a store file. "
                                   "The HTTP API serves the same tools at /mcp (streamable HTTP).")
    m.add_argument("--store", metavar="PATH", help="store file (default: an empty in-memory store)")
    m.set_defaults(func=mcp_stdio)


def _open_store(path: str | None, command: str):
    """The store, or None after saying why not (e.g. a file another process holds)."""
    from capture.store.factory import open_store

    try:
        return open_store(path)
    except Exception as e:  # engine errors (DuckDB's lock, a corrupt file) have no common base here
        print(f"guardian {command}: cannot open store {path}: {e}\n(a store file has one writer: if "
              f"`guardian agent` holds it, use the agent's API instead)", file=sys.stderr)
        return None


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from guardian.api.main import SHUTDOWN_GRACE_S, create_app
    from guardian.config import load

    try:
        settings = load(args.config, overrides={"api": {"port": args.port}})
    except (OSError, ValueError) as e:
        print(f"guardian serve: bad configuration: {e}", file=sys.stderr)
        return 2
    host, warning = settings.bind_host(args.host)
    if warning:
        log.warning(warning)
    elif not settings.api.token:
        log.warning("no API token configured: the API is open to local users (set GUARDIAN_API_TOKEN)")
    store = _open_store(args.store, "serve")
    if store is None:
        return 1
    try:
        app = create_app(store, settings)
        log.info("Guardian API on http://%s:%d (docs at /docs, MCP at /mcp)", host, settings.api.port)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found at start:
        # make that one a no-op so a requested stop exits 0 (after the store is closed below).
        signal.signal(signal.SIGTERM, lambda *_: None)
        # An open event stream or a long synchronous investigation must not hold the stop.
        uvicorn.run(app, host=host, port=settings.api.port, log_level="warning",
                    timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    finally:
        store.close()
    return 0


def mcp_stdio(args: argparse.Namespace) -> int:
    import anyio

    from guardian.mcp_server import serve_stdio

    store = _open_store(args.store, "mcp")
    if store is None:
        return 1
    try:
        anyio.run(serve_stdio, store)
    finally:
        store.close()
    return 0
