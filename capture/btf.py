"""Field offsets of kernel structs, read from the running kernel's BTF (/sys/kernel/btf/vmlinux).

BCC compiles against the headers it finds, which on this machine kind are an older
kernel's (see DESIGN.md): struct layouts there need not match the running kernel, so the
BPF code never dereferences kernel structs through those headers. Where it must read a
kernel struct (the socket behind a file descriptor, capture/loader.py), it gets each field's
offset from BTF instead, the kernel's own description of its types, passed in as -D flags.

The BTF format (Documentation/bpf/btf.rst): a header, then type records (struct btf_type:
name_off, info = kind << 24 | vlen, size-or-type; then kind-specific data) numbered from 1,
then the string section. Only what offsets need is decoded: struct/union members (bit
offsets, bitfields in kind_flag form), typedef/const/volatile chains, anonymous members.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")

_HEADER = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")
_MEMBER = struct.Struct("<III")
STRUCT, UNION = 4, 5
_MODIFIERS = {8, 9, 10, 11, 18}  # typedef, volatile, const, restrict, type_tag: follow `type`
# bytes after struct btf_type, by kind: fixed, or per vlen entry
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}
_EXTRA_PER_ENTRY = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}


class BtfError(ValueError):
    pass


class Btf:
    def __init__(self, data: bytes) -> None:
        try:
            self._parse(data)
        except (struct.error, IndexError, ValueError, UnicodeDecodeError) as e:
            if isinstance(e, BtfError):
                raise
            raise BtfError(f"malformed BTF: {e}") from e

    def _parse(self, data: bytes) -> None:
        if len(data) < _HEADER.size:
            raise BtfError("BTF too short")
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HEADER.unpack_from(data)
        if magic != 0xEB9F:
            raise BtfError(f"not BTF (magic {magic:#x})")
        self._strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)]  # id 0 is void
        self._by_name: dict[tuple[int, str], int] = {}
        self._data = data
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = _TYPE.unpack_from(data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            body = pos + _TYPE.size
            extra = _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ENTRY.get(kind, 0) * vlen
            self.types.append((kind, vlen, size_or_type, body, info >> 31))
            if kind in (STRUCT, UNION) and name_off:
                self._by_name.setdefault((kind, self._string(name_off)), len(self.types) - 1)
            pos = body + extra
        if pos != end:
            raise BtfError("BTF type section does not parse to its end")

    def _string(self, off: int) -> str:
        return self._strings[off:self._strings.index(b"\0", off)].decode()

    def _resolve(self, type_id: int) -> int:
        for _ in range(32):
            kind, _, size_or_type, _, _ = self.types[type_id]
            if kind not in _MODIFIERS:
                return type_id
            type_id = size_or_type
        raise BtfError("type chain too long")

    def _members(self, type_id: int):
        kind, vlen, _, body, kind_flag = self.types[type_id]
        for i in range(vlen):
            name_off, member_type, offset = _MEMBER.unpack_from(self._data, body + i * _MEMBER.size)
            bits = offset & 0xFFFFFF if kind_flag else offset
            bitfield = offset >> 24 if kind_flag else 0
            yield (self._string(name_off) if name_off else ""), member_type, bits, bitfield

    def _find(self, type_id: int, field: str) -> tuple[int, int] | None:
        """(bit offset, type id) of `field` in struct/union `type_id`, looking into
        anonymous members."""
        for name, member_type, bits, bitfield in self._members(type_id):
            if name == field:
                if bitfield or bits % 8:
                    raise BtfError(f"{field} is a bitfield")
                return bits, member_type
            if not name:
                inner = self._resolve(member_type)
                if self.types[inner][0] in (STRUCT, UNION):
                    found = self._find(inner, field)
                    if found is not None:
                        return bits + found[0], found[1]
        return None

    def offset(self, struct_name: str, field_path: str) -> int:
        """Byte offset of `field_path` ("a.b.c": members of nested structs) in `struct struct_name`."""
        type_id = self._by_name.get((STRUCT, struct_name))
        if type_id is None:
            raise BtfError(f"struct {struct_name} not in BTF")
        total = 0
        for part in field_path.split("."):
            found = self._find(type_id, part)
            if found is None:
                raise BtfError(f"struct {struct_name}: no field {field_path}")
            bits, member_type = found
            total += bits // 8
            type_id = self._resolve(member_type)
        return total


# What sock_from_fd (bpf/sockfd.h) reads: task -> files -> fd table -> file -> socket -> sock,
# and the scope's network-namespace check (bpf/scope.h): task -> nsproxy -> net -> ns.inum, as -D
# names for the BPF compiler.
SOCKET_FIELDS = {
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_NSPROXY_NET": ("nsproxy", "net_ns"),
    "OFF_NET_INUM": ("net", "ns.inum"),
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FILE_INODE": ("file", "f_inode"),
    "OFF_FILE_PRIVATE": ("file", "private_data"),
    "OFF_INODE_MODE": ("inode", "i_mode"),
    "OFF_INODE_INO": ("inode", "i_ino"),
    "OFF_SOCKET_SK": ("socket", "sk"),
    "OFF_SOCKET_TYPE": ("socket", "type"),
    "OFF_SK_FAMILY": ("sock", "__sk_common.skc_family"),
    "OFF_SK_NUM": ("sock", "__sk_common.skc_num"),
    "OFF_SK_DPORT": ("sock", "__sk_common.skc_dport"),
    "OFF_SK_DADDR": ("sock", "__sk_common.skc_daddr"),
    "OFF_SK_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "OFF_SK_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "OFF_SK_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
}


@lru_cache(maxsize=1)
def socket_offsets(path: Path = VMLINUX) -> dict[str, int]:
    """The offsets sock_from_fd needs; empty when BTF is missing or lacks one of them
    (the kernel side then leaves unknown sockets' addresses to /proc, as before)."""
    try:
        btf = Btf(path.read_bytes())
        return {name: btf.offset(s, f) for name, (s, f) in SOCKET_FIELDS.items()}
    except (OSError, BtfError):
        return {}
