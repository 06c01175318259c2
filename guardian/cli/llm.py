"""`guardian llm serve|status|stop|fetch`: the offline local model server for the agent."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from pathlib import Path

from guardian.llm.config import DEFAULT_LOCAL_MODEL, DEFAULT_LOCAL_PORT, load_config
from guardian.llm.models import MODELS, fetch, is_installed, model_path
from guardian.llm.server import LocalServer, health, served_models, state_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("llm", help="local LLM server for the agent (offline, no cloud)")
    llm_sub = p.add_subparsers(dest="llm_command", metavar="ACTION")

    s = llm_sub.add_parser("serve", help="serve a local model on loopback (OpenAI-compatible)")
    s.add_argument("--model", choices=sorted(MODELS), default=DEFAULT_LOCAL_MODEL)
    s.add_argument("--port", type=int, default=DEFAULT_LOCAL_PORT)
    s.add_argument("--background", action="store_true", help="return once healthy, leave it running")
    s.set_defaults(func=_serve)

    st = llm_sub.add_parser("status", help="installed models, running server, selected engine")
    st.add_argument("--port", type=int, default=None)
    st.set_defaults(func=_status)

    stop = llm_sub.add_parser("stop", help="stop a server started with serve --background")
    stop.set_defaults(func=_stop)

    f = llm_sub.add_parser("fetch", help="download and verify local model weights (make setup-llm)")
    f.add_argument("--model", action="append", choices=sorted(MODELS), help="repeatable; default all")
    f.set_defaults(func=_fetch)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _interrupt(signum: int, _frame) -> None:
    raise KeyboardInterrupt


def _serve(args: argparse.Namespace) -> int:
    server = LocalServer(args.model, args.port)
    if health(args.port):
        print(f"already serving {', '.join(served_models(args.port))} on {server.base_url}")
        return 0
    log_path = state_file().with_suffix(".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server.log_path = log_path
    t0 = time.monotonic()
    # Ctrl-C and SIGTERM both stop the child, even when SIGINT came in ignored (a background job
    # of a shell) and even mid-start or mid-print: the child runs in its own session, so nothing
    # else would stop it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        server.start()
        print(f"serving {server.model} on {server.base_url} (healthy after {time.monotonic() - t0:.1f}s;"
              f" log {log_path})", flush=True)
        print(f"use it: GUARDIAN_LLM=local:{args.model} GUARDIAN_LLM_PORT={args.port}"
              if args.port != DEFAULT_LOCAL_PORT else f"use it: GUARDIAN_LLM=local:{args.model}", flush=True)
        if args.background:
            state_file().write_text(json.dumps({"pid": server.proc.pid, "port": args.port, "model": args.model}))
            server.proc = None  # detached: `guardian llm stop` ends it
            return 0
        while server.proc and server.proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def _status(args: argparse.Namespace) -> int:
    for key, m in MODELS.items():
        state = "installed" if is_installed(key) else "not installed (make setup-llm)"
        print(f"model {key:5} {m.name}: {state} [{model_path(key)}]")
    cfg = load_config()
    port = args.port or cfg.local_port
    up = health(port)
    print(f"server on 127.0.0.1:{port}: " + (f"up, serving {', '.join(served_models(port))}" if up else "down"))
    if cfg.enabled:
        r = cfg.resolved()
        print(f"agent engine: llm, model {r.model} at {r.base_url or 'the OpenAI API'}")
    else:
        print("agent engine: deterministic (set GUARDIAN_LLM=local or GUARDIAN_LLM_BASE_URL for the LLM)")
    return 0


def _stop(args: argparse.Namespace) -> int:
    sf = state_file()
    if not sf.is_file():
        print("no background server recorded")
        return 1
    st = json.loads(sf.read_text())
    cmdline = Path(f"/proc/{int(st['pid'])}/cmdline")
    # A stale file may name a pid the kernel has since given to something else.
    if not cmdline.exists() or b"guardian.llm.server" not in cmdline.read_bytes():
        print(f"model server pid {st['pid']} is not running")
        sf.unlink()
        return 0
    try:
        os.kill(int(st["pid"]), signal.SIGTERM)
        print(f"stopped model server pid {st['pid']} on port {st['port']}")
    except ProcessLookupError:
        print(f"model server pid {st['pid']} was not running")
    sf.unlink()
    return 0


def _fetch(args: argparse.Namespace) -> int:
    logging.getLogger("guardian.llm.models").setLevel(logging.INFO)
    for key in args.model or sorted(MODELS):
        print(f"{key}: {fetch(key)}")
    return 0
