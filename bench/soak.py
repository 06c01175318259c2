"""Soak: the demo shop at its load, a mixed-protocol load and hostile input at once, first
without the agent (baseline), then with `guardian agent` capturing, killed with SIGKILL and
restarted during the run. Prints one JSON object and writes it to bench/results/.
The agent keeps only the spans of the soak's own processes (capture.scope on a cgroup the soak
joins first): another process's flood on the host is not measured (--host-wide: it is).

    python -m bench.soak --minutes 30 --json        (make soak)

Measures application requests failed beyond the baseline's rate, probes of each killed
agent left in the kernel, agent RSS over time and every drop counter of /metrics. It does
not judge: the figures are the result (tests/soak asserts on a short run)."""
from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from bench.soaklib import load as soak_load, probe as soak_probe
from bench.soaklib.cgroup import SoakCgroup
from bench.soaklib.hostile import Hostile
from guardian.demo.config import REPO, DemoConfig, Ports, port_conflicts
from guardian.demo.procs import DemoError, Proc, spawn, wait_until
from support import results as bench_results
from support.ports import free_port

SAMPLE_S = 5.0


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def shop_ports(shift: int | None = None) -> Ports:
    """Demo ports shifted to a range where all are free (other demos may run on this host), or
    by `shift` (a range kept for this run)."""
    if shift is not None:
        ports = Ports().shifted(shift)
        if port_conflicts(ports):
            raise DemoError(f"shop ports shifted by {shift} are not free: {port_conflicts(ports)}")
        return ports
    rng = random.Random()
    for _ in range(50):
        ports = Ports().shifted(rng.randrange(1000, 30000, 100))
        if not port_conflicts(ports):
            return ports
    raise DemoError("no free range of ports for the shop")


