"""Compile bpf/guardian.bpf.c with BCC (or load it from the compile cache), attach its
tracepoints, open its ring buffer.

Options are cflags (-DMAX_PAYLOAD=…), never text substitution in the C source. Tracepoint
programs attach when the object loads; `close()` detaches everything. `Loader.bpf` is a
bcc.BPF either way (capture/bpfcache.py): what callers may use of it is `bpf[name]` (map_fd,
reads and writes), `load_func`, `attach_uprobe`/`attach_uretprobe`/`detach_*` and `cleanup`.
"""
from __future__ import annotations

import ctypes
import json
import logging
import mmap
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from capture import abi, bcclib, bpfcache, btf
from capture.errors import CaptureUnavailable
from capture.ringbuf import OrderedRings, RingReader
from capture.scope import cgroup_identity, in_cgroup, normalize_cgroup

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 4096  # bytes of each message copied to userspace (power of two)
# 32 MiB: a burst's slack while the agent catches up (a pipelined redis-benchmark fills 16 MiB). Its
# pages are resident in the agent, mapped once (capture/ringbuf.py): `python -m bench.dbload` reports
# the ring's share of the agent's RSS
DEFAULT_RINGBUF_PAGES = 8192
SPILL_PAGES = 256  # 1 MiB for the records the main ring refuses (bpf: ringbuf_send)
# A record wakes the agent only when it takes the ring's unread data across a multiple of this
# fraction of the ring (bpf: ringbuf_send); the agent otherwise reads on its timer (live.py POLL_MS)
WAKEUP_FRACTION = 8
SEEDED_ID_BIT = 1 << 63  # conn ids made by userspace for connections older than the agent
# Connections with a slot for the request chunk they hold for its response (pairing): an LRU map
# of PAIR_CONNS records of PAIR_PREFIX bytes (bpf/types.h), allocated when the programs load
PAIR_CONNS = 8192
CACHE_ENV = "GUARDIAN_CAPTURE_BPF_CACHE"  # a directory, or "off"
USUAL_COMPILE_S = 22  # said before the first compile on a machine; later the last one's time
# Compiled as these constants and written into the instructions at load (bpfcache.Image.patched),
# so the agent's pid and the filters do not change the cache key. Above pid_max (2^22) and not a
# value the programs otherwise compare with; the port's must fit the 16-bit field it is compared to.
_TGID, _COPIED, _KIND = abi.Event.tgid.offset, abi.Event.copied_len.offset, abi.Event.kind.offset
SENTINEL_AGENT_PID = 0x3EADBEE1
SENTINEL_FILTER_PID = 0x3EADBEE3
SENTINEL_FILTER_PORT = 0xFEED


def reads_at_exit(offsets: dict[str, int], machine: str | None = None, release: str | None = None) -> bool:
    """Whether reads need no program at their entry (bpf: read_exit takes the syscall's arguments
    from its registers at its exit): bpf_task_pt_regs (Linux 5.15) on kernel BTF (the socket
    offsets came from it), and x86_64's syscall registers, which a syscall leaves as it found them
    (arm64 returns in the first argument's register)."""
    machine = machine or platform.machine()
    release = release or platform.release()
    try:
        version = tuple(int(x) for x in release.split("-")[0].split(".")[:2])
    except ValueError:
        return False
    return bool(offsets) and machine == "x86_64" and version >= (5, 15)


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _socket_offsets(cache_dir: str) -> dict[str, int]:
    """capture/btf.py's offsets, kept beside the compile cache by kernel build: reading the
    kernel's BTF in Python costs more than the rest of a warm start."""
    if cache_dir in ("", "off"):
        return btf.socket_offsets()
    path = Path(cache_dir) / f"socket-offsets-{bpfcache.kernel_digest()}.json"
    try:
        cached = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        if set(cached) == set(btf.SOCKET_FIELDS):  # else written by a version reading other fields
            return cached
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    offsets = btf.socket_offsets()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(offsets))
        os.replace(tmp, path)
    except OSError:
        pass
    return offsets


def _with_tail_calls(bpf_class: type, scope: tuple[int, int, int] | None = None) -> type:
    """BCC's BPF class that fills the tail-call table (and the scope: cgroup id, its depth, netns
    inode) before BCC attaches the tracepoints.

    Gathered I/O (readv/writev/sendmsg/recvmsg) is walked one record per tail call
    (bpf/guardian.bpf.c, emit_iov): filled afterwards, every such syscall in between would
    be a gap in its stream. A TLS write whose SSL* had no socket at its entry goes up from
    its first send by a tail call too (guardian_tls_flush). An unfilled scope follows nobody.
    """

    class GuardianBPF(bpf_class):
        def _trace_autoload(self) -> None:
            tail = self["iov_tail"]
            for direction, name in ((abi.Direction.EGRESS, "send"), (abi.Direction.INGRESS, "recv")):
                walk = self.load_func(f"guardian_iov_{name}", bpf_class.TRACEPOINT)
                tail[ctypes.c_int(direction)] = ctypes.c_int(walk.fd)
            flush = self.load_func("guardian_tls_flush", bpf_class.TRACEPOINT)
            self["tls_tail"][ctypes.c_int(0)] = ctypes.c_int(flush.fd)
            if scope is not None:
                table = self["scope_map"]
                table[ctypes.c_int(0)] = table.Leaf(*scope)
            super()._trace_autoload()

    return GuardianBPF


