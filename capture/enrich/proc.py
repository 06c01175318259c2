"""Process identity from /proc: executable, command line, cgroups, OTEL_SERVICE_NAME.

`proc_root` is a parameter so tests can point it at recorded /proc fixtures.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from capture import scrub
from capture.enrich.cgroup import cgroup_paths

# Interpreters: the service is the script or module they run, not "python3.11". Their names
# carry versions (python3.11, python3, ruby3.1) that differ between the sources of a name
# (/proc/PID/exe, argv[0], the kernel's comm): an interpreter is always named without one.
_INTERPRETERS = {"python": "python", "pypy": "python", "node": "node", "nodejs": "node", "ruby": "ruby",
                 "perl": "perl", "php": "php", "java": "java", "bash": "bash", "sh": "sh", "deno": "deno",
                 "bun": "bun"}


@dataclass(slots=True)
class ProcInfo:
    pid: int
    executable: str  # basename of /proc/PID/exe (or comm)
    command_line: str
    argv: list[str]
    cgroups: list[str] = field(default_factory=list)
    env_service_name: str | None = None


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def read_proc(pid: int, proc_root: str = "/proc") -> ProcInfo | None:
    """None when the process is gone (or was never there)."""
    base = os.path.join(proc_root, str(pid))
    raw_cmd = _read(os.path.join(base, "cmdline"))
    comm = _read(os.path.join(base, "comm"))
    if raw_cmd is None and comm is None:
        return None
    argv = [a.decode(errors="replace") for a in (raw_cmd or b"").split(b"\0") if a]
    try:
        exe = os.path.basename(os.readlink(os.path.join(base, "exe")))
    except OSError:
        exe = ""
    exe = exe.removesuffix(" (deleted)") or (comm or b"").decode(errors="replace").strip()
    if not exe and argv:
        exe = os.path.basename(argv[0])
    if not exe:  # reaped between the reads: nothing here names it, the kernel's task name will
        return None
    cg = (_read(os.path.join(base, "cgroup")) or b"").decode(errors="replace")
    env = _read(os.path.join(base, "environ")) or b""
    svc = None
    for item in env.split(b"\0"):
        if item.startswith(b"OTEL_SERVICE_NAME="):
            svc = item.split(b"=", 1)[1].decode(errors="replace") or None
    # argv names the service (its script or module); the command line shown is scrubbed
    shown = scrub.command_line(argv) if scrub.enabled() else argv
    return ProcInfo(pid=pid, executable=exe, command_line=" ".join(shown), argv=argv,
                    cgroups=cgroup_paths(cg), env_service_name=svc)


def identity(pid: int, proc_root: str = "/proc") -> tuple | None:
    """What tells one process from another that later has the same pid, or from what the same pid
    runs after an exec: its start time (field 22 of stat) and its executable. None when gone."""
    stat = _read(os.path.join(proc_root, str(pid), "stat"))
    if stat is None:
        return None
    fields = stat[stat.rfind(b")") + 2:].split()  # comm may hold spaces and parentheses
    try:
        exe = os.readlink(os.path.join(proc_root, str(pid), "exe"))
    except OSError:
        exe = ""
    return (fields[19] if len(fields) > 19 else b"", exe)


# Interpreter options that take the next argument as their value (not a script name).
_VALUE_OPTIONS = {"-W", "-X", "-r", "--require", "-I", "--import", "--loader", "-cp", "-classpath"}
_NAME = re.compile(r"[A-Za-z][\w.+@-]*")


def _started_as(argv: list[str]) -> str | None:
    """The name the process was started by (argv[0]), as its users know it: Debian starts
    redis-server as a link to redis-check-rdb, servers rewrite their title to 'nginx: worker
    process' or 'postgres: checkpointer', a launcher links one binary under many names."""
    if not argv:
        return None
    first = argv[0].split()[0] if argv[0].split() else ""
    name = os.path.basename(first).lstrip("-").rstrip(":")
    return name if _NAME.fullmatch(name) else None


def interpreter(name: str) -> str | None:
    """The interpreter a program file or task name is, without its version, or None."""
    return _INTERPRETERS.get(name.rstrip("0123456789.-"))


def program_name(info: ProcInfo) -> str:
    """The program as its users name it: the name it was started by (not the binary a link
    points to), and for interpreters the script or module they run (`python -m app` → app);
    a script read from stdin or -c has no name of its own (the interpreter's, unversioned).
    The same rule names a process from its kernel task name alone (`comm_name`), so a process
    gets one name whether /proc was read while it ran or only its task name is left."""
    if not info.argv:  # exited (a zombie has no command line) or a kernel thread
        return comm_name(info.executable) or "unknown"
    exe = interpreter(info.executable)
    if exe is None:
        return _started_as(info.argv) or info.executable or "unknown"
    if len(info.argv) < 2:
        return exe
    args = iter(info.argv[1:])
    for arg in args:
        if arg in ("-m", "-jar"):
            mod = next(args, "")
            return os.path.basename(mod).removesuffix(".jar") or exe
        if arg in ("-c", "-e", "-", "--"):
            return exe
        if arg in _VALUE_OPTIONS:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        name = os.path.basename(arg)
        name = name.rsplit(".", 1)[0] if "." in name else name
        return name if _NAME.fullmatch(name) else exe  # '55239' is an argument, not a script
    return exe


# A script started by its own path (#!) has it as its task name: app.py runs as "app.py".
_SCRIPT_SUFFIXES = (".py", ".js", ".mjs", ".cjs", ".ts", ".rb", ".pl", ".php", ".sh")


def comm_name(comm: str) -> str:
    """program_name of a process known only by its kernel task name (it exited before /proc
    was read, or /proc showed no command line): the interpreter unversioned, a script by its
    name without its suffix, as program_name names them from a command line. A task name is cut
    at 15 bytes: a longer program name is not recovered."""
    for suffix in _SCRIPT_SUFFIXES:
        if comm.endswith(suffix) and len(comm) > len(suffix):
            name = comm[:-len(suffix)]
            return name if _NAME.fullmatch(name) else comm
    return interpreter(comm) or comm
