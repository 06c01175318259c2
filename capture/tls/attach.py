"""Attach the TLS uprobes to every TLS library file in use, once per file, and detach them.

Processes running at start are found from /proc/*/maps; processes started later come from
the exec tracepoint (tls_execs ring buffer, read by this module's worker thread as soon as
the kernel signals it), their maps re-read a few times as the dynamic linker and dlopen()
add libraries. Probes are attached by file (pid -1): one attach per (dev, inode) serves
every process mapping it, present and future (the kernel inserts the breakpoints when a
process maps the file); the BPF side filters pids. With a --pid filter the probes are that
process's only (others take no breakpoint). An agent scoped to a cgroup or a network namespace
(capture.scope) probes the processes in it the same way, one process at a time: a process outside
takes no breakpoint, so its TLS calls cost it nothing; in-scope processes are re-read every
SCOPE_RESCAN_S (a process that joined the scope, a library dlopen()ed late) and the probes of
processes gone or gone out are removed. TLS files that earlier starts found (the memo,
capture/tls/notls.py) are probed at start, in use or not. A binary never seen before is probed
a few milliseconds after its exec (hundreds on a loaded host): what it says before that is not
seen (README, TLS).
A file's probes are held by BPF links, one per program (capture/tls/links.py): attached and
removed together; on kernels without uprobe_multi links, one perf event per probe as BCC does
(capture/tls/uprobe.py).
"""
from __future__ import annotations

import ctypes
import glob
import heapq
import logging
import mmap
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from capture import abi, snapshot
from capture.ringbuf import RingReader
from capture.tls import elf, links, notls, procmaps, stale, uprobe

log = logging.getLogger(__name__)

# Where a dynamically linked OpenSSL usually lives: probed at start so processes that load
# it later (Python's `import ssl`) are covered without waiting for their maps.
SYSTEM_LIBS = ("/usr/lib/x86_64-linux-gnu/libssl.so*", "/lib/x86_64-linux-gnu/libssl.so*",
               "/usr/lib64/libssl.so*", "/usr/local/lib/libssl.so*")
RESCAN_AFTER_EXEC_S = (0.2, 1.0, 3.0)  # ld.so maps libraries right away; dlopen() comes later
# at stop, how long to wait for the worker (it may be reading a big file: a BoringSSL without
# symbols takes seconds); it is a daemon thread that attaches nothing once stopped
STOP_JOIN_S = 0.5
# names of the kernel's TLS counters (in the `stats` array) in the agent's stats
TLS_STATS = {abi.Stat.TLS_PLAINTEXT: "plaintext", abi.Stat.TLS_NO_FD: "no_fd", abi.Stat.TLS_BOUND: "bound",
             abi.Stat.TLS_READ_FAULT: "go_fd_fault", abi.Stat.TLS_WRITE_AGAIN: "write_again"}
# scoped: how often the in-scope processes' maps are read again (each read: one /proc/PID/maps)
SCOPE_RESCAN_S = 2.0
KNOWN_FILES = 16  # TLS files remembered from earlier starts that are probed at start (the latest)
EXECS_PAGES = 16  # BPF_RINGBUF_OUTPUT(tls_execs, 16) in bpf/guardian.bpf.c
_EXEC = abi.TLS_EXEC_STRUCT  # struct tls_exec (bpf/types.h): ts_ns, pid


@dataclass(slots=True)
class Probe:
    path: str
    addr: int  # virtual address in the file (BCC converts it to a file offset)
    fn: str
    ret: bool = False


@dataclass(slots=True)
class AttachedFile:
    path: str
    library: str  # tls.library value: openssl, boringssl, node, go
    probes: list[Probe] = field(default_factory=list)
    links: list[int] = field(default_factory=list)  # BPF link fds holding the probes (links.py)
    one_by_one: list[Probe] = field(default_factory=list)  # probes attached as perf events
    pid: int = -1  # the process the probes are in; -1: every process mapping the file


