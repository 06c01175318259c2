"""A server subprocess that is up (listening on its port) inside the block and stopped after it."""
from __future__ import annotations

import signal
import subprocess
from contextlib import contextmanager

from support.ports import wait_port


@contextmanager
def process(cmd: list[str], port: int, **kw):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    try:
        wait_port(port)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
