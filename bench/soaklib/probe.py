"""What an agent process holds in the kernel (BPF programs, perf-event probes, tracefs
events) and what is left of it after it died; its RSS; its /metrics counters.

Reads bpftool (Debian package `bpftool`) when present, else /proc/*/fdinfo and tracefs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from support import results as bench_results

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def _bpftool(*args: str) -> list[dict] | None:
    if not shutil.which("bpftool"):
        return None
    try:
        cp = subprocess.run(["bpftool", *args, "--json"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if cp.returncode != 0:
        return None
    try:
        return json.loads(cp.stdout or "[]")
    except ValueError:
        return None


def prog_ids_of(pid: int) -> set[int]:
    """BPF programs a process holds by fd (fdinfo `prog_id:` lines)."""
    ids = set()
    base = f"/proc/{pid}/fdinfo"
    try:
        fds = os.listdir(base)
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"{base}/{fd}") as f:
                m = re.search(r"^prog_id:\s*(\d+)", f.read(), re.M)
        except OSError:
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


def _all_fd_prog_ids() -> set[int]:
    ids: set[int] = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        ids |= prog_ids_of(int(pid))
    return ids


def _tracefs_events(pid: int) -> list[str]:
    """uprobe/kprobe events BCC named after this pid (it creates them when the perf PMU path
    is not available, and removes them only on a clean exit)."""
    out = []
    for root in TRACEFS:
        for name in ("uprobe_events", "kprobe_events"):
            try:
                with open(f"{root}/{name}") as f:
                    out += [line.strip() for line in f if re.search(rf"bcc_{pid}\b", line)]
            except OSError:
                continue
        if out:
            break
    return out


def attached(pid: int) -> dict:
    """What a live agent holds: its programs and its perf-event probes by kind."""
    progs = prog_ids_of(pid)
    perf = _bpftool("perf", "show")
    kinds: dict[str, int] = {}
    for e in perf or []:
        if e.get("pid") == pid:
            kinds[e.get("fd_type", "?")] = kinds.get(e.get("fd_type", "?"), 0) + 1
    return {"pid": pid, "progs": sorted(progs), "prog_count": len(progs),
            "perf_probes": kinds if perf is not None else None,
            "tracefs_events": len(_tracefs_events(pid))}


def leftovers(pid: int, progs: set[int]) -> dict:
    """After `pid` died: its programs still loaded, perf events and links still pointing at
    them (any process), and tracefs events named after it."""
    loaded = _bpftool("prog", "show")
    if loaded is not None:
        still = {p["id"] for p in loaded} & progs
        how = "bpftool"
    else:
        still = _all_fd_prog_ids() & progs
        how = "fdinfo"
    perf = _bpftool("perf", "show") or []
    links = _bpftool("link", "show") or []
    perf_left = [e for e in perf if e.get("prog_id") in progs or e.get("pid") == pid]
    links_left = [e for e in links if e.get("prog_id") in progs]
    events = _tracefs_events(pid)
    return {"pid": pid, "progs_loaded": len(still), "perf_probes": len(perf_left), "links": len(links_left),
            "tracefs_events": len(events), "total": len(still) + len(perf_left) + len(links_left) + len(events),
            "via": how}


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


_METRIC = re.compile(r'^(guardian_[a-z_]+?)(?:_total)?(?:\{counter="([^"]+)"\})?\s+([0-9.eE+-]+)$')


def parse_metrics(text: str) -> dict[str, float]:
    """guardian_* samples of a Prometheus text page: agent counters by name, capture
    counters as `capture.<counter>`."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line.strip())
        if not m or line.startswith("#"):
            continue
        name, counter, value = m.groups()
        if name.endswith("_created"):
            continue
        key = f"capture.{counter}" if counter else name
        out[key] = float(value)
    return out


DROP_WORDS = ("drop", "lost", "overflow", "full", "evict", "truncat", "skip", "gap", "error", "invalid",
              "too_", "limit", "spill", "without", "resync", "garbage", "bad_", "unwalked", "unresolved",
              "degraded", "ignored", "failed")


def drop_counters(metrics: dict[str, float]) -> dict[str, float]:
    """The counters that say something was lost, cut or refused (non-zero ones)."""
    return {k: v for k, v in sorted(metrics.items())
            if v and any(w in k.lower() for w in DROP_WORDS) and not k.endswith("_bytes")
            and "scope_dropped" not in k and "scope_skipped" not in k}  # out of scope is not lost: reported apart


def slope_per_min(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) in value per minute."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mv = sum(v for _, v in samples) / n
    den = sum((t - mt) ** 2 for t, _ in samples)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in samples) / den * 60


def report(result: dict, out: str | None, as_json: bool) -> None:
    """A soak bench's result: the whole of it to `out`, and on stdout one JSON line (as_json) or
    indented without its samples."""
    if out:
        bench_results.write(out, result)
    if as_json:
        print(json.dumps(result))
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))


_MEMORY = re.compile(r'^guardian_agent_memory_(\w+)\{(?:what|kind|file)="([^"]+)"\} ([0-9.e+-]+)$', re.M)


def memory_gauges(text: str) -> dict[str, dict[str, float]]:
    """The agent's guardian_agent_memory_* gauges of a /metrics page (Agent.memory) by family:
    bytes in MB (rss_bytes, file_bytes, malloc, store, every `..bytes` key), counts as they are."""
    out: dict[str, dict[str, float]] = {}
    for fam, key, v in _MEMORY.findall(text):
        mb = fam in ("rss_bytes", "file_bytes", "malloc", "store") or key.endswith("bytes")
        out.setdefault(fam, {})[key] = round(float(v) / 2**20, 1) if mb else float(v)
    return out
