"""Uprobes attached one by one (capture/tls/uprobe.py, the path without uprobe_multi links) say
"no reference counter", as links do: a link at the same place is then accepted (the kernel
refuses probes that disagree on it, as with bcc's own attach_uprobe, which passes a garbage
offset), and the probed library's bytes in a process that maps it are left alone."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from elftools.elf.elffile import ELFFile

from support.live import ebpf_or_skip

pytestmark = pytest.mark.ebpf

HOLD = "import ctypes, sys, time; ctypes.CDLL(sys.argv[1]); print('mapped', flush=True); time.sleep(60)"
SPAN = 4096  # the ELF header's page: where a small garbage offset lands


def mapped_head(pid: int, path: str) -> bytes:
    """The first page of `path` as the process `pid` sees it in memory."""
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5] == path and int(parts[2], 16) == 0:
                start = int(parts[0].split("-")[0], 16)
                with open(f"/proc/{pid}/mem", "rb") as mem:
                    mem.seek(start)
                    return mem.read(SPAN)
    raise AssertionError(f"{path} is not mapped by {pid}")


def test_one_by_one_uprobes_take_no_reference_counter(tmp_path):
    ebpf_or_skip()
    from bcc import BPF

    from capture.tls import elf, links, uprobe

    # a private copy no process maps yet: other agents on the host find TLS files through the
    # processes that map them, and put their own probes on them
    lib = tmp_path / "libssl.so.3"
    shutil.copy(os.path.realpath("/lib/x86_64-linux-gnu/libssl.so.3"), lib)
    with open(lib, "rb") as f:
        funcs = elf.ssl_library(ELFFile(f), str(lib)).funcs
    bpf = BPF(text=b"int entry(struct pt_regs *ctx) { return 0; }\n"
                   b"int leave(struct pt_regs *ctx) { return 0; }\n")
    programs = links.Programs(bpf)
    holder = None
    fds: list[int] = []
    try:
        for name in ("SSL_write", "SSL_read"):
            uprobe.attach(bpf, str(lib), funcs[name], "entry")
            uprobe.attach(bpf, str(lib), funcs[name], "leave", ret=True)
        assert bpf.num_open_uprobes() == 4
        try:
            offsets = links.file_offsets(str(lib), [funcs["SSL_write"], funcs["SSL_read"]])
            fds.append(links.link(programs.fd("entry"), str(lib), offsets, False, -1))
        except links.Unsupported:
            pass  # no uprobe_multi links on this kernel: nothing to agree with
        holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lib)], stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "mapped"
        with open(lib, "rb") as f:
            on_disk = f.read(SPAN)
        in_memory = mapped_head(holder.pid, str(lib))
        changed = [i for i in range(SPAN) if on_disk[i] != in_memory[i]]
        assert not changed, f"bytes changed at offsets {changed}"
        for name in ("SSL_write", "SSL_read"):  # BCC's own detach finds them by their event names
            bpf.detach_uprobe(name=os.fsencode(lib), addr=funcs[name])
            bpf.detach_uretprobe(name=os.fsencode(lib), addr=funcs[name])
        assert bpf.num_open_uprobes() == 0
    finally:
        links.close(fds)
        programs.close()
        bpf.cleanup()
        if holder is not None:
            holder.kill()
            holder.wait()
