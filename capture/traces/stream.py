"""Incremental linking of a time-ordered span stream with a bounded pending window.

A span is held until the stream's newest end time has passed its end by `window_s` (its
caller, parent and trace root have arrived by then, for traces shorter than the window),
then linked once, against what can reach it (a band: see _release_python), and released with
its final trace id. Released spans stay as read-only context for one more window so late
peers can still link to them, as their link facts only (Held: not the row, which is the store's),
and not at all once they are CLIENT spans their SERVER has answered. Both sets are bounded in
spans (`max_pending` waiting, half as many as context): under a flood the oldest go early
instead of memory growing with it.
"""
from __future__ import annotations

import time
from typing import Iterable

from capture.span import Span
from capture.traces import linker
from capture.traces.linker import (_CLIENTS, _SERVERS, TRACEPARENT, _process, _thread, conn_key, link,
                                    parse_traceparent)


class Held:
    """A released span as the context holds it: what linking reads of a frozen span (kind, times,
    ids, parent, trace id, the connection facts as a compact row's `key`, the resource), not its
    name, status or attributes (capture/traces/_link.c's Held where built; the same fields)."""
    __slots__ = ("kind", "start_time_unix_nano", "end_time_unix_nano", "span_id", "parent_span_id",
                 "trace_id", "key", "resource")
    attributes = None  # as a compact row's: linker.conn_key and _thread read `key`

    def __init__(self, s: Span):
        a = s.attributes
        if a is None:  # a compact row (capture.rows): its facts, shared with its connection's rows
            self.key = s.key
        elif s.kind in _SERVERS or s.kind in _CLIENTS:
            self.key = (conn_key(s), _thread(s), a.get(TRACEPARENT))
        else:  # (its connection and thread are read of SERVER and CLIENT kinds only)
            self.key = (None, None, a.get(TRACEPARENT))
        self.kind, self.span_id, self.parent_span_id, self.trace_id = s.kind, s.span_id, s.parent_span_id, s.trace_id
        self.start_time_unix_nano, self.end_time_unix_nano = s.start_time_unix_nano, s.end_time_unix_nano
        self.resource = s.resource


