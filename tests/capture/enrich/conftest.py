"""Real processes in real cgroups (cgroup v2), named the way container runtimes name them."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import pytest


def cgroup2_root() -> str:
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt
    pytest.fail("no cgroup2 hierarchy mounted")


class CgroupProcess:
    """A sleeping Python process moved into <cgroup2>/<rel>; killed and its cgroup removed on exit."""

    def __init__(self, rel: str, argv: list[str] | None = None, env: dict[str, str] | None = None):
        self.dir = os.path.join(cgroup2_root(), rel.strip("/"))
        self.rel = "/" + rel.strip("/")
        self.argv = argv or [sys.executable, "-c", "import time; time.sleep(60)"]
        self.env = env

    def __enter__(self) -> subprocess.Popen:
        self.created = []
        path = self.dir
        while not os.path.isdir(path):
            self.created.append(path)
            path = os.path.dirname(path)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = subprocess.Popen(self.argv, env=self.env)
        with open(os.path.join(self.dir, "cgroup.procs"), "w") as f:
            f.write(str(self.proc.pid))
        return self.proc

    def __exit__(self, *exc) -> None:
        self.proc.kill()
        self.proc.wait(5)
        for path in self.created:  # deepest first; only what __enter__ made
            for _ in range(50):  # the kernel frees the cgroup shortly after the last task exits
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


def new_container_id() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def cgroup_process():
    return CgroupProcess
