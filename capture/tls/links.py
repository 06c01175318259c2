"""Uprobes attached a file at a time through BPF links (BPF_TRACE_UPROBE_MULTI, Linux 6.6+).

One link holds every probe one program takes in one file; closing it removes them all after a
single wait for the probes' last runs. Uprobes attached one by one as perf events (what BCC
does) wait once each, a large part of a stop's time with a few dozen TLS probes
(tests/capture/tls/test_tls_stop.py). Not here: which probes a file takes (capture/tls/attach.py).
"""
from __future__ import annotations

import ctypes
import os
import struct
from itertools import groupby

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type (include/uapi/linux/bpf.h)
BPF_F_UPROBE_MULTI_RETURN = 1
_LINK_CREATE = 28
_NR_BPF = 321  # x86_64
_ATTR_SIZE = 128
# union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, then uprobe_multi's
# path, offsets, ref_ctr_offsets, cookies (pointers), cnt, flags, pid
_LINK_ATTR = struct.Struct("<IIIIQQQQIII")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Unsupported(Exception):
    """The kernel cannot load a program for uprobe_multi links: attach probes one by one."""


def file_offsets(path: str, vaddrs: list[int]) -> list[int]:
    """File offsets of virtual addresses in an ELF file (uprobes are placed by offset)."""
    with open(path, "rb") as f:
        try:
            segs = [(s["p_vaddr"], s["p_filesz"], s["p_offset"]) for s in ELFFile(f).iter_segments("PT_LOAD")]
        except (ELFError, ValueError) as e:
            raise OSError(f"{path}: {e}") from e
    out = []
    for v in vaddrs:
        seg = next((s for s in segs if s[0] <= v < s[0] + s[1]), None)
        if seg is None:
            raise OSError(f"{path}: address {v:#x} is in no loaded segment")
        out.append(v - seg[0] + seg[2])
    return out


def program_fd(bpf, fn: str) -> int:
    """`fn` loaded for uprobe_multi links (once; bcc.BPF keeps it by name)."""
    from bcc import BPF

    try:
        return bpf.load_func(fn, BPF.KPROBE, attach_type=BPF_TRACE_UPROBE_MULTI).fd
    except Exception as e:  # noqa: BLE001 — BCC raises bare Exception; the cache's loader OSError
        raise Unsupported(str(e)) from e


def link(prog_fd: int, path: str, offsets: list[int], ret: bool, pid: int) -> int:
    """One uprobe_multi link of `prog_fd` at `offsets` in `path`; returns its fd."""
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _LINK_ATTR.pack_into(attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0, ctypes.addressof(path_buf),
                         ctypes.addressof(offs), 0, 0, len(offsets),
                         BPF_F_UPROBE_MULTI_RETURN if ret else 0, max(pid, 0))
    fd = _libc.syscall(_NR_BPF, _LINK_CREATE, attr, _ATTR_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"uprobe_multi link on {path}: {os.strerror(err)}")
    return int(fd)


def attach_file(bpf, path: str, probes: list, pid: int) -> tuple[list[int], list, list[tuple[list, str]]]:
    """Link `probes` (capture.tls.attach.Probe, all in `path`), one link per program and kind.
    Returns the link fds, the probes attached, and the groups that failed with why."""
    fds, attached, failed = [], [], []
    key = lambda p: (p.fn, p.ret)  # noqa: E731
    offsets = dict(zip([p.addr for p in probes], file_offsets(path, [p.addr for p in probes])))
    for (fn, ret), group in groupby(sorted(probes, key=key), key=key):
        group = list(group)
        prog = program_fd(bpf, fn)
        try:
            fds.append(link(prog, path, [offsets[p.addr] for p in group], ret, pid))
            attached += group
        except OSError as e:
            failed.append((group, str(e)))
    return fds, attached, failed


def close(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
