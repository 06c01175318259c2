"""Container id and systemd unit from recorded /proc/PID/cgroup files of common runtimes."""
from __future__ import annotations

import os

import pytest

from capture.enrich.cgroup import cgroup_dir_by_id, cgroup_paths, container_id, systemd_unit

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.mark.parametrize("name, cid, unit", [
    ("docker_cgroupfs_v1", "3f2b7c1e9a4d5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e", "containerd"),
    ("kubelet_containerd_v2", "9e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7", None),
    ("crio_v2", "5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c", None),
    ("systemd_service_v2", None, "nginx"),
    ("user_session_hybrid", None, None),
])
def test_recorded_cgroup_files(name, cid, unit):
    with open(os.path.join(FIXTURES, name + ".cgroup")) as f:
        paths = cgroup_paths(f.read())
    assert container_id(paths) == cid
    assert systemd_unit(paths) == unit


def test_cgroup_id_resolves_to_directory(cgroup_process):
    cg = cgroup_process("guardian-cgid/leaf")
    with cg as proc:
        ino = os.stat(cg.dir).st_ino
        assert cgroup_dir_by_id(ino) == "/guardian-cgid/leaf"
        assert proc.poll() is None
