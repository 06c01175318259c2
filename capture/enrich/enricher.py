"""`Enricher.resource(pid)`: the OpenTelemetry resource of a process, cached per pid.

A cached pid is checked every `check_s` against its start time and executable, so a reused pid
or an exec gets its own name within seconds rather than the old process's for `ttl_s`.

service.name, in order: OTEL_SERVICE_NAME in the process environment, Kubernetes workload
(deployment/statefulset/daemonset/job), Kubernetes container name, systemd unit, program
(executable, or the script an interpreter runs). Outside Kubernetes the k8s.* keys are absent.
"""
from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from typing import Any

from capture.enrich.cgroup import container_id, systemd_unit
from capture.enrich.k8s import PodIndex
from capture.enrich.proc import identity, program_name, read_proc

_WORKLOAD_KEYS = ("k8s.deployment.name", "k8s.statefulset.name", "k8s.daemonset.name",
                  "k8s.cronjob.name", "k8s.job.name")


def service_name(base: dict[str, Any], env_name: str | None, unit: str | None) -> str:
    if env_name:
        return env_name
    for key in _WORKLOAD_KEYS + ("k8s.container.name",):
        if base.get(key):
            return str(base[key])
    return unit or str(base.get("process.executable.name") or "unknown")


class Enricher:
    """Thread-safe; returned dicts are shared between spans and must not be mutated."""

    def __init__(self, proc_root: str = "/proc", pods: PodIndex | None = None,
                 host_name: str | None = None, ttl_s: float = 300.0, max_entries: int = 8192,
                 check_s: float = 5.0):
        self.proc_root = proc_root
        self.pods = pods
        self.host_name = host_name or socket.gethostname()
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.check_s = check_s
        # pid -> (start time, executable, last checked): see the module docstring
        self._identity: dict[int, list] = {}
        # pid -> (resource, complete?, created): incomplete entries (container seen, pod not yet
        # known) are re-checked against the pod index on each call, which is a dict lookup.
        self._cache: OrderedDict[int, tuple[dict[str, Any], bool, float, tuple]] = OrderedDict()
        self._lock = threading.Lock()

    def resource(self, pid: int) -> dict[str, Any]:
        now = time.monotonic()
        hit = self._cache.get(pid)
        if hit is not None and not self._same_process(pid, now):
            hit = None
        if hit is not None and now - hit[2] < self.ttl_s:
            if hit[1]:
                return hit[0]
            res = self._with_pod(hit[3])
            if res is not None:
                self._put(pid, res, True, hit[2], hit[3])
                return res
            return hit[0]
        return self._build(pid, now)

    def forget(self, pid: int) -> None:
        """Drop a pid (the process exited; its number may be reused)."""
        with self._lock:
            self._cache.pop(pid, None)
            self._identity.pop(pid, None)

    def _same_process(self, pid: int, now: float) -> bool:
        known = self._identity.get(pid)
        if known is None or now - known[1] < self.check_s:
            return True
        current = identity(pid, self.proc_root)
        if current is None:  # exited: its last spans still belong to it
            return True
        known[1] = now
        return current == known[0]

    def _put(self, pid: int, res: dict[str, Any], complete: bool, created: float, ctx: tuple) -> None:
        with self._lock:
            self._cache[pid] = (res, complete, created, ctx)
            self._cache.move_to_end(pid)
            while len(self._cache) > self.max_entries:
                old, _ = self._cache.popitem(last=False)
                self._identity.pop(old, None)

    def _build(self, pid: int, now: float) -> dict[str, Any]:
        known = identity(pid, self.proc_root)
        info = read_proc(pid, self.proc_root)
        base: dict[str, Any] = {"host.name": self.host_name, "process.pid": pid}
        if info is None:
            base["service.name"] = "unknown"
            return base  # not cached: the pid may belong to a process we can read later
        base["process.executable.name"] = program_name(info)
        base["process.command_line"] = info.command_line
        cid = container_id(info.cgroups)
        # In a container, a unit on another hierarchy is the runtime's (containerd.service), not ours.
        unit = None if cid else systemd_unit(info.cgroups)
        if cid:
            base["container.id"] = cid
        if unit:
            base["systemd.unit"] = unit
        ctx = (base, info.env_service_name, unit)
        res = self._with_pod(ctx)
        complete = res is not None or not cid or self.pods is None
        if res is None:
            res = {**base, "service.name": service_name(base, info.env_service_name, unit)}
        self._put(pid, res, complete, now, ctx)
        with self._lock:
            self._identity[pid] = [known, now]
        return res

    def _with_pod(self, ctx: tuple) -> dict[str, Any] | None:
        base, env_name, unit = ctx
        cid = base.get("container.id")
        pod = self.pods.get(cid) if (self.pods is not None and cid) else None
        if pod is None:
            return None
        merged = {**base, **pod}
        merged["service.name"] = service_name(merged, env_name, unit)
        return merged