class Loader:
    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD, pid: int | None = None,
                 ringbuf_pages: int = DEFAULT_RINGBUF_PAGES, max_conns: int = 65536,
                 port: int | None = None, cache_dir: str | None = None, pair: bool = False,
                 cgroup: str | None = None, netns: str | None = None) -> None:
        if not _power_of_two(max_payload) or not 64 <= max_payload <= 32768:
            raise ValueError("max payload must be a power of two between 64 and 32768 bytes")
        if not _power_of_two(ringbuf_pages):
            raise ValueError("ring buffer pages must be a power of two")
        self.max_payload = max_payload
        self.pair = pair
        self.ringbuf_pages = ringbuf_pages
        self.pid = pid
        self.port = port
        # only the processes of this cgroup v2 subtree (capture.scope.cgroup), decided in the kernel
        self.cgroup = normalize_cgroup(cgroup) if cgroup else None
        self.scope = cgroup_identity(self.cgroup) if self.cgroup else None  # OSError: no such cgroup
        self.scope_changes = 0  # the cgroup removed and made again: followed (follow_scope)
        # only the processes of this network namespace (a path: /var/run/netns/x, /proc/PID/ns/net),
        # decided in the kernel where BTF gives the offsets it reads (else by capture.scope alone)
        self.netns = netns
        self.netns_ino = os.stat(netns).st_ino if netns else None  # OSError: no such namespace
        self.cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV, bpfcache.DEFAULT_DIR)
        self.started_from = ""  # "cache", "compile" or "bcc" once loaded
        offsets = _socket_offsets(self.cache_dir)
        self.kernel_netns = self.netns_ino is not None and "OFF_TASK_NSPROXY" in offsets
        if self.netns_ino is not None and not self.kernel_netns:
            log.warning("capture.scope netns %s is judged in userspace only (no BTF offsets for it)", netns)
        self.cflags = [
            f"-I{abi.BPF_DIR}",
            f"-DMAX_PAYLOAD={max_payload}",
            f"-DRINGBUF_PAGES={ringbuf_pages}",
            f"-DSPILL_PAGES={SPILL_PAGES}",
            f"-DWAKEUP_BYTES={ringbuf_pages * mmap.PAGESIZE // WAKEUP_FRACTION}",
            f"-DMAX_CONNS={max_conns}",
            "-DMAX_INFLIGHT=16384",
            f"-DAGENT_PID={os.getpid()}",
            f"-DFILTER_PID={pid or 0}",
            f"-DFILTER_PORT={port or 0}",
            f"-DSCOPE_CGROUP={int(self.scope is not None)}",
            f"-DSCOPE_NETNS={int(self.kernel_netns)}",
            # request/response exchanges as one ring record each (the pairing section of guardian.bpf.c)
            f"-DPAIR_HTTP1={int(pair)}",
            f"-DPAIR_CONNS={PAIR_CONNS}",
            "-Wno-unused-function",
        ]
        # the kernel's socket behind an fd, at the running kernel's offsets (capture/btf.py)
        self.cflags += [*(f"-D{name}={off}" for name, off in offsets.items()),
                        f"-DREADS_AT_EXIT={int(reads_at_exit(offsets))}"]
        self.bpf = None
        self._seeded = 0

    def load(self, arm: bool = True) -> None:
        """Compile (or take from the cache), load and attach every program; with `arm`, follow
        data at once, else only once `arm()` is called (after the seed: LiveCapture.start)."""
        self._load()
        if arm:
            self.arm()

    def arm(self) -> None:
        """Start following data (bpf/maps.h: armed): every tracepoint is attached by now, so both
        directions of every stream are seen from the same instant on."""
        self.bpf["armed"][ctypes.c_int(0)] = ctypes.c_uint32(1)

    def _load(self) -> None:
        from capture.prereqs import require_ebpf

        require_ebpf()
        try:
            BPF = bcclib.import_bcc().BPF  # noqa: N806 — BCC's class; its compiler is not mapped yet
        except ImportError as e:  # require_ebpf checked it; keep the message clear anyway
            raise CaptureUnavailable(f"bcc is not importable: {e}. Run: make setup") from e
        try:
            if self.cache_dir in ("", "off"):
                self.bpf = _with_tail_calls(BPF, self._scope_leaf())(src_file=str(abi.BPF_DIR / "guardian.bpf.c"),
                                                 cflags=self.cflags)
                self.started_from = "bcc"
            else:
                self._load_cached(BPF)
        except CaptureUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 — BCC raises bare Exception on compile/load errors
            raise CaptureUnavailable(
                f"the eBPF programs failed to compile or load: {e}. Run `guardian doctor`.") from e

    def template_cflags(self) -> list[str]:
        """The cflags the cache compiles with: per-start values replaced by sentinels."""
        values = {"AGENT_PID": SENTINEL_AGENT_PID, "FILTER_PID": SENTINEL_FILTER_PID if self.pid else 0,
                  "FILTER_PORT": SENTINEL_FILTER_PORT if self.port else 0}
        out = []
        for flag in self.cflags:
            name = flag[2:].split("=", 1)[0] if flag.startswith("-D") else ""
            out.append(f"-D{name}={values[name]}" if name in values else flag)
        return out

    def params(self) -> dict[int, int]:
        out = {SENTINEL_AGENT_PID: os.getpid()}
        if self.pid:
            out[SENTINEL_FILTER_PID] = self.pid
        if self.port:
            out[SENTINEL_FILTER_PORT] = self.port
        return out

    def _load_cached(self, bpf_class: type) -> None:
        """Load the programs from the compile cache, compiling (and caching) them first when
        the cache has no usable entry for this kernel, source and options."""
        cache = bpfcache.ImageCache(self.cache_dir)
        cflags = self.template_cflags()
        key = bpfcache.cache_key(abi.BPF_DIR, "guardian.bpf.c", cflags)
        image = None
        try:
            image = cache.get(key)
        except bpfcache.CacheError as e:
            log.warning("eBPF compile cache: %s; compiling again", e)
            cache.drop(key)
        if image is not None:
            try:
                t0 = time.monotonic()
                self._instantiate(bpf_class, image)
                self.started_from = "cache"
                log.info("loaded the eBPF programs from the compile cache (%s) in %.1f s", self.cache_dir,
                         time.monotonic() - t0)
                return
            except Exception as e:  # noqa: BLE001 — a cached program the kernel refuses: start over
                log.warning("eBPF compile cache: cached programs did not load (%s); compiling again", e)
                cache.drop(key)
        took_file = Path(self.cache_dir) / "last-compile-s"
        try:
            usual = f"about {float(took_file.read_text()):.0f} s last time"
        except (OSError, ValueError):
            usual = f"usually about {USUAL_COMPILE_S} s"
        log.info("compiling the eBPF programs with BCC (first start for this kernel, source and "
                 "options: %s; later starts load them from %s)", usual, self.cache_dir)
        t0 = time.monotonic()
        try:  # in a child: LLVM and the compiler's peak memory never enter the agent
            image = bpfcache.compile_in_child(str(abi.BPF_DIR / "guardian.bpf.c"), cflags)
        except bpfcache.CacheError as e:
            log.warning("eBPF compile in a child process failed (%s); compiling here", e)
            image = bpfcache.compile_image(bpf_class, str(abi.BPF_DIR / "guardian.bpf.c"), cflags)
        took = time.monotonic() - t0
        try:
            image.check_sentinels(list(self.params()))
        except bpfcache.CacheError as e:  # the source uses an option in a way we cannot patch
            log.warning("eBPF compile cache not usable with this source (%s): compiling as before", e)
            self.bpf = _with_tail_calls(bpf_class, self._scope_leaf())(src_file=str(abi.BPF_DIR / "guardian.bpf.c"),
                                                   cflags=self.cflags)
            self.started_from = "bcc"
            return
        try:
            cache.put(key, image)
            took_file.write_text(f"{took:.1f}\n")
        except OSError as e:
            log.warning("eBPF compile cache: %s not writable (%s); every start will compile", self.cache_dir, e)
        log.info("compiled the eBPF programs in %.1f s", took)
        self._instantiate(bpf_class, image)
        self.started_from = "compile"

    def _instantiate(self, bpf_class: type, image: bpfcache.Image) -> None:
        image.params = self.params()
        self.bpf = _with_tail_calls(bpfcache.image_bpf_class(bpf_class), self._scope_leaf())(image)

    def open_events(self) -> OrderedRings:
        """The data events' ring buffers (main and spill) read from their mappings and
        merged in time order (capture/ringbuf.py)."""
        return OrderedRings(RingReader(self.bpf["events"].map_fd, self.ringbuf_pages * mmap.PAGESIZE, edge=True),
                            RingReader(self.bpf["spill"].map_fd, SPILL_PAGES * mmap.PAGESIZE))

    def poll_other(self) -> None:
        """Dispatch the callbacks of rings opened through BCC (the TLS exec notices), no wait."""
        if getattr(self.bpf, "_ringbuf_manager", None):
            self.bpf.ring_buffer_consume()

    def _scope_leaf(self) -> tuple[int, int, int] | None:
        """bpf/scope.h's struct guardian_scope for this scope; None: not scoped in the kernel."""
        if self.scope is None and not self.kernel_netns:
            return None
        cgroup_id, level = self.scope or (0, 0)
        return cgroup_id, level, self.netns_ino if self.kernel_netns else 0

    def follow_scope(self) -> bool:
        """The scope's cgroup removed and made again under the same path is a new cgroup with a new
        id (its directory's inode): the kernel's scope map is pointed at it (True). While the path
        does not exist the old id stays: nothing can join a removed cgroup."""
        if self.scope is None or self.bpf is None:
            return False
        try:
            now = cgroup_identity(self.cgroup)
        except OSError:
            return False
        if now == self.scope:
            return False
        table = self.bpf["scope_map"]
        table[ctypes.c_int(0)] = table.Leaf(now[0], now[1], self.netns_ino if self.kernel_netns else 0)
        log.info("scope cgroup %s made again (id %d -> %d): followed", self.cgroup, self.scope[0], now[0])
        self.scope = now
        self.scope_changes += 1
        return True

    def kernel_stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        out = {}
        for stat in abi.Stat:
            if stat.name == "MAX" or stat.name.startswith("TLS_"):  # the TLS attacher reports those
                continue
            out[stat.name.lower()] = int(sum(table[ctypes.c_int(stat.value)]))
        return out

    def take_held(self, keep: Callable[[int], bool] | None = None) -> list[bytes]:
        """Request chunks the kernel's pairing holds (bpf: pair_held), removed and returned as the
        records they would have gone up as, oldest first; with `keep`, those of processes (tgid)
        it keeps stay. The kernel keeps a slot per connection and pairs in place, so a chunk it
        pairs between this read and the delete is also in the ring: this is for processes that are
        gone, and for the end, after the last read of the ring."""
        if self.bpf is None or not self.pair:
            return []
        try:
            table = self.bpf["pair_held"]
        except KeyError:  # pairing compiled out (a max payload under its prefix)
            return []
        out = []
        for key, value in list(table.items()):
            raw = bytes(value)
            if len(raw) < abi.EVENT_SIZE or raw[_KIND] == 0:  # a connection's slot holding nothing
                continue
            tgid = int.from_bytes(raw[_TGID:_TGID + 4], "little")
            if keep is not None and keep(tgid):
                continue
            try:
                del table[key]
            except KeyError:
                continue  # paired meanwhile: it went up inside its response's record
            copied = int.from_bytes(raw[_COPIED:_COPIED + 4], "little")
            out.append(raw[:abi.EVENT_SIZE + min(copied, abi.PAIR_PREFIX)])
        out.sort(key=lambda r: r[:8][::-1])  # by the leading little-endian timestamp
        return out

    def seed(self, conns: list[tuple[int, int, abi.Tuple, int]]) -> int:
        """Track sockets that were open before we started: (pid, fd, tuple, transport)."""
        table = self.bpf["conns"]
        for pid, fd, tup, transport in conns:
            if pid == os.getpid() or (self.pid and pid != self.pid):
                continue
            try:
                if self.cgroup and not in_cgroup(pid, self.cgroup):
                    continue
            except OSError:  # gone since the socket table was read
                continue
            key = abi.ConnKey(pid, fd)
            if table.get(key) is not None:  # opened by connect()/accept() since the attach
                continue
            self._seeded += 1
            value = abi.Conn(conn_id=SEEDED_ID_BIT | self._seeded, t=tup, transport=transport,
                             flags=abi.ConnFlags.TUPLE_KNOWN | abi.ConnFlags.SEEDED)
            table[key] = value
        return self._seeded

    def close(self) -> None:
        if self.bpf is not None:
            _detach_tracepoints(self.bpf)
            self.bpf.cleanup()
            self.bpf = None


def _detach_tracepoints(bpf) -> None:
    """Detach every tracepoint on threads side by side: each detach waits for the kernel, and one
    after the other (bcc's cleanup) they were most of a stop's time
    (tests/capture/tls/test_tls_stop.py measures a stop)."""
    def detach(tp: bytes) -> None:
        try:
            bpf.detach_tracepoint(tp)
        except Exception as e:  # noqa: BLE001 — BCC raises bare Exception; cleanup() tries again
            log.debug("detach %s: %s", tp, e)

    tracepoints = list(bpf.tracepoint_fds)
    if tracepoints:
        with ThreadPoolExecutor(min(64, len(tracepoints))) as pool:
            list(pool.map(detach, tracepoints))
