"""What the agent keeps when its ingest queue is full.

Past the queue's bound a batch used to be dropped whole: under a flood from one busy process
(a benchmark, a batch job, a chatty health check) the rare spans an investigation needs went
with it, an error every few seconds at a quiet service among a hundred thousand spans a second
of something else. Shedding keeps, from a batch the queue cannot take, the spans of processes
that are quiet in the current second (their first `quiet_per_s` spans under overload) and their
errors (up to ten times as many a second per process: a flood of errors is itself shed), into a
reserve past the queue's bound (BatchQueue's reserve); the rest is dropped and counted as before. Counting runs only on this overload path,
so a host below saturation pays nothing for it.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

from capture.span import Span

QUIET_PER_S = 20  # spans a second from one process below which they are kept under overload


class Shedder:
    def __init__(self, quiet_per_s: int = QUIET_PER_S, clock: Callable[[], float] = time.monotonic):
        self.quiet_per_s = quiet_per_s
        self.clock = clock
        self._second = -1
        self._seen: dict[object, int] = {}  # process -> spans offered under overload this second
        self._errors: dict[object, int] = {}  # process -> errors kept this second
        self.kept = 0  # spans kept past the bound (errors, quiet processes)

    def keep(self, spans: Sequence[Span]) -> list[Span]:
        """The spans of a batch the queue refused that are worth the reserve."""
        second = int(self.clock())
        if second != self._second:
            self._second, self._seen, self._errors = second, {}, {}
        seen, errors, quiet, out = self._seen, self._errors, self.quiet_per_s, []
        for s in spans:
            pid = s.resource.get("process.pid")
            n = seen.get(pid, 0)
            seen[pid] = n + 1
            if n < quiet:
                out.append(s)
            elif s.status_code == "ERROR" and (e := errors.get(pid, 0)) < 10 * quiet:
                errors[pid] = e + 1
                out.append(s)
        return out