@dataclass
class Incarnation:
    """One agent process from spawn to its death."""

    proc: Proc
    spawned: float
    ready_s: float | None = None
    ready_at: float | None = None
    rss: list[tuple[float, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    memory: list[tuple[float, dict]] = field(default_factory=list)  # the agent's memory gauges by source
    attached: dict | None = None
    left: dict | None = None
    end: str = "running"


class Timeline:
    """Phase changes over time: baseline | agent_start | agent."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, str]] = [(time.time(), "baseline")]
        self.current = "baseline"

    def set(self, phase: str) -> None:
        self.marks.append((time.time(), phase))
        self.current = phase

    def at(self, t: float) -> str:
        phase = self.marks[0][1]
        for ts, p in self.marks:
            if ts <= t:
                phase = p
        return phase


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir or f"/tmp/guardian-soak-{os.getpid()}")
        self.token = secrets.token_urlsafe(16)
        self.api_port = free_port()
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=10,
                                headers={"Authorization": f"Bearer {self.token}"})
        self.timeline = Timeline()
        self.tally = soak_load.Tally(lambda: self.timeline.current)
        self.stop = threading.Event()
        self.agents: list[Incarnation] = []
        self.shop = None
        self.servers = soak_load.Servers(self.workdir)
        self.hostile: Hostile | None = None
        self.cgroup: SoakCgroup | None = None
        self.scope_note = "host-wide"
        self.t0 = time.time()

    # -- the agent -------------------------------------------------------------------------
    def _conf(self) -> Path:
        conf = self.workdir / "guardian.yaml"
        scope = {"capture": {"scope": {"cgroup": self.cgroup.path}}} if self.cgroup else {}
        conf.write_text(yaml.safe_dump({**scope,
            "api": {"port": self.api_port, "token": self.token, "host": "127.0.0.1"},
            "schedule": {"interval_s": 30, "window": "60s", "history_path": str(self.workdir / "reports.jsonl")},
            "store": {"path": str(self.workdir / "guardian.duckdb")},
            "log": {"format": "text", "level": "WARNING", "memory_trace_frames": self.args.memory_trace},
        }))
        return conf

    def start_agent(self) -> Incarnation:
        self.timeline.set("agent_start")
        n = len(self.agents)
        proc = spawn(f"guardian-agent-{n}", [sys.executable, "-m", "guardian.cli.main", "agent", "--config",
                                             str(self._conf())], self.workdir / "logs" / f"agent-{n}.log", cwd=REPO)
        inc = Incarnation(proc, time.time())
        self.agents.append(inc)
        log(f"agent #{n} spawned (pid {proc.pid}); compiling probes …")
        wait_until(proc, lambda: any(x.strip() == "ready" for x in proc.tail(200).splitlines()),
                   self.args.ready_timeout, f"guardian agent #{n}")
        wait_until(proc, lambda: self.api.get("/healthz").status_code == 200, 60, "guardian API")
        inc.ready_at = time.time()
        inc.ready_s = round(inc.ready_at - inc.spawned, 1)
        inc.attached = soak_probe.attached(proc.pid)
        self.timeline.set("agent")
        log(f"agent #{n} ready after {inc.ready_s}s: {inc.attached['prog_count']} programs, "
            f"probes {inc.attached['perf_probes']}")
        return inc

    def scrape(self, inc: Incarnation) -> None:
        try:
            r = self.api.get("/metrics", timeout=5)
            if r.status_code == 200:
                inc.metrics = soak_probe.parse_metrics(r.text)
                if (m := soak_probe.memory_gauges(r.text)):
                    inc.memory.append((time.time(), m))
        except httpx.HTTPError:
            pass

    def kill_agent(self, inc: Incarnation) -> None:
        """SIGKILL, reap, then count what the dead process left attached."""
        pid = inc.proc.pid
        self.scrape(inc)
        progs = soak_probe.prog_ids_of(pid) or set(inc.attached["progs"] if inc.attached else [])
        inc.attached = dict(inc.attached or {}, progs_at_kill=len(progs))
        log(f"kill -9 agent pid {pid} ({len(progs)} programs)")
        os.kill(pid, signal.SIGKILL)
        inc.proc.popen.wait(30)
        inc.end = "killed"
        self.timeline.set("agent_start")  # no agent until the next one is ready
        time.sleep(3.0)  # the kernel frees programs and detaches perf events after the last fd closes
        inc.left = soak_probe.leftovers(pid, progs)
        log(f"left attached after kill: {inc.left}")

    def progress(self) -> None:
        with self.tally.lock:
            ok, bad = Counter(), Counter()
            for (phase, _), n in self.tally.ok.items():
                ok[phase] += n
            for (phase, _), n in self.tally.failed.items():
                bad[phase] += n
        inc = self.agents[-1] if self.agents else None
        rss = inc.rss[-1][1] if inc and inc.rss else None
        log(f"requests ok {dict(ok)} failed {dict(bad)}; agent rss {rss and round(rss)} MB; {uptime()}")

    def sampler(self) -> None:
        n = 0
        while not self.stop.wait(SAMPLE_S):
            n += 1
            if n % 12 == 0:
                self.progress()
            inc = self.agents[-1] if self.agents else None
            if inc is None or inc.ready_at is None or inc.end != "running":
                continue
            if not inc.proc.alive():
                inc.end = f"died by itself (exit {inc.proc.popen.returncode})"
                log(f"agent pid {inc.proc.pid} {inc.end}: {inc.proc.tail(5)}")
                continue
            every = max(1, round(self.args.growth_every / SAMPLE_S))
            if self.args.memory_trace and n % every == 0:
                os.kill(inc.proc.pid, signal.SIGUSR2)  # the debug mode logs what grew since the last one
            rss = soak_probe.rss_mb(inc.proc.pid)
            if rss is not None:
                inc.rss.append((time.time(), rss))
            self.scrape(inc)

    # -- the run ---------------------------------------------------------------------------
    def start_world(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.args.host_wide:  # before anything starts: children inherit the cgroup
            try:
                self.cgroup = SoakCgroup(f"guardian-soak-{os.getpid()}").join()
                log(f"processes of the soak in cgroup {self.cgroup.path}; the agent keeps only their spans")
            except OSError as e:  # no writable cgroup v2 hierarchy (a container): measured host-wide, said so
                self.scope_note = f"host-wide: no cgroup of its own ({e})"
                log(f"the agent captures host-wide: {e}")
        if not self.args.no_shop:
            from guardian.demo.system import ShopSystem

            cfg = DemoConfig(ports=shop_ports(self.args.shop_port_shift), workdir=self.workdir / "shop", rate=self.args.shop_rate, agent=False)
            self.shop = ShopSystem(cfg, progress=log)
            self.shop.start(loadgen=True)
        self.servers.start()
        log(f"soak servers: {self.servers.ports}")
        shop_p = self.shop.cfg.ports if self.shop else None
        soak_load.start(soak_load.clients(self.servers.ports, shop_p), self.args.rate, self.tally, self.stop)
        self.hostile = Hostile(self.servers.ports)
        threading.Thread(target=self.hostile.run, args=(self.args.hostile_rate, self.stop), daemon=True,
                         name="soak-hostile").start()
        threading.Thread(target=self.sampler, daemon=True, name="soak-sampler").start()

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            dead = self.servers.dead() + (self.shop.dead() if self.shop else [])
            if dead:
                raise DemoError(f"stopped unexpectedly: {', '.join(dead)} (logs in {self.workdir})")
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))

    def run(self) -> dict:
        a = self.args
        self.uptime_start = uptime()
        log(f"start; {self.uptime_start}")
        self.start_world()
        log(f"baseline without the agent: {a.baseline_minutes:g} min")
        self.wait(a.baseline_minutes * 60)
        segment = a.minutes * 60 / (a.kills + 1)  # minutes count from each agent's ready
        inc = self.start_agent()
        for _ in range(a.kills):
            self.wait(segment)
            if inc.end == "running":
                self.kill_agent(inc)
            inc = self.start_agent()
        self.wait(max(a.min_last_s, segment))
        self.captured_after_restart = self.captured_since(inc.ready_at or time.time())
        self.scrape(inc)
        self.sigterm_exit_s = self.stop_agent(inc)
        self.stop.set()
        time.sleep(1.0)
        self.uptime_end = uptime()
        return self.result()

    def captured_since(self, t: float) -> dict:
        """Spans of the soak's own servers in the store since t (they reach it after the linker window)."""
        deadline = time.monotonic() + 120
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            try:
                r = self.api.get("/v1/services", params={"start": f"{t:.3f}", "end": f"{time.time():.3f}"},
                                 timeout=60)
                if r.status_code == 200:
                    seen = {s["name"]: s.get("count", 0) for s in r.json()["services"]
                            if s["name"].startswith("soak-")}
                else:
                    log(f"GET /v1/services: {r.status_code} {r.text[:200]}")
            except httpx.HTTPError as e:
                log(f"GET /v1/services: {type(e).__name__} {e}")
            if seen.get("soak-redis", 0) > 0:
                break
            time.sleep(2)
        return seen

    def stop_agent(self, inc: Incarnation) -> float | None:
        if not inc.proc.alive():
            return None
        t = time.monotonic()
        inc.proc.popen.send_signal(signal.SIGTERM)
        try:
            inc.proc.popen.wait(self.args.sigterm_wait)
        except subprocess.TimeoutExpired:
            inc.proc.stop()
            inc.end = f"still running {self.args.sigterm_wait:g} s after SIGTERM: killed"
            return None
        inc.end = "stopped"
        return round(time.monotonic() - t, 2)

    def teardown(self) -> None:
        self.stop.set()
        for inc in self.agents:
            if inc.proc.alive():
                inc.proc.stop()
        if self.hostile:
            self.hostile.close()
        self.servers.stop()
        if self.shop:
            self.shop.stop()
        self.api.close()
        if self.cgroup and not self.cgroup.leave():
            log(f"cgroup {self.cgroup.path} still has members {self.cgroup.members()}: not removed")

    # -- the figures -----------------------------------------------------------------------
    def _requests(self) -> dict:
        out: dict[str, dict] = {}
        keys = set(self.tally.ok) | set(self.tally.failed)
        for phase, client in sorted(keys):
            p = out.setdefault(phase, {"ok": 0, "failed": 0, "by_client": {}})
            ok, bad = self.tally.ok[(phase, client)], self.tally.failed[(phase, client)]
            p["ok"] += ok
            p["failed"] += bad
            p["by_client"][client] = {"ok": ok, "failed": bad}
        if self.shop:
            from guardian.demo.services import stats_file

            try:
                lines = [json.loads(x) for x in stats_file(self.shop.cfg).read_text().splitlines() if x.strip()]
            except OSError:
                lines = []
            for line in lines:
                phase = self.timeline.at(line["ts"] - 2.5)  # a line covers the 5 s before its ts
                p = out.setdefault(phase, {"ok": 0, "failed": 0, "by_client": {}})
                shop = p["by_client"].setdefault("shop", {"ok": 0, "failed": 0})
                for route, st in line.items():
                    if isinstance(st, dict):
                        shop["ok"] += st["count"] - st["errors"]
                        shop["failed"] += st["errors"]
                        p["ok"] += st["count"] - st["errors"]
                        p["failed"] += st["errors"]
                        for kind, n in st.get("failures", {}).items():  # status 5xx, timeout, refused
                            self.tally.kinds[phase][f"shop {route}: {kind}"] += n
        return out

    def result(self) -> dict:
        a = self.args
        req = self._requests()
        base = req.get("baseline", {"ok": 0, "failed": 0})
        base_n = base["ok"] + base["failed"]
        rate = base["failed"] / base_n if base_n else 0.0
        with_agent = [req.get(p, {"ok": 0, "failed": 0}) for p in ("agent", "agent_start")]
        n_agent = sum(p["ok"] + p["failed"] for p in with_agent)
        failed_agent = sum(p["failed"] for p in with_agent)
        expected = rate * n_agent
        rss_all = [v for inc in self.agents for _, v in inc.rss]
        incs = []
        for i, inc in enumerate(self.agents):
            warm = [(t, v) for t, v in inc.rss if t - (inc.ready_at or 0) >= 60] or inc.rss
            incs.append({
                "pid": inc.proc.pid, "ready_s": inc.ready_s, "end": inc.end,
                "seconds": round((inc.rss[-1][0] - inc.ready_at) if inc.rss and inc.ready_at else 0),
                "rss_mb": {"start": round(inc.rss[0][1], 1) if inc.rss else None,
                           "max": round(max(v for _, v in inc.rss), 1) if inc.rss else None,
                           "end": round(inc.rss[-1][1], 1) if inc.rss else None,
                           "slope_mb_per_min_after_60s": _r(soak_probe.slope_per_min(warm))},
                "attached": {k: v for k, v in (inc.attached or {}).items() if k != "progs"},
                "left_after_kill": inc.left,
                # where the resident set was at its largest sample, and every minute (Agent.memory)
                "memory_at_rss_max": _memory_near(inc, max(inc.rss, key=lambda x: x[1])[0]) if inc.rss else None,
                "memory_per_minute": _memory_per_minute(inc),
                "spans_received": inc.metrics.get("guardian_agent_spans_received"),
                "spans_stored": inc.metrics.get("guardian_agent_spans_stored"),
                "drops": soak_probe.drop_counters(inc.metrics),
                "out_of_scope_spans": inc.metrics.get("guardian_agent_scope_dropped_spans"),
                # calls of processes outside the scope the kernel did not follow (bpf/scope.h)
                "out_of_scope_kernel_skipped": inc.metrics.get("capture.kernel.scope_skipped"),
                # the store file's drains (DuckDB's heap outside its pool) and the facts table's clears
                "store_drains": inc.metrics.get("guardian_store_drains"),
                "row_facts_clears": inc.metrics.get("guardian_agent_row_facts_clears"),
            })
        drops_total: Counter[str] = Counter()
        for x in incs:
            drops_total.update(x["drops"])
        longest = max(incs, key=lambda x: x["seconds"], default=None)
        return {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.t0)),
            "minutes_with_agent": a.minutes, "baseline_minutes": a.baseline_minutes, "kills": a.kills,
            "shop": not a.no_shop, "client_rate_per_s": a.rate, "hostile_per_s": a.hostile_rate,
            "uptime_start": self.uptime_start, "uptime_end": self.uptime_end,
            "scope": {"cgroup": self.cgroup.path} if self.cgroup else self.scope_note,
            "failed_by_agent": max(0, round(failed_agent - expected)),
            "failed_by_agent_method": "failed requests with the agent (running or starting) minus the "
                                      "baseline's failure rate times their count",
            "baseline_failure_rate": round(rate, 6), "failed_with_agent": failed_agent,
            "requests_with_agent": n_agent,
            "requests": req,
            "failure_kinds": {p: dict(c.most_common(10)) for p, c in self.tally.kinds.items()},
            "probes_left_after_kill": [inc.left["total"] for inc in self.agents if inc.left],
            "kill_leftovers": [inc.left for inc in self.agents if inc.left],
            "rss_mb": {"start": round(rss_all[0], 1) if rss_all else None,
                       "max": round(max(rss_all), 1) if rss_all else None,
                       "slope_mb_per_min_longest_run": longest["rss_mb"]["slope_mb_per_min_after_60s"]
                       if longest else None},
            "drops_total": dict(drops_total),
            "agents": incs,
            "captured_after_last_restart": self.captured_after_restart,
            "sigterm_exit_s": self.sigterm_exit_s,
            "hostile": {"sent": dict(self.hostile.sent), "refused": dict(self.hostile.refused)} if self.hostile else {},
        }