def probes_for(path: str, found: elf.TlsFile) -> tuple[str, list[Probe]]:
    """The uprobes a TLS file needs, and its tls.library name."""
    if found.go is not None:
        go = found.go
        probes = [Probe(path, go.write, "tls_go_write"), Probe(path, go.read, "tls_go_read")]
        if go.read_copies:
            probes += [Probe(path, a, "tls_go_read_copy") for a in go.read_copies]
        else:
            probes += [Probe(path, a, "tls_go_read_ret") for a in go.read_rets]
        return "go", probes
    ssl = found.ssl
    probes = []
    for name, addr in ssl.funcs.items():
        if name in ssl.covered:  # seen through the internal function they call (below)
            continue
        probes.append(Probe(path, addr, f"tls_{ssl.source}_{elf.SSL_FUNCS[name]}"))
        if name != "SSL_do_handshake":
            probes.append(Probe(path, addr, "tls_ssl_return", ret=True))
    for kind, (addr, out_arg) in ssl.internal.items():
        if kind == "write":  # goes up at its entry, where buffer and length are: no return probe
            probes.append(Probe(path, addr, f"tls_{ssl.source}_write_at_entry"))
            continue
        probes += [Probe(path, addr, f"tls_{ssl.source}_read_ex"), Probe(path, addr, "tls_ssl_return", ret=True)]
    return ssl.source, probes


