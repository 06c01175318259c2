"""/mcp of the API, built at its first request: the MCP SDK (tens of MB once imported) stays out of
an agent or hub nobody asks over MCP. The session manager then runs in the app's lifespan task
group until shutdown. Not here: the MCP server itself (guardian/mcp_server.py).
"""
from __future__ import annotations

import contextlib
import importlib
from typing import Any, AsyncIterator

import anyio
from anyio.abc import TaskGroup, TaskStatus
from starlette.types import Receive, Scope, Send

from capture.store.api import SpanStore


class LazyMcp:
    """An ASGI endpoint: guardian.mcp_server's, made when the first request comes."""

    def __init__(self, store: SpanStore, loopback_only: bool) -> None:
        self.store, self.loopback_only = store, loopback_only
        self.endpoint: Any = None
        self._tg: TaskGroup | None = None
        self._lock: anyio.Lock | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The app's lifespan: where the session manager will run, and stop."""
        async with anyio.create_task_group() as tg:
            self._tg, self._lock = tg, anyio.Lock()
            try:
                yield
            finally:
                self._tg = None
                tg.cancel_scope.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.endpoint is None:
            if self._tg is None or self._lock is None:
                raise RuntimeError("/mcp needs the app's lifespan running")
            async with self._lock:
                if self.endpoint is None:
                    module = await anyio.to_thread.run_sync(importlib.import_module, "guardian.mcp_server")
                    endpoint, manager = module.http_endpoint(self.store, loopback_only=self.loopback_only)
                    await self._tg.start(self._serve, manager)
                    self.endpoint = endpoint
        await self.endpoint(scope, receive, send)

    @staticmethod
    async def _serve(manager: Any, *, task_status: TaskStatus = anyio.TASK_STATUS_IGNORED) -> None:
        async with manager.run():
            task_status.started()
            await anyio.sleep_forever()