def _memory_near(inc: Incarnation, t: float) -> dict | None:
    return min(inc.memory, key=lambda x: abs(x[0] - t))[1] if inc.memory else None


def _memory_per_minute(inc: Incarnation) -> list[dict]:
    """The resident set by class and each allocator's view, one sample a minute after ready."""
    out, next_t = [], inc.ready_at or 0
    for t, m in inc.memory:
        if t >= next_t:
            out.append({"min": round((t - (inc.ready_at or t)) / 60, 1), "rss": m.get("rss_bytes"),
                        **{k: m[k] for k in ("malloc", "python", "store", "queue") if k in m}})
            next_t = t + 60
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0,
                   help="minutes with a ready agent, split by the kills (its start-ups come on top)")
    p.add_argument("--baseline-minutes", type=float, help="minutes without the agent first (default M/6, 1..5)")
    p.add_argument("--kills", type=int, default=2, help="kill -9 + restart of the agent during the run")
    p.add_argument("--no-shop", action="store_true", help="only the soak's own servers (no demo shop)")
    p.add_argument("--rate", type=float, default=4.0, help="ops per second of each mixed-protocol client")
    p.add_argument("--shop-rate", type=float, default=8.0, help="the shop load generator's requests per second")
    p.add_argument("--shop-port-shift", type=int,
                   help="the shop's ports are its defaults (18051-18800) plus this (default: a free range)")
    p.add_argument("--hostile-rate", type=float, default=2.0, help="hostile connections per second")
    p.add_argument("--min-last-s", type=float, default=20.0, help="at least this long after the last restart")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds an agent may take to be ready")
    p.add_argument("--sigterm-wait", type=float, default=60.0, help="seconds the last agent gets to exit on SIGTERM")
    p.add_argument("--host-wide", action="store_true",
                   help="the agent keeps every process's spans, not only the soak's (its cgroup)")
    p.add_argument("--memory-trace", type=int, default=0, metavar="FRAMES",
                   help="the agent's memory debug mode (log.memory_trace_frames): 'memory growth' lines in its log "
                        "(keep them with --keep)")
    p.add_argument("--growth-every", type=float, default=60.0,
                   help="with --memory-trace: seconds between the SIGUSR2s that log what grew")
    p.add_argument("--workdir", help="default /tmp/guardian-soak-PID (removed at the end unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (logs) after the run")
    p.add_argument("--out", help="result file (default bench/results/soak-DATE.json)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    args = p.parse_args(argv)
    if args.baseline_minutes is None:
        args.baseline_minutes = min(5.0, max(1.0, args.minutes / 6))
    soak = Soak(args)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = soak.run()
    except (DemoError, KeyboardInterrupt) as e:
        log(f"soak failed: {e}")
        return 1
    finally:
        soak.teardown()
        if not args.keep:
            import shutil

            shutil.rmtree(soak.workdir, ignore_errors=True)
    out = Path(args.out) if args.out else bench_results.DIR / f"soak-{time.strftime('%Y-%m-%d', time.gmtime())}.json"
    out = bench_results.write(out, result, sort_keys=True)
    log(f"result written to {out}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"failed by agent: {result['failed_by_agent']}; probes left after kills: "
              f"{result['probes_left_after_kill']}; RSS {result['rss_mb']}; drops {result['drops_total']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
