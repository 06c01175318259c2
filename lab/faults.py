"""Fault mechanisms applied to a live process, port or database, each with its undo.

Every mechanism is a context-free pair apply()/remove(); removing twice is harmless. Nothing
here knows about topologies: callers hand in a pid, a port, a control file or a DSN.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

LAB_CGROUP = "guardian-lab"


class FaultError(RuntimeError):
    """A mechanism could not be applied (missing tool, busy qdisc); the message says which."""


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and cp.returncode != 0:
        raise FaultError(f"{' '.join(argv)}: {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


# ---- network: the service's answers on loopback, shaped (tc htb) or dropped (nftables) ---
# This kernel has no netem: delay comes from a rate limit whose queue the answers wait in
# (as on a congested link), loss from nftables dropping a random share of the packets.

class Shape:
    """An htb class with `kbit` for packets whose TCP source port is the service's port (its
    answers): the caller's CLIENT span grows, the service's SERVER span does not (it has
    answered before the wait). Unclassified traffic bypasses htb (no default class).
    With `flap_kbit`, a thread switches the rate between the two at random every 50-400 ms
    (jitter: the queue fills and drains). Several recorders share the root qdisc: each port
    has its own class and filter, and the root goes when the last class goes (under a lock)."""

    def __init__(self, port: int, kbit: int, flap_kbit: int | None = None, seed: int = 0,
                 dev: str = "lo") -> None:
        self.port, self.kbit, self.flap, self.dev = port, kbit, flap_kbit, dev
        self.classid = f"1:{0x100 + port % 0xfe00:x}"
        self.prio = str(1 + port % 0xfff0)
        self.applied = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seed = seed

    def _class(self, verb: str, kbit: int) -> None:
        _run(["tc", "class", verb, "dev", self.dev, "parent", "1:", "classid", self.classid, "htb",
              "rate", f"{kbit}kbit", "ceil", f"{kbit}kbit", "burst", "1", "cburst", "1", "quantum", "1514"])

    def apply(self) -> None:
        if not shutil.which("tc"):
            raise FaultError("tc not found (iproute2)")
        with _tc_lock():
            root = _run(["tc", "qdisc", "show", "dev", self.dev, "root"]).stdout
            if "htb 1:" not in root:
                if root.strip() and "noqueue" not in root:
                    raise FaultError(f"{self.dev} has a root qdisc that is not ours: {root.strip()}")
                _run(["tc", "qdisc", "add", "dev", self.dev, "root", "handle", "1:", "htb"])
            self.applied = True
            _run(["tc", "filter", "del", "dev", self.dev, "parent", "1:", "prio", self.prio], check=False)
            _run(["tc", "class", "del", "dev", self.dev, "classid", self.classid], check=False)
            self._class("add", self.kbit)
            _run(["tc", "filter", "add", "dev", self.dev, "parent", "1:", "protocol", "ip", "prio", self.prio,
                  "u32", "match", "ip", "sport", str(self.port), "0xffff", "flowid", self.classid])
        if self.flap:
            import random

            rng = random.Random(self._seed)
            self._stop.clear()

            def loop() -> None:
                rates = (self.kbit, self.flap)
                while not self._stop.wait(rng.uniform(0.05, 0.4)):
                    try:
                        self._class("change", rates[rng.random() < 0.5])
                    except FaultError:
                        return

            self._thread = threading.Thread(target=loop, name="jitter", daemon=True)
            self._thread.start()

    def remove(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
            self._thread = None
        if not self.applied:
            return
        with _tc_lock():
            _run(["tc", "filter", "del", "dev", self.dev, "parent", "1:", "prio", self.prio], check=False)
            _run(["tc", "class", "del", "dev", self.dev, "classid", self.classid], check=False)
            if "class htb" not in _run(["tc", "class", "show", "dev", self.dev], check=False).stdout:
                remove_shaping(self.dev)
        self.applied = False


class _tc_lock:
    """An exclusive lock across processes for changes to the shared root qdisc."""

    def __enter__(self):
        import fcntl

        self.f = open("/tmp/guardian-lab-tc.lock", "w")
        fcntl.flock(self.f, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def remove_shaping(dev: str = "lo") -> None:
    """Delete the lab's root qdisc (back to the device's default); no error if none."""
    root = _run(["tc", "qdisc", "show", "dev", dev, "root"], check=False).stdout
    if "htb 1:" in root:
        _run(["tc", "qdisc", "del", "dev", dev, "root"], check=False)


def remove_shaping_of(ports: list[int], dev: str = "lo") -> None:
    """A recorder's clean-up: its own classes only (other recorders may be shaping theirs)."""
    for port in ports:
        s = Shape(port, 1, dev=dev)
        s.applied = True
        s.remove()


