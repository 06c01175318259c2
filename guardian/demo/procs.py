"""Child processes of the demo: spawn with a log file, wait until ready, stop the whole group.

Every child gets its own process group so that stopping it also stops what it forked
(rabbitmq's erlang VM, epmd, uvicorn workers); nothing outlives the demo.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class DemoError(RuntimeError):
    """A step of the demo failed; the message says what and where to look."""


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM
    extra_stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        _signal_group(self.popen.pid, signal.SIGCONT)  # a stopped (faulted) process can't exit
        _signal_group(self.popen.pid, self.stop_signal)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(self.popen.pid, signal.SIGKILL)  # leftovers in the group (epmd, forks)
        try:
            self.popen.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.extra_stop:
            try:
                self.extra_stop()
            except (OSError, subprocess.SubprocessError):
                pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def spawn(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
          cwd: str | Path | None = None, user: str | None = None) -> Proc:
    """Start argv in a new session with stdout+stderr to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=full_env, cwd=cwd, start_new_session=True, user=user)
    except FileNotFoundError as e:
        raise DemoError(f"{name}: cannot run {argv[0]}: {e} (run `make setup`)") from e
    finally:
        out.close()
    return Proc(name, p, log)


def wait_until(proc: Proc | None, check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until true; fail early if the process died, with its log tail."""
    deadline = time.monotonic() + timeout
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise DemoError(f"{what}: process exited (code {proc.popen.returncode}); log {proc.log}:\n{proc.tail()}")
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 — any failure of a readiness probe means "not yet"
            last_err = e
        time.sleep(0.2)
    tail = proc.tail() if proc else ""
    raise DemoError(f"{what}: not ready after {timeout:.0f}s ({last_err}); log:\n{tail}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def leftovers(workdir: Path) -> list[str]:
    """Processes (other than this one) whose command line or environment mention `workdir`:
    after a teardown this must be empty."""
    needle = str(workdir).encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours to read
            continue
        if needle in cmd or needle in env:
            shown = cmd.replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{pid} {shown}")
    return found


def run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """Run a set-up command to completion; raise DemoError with its output on failure."""
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=kw.pop("timeout", 120), **kw)
    except FileNotFoundError as e:
        raise DemoError(f"{what}: {argv[0]} not found (run `make setup`)") from e
    if cp.returncode != 0:
        raise DemoError(f"{what} failed ({' '.join(argv[:3])}…):\n{(cp.stderr or cp.stdout)[-1500:]}")
    return cp
