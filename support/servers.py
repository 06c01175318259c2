"""Real servers on free loopback ports (Redis, Postgres, MariaDB, memcached, NATS, etcd, gRPC), started and stopped here.

Each helper is a context manager yielding what clients need; the live tests wrap them as fixtures, the benches use them directly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

from support.ports import free_port
from support.process import process

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SECRET = "s3cr3t-Pa55"  # the password every server below is given: it must never reach a span


class MissingServer(RuntimeError):
    """A server binary the caller needs is not installed (a failure, never a skip)."""


def need(binary: str | Path) -> None:
    if not shutil.which(str(binary)) and not Path(binary).exists():
        raise MissingServer(f"{binary} is missing: run `make setup`")


@contextmanager
def redis_instance():
    need("redis-server")
    port = free_port()
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--requirepass", SECRET]
    with process(cmd, port) as proc:
        yield {"port": port, "password": SECRET, "pid": proc.pid}


@contextmanager
def memcached_instance():
    need("memcached")
    port = free_port()
    with process(["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "nobody"], port) as proc:
        yield {"port": port, "pid": proc.pid}


@contextmanager
def nats_instance():
    need("nats-server")
    port = free_port()
    conf = Path(tempfile.mkdtemp(prefix="guardian-nats-")) / "nats.conf"
    conf.write_text(f'authorization {{ user: guardian, password: "{SECRET}" }}\n')  # not on the command line
    try:
        with process(["nats-server", "-a", "127.0.0.1", "-p", str(port), "-c", str(conf)], port) as proc:
            yield {"port": port, "user": "guardian", "password": SECRET, "pid": proc.pid}
    finally:
        shutil.rmtree(conf.parent, ignore_errors=True)


def run_as(user: str, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", user, "--", *cmd], check=True, capture_output=True, text=True,
                          timeout=120, **kw)


@contextmanager
def postgres_instance():
    """initdb + postgres as the `postgres` user in a temp dir; TCP auth by cleartext password."""
    need(PG_BIN / "initdb")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="guardian-pg-"))
    shutil.chown(tmp, "postgres")
    pwfile = tmp / "pw"
    pwfile.write_text(SECRET + "\n")
    shutil.chown(pwfile, "postgres")
    data = tmp / "data"
    run_as("postgres", [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--pwfile", str(pwfile),
                         "--auth-local=trust", "--auth-host=password", "-E", "UTF8"])
    cmd = ["runuser", "-u", "postgres", "--", str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
           "-k", str(tmp), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=40"]
    try:
        with process(cmd, port, cwd=tmp) as proc:
            wait_pg(port)
            run_as("postgres", [str(PG_BIN / "psql"), "-h", str(tmp), "-p", str(port), "-c",
                                 "CREATE DATABASE guardian"])
            yield {"port": port, "user": "postgres", "password": SECRET, "dbname": "guardian", "pid": proc.pid,
                   "socket_dir": str(tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wait_pg(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run([str(PG_BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not become ready")


@contextmanager
def mariadb_instance():
    """mariadb-install-db + mariadbd in a temp dir; a TCP user `guardian` with a password."""
    need("mariadbd")
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="guardian-maria-"))
    data, sock = tmp / "data", tmp / "mysqld.sock"
    subprocess.run(["mariadb-install-db", f"--datadir={data}", "--user=root", "--auth-root-authentication-method=socket",
                    "--skip-test-db"], check=True, capture_output=True, timeout=120)
    cmd = ["mariadbd", "--no-defaults", f"--datadir={data}", f"--socket={sock}", f"--port={port}",
           "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
           f"--pid-file={tmp / 'pid'}", "--skip-name-resolve"]
    try:
        with process(cmd, port) as proc:
            sql = (f"CREATE DATABASE guardian; CREATE USER 'guardian'@'127.0.0.1' IDENTIFIED BY '{SECRET}';"
                   "GRANT ALL ON guardian.* TO 'guardian'@'127.0.0.1';")
            subprocess.run(["mariadb", f"--socket={sock}", "-uroot", "-e", sql], check=True, capture_output=True,
                           timeout=30)
            yield {"port": port, "user": "guardian", "password": SECRET, "database": "guardian", "pid": proc.pid,
                   "socket": str(sock)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def etcd_instance():
    need("etcd")
    port, peer = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="guardian-etcd-"))
    cmd = ["etcd", "--data-dir", str(tmp / "data"), "--listen-client-urls", f"http://127.0.0.1:{port}",
           "--advertise-client-urls", f"http://127.0.0.1:{port}", "--listen-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
           "--initial-cluster", f"default=http://127.0.0.1:{peer}", "--log-level", "error"]
    try:
        with process(cmd, port) as proc:
            yield {"port": port, "pid": proc.pid}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A gRPC server without generated code: raw-bytes handlers for /guardian.Echo/{Say,Fail}.
GRPC_SERVER = textwrap.dedent('''
    import sys
    from concurrent import futures
    import grpc
    def say(req, ctx):
        return b"echo:" + req
    def fail(req, ctx):
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    handlers = {"Say": grpc.unary_unary_rpc_method_handler(say), "Fail": grpc.unary_unary_rpc_method_handler(fail)}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("guardian.Echo", handlers),))
    server.add_insecure_port("127.0.0.1:" + sys.argv[1])
    server.start()
    server.wait_for_termination()
''')


@contextmanager
def grpc_instance():
    port = free_port()
    env = dict(os.environ, GRPC_ENABLE_FORK_SUPPORT="0")
    with process([sys.executable, "-c", GRPC_SERVER, str(port)], port, env=env) as proc:
        yield {"port": port, "pid": proc.pid}
