"""The real eBPF capture (`guardian capture --json`, system-wide) as a child process, its spans
kept when they touch one of the lab's ports, linked into traces the way `guardian agent`
links them (capture.traces.StreamLinker), and held in memory for the recorder to cut cases from.
"""
from __future__ import annotations

import bisect
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from capture.span import Span
from capture.traces.stream import StreamLinker

REPO = Path(__file__).resolve().parents[1]
KEEP_S = 900  # spans older than this (stream time) are forgotten: cases are cut well before


class LabCapture:
    def __init__(self, ports: set[int], log: Path, linker_window_s: float = 5.0) -> None:
        self.ports = ports
        self.log = log
        self.linker = StreamLinker(linker_window_s)
        self._spans: list[tuple[int, int, Span]] = []  # (start ns, seq, span), sorted
        self._seq = 0
        self._lock = threading.Lock()
        self._link_lock = threading.Lock()  # the linker is not thread-safe
        self.proc: subprocess.Popen | None = None
        self.seen = self.kept = 0
        self.ready = threading.Event()

    def start(self, timeout: float = 300) -> None:
        """Start the capture and wait until its probes are attached (BCC compiles them first)."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        err = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "guardian.cli.main", "capture", "--json", "--stats"],
                                     stdout=subprocess.PIPE, stderr=err, cwd=REPO, start_new_session=True)
        err.close()
        threading.Thread(target=self._read, name="capture-reader", daemon=True).start()
        threading.Thread(target=self._tick, name="capture-linker", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "ready" in self.log.read_text(errors="replace").split():
                self.ready.set()
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"guardian capture exited: {self.log.read_text()[-1500:]}")
            time.sleep(0.5)
        raise RuntimeError("guardian capture not ready in time")

    def _read(self) -> None:
        assert self.proc and self.proc.stdout
        batch: list[Span] = []
        last = time.monotonic()
        for line in self.proc.stdout:
            self.seen += 1
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if d.get("attributes", {}).get("server.port") not in self.ports:
                continue
            batch.append(Span.from_dict(d))
            if len(batch) >= 500 or time.monotonic() - last > 0.5:
                with self._link_lock:
                    settled = self.linker.add(batch)
                self._settle(settled)
                batch, last = [], time.monotonic()

    def _tick(self) -> None:
        while self.proc and self.proc.poll() is None:
            time.sleep(1.0)
            with self._link_lock:
                settled = self.linker.idle()
            self._settle(settled)

    def _settle(self, spans: list[Span]) -> None:
        if not spans:
            return
        with self._lock:
            for s in spans:
                self._seq += 1
                bisect.insort(self._spans, (s.start_time_unix_nano, self._seq, s))
            self.kept += len(spans)
            horizon = self._spans[-1][0] - KEEP_S * 10**9
            if self._spans[0][0] < horizon:
                cut = bisect.bisect_left(self._spans, (horizon, 0))
                del self._spans[:cut]

    def flush(self) -> None:
        """Release every span the linker still holds (call once the window is over)."""
        with self._link_lock:
            settled = self.linker.flush()
        self._settle(settled)

    def between(self, start_ns: int, end_ns: int) -> list[Span]:
        """Spans that started in [start_ns, end_ns)."""
        with self._lock:
            i = bisect.bisect_left(self._spans, (start_ns, 0))
            j = bisect.bisect_left(self._spans, (end_ns, 0))
            return [s for _, _, s in self._spans[i:j]]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
