"""Start `guardian agent` as a real process for the agent tests, wait for `ready`, stop it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager

from support.ports import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AgentProcess:
    def __init__(self, *args: str, env: dict[str, str] | None = None, ready_timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("GUARDIAN_", "OTEL_"))}
        full_env.update(env or {})
        self.proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "agent", "--port",
                                      str(self.port), *args], cwd=ROOT, env=full_env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout):
            self.kill()
            raise AssertionError("agent not ready:\n" + "".join(self.stderr))

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)
            if line.strip() == "ready":
                self._ready.set()
        self._ready.set()  # exited: let the waiter see it

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, body
        return json.loads(body)

    def metric(self, name: str) -> float | None:
        _, text = self.get("/metrics")
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_metric(self, name: str, at_least: float, timeout: float = 90.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                v = self.metric(name)
            except TimeoutError:  # one slow scrape on a loaded host (load 35: the debug mode's took > 10 s)
                continue
            if v is not None and v >= at_least:
                return v
            time.sleep(0.1)
        raise AssertionError(f"{name} < {at_least}: {self.metric(name)}")

    def wait_settled(self, name: str, at_least: float, quiet_s: float = 1.0, timeout: float = 90.0) -> float:
        """Wait until counter `name` reaches `at_least` and then stays put for `quiet_s` (the
        capture has caught up). Meaningful for an agent scoped to the traffic awaited: a host-wide
        counter reaches any figure early on a busy host (capture.scope)."""
        deadline = time.monotonic() + timeout
        v = self.wait_metric(name, at_least, timeout)
        since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            time.sleep(0.1)
            now = self.metric(name)
            if now != v:
                v, since = now, time.monotonic()
        return v

    def signal_and_wait_line(self, sig: int, marker: str, timeout: float = 30.0) -> str:
        """Send `sig` and return the first stderr line containing `marker` (what the agent logs
        on that signal)."""
        self.proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = next((x for x in self.stderr if marker in x), None)
            if line is not None:
                return line
            time.sleep(0.1)
        raise AssertionError(f"no {marker!r} line after signal {sig}:\n" + "".join(self.stderr))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90.0) -> int:
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("agent did not exit:\n" + "".join(self.stderr))
        self._reader.join(5)
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@contextmanager
def scraping(agent: AgentProcess, threads: int = 3):
    """/metrics scraped without pause by `threads` threads while the block runs (an agent under
    its API's load)."""
    stop = threading.Event()

    def scrape() -> None:
        while not stop.is_set():
            try:
                agent.get("/metrics")
            except OSError:
                pass

    scrapers = [threading.Thread(target=scrape, daemon=True) for _ in range(threads)]
    for t in scrapers:
        t.start()
    try:
        yield
    finally:
        stop.set()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`guardian ARGS` in this process (the same code path as the console script, without the
    interpreter start-up a subprocess costs); SystemExit messages land on stderr as they would."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from guardian.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = main(list(args))
        except SystemExit as e:
            if isinstance(e.code, int) or e.code is None:
                rc = e.code or 0
            else:
                print(e.code, file=sys.stderr)
                rc = 1
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())
