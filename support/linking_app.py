"""Run the recorded multi-service app on loopback and turn its logs into spans + true parents.

Topology (known call trees):
  driver -> frontend /checkout -> pricing /price -> redis GET
                              -> pricing /price -> redis GET      (second call, same keep-alive conn)
                              -> stock /stock   -> redis GET, redis INCR
                              -> redis INCR
  driver -> frontend /home     -> redis GET
With async_stock, stock is an asyncio server: /stock -> redis GET (new connection per call).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Callable

from capture.span import Span
from support.cgroups import inside

APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorded_app.py")
HOST = socket.gethostname()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


@contextmanager
def _proc(argv: list[str], port: int, service: str | None = None, cgroup_dir: Path | None = None):
    env = {**os.environ, "OTEL_SERVICE_NAME": service} if service else None  # names it for the enricher
    if cgroup_dir is not None:
        argv = inside(cgroup_dir, argv)
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_port(port)
        yield p
    finally:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


ASYNC_APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorded_async_app.py")


def run_app(workdir: str, requests: int = 40, concurrency: int = 4, async_stock: bool = False,
            before_stop: Callable[[str], None] | None = None, cgroup_dir: Path | None = None) -> str:
    """Start redis + 3 services, drive `requests` requests; return the log path. With
    async_stock, `stock` is an asyncio server (one thread for all its requests).
    before_stop(log) runs while the services are still up (e.g. wait for a capture).
    cgroup_dir: the services run in this cgroup v2 directory (an agent scoped to it sees only them)."""
    log = os.path.join(workdir, "spans.jsonl")
    rp, fp, pp, sp = (free_port() for _ in range(4))
    calls = {
        "frontend": {"/checkout": [["http", f"127.0.0.1:{pp}", "/price"], ["http", f"127.0.0.1:{pp}", "/price"],
                                   ["http", f"127.0.0.1:{sp}", "/stock"], ["redis", rp, "INCR orders"]],
                     "/home": [["redis", rp, "GET banner"]]},
        "pricing": {"/price": [["redis", rp, "GET price"]]},
        "stock": {"/stock": [["redis", rp, "GET stock"], ["redis", rp, "INCR reads"]]},
    }
    with ExitStack() as stack:
        stack.enter_context(_proc(["redis-server", "--port", str(rp), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], rp, cgroup_dir=cgroup_dir))
        for name, port in (("pricing", pp), ("stock", sp), ("frontend", fp)):
            argv = [sys.executable, APP, name, str(port), log, json.dumps(calls[name])]
            if name == "stock" and async_stock:
                argv = [sys.executable, ASYNC_APP, name, str(port), log, str(rp)]
            stack.enter_context(_proc(argv, port, service=name, cgroup_dir=cgroup_dir))

        def drive(k: int) -> None:
            for i in range(k, requests, concurrency):
                path = "/checkout" if i % 3 else "/home"
                urllib.request.urlopen(f"http://127.0.0.1:{fp}{path}", timeout=10).read()

        threads = [threading.Thread(target=drive, args=(k,)) for k in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)  # let the last log lines land
        if before_stop is not None:
            before_stop(log)
    return log


def http_spans_logged(log: str) -> int:
    with open(log) as f:
        return sum(1 for line in f if '"db.system"' not in line)


def spans_from_log(log: str) -> tuple[list[Span], dict[str, str | None]]:
    """Spans carrying only what the capture provides, and span id -> true parent id."""
    spans, truth = [], {}
    with open(log) as f:
        for line in f:
            r = json.loads(line)
            attrs = {"client.address": r["client"][0], "client.port": r["client"][1],
                     "server.address": r["server"][0], "server.port": r["server"][1],
                     "network.transport": "tcp", "thread.id": r["tid"]}
            if "db.system" in r:
                attrs["db.system"] = r["db.system"]
            spans.append(Span(name=r["name"], kind=r["kind"], start_time_unix_nano=r["start"],
                              end_time_unix_nano=r["end"], span_id=r["span_id"], attributes=attrs,
                              resource={"service.name": r["service"], "process.pid": r["pid"],
                                        "host.name": HOST}))
            truth[r["span_id"]] = r["truth_parent"]
    return spans, truth


def map_captured(captured: list[Span], logged: list[Span], slack_ns: int = 20_000_000) -> dict[str, Span]:
    """Logged span id -> the captured span of the same exchange (same kind and connection,
    closest response time): how live-capture results are scored against the logged truth."""
    from capture.traces.linker import conn_key

    by_key: dict[tuple, list[Span]] = {}
    for c in captured:
        by_key.setdefault((c.kind, conn_key(c)), []).append(c)
    out, used = {}, set()
    for s in logged:
        cands = [c for c in by_key.get((s.kind, conn_key(s)), []) if c.span_id not in used
                 and abs(c.end_time_unix_nano - s.end_time_unix_nano) <= slack_ns]
        if cands:
            best = min(cands, key=lambda c: abs(c.end_time_unix_nano - s.end_time_unix_nano))
            used.add(best.span_id)
            out[s.span_id] = best
    return out


def accuracy(spans: list[Span], truth: dict[str, str | None],
             only: Callable[[Span], bool] | None = None) -> dict[str, float | int]:
    """Fraction of true parent links found, wrong links made, and traces kept whole
    (over the spans `only` selects, e.g. one kind or one service)."""
    by_id = {s.span_id: s for s in spans}
    scored = [s for s in spans if only is None or only(s)]
    with_parent = [s for s in scored if truth.get(s.span_id)]
    correct = sum(1 for s in with_parent if s.parent_span_id == truth[s.span_id])
    wrong = sum(1 for s in scored if s.parent_span_id and s.parent_span_id != truth.get(s.span_id))
    same_trace = sum(1 for s in with_parent if by_id[truth[s.span_id]].trace_id == s.trace_id)
    return {"links": len(with_parent), "correct": correct, "wrong": wrong,
            "accuracy": correct / len(with_parent) if with_parent else 0.0,
            "same_trace": same_trace / len(with_parent) if with_parent else 0.0}
