"""Live eBPF capture: loader + connection tracking + parsers, producing span batches."""
from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

from capture import abi, snapshot
from capture.conntrack import ConnTracker
from capture.enrich.enricher import Enricher
from capture.loader import DEFAULT_MAX_PAYLOAD, DEFAULT_RINGBUF_PAGES, Loader
from capture.pipeline import Pipeline
from capture.procnet import SocketTable
from capture.protocols import http1
from capture.ringbuf import NEVER
from capture.scope import Scope
from capture.span import Span

log = logging.getLogger(__name__)

# events handled between two hand-overs of spans to the sink: small enough that spans are
# serialized while still in cache (a flush every few thousand events costs more per event:
# `python -m bench.events replay FILE` measures it)
BATCH = 256
# The kernel does not wake the agent for each record (bpf: ringbuf_send), only when the ring's
# unread data crosses a mark: the agent reads on this timer, which bounds how long a span waits
# (`python -m bench.capture` counts wakeups and reads against records).
POLL_MS = 20
# At a stop, the ring buffers are read until they are empty, for at most this long: a full ring at
# saturation can hold more than the agent reads in seconds, and `guardian capture` exits within 5 s
# of SIGTERM with the rest of its stop (closing connections, detaching probes:
# tests/capture/live/test_live_stop.py, `python -m bench.stop` measures it).
STOP_DRAIN_S = 3.0
# how often the scope's cgroup is looked at again (Loader.follow_scope: one stat): a cgroup
# removed and made again is followed within this
SCOPE_CHECK_S = 1.0


