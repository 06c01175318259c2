"""Enricher on recorded /proc fixtures and on live processes in real cgroups."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from capture.enrich.enricher import Enricher
from capture.enrich.proc import comm_name, program_name, read_proc

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def fake_proc(root, pid: int, argv: list[str], exe: str, cgroup: str, environ: dict[str, str] | None = None):
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (d / "comm").write_text(os.path.basename(exe)[:15] + "\n")
    with open(os.path.join(FIXTURES, cgroup + ".cgroup")) as f:
        (d / "cgroup").write_text(f.read())
    (d / "environ").write_bytes(b"".join(f"{k}={v}\0".encode() for k, v in (environ or {}).items()))
    os.symlink(exe, d / "exe")


def test_program_name_sees_through_interpreters(tmp_path):
    cases = {
        ("/usr/bin/python3.11", ("python3.11", "-u", "/srv/app/checkout.py", "--port", "80")): "checkout",
        ("/usr/bin/python3.11", ("python3", "-m", "uvicorn", "main:app")): "uvicorn",
        ("/usr/bin/node", ("node", "server.js")): "server",
        ("/usr/lib/jvm/java", ("java", "-Xmx1g", "-jar", "/opt/orders.jar")): "orders",
        ("/usr/sbin/nginx", ("nginx: worker process",)): "nginx",
        ("/usr/bin/python3.11", ("python3", "-c", "print(1)")): "python",
        # a script read from stdin: its arguments are no names
        ("/usr/bin/python3.11", ("python3", "-", "55239", "30")): "python",
        ("/usr/bin/python3.11", ("python3", "-W", "ignore", "/srv/loadgen.py", "30")): "loadgen",
        # Debian's redis-server is a link to redis-check-rdb, and redis rewrites its title
        ("/usr/bin/redis-check-rdb", ("/usr/bin/redis-server 127.0.0.1:6379",)): "redis-server",
        ("/usr/lib/postgresql/15/bin/postgres", ("postgres: 15/main: checkpointer",)): "postgres",
        # one binary linked under each service's name
        ("/srv/lab/bin/svc", ("/srv/lab/by-name/notify", "/srv/lab/svc.js")): "notify",
    }
    for pid, ((exe, argv), want) in enumerate(cases.items(), start=100):
        fake_proc(tmp_path, pid, list(argv), exe, "user_session_hybrid")
        assert program_name(read_proc(pid, str(tmp_path))) == want, argv


def test_one_name_whichever_source_is_left(tmp_path):
    """A process read whole from /proc, read as it exits (a zombie: no command line, no exe
    link, its task name left) and known only by the kernel record's task name gets one name
    when that name can be told from the task name at all."""
    cases = [  # exe, argv, the kernel's task name (the file exec'd, cut at 15 bytes)
        ("/usr/bin/python3.11", ["/work/.venv/bin/python", "-c", "print(1)"], "python"),
        ("/usr/bin/python3.11", ["python3", "-", "55239", "30"], "python3"),
        ("/usr/bin/python3.11", ["python3.11", "-u"], "python3.11"),
        ("/usr/bin/node", ["node", "-e", "1"], "node"),
        ("/usr/bin/redis-check-rdb", ["/usr/bin/redis-server 127.0.0.1:6379"], "redis-server"),
        ("/usr/sbin/nginx", ["nginx: worker process"], "nginx"),
        ("/usr/bin/python3.11", ["/usr/bin/python3", "/srv/loadgen.py"], "loadgen.py"),  # run by #!
    ]
    for pid, (exe, argv, comm) in enumerate(cases, start=300):
        fake_proc(tmp_path, pid, argv, exe, "user_session_hybrid")
        alive = program_name(read_proc(pid, str(tmp_path)))
        (tmp_path / str(pid) / "cmdline").write_bytes(b"")
        (tmp_path / str(pid) / "exe").unlink()
        (tmp_path / str(pid) / "comm").write_text(comm + "\n")
        exiting = program_name(read_proc(pid, str(tmp_path)))
        assert alive == exiting == comm_name(comm), (argv, alive, exiting, comm_name(comm))


def test_a_process_reaped_mid_read_is_gone_not_unknown(tmp_path):
    """/proc read while the process is reaped (its command line already empty, its task name and
    exe link gone by the next read) names nothing: it is gone, so the capture names it by the
    kernel record's task name, and nothing is cached under its pid."""
    fake_proc(tmp_path, 26252, ["postgres: postgres guardian 127.0.0.1(5555) idle"],
              "/usr/lib/postgresql/15/bin/postgres", "user_session_hybrid")
    (tmp_path / "26252" / "cmdline").write_bytes(b"")
    (tmp_path / "26252" / "comm").unlink()
    (tmp_path / "26252" / "exe").unlink()
    assert read_proc(26252, str(tmp_path)) is None
    en = Enricher(proc_root=str(tmp_path), host_name="h")
    assert "process.executable.name" not in en.resource(26252)
    (tmp_path / "26252" / "comm").write_text("postgres\n")  # not cached: read again
    assert en.resource(26252)["process.executable.name"] == "postgres"


