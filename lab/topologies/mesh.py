"""A topology made from a spec (lab/topologies/specs.py): PostgreSQL, Redis and dnsmasq on
private loopback ports, one process per service from the lab's service program in its
language (lab/services/svc.{py,go,js}), the load generator, and the faults that fit it."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from guardian.demo import infra
from guardian.demo.config import DemoConfig, Ports
from guardian.demo.procs import DemoError, Proc, spawn, wait_until
from lab import faults as F
from lab.topology import FaultPlan, Herring, neighbours, port_aliases

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "lab" / ".run"  # git-ignored: the compiled Go service


def build_go() -> Path:
    """lab/services/svc.go with Debian's Go and lib/pq (GOPATH mode: offline), cached by hash."""
    src = REPO / "lab" / "services" / "svc.go"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = BUILD / "bin" / "labsvc"
    stamp = out.with_suffix(".sha")
    if out.exists() and stamp.exists() and stamp.read_text() == digest:
        return out
    tmp = BUILD / "src"
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, tmp / "main.go")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", CGO_ENABLED="0",
               GOCACHE=str(BUILD / "gocache"), GOFLAGS="")
    cp = subprocess.run(["go", "build", "-o", str(out), "main.go"], cwd=tmp, env=env, capture_output=True,
                        text=True, timeout=600)
    if cp.returncode != 0:
        raise DemoError(f"building the Go service failed:\n{cp.stderr[-1500:]}")
    stamp.write_text(digest)
    return out


def _named(binary: Path, name: str) -> Path:
    """A symlink to binary called `name`, so the process (comm) carries the service's name."""
    link = BUILD / "bin" / "by-name" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or os.readlink(link) != str(binary):
        link.unlink(missing_ok=True)
        link.symlink_to(binary)
    return link


