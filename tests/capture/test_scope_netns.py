"""What the loader gives the kernel's scope check for a network namespace (bpf/scope.h): the
namespace's inode, compiled in only where BTF gives the offsets the check reads."""
from __future__ import annotations

import os

import pytest

from capture import btf, loader


def test_a_netns_scope_is_its_inode_and_compiled_in_with_the_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "_socket_offsets", lambda cache_dir: {"OFF_TASK_NSPROXY": 1, "OFF_NSPROXY_NET": 2,
                                                                      "OFF_NET_INUM": 3})
    ld = loader.Loader(netns="/proc/self/ns/net", cache_dir=str(tmp_path))
    assert "-DSCOPE_NETNS=1" in ld.cflags and "-DSCOPE_CGROUP=0" in ld.cflags
    assert ld._scope_leaf() == (0, 0, os.stat("/proc/self/ns/net").st_ino)
    assert loader.Loader(cache_dir=str(tmp_path))._scope_leaf() is None  # unscoped: no map to fill


def test_without_the_offsets_the_namespace_is_left_to_userspace(tmp_path, monkeypatch):
    monkeypatch.setattr(loader, "_socket_offsets", lambda cache_dir: {})
    ld = loader.Loader(netns="/proc/self/ns/net", cache_dir=str(tmp_path))
    assert "-DSCOPE_NETNS=0" in ld.cflags and ld._scope_leaf() is None and not ld.kernel_netns


def test_a_missing_namespace_is_an_error(tmp_path):
    with pytest.raises(OSError):
        loader.Loader(netns=str(tmp_path / "no-such-netns"), cache_dir=str(tmp_path))


def test_the_running_kernel_names_the_fields_the_check_reads():
    if not btf.VMLINUX.exists():
        pytest.skip("no BTF")
    offsets = btf.socket_offsets()
    assert {"OFF_TASK_NSPROXY", "OFF_NSPROXY_NET", "OFF_NET_INUM"} <= set(offsets)