class TlsAttacher:
    """Owns the TLS uprobes of one loaded BPF object (capture.loader.Loader.bpf)."""

    def __init__(self, bpf, pid: int | None = None, memo_dir: str | None = None,
                 scope: Callable[[int], bool] | None = None) -> None:
        self.bpf = bpf
        if memo_dir is None:  # beside the compile cache (capture/loader.py)
            memo_dir = os.environ.get("GUARDIAN_CAPTURE_BPF_CACHE", "/var/cache/guardian/bpf")
        self.memo = notls.NoTlsMemo(memo_dir)
        self.pid = pid
        # with a --pid filter the probes go into that process only: other users of the same
        # library take no breakpoint at all (the BPF side would drop their hits anyway)
        self._probe_pid = pid or -1
        # capture.scope (whether a pid is in it): probes per process in scope, none elsewhere
        self.scope = None if pid else scope
        # by (dev, inode), and scoped by (dev, inode, pid)
        self.files: dict[tuple[int, ...], AttachedFile] = {}
        self._found: dict[tuple[int, int], tuple[str, list[Probe]]] = {}  # TLS files read: their probes
        self._started: dict[int, int] = {}  # scoped: pid -> its start time (a pid reused is another process)
        self.skipped: dict[tuple[int, int], str] = {}  # files looked at: why not probed ("" = no TLS)
        self.stats: Counter[str] = Counter()
        self.exec_to_probes_ms: list[float] = []  # per file probed after an exec: how long it took
        self._execs: RingReader | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._multi: bool | None = None  # uprobe_multi links work here (None: not tried yet)
        self._programs: links.Programs | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Attach to what runs now, then follow new processes from a worker thread."""
        self.stats["stale_probes_removed"] += stale.remove_dead_bcc_probes()
        for path in sorted({p for pattern in SYSTEM_LIBS for p in glob.glob(pattern)}):
            ident = procmaps.file_identity(path)
            if ident and self.scope is None:  # by file: for every process (scoped: per process)
                self._consider(ident, path)
        for pid in ([self.pid] if self.pid else procmaps.pids()):
            self._scan(pid)
        if not self.pid and self.scope is None:
            # TLS files seen at earlier starts (a client run now and then: hey, a cron job) are
            # probed now: probed at their exec, a process's first calls would go unseen, and that
            # takes hundreds of milliseconds when the agent is busy and the host loaded
            for path in self.memo.tls_files(KNOWN_FILES):
                ident = procmaps.file_identity(path)
                if ident:
                    self._consider(ident, path)
        self.memo.save()
        self._execs = RingReader(self.bpf["tls_execs"].map_fd, EXECS_PAGES * mmap.PAGESIZE)
        self._thread = threading.Thread(target=self._follow, name="tls-attach", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Detach every TLS probe (the BPF object's cleanup would too; this is explicit)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_S)
        self.memo.save()  # what the worker read after execs
        if self._execs is not None and (self._thread is None or not self._thread.is_alive()):
            self._execs.close()
            self._execs = None
        with self._lock:
            links.close([fd for f in self.files.values() for fd in f.links])  # all at once
            for f in self.files.values():
                for p in f.one_by_one:
                    self._detach(p, f.pid)
            self.files.clear()
            if self._programs is not None:
                self._programs.close()

    # -- discovery -----------------------------------------------------------------------
    def _follow(self) -> None:
        due: list[tuple[float, int]] = []  # (when, pid) maps re-reads after an exec
        execs: list[tuple[int, int]] = []
        next_rescan = time.monotonic() + SCOPE_RESCAN_S
        while not self._stop.is_set():
            if self.scope is not None and time.monotonic() >= next_rescan:
                next_rescan = time.monotonic() + SCOPE_RESCAN_S
                self._rescan_scope()
            timeout = max(0.0, min(0.5, due[0][0] - time.monotonic())) if due else 0.5
            if self._execs.wait(timeout):
                self._execs.drain(lambda raw: execs.append(_EXEC.unpack_from(raw)))
            for ts_ns, pid in execs:  # the new image first: its own file is the likeliest TLS user
                self.stats["execs"] += 1
                self._scan(pid, exec_ns=ts_ns)
                now = time.monotonic()
                for delay in RESCAN_AFTER_EXEC_S:
                    heapq.heappush(due, (now + delay, pid))
            execs.clear()
            while due and due[0][0] <= time.monotonic():
                self._scan(heapq.heappop(due)[1])

    def _scan(self, pid: int, exec_ns: int = 0) -> None:
        if pid == os.getpid():
            return
        if self.scope is not None:
            if not self.scope(pid):
                return
            started = _start_time(pid)
            if self._started.get(pid, started) != started:  # the pid of a process gone: another one
                self._drop_pid(pid)
            self._started[pid] = started
        for m in procmaps.mapped_files(pid):
            self._consider((m.dev, m.inode), m.path, exec_ns, pid)

    def _rescan_scope(self) -> None:
        """Scoped: probe what in-scope processes map now, and remove the probes of processes gone
        or gone out of the scope."""
        self.stats["scope_rescans"] += 1
        for pid in list(self._started):
            if not os.path.exists(f"/proc/{pid}") or not self.scope(pid):
                self._drop_pid(pid)
        for pid in procmaps.pids():
            if self._stop.is_set():
                return
            self._scan(pid)

    def _drop_pid(self, pid: int) -> None:
        with self._lock:
            gone = [k for k in self.files if len(k) == 3 and k[2] == pid]
            dropped = [self.files.pop(k) for k in gone]
            self._started.pop(pid, None)
        links.close([fd for f in dropped for fd in f.links])
        for f in dropped:
            for p in f.one_by_one:
                self._detach(p, pid)
        self.stats["scope_processes_unprobed"] += 1 if dropped else 0

    def _consider(self, ident: tuple[int, int], path: str, exec_ns: int = 0, pid: int = 0) -> None:
        key = (*ident, pid) if self.scope is not None else ident
        if key in self.files or ident in self.skipped or self._stop.is_set():
            return
        if self.scope is not None and not pid:
            return  # scoped: probes go into processes, never into a file for all of them
        probe_pid = pid if self.scope is not None else self._probe_pid  # -1: every process
        t0 = time.monotonic_ns()
        if ident in self._found:  # another process of the same file (scoped)
            library, probes = self._found[ident]
            if probes and probes[0].path != path:  # its path from this process (/proc/PID/root/...)
                probes = [Probe(path, p.addr, p.fn, p.ret) for p in probes]
            self._attach(key, library, probes, probe_pid, exec_ns, t0, 0.0)
            return
        stamp = notls.file_stamp(path)
        known = self.memo.get(stamp)
        if known is not None:  # read at an earlier start: no TLS, or TLS we cannot probe
            self.skipped[ident] = known
            self.stats["files_known_without_tls"] += 1
            if known:
                log.warning("TLS in %s not captured: %s", path, known)
            return
        cached = self.memo.tls_probes(stamp)
        if cached is not None:
            library, probes = cached[0], [Probe(path, a, fn, ret) for a, fn, ret in cached[1]]
        else:
            found = elf.inspect(path)
            if found is None:
                self.skipped[ident] = ""
                self.memo.add(stamp, "")
                return
            problem = found.go.problem if found.go is not None else found.ssl.problem
            if problem:
                self.skipped[ident] = problem
                self.memo.add(stamp, problem)
                log.warning("TLS in %s not captured: %s", path, problem)
                return
            library, probes = probes_for(path, found)
            self.memo.add_tls(stamp, library, [(p.addr, p.fn, p.ret) for p in probes], path)
        self._found[ident] = (library, probes)
        self._attach(key, library, probes, probe_pid, exec_ns, t0, (time.monotonic_ns() - t0) / 1e6)

    def _attach(self, key: tuple[int, ...], library: str, probes: list[Probe], pid: int, exec_ns: int,
                t0: int, read_ms: float) -> None:
        path = probes[0].path if probes else ""
        attached = AttachedFile(path, library, pid=pid)
        with self._lock:
            if self._stop.is_set():
                return
            if self._multi is not False:
                self._link(attached, path, probes)
            if self._multi is False:
                self._attach_one_by_one(attached, probes)
            self.files[key] = attached
        self.stats[f"files.{library}"] += 1
        if exec_ns:  # CLOCK_MONOTONIC on both sides
            now = time.monotonic_ns()
            took = (now - exec_ns) / 1e6
            self.exec_to_probes_ms.append(took)
            log.info("TLS %s: %d probes on %s, %.1f ms after its exec (noticed after %.1f ms, "
                     "ELF read in %.1f ms, attached in %.1f ms)", library, len(attached.probes), path,
                     took, (t0 - exec_ns) / 1e6, read_ms, (now - t0) / 1e6 - read_ms)
        else:
            log.info("TLS %s: %d probes on %s%s", library, len(attached.probes), path,
                     f" in process {pid}" if pid > 0 else "")

    def _link(self, attached: AttachedFile, path: str, probes: list[Probe]) -> None:
        if self._programs is None:
            self._programs = links.Programs(self.bpf)
        try:
            attached.links, attached.probes, refused = links.attach_file(self._programs, path, probes,
                                                                         attached.pid)
        except links.Unsupported as e:
            if self._multi is None:  # the first file: this kernel has no uprobe_multi links
                log.info("TLS probes attached one by one (no uprobe_multi links here: %s)", e)
                self._multi = False
                return
            attached.probes, refused = [], probes
        except OSError as e:  # the file changed or went away under us
            self.stats["attach_errors"] += len(probes)
            log.warning("uprobes on %s not attached: %s", path, e)
            return
        self._multi = True
        if refused:
            self.stats["probes_one_by_one"] += len(refused)
            log.info("TLS: the kernel refused links on %s (a uprobe made another way is there): "
                     "%d probes attached one by one", path, len(refused))
            self._attach_one_by_one(attached, refused)

    def _attach_one_by_one(self, attached: AttachedFile, probes: list[Probe]) -> None:
        for p in probes:
            try:
                try:
                    uprobe.attach(self.bpf, p.path, p.addr, p.fn, attached.pid, ret=p.ret)
                except OSError:
                    # the kernel refuses a probe where one with another reference-counter offset
                    # sits (bcc's tools, e.g. sslsniff, pass a garbage one): bcc's own call passes
                    # the same garbage, and sharing the place beats no plaintext
                    attach = self.bpf.attach_uretprobe if p.ret else self.bpf.attach_uprobe
                    attach(name=p.path, addr=p.addr, fn_name=p.fn, pid=attached.pid)
                    self.stats["probes_bcc_ref_ctr"] += 1
                attached.probes.append(p)
                attached.one_by_one.append(p)
            except Exception as e:  # noqa: BLE001 — BCC raises bare Exception on symbol errors
                self.stats["attach_errors"] += 1
                log.warning("uprobe %s at %s:%#x not attached: %s", p.fn, p.path, p.addr, e)

    def _detach(self, p: Probe, pid: int) -> None:
        try:
            if p.ret:
                self.bpf.detach_uretprobe(name=p.path, addr=p.addr, pid=pid)
            else:
                self.bpf.detach_uprobe(name=p.path, addr=p.addr, pid=pid)
        except Exception as e:  # noqa: BLE001 — see _consider
            log.debug("detach %s: %s", p.fn, e)

    # -- reporting -----------------------------------------------------------------------
    def kernel_stats(self) -> dict[str, int]:
        table = self.bpf["stats"]
        return {name: int(sum(table[ctypes.c_int(i)])) for i, name in TLS_STATS.items()}

    def summary(self) -> dict[str, int]:
        # read by a scrape while the capture thread attaches (capture/snapshot.py)
        out = {f"tls.{k}": v for k, v in snapshot.copy(self.stats).items()}
        out.update({f"tls.kernel.{k}": v for k, v in self.kernel_stats().items()})
        out["tls.files_probed"] = len(self.files)
        files = snapshot.copy(self.files)
        out["tls.probes"] = sum(len(f.probes) for f in files.values())
        if self.scope is not None:  # probed per process (files_probed counts a file once per process)
            out["tls.processes_probed"] = len({f.pid for f in files.values()})
        if self.exec_to_probes_ms:
            out["tls.exec_to_probes_ms_max"] = round(max(self.exec_to_probes_ms), 1)
        return out


def _start_time(pid: int) -> int:
    """A process's start time (clock ticks after boot, /proc/PID/stat field 22); 0 when gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0