def tune_gc() -> None:
    """For a process whose main job is the capture: every event makes short-lived objects and
    none of them form cycles, so the collector's default (a pass every 700 allocations, full
    passes over everything the process holds) costs more than it finds. Freeze what startup
    made and collect young objects less often; cycles are still collected."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)


# What the kernel could not follow or send, reported per CPU (kernel.cpuN.<name>) and in total:
# records both rings refused, records spilled, user memory it could not read (the bytes go up as
# a gap), and map entries it could not make (a connection, a syscall in flight, a held request).
# LRU evictions (conns, active_io) are not seen by the kernel: an evicted connection shows as one
# seen again mid-stream (a new connection id), an evicted syscall as nothing.
PER_CPU_LOSSES = (abi.Stat.RINGBUF_DROPS, abi.Stat.RINGBUF_SPILLED, abi.Stat.USER_READ_FAILED,
                  abi.Stat.CONN_MAP_FULL, abi.Stat.IO_MAP_FULL, abi.Stat.PAIR_MAP_FULL)


@dataclass(slots=True)
class CaptureOptions:
    pid: int | None = None  # only this process
    port: int | None = None  # only connections with this port at either end
    # only processes of this cgroup v2 subtree ("/a/b"), decided in the kernel; the agent sets it
    # from capture.scope.cgroup
    cgroup: str | None = None
    # only processes of this network namespace (its path: /var/run/netns/x), decided in the kernel
    # where BTF allows (bpf/scope.h); the agent sets it from capture.scope.netns
    netns: str | None = None
    max_payload: int = DEFAULT_MAX_PAYLOAD
    ringbuf_pages: int = DEFAULT_RINGBUF_PAGES
    seed_existing: bool = True  # follow connections opened before we started
    tls: bool = True  # uprobes on TLS libraries for plaintext (capture/tls)
    poll_ms: int = POLL_MS
    # request/response protocols (HTTP/1, Redis, Memcached, PostgreSQL, MySQL): a request chunk goes
    # up inside its response's ring record (bpf: pairing section), one record per exchange instead
    # of two; the spans are the same either way (tests/capture/live/test_live_pairing.py), and the
    # agent reads half the records (`python -m bench.capture --pair ab` compares both)
    pair: bool = True
    # records of HTTP/1, Redis, Memcached and PostgreSQL simple-query exchanges become spans in C where
    # capture/_fastpath.c is built (capture/fastpath.py says which); False: the
    # Python path (its specification) for every record
    compiled: bool = True


class LiveCapture:
    def __init__(self, options: CaptureOptions | None = None,
                 resource_for: Callable[[int], dict] | None = None) -> None:
        self.options = options or CaptureOptions()
        self.loader = Loader(self.options.max_payload, self.options.pid, self.options.ringbuf_pages,
                             port=self.options.port, pair=self.options.pair, cgroup=self.options.cgroup,
                             netns=self.options.netns)
        self._sink: Callable[[list[Span]], None] = lambda spans: None
        self.pipeline = Pipeline(lambda spans: self._sink(spans))
        self.sockets = SocketTable()
        self.tracker = ConnTracker(self.pipeline, resource_for or Enricher().resource,
                                   port=self.options.port, sockets=self.sockets, compiled=self.options.compiled)
        self.started = False
        self.tls = None  # capture.tls.attach.TlsAttacher once started
        self.ring = None  # capture.ringbuf.OrderedRings once started
        self.left_at_stop = 0  # ring-buffer bytes not read when the stop's drain ran out of time
        self.stop_drain_s = 0.0  # how long the stop's drain read

    def start(self) -> None:
        """Compile and attach every probe; raises CaptureUnavailable with the fix."""
        # data is followed once the older connections are seeded and every tracepoint is attached
        # (Loader.arm): attached one by one, a stream would show one direction for seconds
        self.loader.load(arm=False)
        if self.options.seed_existing:
            self._seed()
        self.loader.arm()
        self.ring = self.loader.open_events()
        if self.options.pair:
            self.tracker.kernel_held = self.loader.take_held
        if self.options.tls:
            from capture.tls.attach import TlsAttacher

            scope = None
            if self.options.netns or self.options.cgroup:  # probes only in the scope's processes
                scope = Scope(self.options.netns, self.options.cgroup, ttl_s=0).allows
            self.tls = TlsAttacher(self.loader.bpf, self.options.pid, scope=scope)
            self.tls.start()
        self.started = True

    def _seed(self) -> None:
        seeds = []
        for pid, fd, entry in self.sockets.established():
            tup = abi.Tuple(laddr=(ctypes.c_uint8 * 16)(*abi.ip_bytes(entry.local[0])),
                            raddr=(ctypes.c_uint8 * 16)(*abi.ip_bytes(entry.remote[0])),
                            lport=entry.local[1], rport=entry.remote[1], family=10)
            seeds.append((pid, fd, tup, abi.Transport.TCP))
        n = self.loader.seed(seeds)
        log.debug("following %d connections opened before the capture started", n)

    def run(self, on_spans: Callable[[list[Span]], None], stop: threading.Event) -> None:
        """Poll until `stop` is set, handing span batches to `on_spans`; flush at the end."""
        self._sink = on_spans
        feed, ring = self.tracker.feed, self.ring
        next_scope_check = time.monotonic() + SCOPE_CHECK_S
        while not stop.is_set():
            if ring.wait(self.options.poll_ms / 1000):
                # spans leave in batches, not one by one; under a sustained backlog the ring
                # is never empty, so the stop is checked between batches
                while records := ring.read(BATCH):
                    feed(records)
                    self.pipeline.flush()
                    if stop.is_set():
                        break
            self.loader.poll_other()
            self.pipeline.flush()
            self.tracker.sweep()
            if self.loader.scope is not None and time.monotonic() >= next_scope_check:
                next_scope_check = time.monotonic() + SCOPE_CHECK_S
                self.loader.follow_scope()
        self._drain_at_stop()
        self.tracker.close_all()
        self.pipeline.flush()

    def _drain_at_stop(self) -> None:
        """Read the rings until they are empty (the agent reads faster than a load writes: it
        catches up) or STOP_DRAIN_S ran out; the bytes then left are counted, not read
        (ring.unread_at_stop_bytes)."""
        ring, feed = self.ring, self.tracker.feed
        start = time.monotonic()
        while records := ring.read(BATCH, until_ts=NEVER):
            feed(records)
            self.pipeline.flush()
            if time.monotonic() - start > STOP_DRAIN_S:
                self.left_at_stop = ring.pending_bytes()
                break
        self.stop_drain_s = time.monotonic() - start

    def stats(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        if self.loader.bpf is not None:
            out.update({f"kernel.{k}": v for k, v in self.loader.kernel_stats().items()})
            per_cpu = self._per_cpu_losses()
            out.update(per_cpu)
            # the totals from the same read as their per-CPU parts (the kernel keeps counting)
            for stat in PER_CPU_LOSSES:
                name = stat.name.lower()
                out[f"kernel.{name}"] = sum(v for k, v in per_cpu.items() if k.endswith(f".{name}"))
        # the capture thread changes these while a scrape reads them (capture/snapshot.py)
        out.update({f"conntrack.{k}": v for k, v in snapshot.copy(self.tracker.stats).items()})
        out["conntrack.tracked_now"] = self.tracker.tracked  # a gauge: the table's size
        if self.loader.scope is not None:
            out["scope.cgroup_recreated"] = self.loader.scope_changes
        if self.loader.netns is not None:  # 1: decided in the kernel (bpf/scope.h), 0: by capture.scope only
            out["scope.netns_in_kernel"] = int(self.loader.kernel_netns)
        out.update({f"pipeline.{k}": v for k, v in snapshot.copy(self.pipeline.stats).items()})
        if self.tracker.fast is not None:  # the compiled path (capture/fastpath.py)
            out.update({f"fastpath.{k}": v for k, v in self.tracker.fast.counts().items()})
        out.update({f"parser.{k}": v for k, v in self.tracker.parser_stats().items()})
        out.update({f"cache.http1.{k}": v for k, v in http1.cache_stats().items()})
        if self.tls is not None and self.loader.bpf is not None:
            out.update(self.tls.summary())
        if self.ring is not None:  # how close the ring buffer came to full (drops)
            out["ring.max_backlog_bytes"] = self.ring.max_backlog
            out["ring.spilled_records_read"] = self.ring.spilled
            out["ring.wakeups"] = self.ring.wakeups
            out["ring.size_bytes"] = self.ring.size
        if self.left_at_stop:
            out["ring.unread_at_stop_bytes"] = self.left_at_stop
        if self.stop_drain_s:
            out["ring.stop_drain_ms"] = round(1000 * self.stop_drain_s)
        return dict(out)

    def _per_cpu_losses(self) -> dict[str, int]:
        """The kernel's losses (PER_CPU_LOSSES), per CPU: a loss confined to one CPU points at
        what runs there (an IRQ-heavy core, a pinned hot process)."""
        table = self.loader.bpf["stats"]
        out = {}
        for stat in PER_CPU_LOSSES:
            for cpu, n in enumerate(table[ctypes.c_int(stat.value)]):
                out[f"kernel.cpu{cpu}.{stat.name.lower()}"] = int(n)
        return out

    def close(self) -> None:
        if self.tls is not None:
            self.tls.close()
            self.tls = None
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.loader.close()
        self.started = False
