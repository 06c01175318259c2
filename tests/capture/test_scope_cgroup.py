"""capture.scope's cgroup names and identity: what the loader gives the kernel's scope check."""
from __future__ import annotations

import os

import pytest

from capture.scope import V2_ROOTS, Scope, cgroup_identity, in_cgroup, normalize_cgroup


def test_a_cgroup_is_named_as_proc_names_it_whatever_the_mount():
    assert normalize_cgroup("/sys/fs/cgroup/unified/a/b/") == "/a/b"
    assert normalize_cgroup("/sys/fs/cgroup/a") == "/a"
    assert normalize_cgroup("/sys/fs/cgroup/unified") == "/"
    assert normalize_cgroup("a/b") == "/a/b"
    assert Scope(cgroup="/sys/fs/cgroup/unified/x").cgroup == "/x"


def test_identity_is_the_directorys_inode_and_depth():
    root = next((r for r in V2_ROOTS if os.path.exists(f"{r}/cgroup.controllers")), None)
    if root is None:
        pytest.skip("no cgroup v2 hierarchy")
    d = os.path.join(root, f"guardian-test-id-{os.getpid()}", "inner")
    os.makedirs(d)
    try:
        ino, level = cgroup_identity(f"/guardian-test-id-{os.getpid()}/inner")
        assert (ino, level) == (os.stat(d).st_ino, 2)
        assert cgroup_identity("/")[1] == 0
        with pytest.raises(OSError):
            cgroup_identity("/guardian-test-no-such-cgroup")
    finally:
        os.rmdir(d)
        os.rmdir(os.path.dirname(d))


def test_membership_reads_the_v2_line(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("4:memory:/a/b\n0::/a/b/c\n")
    assert in_cgroup(7, "/a/b", proc=str(tmp_path))
    assert in_cgroup(7, "/", proc=str(tmp_path))
    assert not in_cgroup(7, "/a/bc", proc=str(tmp_path))
    assert not in_cgroup(7, "/x", proc=str(tmp_path))
    with pytest.raises(OSError):
        in_cgroup(8, "/a", proc=str(tmp_path))
