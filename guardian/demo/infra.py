"""Real servers from Debian, each on its own loopback port with a private data dir:
PostgreSQL, Redis, RabbitMQ (with its own epmd) and dnsmasq (the shop.local zone)."""
from __future__ import annotations

import glob
import os
import shutil
import socket
from pathlib import Path

from guardian.demo.config import DEMO_SRC, ZONE, DemoConfig
from guardian.demo.procs import DemoError, Proc, port_open, run, spawn, wait_until

SERVICE_HOSTS = ("frontend", "inventory", "payments", "recommend", "postgres", "redis", "rabbitmq")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise DemoError(f"PostgreSQL's {name} not found under /usr/lib/postgresql (run `make setup`)")
    return found[-1]


def start_postgres(cfg: DemoConfig) -> Proc:
    """initdb (trust auth, no fsync: throwaway data), start postgres, create and seed `shop`."""
    data = cfg.workdir / "postgres"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        # postgres refuses to run as root, so the Debian `postgres` user owns the cluster.
        run([_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync",
             "-E", "UTF8"], "initdb", user="postgres", cwd="/tmp")
    argv = [_pg_bin("postgres"), "-D", str(data), "-p", str(cfg.ports.postgres), "-k", str(data),
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off", "-c", "max_connections=100", "-c", "shared_buffers=64MB"]
    proc = spawn("postgres", argv, cfg.logs / "postgres.log", user="postgres", cwd="/tmp",
                 env={"OTEL_SERVICE_NAME": "postgres"})
    proc.stop_signal = 2  # SIGINT: fast shutdown
    wait_until(proc, lambda: _pg_ready(cfg), 60, "postgres")
    _pg_seed(cfg)
    return proc


def _pg_ready(cfg: DemoConfig) -> bool:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=cfg.ports.postgres, user="postgres",
                         dbname="postgres", connect_timeout=2):
        return True


def _pg_seed(cfg: DemoConfig) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=cfg.ports.postgres, user="postgres",
                         dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = 'shop'").fetchone():
            return
        conn.execute("CREATE DATABASE shop")
    with psycopg.connect(host="127.0.0.1", port=cfg.ports.postgres, user="postgres",
                         dbname="shop", autocommit=True) as conn:
        conn.execute((DEMO_SRC / "sql" / "schema.sql").read_text())


def start_redis(cfg: DemoConfig) -> Proc:
    d = cfg.workdir / "redis"
    d.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--port", str(cfg.ports.redis), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(d), "--daemonize", "no",
            # its process title would overwrite the environment, where OTEL_SERVICE_NAME lives
            "--set-proc-title", "no"]
    proc = spawn("redis", argv, cfg.logs / "redis.log", env={"OTEL_SERVICE_NAME": "redis"})
    wait_until(proc, lambda: _redis_ping(cfg.ports.redis), 20, "redis")
    return proc


def _redis_ping(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")


def start_rabbitmq(cfg: DemoConfig) -> list[Proc]:
    """epmd in the foreground (so it stops with us), then a private rabbit node."""
    d = cfg.workdir / "rabbitmq"
    (d / "mnesia").mkdir(parents=True, exist_ok=True)
    (d / "enabled_plugins").write_text("[].\n")
    (d / "rabbitmq.conf").write_text(
        f"listeners.tcp.default = 127.0.0.1:{cfg.ports.amqp}\n"
        "loopback_users = none\n"
        "disk_free_limit.absolute = 50MB\n"
    )
    env = {
        "HOME": str(d),  # the erlang cookie lives here, not in root's home
        "ERL_EPMD_PORT": str(cfg.ports.epmd),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": f"shopdemo{cfg.ports.amqp}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(cfg.ports.amqp),
        "RABBITMQ_DIST_PORT": str(cfg.ports.amqp_dist),
        "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
        "RABBITMQ_LOG_BASE": str(d / "log"),
        "RABBITMQ_LOGS": "-",
        "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
        "RABBITMQ_PID_FILE": str(d / "rabbit.pid"),
        "OTEL_SERVICE_NAME": "rabbitmq",
    }
    epmd = spawn("epmd", ["epmd", "-port", str(cfg.ports.epmd), "-address", "127.0.0.1"],
                 cfg.logs / "epmd.log", env=env)
    wait_until(epmd, lambda: port_open(cfg.ports.epmd), 10, "epmd")
    server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin") or "rabbitmq-server"
    proc = spawn("rabbitmq", [server], cfg.logs / "rabbitmq.log", env=env, cwd=str(d))
    wait_until(proc, lambda: _amqp_ready(cfg.ports.amqp), 120, "rabbitmq")
    return [proc, epmd]


def _amqp_ready(port: int) -> bool:
    """The AMQP port accepts and answers a protocol header with Connection.Start."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"AMQP\x00\x00\x09\x01")
        return s.recv(8)[:1] == b"\x01"


def hosts_file(cfg: DemoConfig) -> Path:
    return cfg.workdir / "dns" / "hosts"


def write_hosts(cfg: DemoConfig, missing: tuple[str, ...] = ()) -> None:
    """The zone dnsmasq serves; names in `missing` are left out (they answer NXDOMAIN)."""
    lines = [f"127.0.0.1 {h}.{ZONE}" for h in SERVICE_HOSTS if h not in missing]
    path = hosts_file(cfg)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def start_dnsmasq(cfg: DemoConfig) -> Proc:
    """A private DNS server for shop.local only: no upstream, no /etc/hosts, 1 s TTLs."""
    hosts_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    write_hosts(cfg)
    argv = ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
            f"--port={cfg.ports.dns}", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", f"--addn-hosts={hosts_file(cfg)}", f"--local=/{ZONE}/",
            "--local-ttl=1", "--user=root", "--log-facility=-"]
    proc = spawn("dnsmasq", argv, cfg.logs / "dnsmasq.log", env={"OTEL_SERVICE_NAME": "dnsmasq"})
    wait_until(proc, lambda: _dns_ready(cfg.ports.dns), 15, "dnsmasq")
    return proc


def _dns_ready(port: int) -> bool:
    import dns.message
    import dns.query

    q = dns.message.make_query(f"frontend.{ZONE}", "A")
    return bool(dns.query.udp(q, "127.0.0.1", port=port, timeout=1).answer)