def test_live_client_named_alike_running_and_gone(tmp_path):
    """A Python client read while it runs and once it is a zombie (the race a client that exits
    at once puts the capture in) gets one name, and so does its task name."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdout.write('up\\n'); sys.stdout.flush(); "
                             "sys.stdin.read()"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
        running = Enricher().resource(proc.pid)
        with open(f"/proc/{proc.pid}/comm") as f:
            comm = f.read().strip()
        proc.stdin.close()  # it exits; not reaped yet: a zombie
        for _ in range(200):
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().split(") ")[1].startswith("Z"):
                    break
            time.sleep(0.01)
        zombie = Enricher().resource(proc.pid)
        assert zombie["process.command_line"] == ""  # /proc had no command line left
    finally:
        proc.kill()
        proc.wait()
    assert running["service.name"] == zombie["service.name"] == comm_name(comm) == "python"
    assert running["process.executable.name"] == zombie["process.executable.name"] == "python"


def test_resource_from_fixture_proc(tmp_path):
    fake_proc(tmp_path, 4242, ["python3", "/srv/pay.py"], "/usr/bin/python3.11", "docker_cgroupfs_v1")
    fake_proc(tmp_path, 4343, ["/usr/sbin/nginx", "-g", "daemon off;"], "/usr/sbin/nginx", "systemd_service_v2")
    fake_proc(tmp_path, 4444, ["python3", "/srv/pay.py"], "/usr/bin/python3.11", "user_session_hybrid",
              {"OTEL_SERVICE_NAME": "payments", "PATH": "/bin"})
    en = Enricher(proc_root=str(tmp_path), host_name="node-a")
    r = en.resource(4242)
    assert r == {"host.name": "node-a", "process.pid": 4242, "process.executable.name": "pay",
                 "process.command_line": "python3 /srv/pay.py", "service.name": "pay",
                 "container.id": "3f2b7c1e9a4d5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e"}
    nginx = en.resource(4343)
    assert nginx["service.name"] == "nginx" and nginx["systemd.unit"] == "nginx"
    assert "container.id" not in nginx and not any(k.startswith("k8s.") for k in nginx)
    assert en.resource(4444)["service.name"] == "payments"
    assert en.resource(999999) == {"host.name": "node-a", "process.pid": 999999, "service.name": "unknown"}


def test_cached_per_pid_until_forgotten(tmp_path):
    fake_proc(tmp_path, 7, ["python3", "/srv/a.py"], "/usr/bin/python3.11", "user_session_hybrid")
    en = Enricher(proc_root=str(tmp_path))
    first = en.resource(7)
    (tmp_path / "7" / "cmdline").write_bytes(b"python3\0/srv/b.py\0")
    assert en.resource(7) is first
    en.forget(7)
    assert en.resource(7)["service.name"] == "b"


def test_live_process_identity(tmp_path):
    script = tmp_path / "inventory_svc.py"
    script.write_text("import sys, time\nsys.stdout.write('up\\n'); sys.stdout.flush(); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"up\n"
        r = Enricher().resource(proc.pid)
        assert r["process.pid"] == proc.pid
        assert r["service.name"] == "inventory_svc" == r["process.executable.name"]
        assert r["process.command_line"] == f"{sys.executable} {script} --port 0"
    finally:
        proc.kill()
        proc.wait()


def test_live_process_in_container_and_systemd_cgroups(cgroup_process):
    cid = "ab" * 32
    with cgroup_process(f"guardian-docker/docker-{cid}.scope") as proc:
        r = Enricher().resource(proc.pid)
        assert r["container.id"] == cid and "k8s.pod.name" not in r
    with cgroup_process("system.slice/guardian-billing.service") as proc:
        r = Enricher().resource(proc.pid)
        assert r["systemd.unit"] == "guardian-billing" == r["service.name"]


def test_a_reused_pid_gets_its_new_process_name_within_check_s(tmp_path):
    fake_proc(tmp_path, 77, ["/srv/old-app"], "/srv/old-app", "user_session_hybrid")
    (tmp_path / "77" / "stat").write_text("77 (old app) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1000 0 0\n")
    en = Enricher(proc_root=str(tmp_path), check_s=0.0)
    assert en.resource(77)["process.executable.name"] == "old-app"
    assert en.resource(77)["process.executable.name"] == "old-app"  # same start time: cached
    # the old process exits and the pid comes back for another program
    import shutil
    shutil.rmtree(tmp_path / "77")
    fake_proc(tmp_path, 77, ["/srv/new-app"], "/srv/new-app", "user_session_hybrid")
    (tmp_path / "77" / "stat").write_text("77 (new) S 1 77 77 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 2000 0 0\n")
    assert en.resource(77)["process.executable.name"] == "new-app"


def test_an_exec_renames_the_live_process():
    # a shell that execs a python script keeps its pid and becomes the script
    script = "import time; time.sleep(30)"
    p = subprocess.Popen(["sh", "-c", f"sleep 0.3; exec {sys.executable} -c '{script}'"])
    try:
        en = Enricher(check_s=0.0)
        first = en.resource(p.pid)["process.executable.name"]  # "sh", or "dash" read mid-start
        time.sleep(1.0)
        assert first in ("sh", "dash") and en.resource(p.pid)["process.executable.name"] == "python"
    finally:
        p.kill()
        p.wait()
