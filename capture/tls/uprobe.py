"""One uprobe as one perf event (what BCC's attach_uprobe does), with libbcc's real prototype.

bcc's Python declares bpf_attach_uprobe with six arguments; the C function takes a seventh,
ref_ctr_offset (a USDT semaphore's offset in the file), which then comes from whatever the
stack holds: the kernel increments the 16-bit value at that offset in every process that maps
the probed file (the ELF header when it is small). Here it is 0: no semaphore. Used where
uprobe_multi links cannot be made (capture/tls/links.py); detached with BCC's own
detach_uprobe / detach_uretprobe, which find the event by the same name.
"""
from __future__ import annotations

import ctypes
import os

_PROBE_ENTRY, _PROBE_RETURN = 0, 1  # enum bpf_probe_attach_type (libbpf.h)
_attach = None


def _attach_fn():
    global _attach
    if _attach is None:
        from bcc import libbcc

        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                 ctypes.c_char_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint32)
        _attach = proto(("bpf_attach_uprobe", libbcc.lib))
    return _attach


def attach(bpf, path: str, addr: int, fn_name: str, pid: int = -1, ret: bool = False) -> None:
    """Attach program `fn_name` of `bpf` (a bcc.BPF) at virtual address `addr` of `path`, at the
    function's return with `ret`. Raises OSError when the kernel refuses."""
    from bcc import BPF

    file_path, offset = BPF._check_path_symbol(os.fsencode(path), b"", addr, pid)
    bpf._check_probe_quota(1)
    fn = bpf.load_func(fn_name.encode(), BPF.KPROBE)
    ev_name = bpf._get_uprobe_evname(b"r" if ret else b"p", file_path, offset, pid)
    fd = _attach_fn()(fn.fd, _PROBE_RETURN if ret else _PROBE_ENTRY, ev_name, file_path, offset, pid, 0)
    if fd < 0:
        raise OSError(f"uprobe {fn_name} at {path}:{addr:#x} not attached")
    bpf._add_uprobe_fd(ev_name, fd)