class StreamLinker:
    def __init__(self, window_s: float = 5.0, slack_ns: int = 50_000_000,
                 max_pending: int = 100_000):
        self.window_ns = int(window_s * 1e9)
        self.slack_ns = slack_ns
        self.max_pending = max_pending
        self._pending: list[Span] = []
        self._context: list[Held] = []  # released, frozen
        self._newest_end = 0
        self._last_run_end = 0
        self._last_add = time.monotonic()
        self.linked = 0  # released spans that got a parent here
        self.forced = 0  # released early because max_pending was reached
        self.context_trimmed = 0  # released spans dropped from the context before their window

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def context(self) -> int:
        """Released spans kept (as Held) for late peers."""
        return len(self._context)

    def add(self, spans: Iterable[Span]) -> list[Span]:
        """Take a batch; return the spans now settled (possibly from earlier batches)."""
        n = len(self._pending)
        newest = None
        if linker._link is not None and type(spans) is list:  # the loop below in C
            newest = linker._link.newest_end(spans, self._newest_end)
        if newest is not None:
            self._pending.extend(spans)
            self._newest_end = newest
        else:
            for s in spans:
                self._pending.append(s)
                if s.end_time_unix_nano > self._newest_end:
                    self._newest_end = s.end_time_unix_nano
        if len(self._pending) > n:
            self._last_add = time.monotonic()
        # A run at most every half window of stream time (a run scans everything held for its
        # times), unless memory is at stake.
        if (self._newest_end - self._last_run_end < self.window_ns // 2
                and len(self._pending) < self.max_pending):
            return []
        self._last_run_end = self._newest_end
        return self._release(self._newest_end - self.window_ns)

    def idle(self) -> list[Span]:
        """Release everything once nothing has arrived for a window of wall-clock time: peers
        that have not come by then are not coming (works for live and replayed streams)."""
        if self._pending and time.monotonic() - self._last_add >= self.window_ns / 1e9:
            return self._release(None)
        return []

    def flush(self) -> list[Span]:
        """Link and release everything pending (shutdown, end of a file)."""
        return self._release(None)

    def _release(self, cutoff: int | None) -> list[Span]:
        if not self._pending:
            return []
        if linker._link is not None:  # _release_python in C (capture/traces/_link.c)
            got = linker._link.release(self._pending, self._context, cutoff, self._newest_end, self.window_ns,
                                       self.max_pending, self.slack_ns, conn_key, _thread, _process,
                                       parse_traceparent)
            if got is not None:  # None: a case left to the specification (two spans, one id)
                ready, self._pending, self._context, _, linked, forced, trimmed = got
                self.linked += linked
                self.forced += forced
                self.context_trimmed += trimmed
                return ready
        return self._release_python(cutoff)

    def _release_python(self, cutoff: int | None) -> list[Span]:
        """_release in Python: the specification of the compiled one.

        Only the band that can reach the released spans is linked, not everything held: the
        released ones, the held ones that started before the newest released one ended (their
        callers, callees and parents) and the context that ended after the earliest of those
        started. Peers overlap in time (a SERVER ends inside its CLIENT, a CLIENT starts inside
        its SERVER), so the released spans get the links linking everything held gives them, but
        where a held SERVER that started after the band would have taken their CLIENT by a
        better fit. A held span takes part as it is and is left as it was (its links are made at
        its own release): a span is linked once, and a run's work follows what it releases."""
        if cutoff is None:
            out = {id(s) for s in self._pending}
        else:
            out = {id(s) for s in self._pending if s.end_time_unix_nano < cutoff}
            if len(self._pending) - len(out) >= self.max_pending:  # overload: the oldest quarter as they are
                keep = sorted((s for s in self._pending if id(s) not in out), key=lambda s: s.end_time_unix_nano)
                early = keep[:max(1, len(keep) // 4)]
                out |= {id(s) for s in early}
                self.forced += len(early)
        ready = [s for s in self._pending if id(s) in out]
        gone: set[int] = set()  # answered CLIENT spans: not kept as context
        if ready:
            hi = max(s.end_time_unix_nano for s in ready) + self.slack_ns
            near = [s for s in self._pending if id(s) in out or s.start_time_unix_nano <= hi]
            lo = min(s.start_time_unix_nano for s in near) - self.slack_ns
            band = [s for s in self._context if s.end_time_unix_nano >= lo]
            held = [(s, s.parent_span_id, s.trace_id) for s in near if id(s) not in out]
            unlinked = {s.span_id for s in ready if not s.parent_span_id}
            link(band + near, frozen={s.span_id for s in band}, slack_ns=self.slack_ns)
            for s, parent, trace in held:
                s.parent_span_id, s.trace_id = parent, trace
            self.linked += sum(1 for s in ready if s.span_id in unlinked and s.parent_span_id)
            # A frozen CLIENT is read only as the caller of a SERVER still to come: once a SERVER (in
            # the band or released, not a held one) has it as parent (one-to-one), it is not kept; the
            # SERVER keeps the trace for whatever links to it later. (A SERVER ends within its CLIENT:
            # while both are kept, the run releasing either has both in its band.)
            answered = {s.parent_span_id for s in band + ready if s.kind in _SERVERS and s.parent_span_id}
            gone = {id(s) for s in band + ready if s.kind in _CLIENTS and s.span_id in answered}
        self._pending = [s for s in self._pending if id(s) not in out]
        horizon = (cutoff if cutoff is not None else self._newest_end) - self.window_ns
        context = ([s for s in self._context if s.end_time_unix_nano >= horizon and id(s) not in gone]
                   + [Held(s) for s in ready if s.end_time_unix_nano >= horizon and id(s) not in gone])
        if len(context) > self.max_pending // 2:  # released in time order: the newest stay
            self.context_trimmed += len(context) - self.max_pending // 2
            context = context[len(context) - self.max_pending // 2:]
        self._context = context
        return ready
