"""The local OpenAI-compatible model server: llama.cpp's own HTTP server from the xllamacpp
wheel, on loopback, with our chat template (see chat_template.jinja for why).

`python -m guardian.llm.server --model 0.5b --port N` runs it in the foreground; the
`LocalServer` handle starts that as a child process and waits for /health.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from guardian.llm.models import MODELS, cache_dir, is_installed, model_path

log = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("chat_template.jinja")
CONTEXT_TOKENS = 8192
STARTUP_TIMEOUT_S = 120.0


def state_file() -> Path:
    """Where a background server records its pid, port and model (for status/stop)."""
    return cache_dir().parent / "llm-server.json"


def health(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True when the server on `port` has its model loaded (llama.cpp answers 503 before)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout) as r:
            return r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok"
    except (OSError, ValueError, urllib.error.URLError):
        return False


def served_models(port: int, host: str = "127.0.0.1") -> list[str]:
    """Model ids the server on `port` reports (/v1/models), [] when none answers."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/v1/models", timeout=2.0) as r:
            return [m.get("id", "") for m in json.loads(r.read()).get("data", [])]
    except (OSError, ValueError, urllib.error.URLError):
        return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_foreground(key: str, port: int, threads: int | None = None) -> int:
    """Load the model and serve until SIGTERM/SIGINT (this process)."""
    # OpenMP threads spin while waiting for each other; on shared, busy cores a spinning
    # thread starves its peer and generation nearly stops.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import xllamacpp

    if not is_installed(key):
        print(f"model {key} is not installed: run `make setup-llm`", file=sys.stderr)
        return 2
    p = xllamacpp.CommonParams()
    p.model.path = str(model_path(key))
    p.model_alias = {MODELS[key].name}
    p.hostnames = ["127.0.0.1"]
    p.port = port
    p.n_ctx = CONTEXT_TOKENS
    p.use_jinja = True
    p.chat_template = TEMPLATE.read_text()
    # Both cores for one request at a time: the agent is sequential.
    p.n_parallel = 1
    n = threads or os.cpu_count() or 2
    p.cpuparams.n_threads = n
    p.cpuparams_batch.n_threads = n
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server = xllamacpp.Server(p)  # starts the HTTP threads; returns once listening
    print(f"serving {MODELS[key].name} on {server.listening_address}/v1", flush=True)
    stop.wait()
    del server
    return 0


class LocalServer:
    """A model server child process on loopback; reuses one already healthy on the port."""

    def __init__(self, key: str, port: int | None = None, log_path: str | os.PathLike | None = None):
        if key not in MODELS:
            raise ValueError(f"unknown local model {key!r}: choose one of {', '.join(MODELS)}")
        self.key, self.port = key, port or free_port()
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def model(self) -> str:
        return MODELS[self.key].name

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> "LocalServer":
        if health(self.port):
            if self.model not in served_models(self.port):
                raise RuntimeError(f"port {self.port} serves {served_models(self.port)}, not {self.model}")
            return self
        if not is_installed(self.key):
            raise RuntimeError(f"local model {self.key} is not installed: run `make setup-llm`")
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guardian.llm.server", "--model", self.key, "--port", str(self.port)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"model server exited with {self.proc.returncode}"
                                   + (f"; see {self.log_path}" if self.log_path else ""))
            if health(self.port):
                return self
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"model server not healthy within {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the child we started (never a server someone else runs)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_if_installed(env: dict | None = None) -> LocalServer | None:
    """Serve the local model and select it (GUARDIAN_LLM=local) when make setup-llm was run
    and no LLM is configured; None otherwise. For `make demo`: the caller stops it."""
    import importlib.util

    from guardian.llm.config import DEFAULT_LOCAL_MODEL, load_config

    env = os.environ if env is None else env
    chosen = env.get("GUARDIAN_LLM") or env.get("GUARDIAN_LLM_BASE_URL")  # "off" is a choice too
    if chosen or load_config(env=env).enabled or importlib.util.find_spec("xllamacpp") is None \
            or not is_installed(DEFAULT_LOCAL_MODEL):
        return None
    try:
        server = LocalServer(DEFAULT_LOCAL_MODEL, log_path=state_file().with_suffix(".log")).start()
    except (OSError, RuntimeError) as e:  # TimeoutError is an OSError
        log.warning("local LLM not started (%s): the deterministic engine answers", e)
        return None
    env.update(GUARDIAN_LLM=f"local:{DEFAULT_LOCAL_MODEL}", GUARDIAN_LLM_PORT=str(server.port))
    # Keep an answer within the caller's patience on a busy host: a slow turn ends the agent's
    # work and the checked deterministic findings stand.
    env.setdefault("GUARDIAN_LLM_MAX_STEPS", "2")
    env.setdefault("GUARDIAN_LLM_TIMEOUT", "45")
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m guardian.llm.server")
    ap.add_argument("--model", choices=sorted(MODELS), default="0.5b")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    return run_foreground(a.model, a.port, a.threads)


if __name__ == "__main__":
    sys.exit(main())
