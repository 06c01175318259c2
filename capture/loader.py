"""Compile bpf/guardian.bpf.c with BCC, attach its tracepoints, open its ring buffer.

Options are cflags (-DMAX_PAYLOAD=…), never text substitution in the C source. Tracepoint
programs attach when BCC loads the object; `close()` detaches everything.
"""
from __future__ import annotations

import ctypes
import logging
import mmap
import os

from capture import abi, btf
from capture.errors import CaptureUnavailable
from capture.ringbuf import OrderedRings, RingReader

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 4096  # bytes of each message copied to userspace (power of two)
DEFAULT_RINGBUF_PAGES = 4096  # 16 MiB ring buffer
SPILL_PAGES = 256  # 1 MiB for the records the main ring refuses (bpf: ringbuf_send)
SEEDED_ID_BIT = 1 << 63  # conn ids made by userspace for connections older than the agent


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _with_tail_calls(bpf_class: type) -> type:
    """BCC's BPF class that fills the tail-call table before BCC attaches the tracepoints.

    Gathered I/O (readv/writev/sendmsg/recvmsg) is walked one record per tail call
    (bpf/guardian.bpf.c, emit_iov): filled afterwards, every such syscall in between would
    be a gap in its stream.
    """

    class GuardianBPF(bpf_class):
        def _trace_autoload(self) -> None:
            tail = self["iov_tail"]
            for direction, name in ((abi.Direction.EGRESS, "send"), (abi.Direction.INGRESS, "recv")):
                walk = self.load_func(f"guardian_iov_{name}", bpf_class.TRACEPOINT)
                tail[ctypes.c_int(direction)] = ctypes.c_int(walk.fd)
            super()._trace_autoload()

    return GuardianBPF


class Loader:
    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, pid: int | None = None,
                 ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, max_conns: int = 65536,
                 port: int | None = None) -> None:
        if not _power_of_two(max_payload) or not 64 <= max_payload <= 32768:
            raise ValueError("max payload must be a power of two between 64 and 32768 bytes")
        if not _power_of_two(ringbuf_pages):
            raise ValueError("ring buffer pages must be a power of two")
        self.max_payload = max_payload
        self.ringbuf_pages = ringbuf_pages
        self.pid = pid
        self.cflags = [
            f"-I{abi.BPF_DIR}",
            f"-DMAX_PAYLOAD={max_payload}",
            f"-DRINGBUF_PAGES={ringbuf_pages}",
            f"-DSPILL_PAGES={SPILL_PAGES}",
            f"-DMAX_CONNS={max_conns}",
            "-DMAX_INFLIGHT=16384",
            f"-DAGENT_PID={os.getpid()}",
            f"-DFILTER_PID={pid or 0}",
            f"-DFILTER_PORT={port or 0}",
            "-Wno-unused-function",
            # the kernel's socket behind an fd, at the running kernel's offsets (capture/btf.py)
            *(f"-D{name}={off}" for name, off in btf.socket_offsets().items()),
        ]
        self.bpf = None
        self._seeded = 0

    def load(self) -> None:
        from capture.prereqs import require_ebpf

        require_ebpf()
        try:
            from bcc import BPF
        except ImportError as e:  # require_ebpf checked it; keep the message clear anyway
            raise CaptureUnavailable(f"bcc is not importable: {e}. Run: make setup") from e
        try:
            self.bpf = _with_tail_calls(BPF)(src_file=str(abi.BPF_DIR / "guardian.bpf.c"),
                                             cflags=self.cflags)
        except Exception as e:  # noqa: BLE001 — BCC raises bare Exception on compile/load errors
            raise CaptureUnavailable(
                f"the eBPF programs failed to compile or load: {e}. Run `guardian doctor`.") from e

    def open_events(self) -> OrderedRings:
        """The data events' ring buffers (main and spill) read from their mappings and
        merged in time order (capture/ringbuf.py)."""
        return OrderedRings(RingReader(self.bpf["events"].map_fd, self.ringbuf_pages * mmap.PAGESIZE),
                            RingReader(self.bpf["spill"].map_fd, SPILL_PAGES * mmap.PAGESIZE))

    def poll_other(self) -> None:
        """Dispatch the callbacks of rings opened through BCC (the TLS exec notices), no wait."""
        if getattr(self.bpf, "_ringbuf_manager", None):
            self.bpf.ring_buffer_consume()

    def kernel_stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        out = {}
        for stat in abi.Stat:
            if stat.name == "MAX":
                continue
            out[stat.name.lower()] = int(sum(table[ctypes.c_int(stat.value)]))
        return out

    def seed(self, conns: list[tuple[int, int, abi.Tuple, int]]) -> int:
        """Track sockets that were open before we started: (pid, fd, tuple, transport)."""
        table = self.bpf["conns"]
        for pid, fd, tup, transport in conns:
            if pid == os.getpid() or (self.pid and pid != self.pid):
                continue
            self._seeded += 1
            value = abi.Conn(conn_id=SEEDED_ID_BIT | self._seeded, t=tup, transport=transport,
                             flags=abi.ConnFlags.TUPLE_KNOWN | abi.ConnFlags.SEEDED)
            table[abi.ConnKey(pid, fd)] = value
        return self._seeded

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.cleanup()
            self.bpf = None
