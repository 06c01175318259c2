"""Where every span-reading command reads from: `--store PATH | --api URL | --spans FILE`, and the window.

Without one of them: the local agent's API when it answers (a running agent holds its store file
locked), else the configured store file; the command says on stderr which one it used.
"""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Any

from capture.store.api import SpanStore, TimeWindow
from capture.store.window import WindowError, resolve_window

PROBE_TIMEOUT_S = 0.5  # a local agent answers /healthz at once; don't make a store read wait on a dead port


class SourceError(Exception):
    """No usable source; the message says what was tried and what to pass."""


def add_source_args(p: argparse.ArgumentParser, window: bool = True) -> None:
    """--store | --api | --spans (one of them), and --since | --start/--end when `window`."""
    g = p.add_argument_group("where the spans come from (default: the local agent's API if it answers, "
                             "else the store file of the configuration)").add_mutually_exclusive_group()
    g.add_argument("--store", metavar="PATH", help="a store file (not one a running agent holds open: use --api)")
    g.add_argument("--api", metavar="URL", help="a running agent's API, e.g. http://127.0.0.1:8080 (token: "
                                                 "api.token of the configuration or GUARDIAN_API_TOKEN)")
    g.add_argument("--spans", metavar="FILE", help="a JSON-lines file (.jsonl[.gz], as `guardian capture --json` "
                                                   "writes) or an eval scenario folder, loaded into memory")
    if window:
        w = p.add_argument_group("window (default: last 15 min, or the whole range of recorded data)")
        w.add_argument("--since", metavar="DURATION", help="window ending now, e.g. 15m, 2h")
        w.add_argument("--start", metavar="T", help="window start: ISO-8601 or unix seconds")
        w.add_argument("--end", metavar="T", help="window end: ISO-8601 or unix seconds (default now)")


class ApiClient:
    """The agent's HTTP API as the CLI uses it; failures become SystemExit with a message."""

    def __init__(self, url: str, token: str | None):
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=300)

    def send(self, method: str, path: str, **kw: Any):
        import httpx

        try:
            r = self.client.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise SystemExit(f"guardian: cannot reach the agent API at {self.url} ({e}); "
                             "is `guardian agent` running? (or read a file with --store PATH)")
        if r.status_code == 401:
            raise SystemExit("guardian: the API wants a token: set api.token in the configuration or "
                             "GUARDIAN_API_TOKEN")
        return r

    def _json(self, r) -> Any:
        if r.status_code == 404:
            return None
        if r.status_code >= 400 and not r.headers.get("content-type", "").startswith("application/json"):
            raise SystemExit(f"guardian: API error {r.status_code}: {r.text[:200]}")
        return r.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self.send("GET", path, params={k: v for k, v in params.items() if v is not None}))

    def post(self, path: str, body: dict) -> Any:
        return self._json(self.send("POST", path, json=body))

    def close(self) -> None:
        self.client.close()


@dataclass
class Source:
    """Either a store (with the window asked for, None = the store's default) or an API client."""

    what: str  # for humans: "store /var/lib/guardian/spans.duckdb", "agent API at http://..."
    store: SpanStore | None = None
    api: ApiClient | None = None
    window: TimeWindow | None = None

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
        if self.api is not None:
            self.api.close()


def api_url(cfg) -> str:
    """GUARDIAN_API_URL, else the configured API address (a wildcard bind is reached on loopback)."""
    if os.environ.get("GUARDIAN_API_URL"):
        return os.environ["GUARDIAN_API_URL"]
    host = cfg.api.host if cfg.api.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return f"http://{host}:{cfg.api.port}"


def api_answers(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url.rstrip("/") + "/healthz", timeout=PROBE_TIMEOUT_S).status_code == 200
    except httpx.HTTPError:
        return False


def _window(store: SpanStore, args: argparse.Namespace) -> TimeWindow | None:
    since, start, end = (getattr(args, k, None) for k in ("since", "start", "end"))
    if since is None and start is None and end is None:
        return None
    if since is not None and (start or end):
        raise WindowError("give --since or --start/--end, not both")
    return resolve_window(store, since, start, end)


def _open_store(path: str | None, must_exist: bool) -> SpanStore:
    from capture.store.factory import open_store

    if path and must_exist and not os.path.exists(path):
        raise SourceError(f"no store file at {path}")
    try:
        return open_store(path)
    except Exception as e:  # noqa: BLE001 - engine errors (DuckDB's lock, a corrupt file) have no common base
        raise SourceError(f"cannot open store {path} ({e}); if `guardian agent` holds it, use --api") from None


def open_source(args: argparse.Namespace, command: str, must_exist: bool = False) -> Source:
    """The source the options ask for, else the default; WindowError, SourceError, OSError or ValueError."""
    import sys

    from guardian.config import load

    if getattr(args, "spans", None):
        from capture.sources.spanfile import read_spans

        store = _open_store(None, False)
        for batch in read_spans(args.spans):
            store.append(batch)
        return _with_window(Source(f"spans from {args.spans}", store=store), args)
    if getattr(args, "store", None):
        return _with_window(Source(f"store {args.store}", store=_open_store(args.store, must_exist)), args)
    cfg = load()
    if getattr(args, "api", None):
        return Source(f"agent API at {args.api}", api=ApiClient(args.api, cfg.api.token))
    url = api_url(cfg)
    if api_answers(url):
        print(f"guardian {command}: reading from the agent API at {url}", file=sys.stderr)
        return Source(f"agent API at {url}", api=ApiClient(url, cfg.api.token))
    path = os.environ.get("GUARDIAN_STORE_PATH") or cfg.store.path
    if not path:
        raise SourceError(f"no spans to read: no agent answers at {url} and no store file is configured "
                          "(store.path, GUARDIAN_STORE_PATH); pass --api URL, --store PATH or --spans FILE")
    print(f"guardian {command}: no agent answers at {url}; reading the store {path}", file=sys.stderr)
    return _with_window(Source(f"store {path}", store=_open_store(path, True)), args)


def _with_window(src: Source, args: argparse.Namespace) -> Source:
    try:
        src.window = _window(src.store, args)
    except WindowError:
        src.close()
        raise
    return src
