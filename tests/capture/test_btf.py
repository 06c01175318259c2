"""capture/btf.py against the running kernel's BTF and against bad input."""
from __future__ import annotations

import pytest

from capture import btf

needs_btf = pytest.mark.skipif(not btf.VMLINUX.exists(), reason="no /sys/kernel/btf/vmlinux")


@needs_btf
def test_offsets_the_kernel_has_kept_for_years():
    b = btf.Btf(btf.VMLINUX.read_bytes())
    # struct sock_common opens with skc_addrpair (daddr, rcv_saddr) then skc_portpair
    # (dport, num): fields inside anonymous unions/structs
    assert b.offset("sock", "__sk_common.skc_daddr") == 0
    assert b.offset("sock", "__sk_common.skc_rcv_saddr") == 4
    assert b.offset("sock", "__sk_common.skc_dport") == 12
    assert b.offset("sock", "__sk_common.skc_num") == 14
    assert b.offset("sock", "__sk_common") == 0
    assert b.offset("fdtable", "max_fds") == 0
    assert b.offset("fdtable", "fd") == 8


@needs_btf
def test_every_field_the_socket_lookup_needs_is_found():
    offsets = btf.socket_offsets()
    assert set(offsets) == set(btf.SOCKET_FIELDS)
    assert offsets["OFF_TASK_FILES"] > 0 and offsets["OFF_SK_V6_DADDR"] > offsets["OFF_SK_FAMILY"]


@needs_btf
def test_unknown_structs_fields_and_bitfields_are_refused():
    b = btf.Btf(btf.VMLINUX.read_bytes())
    with pytest.raises(btf.BtfError, match="not in BTF"):
        b.offset("no_such_struct_here", "x")
    with pytest.raises(btf.BtfError, match="no field"):
        b.offset("sock", "__sk_common.no_such_field")
    with pytest.raises(btf.BtfError, match="bitfield"):
        b.offset("sk_buff", "cloned")  # __u8 cloned:1


@pytest.mark.parametrize("data", [b"", b"\x9f\xeb", b"\x00" * 24, b"\x9f\xeb\x01\x00" + b"\xff" * 20])
def test_garbage_is_a_clear_error(data):
    with pytest.raises(btf.BtfError):
        btf.Btf(data)


@needs_btf
def test_a_truncated_btf_is_a_clear_error():
    data = btf.VMLINUX.read_bytes()
    with pytest.raises(btf.BtfError):
        btf.Btf(data[: len(data) // 2])