class Mesh:
    def __init__(self, spec: dict, workdir: str | None = None, port_base: int | None = None) -> None:
        self.spec = spec
        self.name = spec["name"]
        self.workdir = Path(workdir or f"/tmp/guardian-lab-{self.name}")
        base = port_base or {"mesh12": 22000, "grid14": 23000}.get(self.name, 24000)
        self.cfg = DemoConfig(ports=Ports(postgres=base + 1, redis=base + 2, dns=base + 3),
                              workdir=self.workdir, agent=False)
        self.svc_ports = {n: base + 10 + i for i, n in enumerate(spec["services"])}
        self.ports = {**{n: p for n, p in self.svc_ports.items() if spec["services"][n].get("routes")},
                      "postgres": base + 1, "redis": base + 2, "dnsmasq": base + 3}
        self.procs: dict[str, Proc] = {}
        self.edges = self._edges()
        self.always_herrings = list(spec.get("always_slow", []))
        self.features = sorted(set(spec["features"].values()))

    # ---- graph ----
    def _edges(self) -> list[tuple[str, str]]:
        out = {("loadgen", s) for s, _, _ in self.spec["entries"]}
        for name, s in self.spec["services"].items():
            steps = [st for r in s.get("routes", {}).values() for st in r]
            steps += [st for r in s.get("consume", {}).values() for st in r]
            for st in steps:
                for c in st.get("par", [st]):
                    if "call" in c:
                        out.add((name, c["call"]))
                if "sql" in st:
                    out.add((name, "postgres"))
                if "redis" in st or "push" in st:
                    out.add((name, "redis"))
            if s.get("consume"):
                out.add((name, "redis"))
            if s.get("dns"):
                out.add((name, "dnsmasq"))
        out.add((self.spec["batch"]["name"], "postgres"))
        return sorted(out)

    def neighbours(self, svc: str) -> list[str]:
        return neighbours(self.edges, svc)

    # ---- lifecycle ----
    def prepare(self, progress) -> None:
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.cfg.logs.mkdir(parents=True)
        self.cfg.control.mkdir(parents=True)
        progress(f"building the Go service and writing {len(self.spec['services'])} service configs …")
        self.go = build_go()
        zone = self.spec["zone"]
        by_name = {n: f"{n}.{zone}:{p}" for n, p in self.svc_ports.items()}
        by_addr = {n: f"127.0.0.1:{p}" for n, p in self.svc_ports.items()}
        for name, s in self.spec["services"].items():
            # services with "dns" resolve their peers through dnsmasq; the others are given addresses
            conf = {"name": name, "port": self.svc_ports[name] if s.get("routes") else 0,
                    "peers": by_name if s.get("dns") else by_addr, "routes": s.get("routes", {}), "consume": s.get("consume", {}),
                    "pg": f"127.0.0.1:{self.cfg.ports.postgres}", "db": "lab",
                    "redis": f"127.0.0.1:{self.cfg.ports.redis}", "dns": f"127.0.0.1:{self.cfg.ports.dns}",
                    "use_dns": bool(s.get("dns")), "control": str(self.cfg.control), "pool": s.get("pool", 4)}
            (self.workdir / f"{name}.json").write_text(json.dumps(conf))
        (self.workdir / "loadgen.json").write_text(json.dumps(
            {"peers": by_addr, "entries": self.spec["entries"], "control": str(self.cfg.control), "seed": 7}))

    def hosts(self) -> dict[str, str]:
        return {f"{n}.{self.spec['zone']}": "127.0.0.1" for n in self.svc_ports}

    def start(self, progress) -> None:
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise

    def _start(self, progress) -> None:
        hosts = self.workdir / "dns" / "hosts"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts.write_text("".join(f"{ip} {n}\n" for n, ip in self.hosts().items()))
        dns = self.cfg.ports.dns
        progress(f"starting dnsmasq :{dns}, PostgreSQL :{self.cfg.ports.postgres}, Redis :{self.cfg.ports.redis} …")
        self.procs["dnsmasq"] = p = spawn("dnsmasq", [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", f"--port={dns}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
            f"--addn-hosts={hosts}", f"--local=/{self.spec['zone']}/", "--local-ttl=1", "--user=root",
            "--log-facility=-"], self.cfg.logs / "dnsmasq.log", env={"OTEL_SERVICE_NAME": "dnsmasq"})
        wait_until(p, lambda: _dns_ready(dns, next(iter(self.hosts()))), 15, "dnsmasq")
        self.procs["postgres"] = infra.start_postgres(self.cfg)
        self._schema()
        self.procs["redis"] = infra.start_redis(self.cfg)
        for name in self.spec["services"]:
            self._start_service(name)
        progress(f"ready    {len(self.spec['services'])} services")
        self.procs["loadgen"] = spawn("loadgen", [sys.executable, "-m", "lab.services.loadgen"],
                                      self.cfg.logs / "loadgen.log", cwd=REPO,
                                      env={"LAB_CONFIG": str(self.workdir / "loadgen.json"), "PYTHONPATH": str(REPO),
                                           "OTEL_SERVICE_NAME": "loadgen"})

    def _schema(self) -> None:
        import psycopg

        kw = dict(host=str(self.workdir / "postgres"), port=self.cfg.ports.postgres, user="postgres", autocommit=True)
        with psycopg.connect(dbname="postgres", **kw) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'lab'").fetchone():
                conn.execute("CREATE DATABASE lab")
        with psycopg.connect(dbname="lab", **kw) as conn:
            if not conn.execute("SELECT 1 FROM pg_tables WHERE tablename = 'items'").fetchone():
                conn.execute(self.spec["schema"])

    def _start_service(self, name: str) -> Proc:
        s = self.spec["services"][name]
        env = {"LAB_CONFIG": str(self.workdir / f"{name}.json"), "OTEL_SERVICE_NAME": name, "PYTHONPATH": str(REPO)}
        lang = s["lang"]
        if lang == "python":
            argv = [sys.executable, "-m", "lab.services.svc"]
        elif lang == "go":
            argv = [str(_named(self.go, name))]
        else:
            argv = [str(_named(Path(shutil.which("node") or "node"), name)), str(REPO / "lab" / "services" / "svc.js")]
        proc = spawn(name, argv, self.cfg.logs / f"{name}.log", env=env, cwd=REPO)
        if s.get("routes"):
            port = self.svc_ports[name]
            wait_until(proc, lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200,
                       30, name)
        else:
            wait_until(proc, lambda: "consuming" in proc.tail(), 30, name)
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for name, proc in reversed(list(self.procs.items())):
            proc.stop()
        self.procs.clear()

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if not p.alive()]

    def restart_dead(self) -> list[str]:
        return []

    def set_load(self, factor: float) -> None:
        (self.cfg.control / "loadgen").write_text(json.dumps({"factor": factor}))

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    # ---- faults ----
    def _truth(self, svc: str) -> dict:
        extra = {"redis": ["redis-server", "redis-check-rdb"], "postgres": ["postgresql"], "dnsmasq": ["dns"]}
        return {"aliases": port_aliases(self, svc) + extra.get(svc, [])}

    def _feature(self, svc: str) -> str:
        return self.spec["features"].get(svc, "the site")

    def plans(self) -> list[FaultPlan]:
        sp, out = self.spec, []
        routed = [n for n, s in sp["services"].items() if s.get("routes") and n not in sp.get("always_slow", [])]
        callees = sorted({b for a, b in self.edges if b in routed})
        strength_kbit = {"mild": 128, "medium": 64, "strong": 24}
        for svc in callees + ["redis", "postgres"]:
            port, t, f = self.ports[svc], self._truth(svc), self._feature(svc)
            out += [
                FaultPlan("network_delay", svc, "network", lambda r, s, port=port: F.Shape(port, strength_kbit[s]),
                          "slow", f, kind_aliases=["latency"], **t),
                FaultPlan("network_loss", svc, "network", lambda r, s, port=port: F.Loss(
                    port, {"mild": 15, "medium": 25, "strong": 40}[s]), "slow", f,
                    kind_aliases=["latency", "error"], **t),
                FaultPlan("network_jitter", svc, "network", lambda r, s, port=port: F.Shape(
                    port, {"mild": 48, "medium": 24, "strong": 12}[s], 100_000, r.randrange(10**6)),
                    "slow", f, kind_aliases=["latency"], **t),
            ]
        for svc in routed + [n for n, s in sp["services"].items() if s.get("consume")]:
            t, f = self._truth(svc), self._feature(svc)
            sym = "backlog" if not sp["services"][svc].get("routes") else "slow"
            out += [
                FaultPlan("cpu_contention", svc, "saturation", lambda r, s, svc=svc: F.CpuContention(
                    svc, self.pid(svc), 4, F.CONTENTION_SHARE[s]), sym, f, kind_aliases=["latency"], **t),
                FaultPlan("cpu_throttle", svc, "saturation", lambda r, s, svc=svc: F.CpuThrottle(
                    svc, self.pid(svc), {"mild": 0.01, "medium": 0.005, "strong": 0.0025}[s]), sym, f,
                    kind_aliases=["latency"], **t),
                FaultPlan("process_pause", svc, "latency", lambda r, s, svc=svc: F.Pause(
                    self.pid(svc), {"mild": 0.15, "medium": 0.3, "strong": 0.6}[s], 0.4), sym, f,
                    kind_aliases=["saturation"], **t),
            ]
        for svc in routed:
            s = sp["services"][svc]
            callers = [a for a, b in self.edges if b == svc and a != "loadgen"]
            for route in s["routes"]:
                t, f = self._truth(svc), self._feature(svc)
                ctl = self.cfg.control / svc
                out.append(FaultPlan("exception", svc, "error", lambda r, st, ctl=ctl, route=route: F.Switch(
                    ctl, {"route": route, "mode": "error", "p": {"mild": 0.2, "medium": 0.5, "strong": 0.9}[st]}),
                    "failing", f, operation=route, **t))
                if callers:  # a wrong value only hurts a service that reads it
                    out.append(FaultPlan("wrong_return", svc, "error", lambda r, st, ctl=ctl, route=route: F.Switch(
                        ctl, {"route": route, "mode": "wrong", "p": {"mild": 0.2, "medium": 0.5, "strong": 0.9}[st]}),
                        "failing", f, operation=route, **t))
        sock, pg = str(self.workdir / "postgres"), self.cfg.ports.postgres
        pt = self._truth("postgres")
        for svc, (idx, create) in sp["indexes"].items():
            out.append(FaultPlan("slow_query", "postgres", "latency", lambda r, s, idx=idx, create=create: F.Sql(
                sock, pg, "lab", f"DROP INDEX IF EXISTS {idx}", create), "slow", self._feature(svc), **pt))
        table, updater, op = sp["lock"]
        out.append(FaultPlan("lock_contention", "postgres", "latency", lambda r, s: F.Sql(
            sock, pg, "lab", f"BEGIN; LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE", "", hold=True),
            "backlog", self._feature(updater), operation=op, kind_aliases=["saturation"], **pt))
        ptarget = sp["pool_target"]
        out.append(FaultPlan("pool_exhaustion", ptarget, "saturation", lambda r, s: F.Switch(
            self.cfg.control / ptarget, {"route": "*", "mode": "leak", "ms": {"mild": 4000, "medium": 6000,
                                                                              "strong": 10000}[s]}),
            "failing", self._feature(ptarget), kind_aliases=["latency", "error"], **self._truth(ptarget)))
        dtarget = sp["dns_target"]
        out.append(FaultPlan("dns_failure", "dnsmasq", "dependency", lambda r, s: F.Hosts(
            self.workdir / "dns" / "hosts", self.pid("dnsmasq"), self.hosts(), [f"{dtarget}.{sp['zone']}"]),
            "failing", self._feature(dtarget), kind_aliases=["error"], **self._truth("dnsmasq")))
        ttarget = sp["timeout_target"]
        out.append(FaultPlan("dependency_timeout", ttarget, "latency", lambda r, s: F.Switch(
            self.cfg.control / ttarget, {"route": "*", "mode": "slow", "ms": {"mild": 1100, "medium": 1500,
                                                                              "strong": 2500}[s],
                                         "p": {"mild": 0.4, "medium": 0.7, "strong": 1.0}[s]}),
            "slow", self._feature(ttarget), kind_aliases=["dependency", "saturation", "error"],
            **self._truth(ttarget)))
        return out

    def herrings(self) -> list[Herring]:
        from lab.topologies.shop import BatchJob

        b = self.spec["batch"]
        out = [Herring(b["name"], lambda r: _Batch(self, b), batch=True)]
        for n in self.spec.get("restartable", []):
            out.append(Herring(n, lambda r, n=n: _Restart(self, n)))
        _ = BatchJob
        return out


def _dns_ready(port: int, name: str) -> bool:
    import dns.message
    import dns.query

    return bool(dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=1).answer)


class _Restart:
    def __init__(self, mesh: Mesh, name: str) -> None:
        self.mesh, self.name = mesh, name

    def apply(self) -> None:
        self.mesh.procs.pop(self.name).stop()
        time.sleep(random.uniform(0.5, 2.0))
        self.mesh._start_service(self.name)

    def remove(self) -> None:
        pass


class _Batch:
    def __init__(self, mesh: Mesh, b: dict) -> None:
        self.mesh, self.b, self.proc = mesh, b, None

    def apply(self) -> None:
        env = {"PYTHONPATH": str(REPO), "OTEL_SERVICE_NAME": self.b["name"], "LAB_NAME": self.b["name"],
               "LAB_PG": f"127.0.0.1:{self.mesh.cfg.ports.postgres}", "LAB_DB": "lab", "LAB_SQL": self.b["sql"]}
        self.proc = spawn(self.b["name"], [sys.executable, "-m", "lab.services.batch"],
                          self.mesh.cfg.logs / "batch.log", env=env, cwd=REPO)

    def remove(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None
