"""The shop's own services (demo/): certificates, the Go build, and starting each one
with its peers' addresses in the environment."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import sys
import urllib.request
from pathlib import Path

from guardian.demo.config import BUILD_CACHE, DEMO_SRC, REPO, ZONE, DemoConfig
from guardian.demo.procs import DemoError, Proc, run, spawn, wait_until


def make_certs(cfg: DemoConfig) -> Path:
    """A demo CA, a server certificate it signs (all shop.local names + 127.0.0.1), and a
    self-signed "bad" one no client trusts (the tls-failure fault)."""
    d = cfg.workdir / "certs"
    if (d / "bad.crt").exists():
        return d
    d.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    san = f"subjectAltName=DNS:*.{ZONE},IP:127.0.0.1"
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt", "-days", "30",
         "-subj", "/CN=Guardian demo CA"], "demo CA")
    run(["openssl", "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr",
         "-subj", f"/CN=*.{ZONE}"], "server key")
    (d / "ext.cnf").write_text(san + "\n")
    run(["openssl", "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "server.crt", "-days", "30", "-extfile", d / "ext.cnf"], "server cert")
    run(["openssl", "req", "-x509", *ec, "-keyout", d / "bad.key", "-out", d / "bad.crt", "-days", "30",
         "-subj", f"/CN=inventory.{ZONE}", "-addext", san], "bad cert")
    return d


def build_inventory() -> Path:
    """Compile demo/inventory with Debian's Go and lib/pq (GOPATH mode: offline), cached by
    source hash under demo/.run/bin."""
    src = DEMO_SRC / "inventory" / "main.go"
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:12]
    out = BUILD_CACHE / "bin" / "inventory"
    stamp = out.with_suffix(".sha")
    if out.exists() and stamp.exists() and stamp.read_text() == digest:
        return out
    if not shutil.which("go"):
        raise DemoError("go not found: the inventory service is Go (run `make setup`, it installs golang-go)")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", CGO_ENABLED="0",
               GOCACHE=str(BUILD_CACHE / "gocache"), GOFLAGS="")
    run(["go", "build", "-o", str(out), "main.go"], "building inventory (Go)", cwd=src.parent, env=env,
        timeout=300)
    stamp.write_text(digest)
    return out


def payments_binary() -> Path:
    """node, under the name `payments` (a symlink), so the process is called payments."""
    node = shutil.which("node")
    if not node:
        raise DemoError("node not found: the payments service is Node (v20)")
    link = BUILD_CACHE / "bin" / "payments"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or os.readlink(link) != node:
        link.unlink(missing_ok=True)
        link.symlink_to(node)
    return link


def shop_env(cfg: DemoConfig) -> dict[str, str]:
    """Peers' addresses (names in shop.local), certificates and the fault-switch directory.
    Each service also gets OTEL_SERVICE_NAME: Guardian's enricher names it by that."""
    p, certs = cfg.ports, cfg.workdir / "certs"
    return {
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "SHOP_DNS": f"127.0.0.1:{p.dns}",
        "SHOP_CONTROL": str(cfg.control),
        "SHOP_CA": str(certs / "ca.crt"),
        "SHOP_CERT": str(certs / "server.crt"),
        "SHOP_KEY": str(certs / "server.key"),
        "SHOP_BAD_CERT": str(certs / "bad.crt"),
        "SHOP_BAD_KEY": str(certs / "bad.key"),
        "SHOP_POSTGRES": f"postgres.{ZONE}:{p.postgres}",
        "SHOP_REDIS": f"redis.{ZONE}:{p.redis}",
        "SHOP_AMQP": f"rabbitmq.{ZONE}:{p.amqp}",
        "SHOP_INVENTORY": f"inventory.{ZONE}:{p.inventory}",
        "SHOP_PAYMENTS": f"payments.{ZONE}:{p.payments}",
        "SHOP_RECOMMEND": f"recommend.{ZONE}:{p.recommend}",
    }


def _https_ok(port: int, ca: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/healthz", context=ctx, timeout=2) as r:
        return r.status == 200


def _http_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
        return r.status == 200


def _grpc_ok(port: int) -> bool:
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/shop.Recommend/ForProduct", request_serializer=lambda m: json.dumps(m).encode(),
                              response_deserializer=json.loads)
        return "skus" in call({"sku": "SKU-000001"}, timeout=2)


def _py(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def start_inventory(cfg: DemoConfig, binary: Path) -> Proc:
    env = dict(shop_env(cfg), SHOP_PORT=str(cfg.ports.inventory), OTEL_SERVICE_NAME="inventory")
    proc = spawn("inventory", [str(binary)], cfg.logs / "inventory.log", env=env)
    wait_until(proc, lambda: _https_ok(cfg.ports.inventory, cfg.workdir / "certs" / "ca.crt"), 30, "inventory")
    return proc


def start_payments(cfg: DemoConfig) -> Proc:
    env = dict(shop_env(cfg), SHOP_PORT=str(cfg.ports.payments), OTEL_SERVICE_NAME="payments")
    proc = spawn("payments", [str(payments_binary()), str(DEMO_SRC / "payments" / "server.js")],
                 cfg.logs / "payments.log", env=env)
    wait_until(proc, lambda: _https_ok(cfg.ports.payments, cfg.workdir / "certs" / "ca.crt"), 30, "payments")
    return proc


def start_recommend(cfg: DemoConfig) -> Proc:
    env = dict(shop_env(cfg), SHOP_PORT=str(cfg.ports.recommend), OTEL_SERVICE_NAME="recommend")
    proc = spawn("recommend", _py("demo.recommend.server"), cfg.logs / "recommend.log", env=env, cwd=REPO)
    wait_until(proc, lambda: _grpc_ok(cfg.ports.recommend), 30, "recommend")
    return proc


def start_worker(cfg: DemoConfig) -> Proc:
    proc = spawn("order-worker", _py("demo.worker.worker"), cfg.logs / "order-worker.log",
                 env=dict(shop_env(cfg), OTEL_SERVICE_NAME="order-worker"), cwd=REPO)
    wait_until(proc, lambda: "consuming orders" in proc.tail(), 30, "order-worker")
    return proc


def start_frontend(cfg: DemoConfig) -> Proc:
    env = dict(shop_env(cfg), SHOP_PORT=str(cfg.ports.frontend), OTEL_SERVICE_NAME="frontend")
    proc = spawn("frontend", _py("demo.frontend.app"), cfg.logs / "frontend.log", env=env, cwd=REPO)
    wait_until(proc, lambda: _http_ok(cfg.ports.frontend), 30, "frontend")
    return proc


def stats_file(cfg: DemoConfig) -> Path:
    return cfg.workdir / "loadgen-stats.jsonl"


def start_loadgen(cfg: DemoConfig, every_s: float = 5.0) -> Proc:
    env = dict(shop_env(cfg), SHOP_FRONTEND_PORT=str(cfg.ports.frontend), SHOP_RATE=str(cfg.rate),
               SHOP_STATS=str(stats_file(cfg)), SHOP_STATS_EVERY=str(every_s), OTEL_SERVICE_NAME="loadgen")
    return spawn("loadgen", _py("demo.loadgen.loadgen"), cfg.logs / "loadgen.log", env=env, cwd=REPO)


def last_stats(cfg: DemoConfig, n: int = 1) -> list[dict]:
    """The load generator's last n stats lines (newest last)."""
    try:
        lines = stats_file(cfg).read_text().splitlines()
    except OSError:
        return []
    return [json.loads(x) for x in lines[-n:]]