class Loss:
    """nftables drops `pct` % of the packets leaving the service's port (its answers and
    ACKs): TCP retransmits them after its timeout, so some calls take 200 ms+ longer.
    One table per port, so recorders running side by side do not undo each other."""

    def __init__(self, port: int, pct: int) -> None:
        self.port, self.pct = port, pct
        self.table = f"guardian_lab_{port}"
        self.applied = False

    def apply(self) -> None:
        if not shutil.which("nft"):
            raise FaultError("nft not found (make setup installs nftables)")
        _run(["nft", "delete", "table", "inet", self.table], check=False)
        _run(["nft", "add", "table", "inet", self.table])
        self.applied = True
        _run(["nft", "add", "chain", "inet", self.table, "out", "{ type filter hook output priority 0 ; }"])
        _run(["nft", "add", "rule", "inet", self.table, "out", "tcp", "sport", str(self.port),
              "numgen", "random", "mod", "100", "<", str(self.pct), "drop"])

    def remove(self) -> None:
        if self.applied:
            _run(["nft", "delete", "table", "inet", self.table], check=False)
            self.applied = False


# ---- CPU and memory: cgroups (v2 when its controllers are there, else v1) --------------

def _v2_root() -> Path | None:
    for root in (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified")):
        ctl = root / "cgroup.controllers"
        if ctl.exists() and {"cpu", "memory"} <= set(ctl.read_text().split()):
            return root
    return None


class Cgroup:
    """A cgroup the lab makes for one service's processes, moved back out on remove."""

    def __init__(self, name: str, controller: str) -> None:
        self.v2 = _v2_root()
        if self.v2:
            self.path = self.v2 / LAB_CGROUP / name
            self.home = self.v2
        else:
            base = Path("/sys/fs/cgroup") / controller
            if not base.exists():
                raise FaultError(f"no cgroup {controller} controller mounted")
            self.path, self.home = base / LAB_CGROUP / name, base
        self.pids: list[int] = []

    def enter(self, pids: list[int]) -> None:
        if self.v2:
            parent = self.path.parent
            parent.mkdir(exist_ok=True)
            (self.v2 / "cgroup.subtree_control").write_text("+cpu +memory")
            (parent / "cgroup.subtree_control").write_text("+cpu +memory")
        self.path.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            for tid in _threads(pid):
                try:
                    (self.path / ("cgroup.procs" if self.v2 else "tasks")).write_text(str(tid))
                except OSError:
                    pass  # thread gone
        self.pids = pids

    def write(self, key: str, value: str) -> None:
        (self.path / key).write_text(value)

    def read(self, key: str) -> str:
        return (self.path / key).read_text().strip()

    def limit_cpu(self, share: float, period_us: int) -> None:
        """CFS quota: `share` of one CPU per period, for every process in the group together."""
        quota = max(1000, int(period_us * share))
        if self.v2:
            self.write("cpu.max", f"{quota} {period_us}")
        else:
            self.write("cpu.cfs_period_us", str(period_us))
            self.write("cpu.cfs_quota_us", str(quota))

    def unlimit_cpu(self, period_us: int) -> None:
        try:
            if self.v2:
                self.write("cpu.max", f"max {period_us}")
            else:
                self.write("cpu.cfs_quota_us", "-1")
        except OSError:
            pass  # the group is already gone

    def leave(self) -> None:
        procs = self.path / ("cgroup.procs")
        if not self.path.exists():
            return
        for line in procs.read_text().split():
            try:
                (self.home / "cgroup.procs").write_text(line)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass


def _threads(pid: int) -> list[int]:
    try:
        return [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """pid and every process below it (a service's workers and forks)."""
    children: dict[int, list[int]] = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


class CpuThrottle:
    """CFS quota on the service's cgroup: `share` of one CPU per period. A long period makes
    the stalls long: once the quota is spent, every thread waits for the next period."""

    def __init__(self, name: str, pid: int, share: float, period_us: int = 500_000) -> None:
        # named after the pid too: topologies recorded side by side share service names
        self.cg, self.pid, self.share, self.period = Cgroup(f"{name}-{pid}", "cpu"), pid, share, period_us

    def apply(self) -> None:
        self.cg.enter(descendants(self.pid))
        self.cg.limit_cpu(self.share, self.period)

    def remove(self) -> None:
        self.cg.unlimit_cpu(self.period)
        self.cg.leave()


class MemoryPressure:
    """The service's cgroup limited to a little above what it uses now: every allocation
    past it makes the kernel reclaim first (page cache, then stalls). v2: memory.high; v1
    has no soft throttle, so memory.limit_in_bytes with `headroom_mb` to spare."""

    def __init__(self, name: str, pid: int, headroom_mb: int) -> None:
        self.cg, self.pid, self.headroom = Cgroup(f"{name}-{pid}", "memory"), pid, headroom_mb

    def apply(self) -> None:
        pids = descendants(self.pid)
        self.cg.enter(pids)
        if not self.cg.v2:
            try:
                self.cg.write("memory.move_charge_at_immigrate", "3")
            except OSError:
                pass
            self.cg.leave()  # move_charge applies to tasks moved after it is set
            self.cg.enter(pids)
        used = sum(_rss(p) for p in pids)
        limit = used + self.headroom * 2**20
        self.cg.write("memory.high" if self.cg.v2 else "memory.limit_in_bytes", str(limit))

    def remove(self) -> None:
        try:
            self.cg.write("memory.high" if self.cg.v2 else "memory.limit_in_bytes", "max" if self.cg.v2 else "-1")
        except OSError:
            pass
        self.cg.leave()


def _rss(pid: int) -> int:
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# share of the CPU left to the service and its hogs together, per strength
CONTENTION_SHARE = {"mild": 0.8, "medium": 0.6, "strong": 0.4}


class CpuContention:
    """CPU hogs sharing the service's CPU and its CPU allowance: the service and `workers`
    stress-ng hogs pinned to one CPU in one cgroup limited to `share` of that CPU (a noisy
    neighbour in the same container). Equal weight alone barely slows a mostly idle service
    (the scheduler runs a waking light task at once); a shared allowance the hogs spend makes
    every thread of the group, the service's too, wait for the next period."""

    def __init__(self, name: str, pid: int, workers: int, share: float, cpu: int = 1,
                 period_us: int = 100_000) -> None:
        # named after the pid too: topologies recorded side by side share service names
        self.cg = Cgroup(f"contend-{name}-{pid}", "cpu")
        self.pid, self.workers, self.share, self.cpu, self.period = pid, workers, share, cpu, period_us
        self.proc: subprocess.Popen | None = None
        self._affinity: set[int] | None = None

    def apply(self) -> None:
        if not shutil.which("stress-ng"):
            raise FaultError("stress-ng not found (make setup installs it)")
        self._affinity = os.sched_getaffinity(self.pid)
        pin(self.pid, {self.cpu})
        self.cg.enter(descendants(self.pid))
        procs = self.cg.path / "cgroup.procs"

        def join() -> None:  # in the child before exec: its workers are born in the group
            procs.write_text(str(os.getpid()))

        # same nice as the service: the weight inside the group is equal; the allowance is shared
        nice = os.getpriority(os.PRIO_PROCESS, self.pid) - os.getpriority(os.PRIO_PROCESS, 0)
        self.proc = subprocess.Popen(
            ["nice", "-n", str(nice), "taskset", "-c", str(self.cpu), "stress-ng", "--cpu", str(self.workers),
             "--cpu-method", "int64", "--quiet", "--timeout", "600s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=join)
        self.cg.limit_cpu(self.share, self.period)

    def remove(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None
        self.cg.unlimit_cpu(self.period)
        self.cg.leave()
        if self._affinity:
            pin(self.pid, self._affinity)
            self._affinity = None


def pin(pid: int, cpus: set[int]) -> None:
    """Pin a service (every thread of every process) to `cpus`."""
    for p in descendants(pid):
        for tid in _threads(p):
            try:
                os.sched_setaffinity(tid, cpus)
            except OSError:
                pass


class Pause:
    """SIGSTOP for `stop_s` of every `stop_s + run_s` seconds (a GC pause, a swap storm,
    a blocked event loop) to the process and everything below it (postgres backends):
    with run_s=0 they stay stopped until remove()."""

    def __init__(self, pid: int, stop_s: float, run_s: float) -> None:
        self.root, self.stop_s, self.run_s = pid, stop_s, run_s
        self.pids: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _send(self, sig: int) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def apply(self) -> None:
        self._stop.clear()
        self.pids = descendants(self.root)
        if self.run_s <= 0:
            self._send(signal.SIGSTOP)
            return

        def loop() -> None:
            while not self._stop.is_set():
                self._send(signal.SIGSTOP)
                self._stop.wait(self.stop_s)
                self._send(signal.SIGCONT)
                self._stop.wait(self.run_s)

        self._thread = threading.Thread(target=loop, name="pause", daemon=True)
        self._thread.start()

    def remove(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(3)
            self._thread = None
        self._send(signal.SIGCONT)


class Switch:
    """A fault switch inside one of the lab's (or the demo's) own services: a control file
    the service polls. `value` is what the service reads (a mode word, or JSON)."""

    def __init__(self, path: Path, value: str | dict) -> None:
        self.path = path
        self.value = json.dumps(value) if isinstance(value, dict) else value

    def _write(self, text: str) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, self.path)

    def apply(self) -> None:
        self._write(self.value)
        time.sleep(0.5)  # every runtime polls it at least this often

    def remove(self) -> None:
        self._write("")


class Sql:
    """DDL or a held lock over PostgreSQL's unix socket (not loopback TCP, so the fault
    itself is not part of the captured traffic)."""

    def __init__(self, socket_dir: str, port: int, dbname: str, apply_sql: str, remove_sql: str,
                 hold: bool = False) -> None:
        self.kw = dict(host=socket_dir, port=port, user="postgres", dbname=dbname)
        self.apply_sql, self.remove_sql, self.hold = apply_sql, remove_sql, hold
        self._conn = None

    def apply(self) -> None:
        import psycopg

        if self.hold:  # a session that takes a lock and keeps its transaction open
            self._conn = psycopg.connect(**self.kw)
            self._conn.execute(self.apply_sql)
            return
        with psycopg.connect(**self.kw, autocommit=True) as conn:
            conn.execute(self.apply_sql)

    def remove(self) -> None:
        import psycopg

        if self._conn is not None:
            self._conn.rollback()
            self._conn.close()
            self._conn = None
        if self.remove_sql:
            with psycopg.connect(**self.kw, autocommit=True) as conn:
                conn.execute(self.remove_sql)


class Hosts:
    """DNS failure: rewrite the hosts file dnsmasq serves without some names, SIGHUP it."""

    def __init__(self, path: Path, dnsmasq_pid: int, names: dict[str, str], missing: list[str]) -> None:
        self.path, self.pid, self.names, self.missing = path, dnsmasq_pid, names, missing

    def _write(self, missing: list[str]) -> None:
        lines = [f"{ip} {n}" for n, ip in self.names.items() if n not in missing]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, self.path)
        os.kill(self.pid, signal.SIGHUP)
        time.sleep(1.2)  # cached answers (TTL 1 s) expire

    def apply(self) -> None:
        self._write(self.missing)

    def remove(self) -> None:
        self._write([])


class Combo:
    """Several mechanisms as one (e.g. a slow dependency plus its callers' retries)."""

    def __init__(self, *parts) -> None:
        self.parts = parts

    def apply(self) -> None:
        for p in self.parts:
            p.apply()

    def remove(self) -> None:
        for p in reversed(self.parts):
            p.remove()
