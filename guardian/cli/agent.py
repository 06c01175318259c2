"""`guardian agent [--store PATH] [--config FILE]`: capture + linking + enrichment + store +
export continuously, with the HTTP API (/healthz, /metrics, /v1/...). Prints `ready` on stderr
once capturing; SIGTERM/SIGINT links what is pending, flushes the store and exits 0; SIGUSR1 logs
the resident set by source (`memory {...}`: guardian/rss.py); SIGUSR2, with log.memory_trace_frames
set, what grew since the last SIGUSR2 (`memory growth {...}`: guardian/memtrace.py)."""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import sys
import time

log = logging.getLogger("guardian.agent")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("agent", help="run the capture daemon (eBPF capture, linking, store, export, API)",
                       description="Capture every request on this host, link spans into traces, keep them "
                                   "in the store, export OTLP when configured, and serve the API. Config: "
                                   "--config FILE (sections store, linker, export, k8s, capture, log, api, "
                                   "slack, schedule, llm: docs/configuration.md) and GUARDIAN_* environment "
                                   "variables.")
    p.add_argument("--store", metavar="PATH", help="store file (default: store.path from config, else in memory)")
    p.add_argument("--host", help="API address (default api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="API port (default api.port, 8080)")
    p.add_argument("--replay", metavar="FILE",
                   help="instead of live eBPF capture, replay spans from JSON lines (guardian capture --json)")
    p.set_defaults(func=run)


def _logging(fmt: str, level: str) -> None:
    from guardian.agent_daemon import JsonFormatter

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _pods(cfg):
    """A PodIndex kept current by a watcher, or None outside Kubernetes."""
    mode = str(cfg.k8s.enabled).lower()
    has_kubeconfig = cfg.k8s.kubeconfig or os.path.exists(os.path.expanduser("~/.kube/config"))
    if mode in ("false", "0", "no") or (mode == "auto" and not os.environ.get("KUBERNETES_SERVICE_HOST")
                                        and not has_kubeconfig):
        return None, None
    from capture.enrich.k8s import PodWatcher, connect

    try:
        watcher = PodWatcher(connect(cfg.k8s.kubeconfig), cfg.k8s.node_name).start()
    except Exception as e:  # noqa: BLE001 - no cluster: degrade to process/container identity
        log.warning("Kubernetes enrichment off: %s", e)
        return None, None
    return watcher.index, watcher


def _system_allocator_for_arrow() -> None:
    """Arrow's own allocator (mimalloc) keeps what the store's batches freed resident in a region
    of its own; from the C library's malloc, it is reused by everything else in the process
    (`python -m bench.capture --only agent` prints the agent's resident set by mapping)."""
    import pyarrow as pa

    pa.set_memory_pool(pa.system_memory_pool())


def _kernel_scope(cgroup: str) -> str | None:
    """capture.scope.cgroup for the kernel to decide (bpf/scope.h), when it names a cgroup v2
    directory; else None, and capture.scope judges every span in userspace as before."""
    from capture.scope import cgroup_identity

    try:
        cgroup_identity(cgroup)
        return cgroup
    except OSError as e:
        log.warning("capture.scope.cgroup %s is judged in userspace only: %s", cgroup, e)
        return None


def run(args: argparse.Namespace) -> int:
    from capture.errors import CaptureUnavailable
    from capture.export.otlp import from_config
    from capture.sources.replay import ReplaySource
    from capture.store.factory import open_store
    from guardian.agent_daemon import Agent, ApiServer, minimal_app
    from guardian.config import load

    try:
        # One model: cfg is the agent's configuration and the API's settings at once.
        cfg = settings = load(args.config, overrides={"api": {"port": args.port, "host": args.host}})
    except (OSError, ValueError) as e:
        print(f"guardian agent: bad configuration: {e}", file=sys.stderr)
        return 2
    _logging(cfg.log.format, cfg.log.level)
    from guardian import heap

    heap.tune()  # before any thread: arenas are made as threads meet busy ones
    cfg.scrub.apply()
    if args.store:
        cfg.store.path = args.store

    from capture.enrich.enricher import Enricher

    pods, watcher = _pods(cfg)
    enricher = Enricher(pods=pods)
    if args.replay:
        source = ReplaySource(args.replay)
    else:
        from capture.live import LiveCapture

        try:
            options = cfg.capture.live_options()
            if options.cgroup is None and cfg.capture.scope.get("cgroup"):
                options.cgroup = _kernel_scope(cfg.capture.scope["cgroup"])
            if options.netns is None and cfg.capture.scope.get("netns"):
                options.netns = cfg.capture.scope["netns"]  # decided in the kernel too (bpf/scope.h)
            source = LiveCapture(options, resource_for=enricher.resource)
        except (TypeError, OSError) as e:
            print(f"guardian agent: bad capture options: {e}", file=sys.stderr)
            return 2
    try:
        source.start()
    except (CaptureUnavailable, OSError, ValueError) as e:
        print(f"guardian agent: {e}", file=sys.stderr)
        return 1
    _system_allocator_for_arrow()
    store = open_store(cfg.store.path, max_age_s=cfg.store.max_age_s, max_spans=cfg.store.max_spans,
                       memory_limit_mb=cfg.store.memory_limit_mb, threads=cfg.store.threads)
    sink = from_config(cfg.export, netns=cfg.capture.scope.get("netns"))
    agent = Agent(cfg, store, source, sink, enricher, page_out=True)

    host, warning = settings.bind_host(args.host)
    if warning:
        log.warning(warning)
    try:
        from guardian.api.main import create_app

        app = create_app(store, settings, registry=agent.registry)
    except ImportError as e:
        log.warning("full API unavailable (%s): serving /healthz and /metrics only", e)
        app = minimal_app(agent)
    api = ApiServer(app, host, settings.api.port)
    try:
        api.start()
    except RuntimeError as e:
        print(f"guardian agent: {e}", file=sys.stderr)
        source.close()
        store.close()
        return 1
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: agent.request_stop())
    # the resident set by source as one log line (Agent.memory), written by the worker, not here
    signal.signal(signal.SIGUSR1, lambda *_: agent.log_memory.set())
    # with log.memory_trace_frames: what Python's allocations and objects grew by since the last one
    signal.signal(signal.SIGUSR2, lambda *_: agent.log_growth.set())
    if not args.replay:
        from capture.live import tune_gc

        tune_gc()
    log.info("capturing; API on http://%s:%d; store %s; export %s", host, settings.api.port,
             cfg.store.path or "in memory", cfg.export.otlp_endpoint or "off")
    print("ready", file=sys.stderr, flush=True)
    try:
        agent.run()
    finally:
        t = time.monotonic()
        api.stop()
        t = agent.exit_step_done("api", t)
        source.close()
        t = agent.exit_step_done("capture_close", t)
        if watcher is not None:
            watcher.stop()
        store.close()
        agent.exit_step_done("store_close", t)
        log.info("exit phases (s) %s", json.dumps(agent.exit_phases))
        # the store is closed, nothing is left to write: the interpreter's last collection walks every
        # object the agent made (3.4 s of the 4.2 s from SIGTERM to exit at load 31, replayed, debug
        # mode off); frozen, they are freed with the process instead
        gc.freeze()
    return 0
