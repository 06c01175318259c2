"""Uprobes attached a file at a time through BPF links (BPF_TRACE_UPROBE_MULTI, Linux 6.6+).

One link holds every probe one program takes in one file; closing it removes them all after a
single wait for the probes' last runs. Uprobes attached one by one as perf events (what BCC
does) wait once each, a large part of a stop's time with a few dozen TLS probes
(tests/capture/tls/test_tls_stop.py). The kernel refuses a link where a uprobe made another way
sits at the same place with another reference-counter offset (another tool's, or an agent using
bcc's own attach_uprobe, which passes a garbage one): those probes are attached one by one. Not here: which probes a file takes
(capture/tls/attach.py).
"""
from __future__ import annotations

import ctypes
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from capture.bpfcache import _ATTR_SIZE, _bpf, load_program

BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type (include/uapi/linux/bpf.h)
BPF_F_UPROBE_MULTI_RETURN = 1
_LINK_CREATE = 28
# union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, then uprobe_multi's
# path, offsets, ref_ctr_offsets, cookies (pointers), cnt, flags, pid
_LINK_ATTR = struct.Struct("<IIIIQQQQIII")


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


class Programs:
    """The TLS programs loaded for uprobe_multi links, apart from bcc.BPF's own copies (which
    stay loadable for probes attached one by one: a program is loaded for one or the other)."""

    def __init__(self, bpf) -> None:
        self.bpf = bpf
        self.fds: dict[str, int] = {}

    def fd(self, fn: str) -> int:
        if fn not in self.fds:
            self.fds[fn] = self._load(fn)
        return self.fds[fn]

    def _load(self, fn: str) -> int:
        from bcc import BPF

        image = getattr(self.bpf, "image", None)
        try:
            if image is not None:  # loaded from the compile cache (capture/bpfcache.py)
                return load_program(fn, BPF.KPROBE, image.patched(fn, self.bpf.map_fds), image.license,
                                    image.kern_version, BPF_TRACE_UPROBE_MULTI)
            from bcc.libbcc import lib

            name = fn.encode()
            start = lib.bpf_function_start(self.bpf.module, name)
            if not start:
                raise OSError(f"no program {fn}")
            fd = lib.bcc_func_load(self.bpf.module, BPF.KPROBE, name, start,
                                   lib.bpf_function_size(self.bpf.module, name),
                                   lib.bpf_module_license(self.bpf.module),
                                   lib.bpf_module_kern_version(self.bpf.module), 0, None, 0, None,
                                   BPF_TRACE_UPROBE_MULTI)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, f"program {fn}: {os.strerror(err)}")
            return fd
        except OSError as e:
            raise Unsupported(str(e)) from e

    def close(self) -> None:
        close(list(self.fds.values()))
        self.fds.clear()


def link(prog_fd: int, path: str, offsets: list[int], ret: bool, pid: int) -> int:
    """One uprobe_multi link of `prog_fd` at `offsets` in `path` (pid <= 0: every process);
    returns its fd."""
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _LINK_ATTR.pack_into(attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0, ctypes.addressof(path_buf),
                         ctypes.addressof(offs), 0, 0, len(offsets),
                         BPF_F_UPROBE_MULTI_RETURN if ret else 0, max(pid, 0))
    try:
        return _bpf(_LINK_CREATE, attr)
    except OSError as e:
        raise OSError(e.errno, f"uprobe_multi link on {path}: {e.strerror}") from e


def attach_file(programs: Programs, path: str, probes: list, pid: int) -> tuple[list[int], list, list]:
    """Link `probes` (capture.tls.attach.Probe, all in `path`), one link per program and kind.
    Returns the link fds, the probes attached, and the probes whose link the kernel refused
    (a probe at the same place made another way: bcc tools, an older agent)."""
    fds, attached, refused = [], [], []
    key = lambda p: (p.fn, p.ret)  # noqa: E731
    offsets = dict(zip([p.addr for p in probes], file_offsets(path, [p.addr for p in probes])))
    for (fn, ret), group in groupby(sorted(probes, key=key), key=key):
        group = list(group)
        prog = programs.fd(fn)
        try:
            fds.append(link(prog, path, [offsets[p.addr] for p in group], ret, pid))
            attached += group
        except OSError:
            refused += group
    return fds, attached, refused


def close(fds: list[int]) -> None:
    """Close links side by side: each close waits for the kernel to retire its probes, and one
    after the other they grow a stop's time with every file probed (test_tls_stop.py)."""
    def one(fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    if len(fds) <= 1:
        for fd in fds:
            one(fd)
        return
    with ThreadPoolExecutor(min(64, len(fds))) as pool:
        list(pool.map(one, fds))
