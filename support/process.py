"""A server subprocess that is up (listening on its port) inside the block and stopped after it."""
from __future__ import annotations

import signal
import subprocess
from contextlib import contextmanager

from support.ports import wait_port


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
    """Ask `proc` to stop with `sig`, kill it if it has not exited within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def process(cmd: list[str], port: int, **kw):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    try:
        wait_port(port)
        yield proc
    finally:
        stop(proc)
