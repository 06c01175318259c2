"""`guardian serve`: the HTTP API (+ Slack, schedules, MCP at /mcp) over a store;
`guardian mcp`: the tools as an MCP server on stdin/stdout."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time

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


def api_settings(args: argparse.Namespace, command: str):
    """The configuration (file, env, then --port) and the address the API binds to, or None
    after saying why not. Without a token the API stays on loopback (Settings.bind_host)."""
    from guardian.config import load

    try:
        settings = load(args.config, overrides={"api": {"port": args.port}})
    except (OSError, ValueError) as e:
        print(f"guardian {command}: bad configuration: {e}", file=sys.stderr)
        return None
    host, warning = settings.bind_host(args.host)
    if warning:
        log.warning(warning)
    elif not settings.api.token:
        log.warning("no API token configured: the API is open to local users (set GUARDIAN_API_TOKEN)")
    return settings, host


def run_api(store, settings, host: str, registry=None, ready=None) -> None:
    """The HTTP API over `store` until SIGTERM/SIGINT; `ready()` is called once it listens."""
    import threading

    import uvicorn

    from guardian.api.main import SHUTDOWN_GRACE_S, create_app

    app = create_app(store, settings, registry=registry)
    # An open event stream or a long synchronous investigation must not hold the stop.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=settings.api.port, log_level="warning",
                                           timeout_graceful_shutdown=SHUTDOWN_GRACE_S))
    if ready is not None:
        def wait() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.05)
            if server.started:
                ready()
        threading.Thread(target=wait, name="api-ready", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it to the handler found at start:
    # make that one a no-op so a requested stop exits 0 (after the caller closes the store).
    signal.signal(signal.SIGTERM, lambda *_: None)
    server.run()


def serve(args: argparse.Namespace) -> int:
    got = api_settings(args, "serve")
    if got is None:
        return 2
    settings, host = got
    store = _open_store(args.store, "serve")
    if store is None:
        return 1
    try:
        log.info("Guardian API on http://%s:%d (docs at /docs, MCP at /mcp)", host, settings.api.port)
        run_api(store, settings, host)
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
