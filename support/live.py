"""Run `guardian capture --json` as a real subprocess around a block of test traffic.

    with live_capture(port=8080) as cap:
        ...drive real clients...
    spans = cap.spans          # list[dict] in the public JSON shape
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from support.ports import free_port  # noqa: F401 (re-exported for the tests)
from support.process import stop

ROOT = Path(__file__).resolve().parents[1]


def ebpf_or_skip() -> None:
    """Skip where BPF truly cannot load (not root); never skip in CI."""
    import pytest

    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("eBPF tests must run in CI: run the tests as root")
        pytest.skip("eBPF needs root")


class Capture:
    def __init__(self, proc: subprocess.Popen, err_path: Path) -> None:
        self.proc = proc
        self.err_path = err_path
        self.spans: list[dict] = []
        self.stats: dict = {}
        self.stderr = ""


@contextmanager
def live_capture(port: int | None = None, pid: int | None = None, extra: tuple[str, ...] = (),
                 settle_s: float = 0.5, ready_timeout_s: float = 240.0):
    ebpf_or_skip()
    cmd = [sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--stats"]
    if port is not None:
        cmd += ["--port", str(port)]
    if pid is not None:
        cmd += ["--pid", str(pid)]
    cmd += list(extra)
    out_path = Path(f"/tmp/guardian-test-capture-{os.getpid()}-{time.monotonic_ns()}.out")
    err_path = out_path.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=ROOT)
    cap = Capture(proc, err_path)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while "ready" not in err_path.read_text():
            if proc.poll() is not None:
                raise RuntimeError(f"guardian capture exited early: {err_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"guardian capture not ready in {ready_timeout_s}s: {err_path.read_text()}")
            time.sleep(0.1)
        yield cap
        time.sleep(settle_s)  # let the last events reach the ring buffer
    finally:
        stop(proc, signal.SIGINT, timeout=30)
        cap.stderr = err_path.read_text()
        for line in out_path.read_text().splitlines():
            if line.strip():
                cap.spans.append(json.loads(line))
        for line in cap.stderr.splitlines():
            if line.startswith("{"):
                cap.stats = json.loads(line)
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    assert proc.returncode == 0, f"guardian capture exited {proc.returncode}: {cap.stderr}"
