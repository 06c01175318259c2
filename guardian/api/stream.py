"""An investigation's steps as Server-Sent Events, for the console to show them as they run.

GET /v1/investigations/{id}/events: one `step` event per step (its index, so a repeated call
whose count grew is sent again under the same index), a `status` event when the status changes,
and a last `done` event carrying the whole job (report or error); then the stream ends. Reads
the job the worker thread fills in; does not run or change anything.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

from guardian.api.jobs import Job

TICK_S = 0.1
KEEPALIVE_S = 15.0
MAX_STREAM_S = 900.0  # a client that stays longer reconnects (EventSource does so by itself)


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def job_events(job: Job, disconnected) -> AsyncIterator[str]:
    """`disconnected`: an awaitable-returning callable (Request.is_disconnected)."""
    sent: list[int] = []  # per sent step: the `times` it had when sent
    status = None
    t0 = last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        finished = job.status in ("done", "failed")  # read first: steps made before it are all there
        if job.status != status:
            status = job.status
            yield _event("status", {"status": status})
            last_write = time.monotonic()
        for i, step in enumerate(list(job.steps)):
            times = step.get("times", 1)
            if i >= len(sent) or sent[i] != times:
                yield _event("step", dict(step, index=i))
                sent[i:i + 1] = [times]
                last_write = time.monotonic()
        if finished:
            yield _event("done", job.to_dict())
            return
        now = time.monotonic()
        if now - t0 > MAX_STREAM_S or await disconnected():
            return
        if now - last_write > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_write = now
        await asyncio.sleep(TICK_S)
