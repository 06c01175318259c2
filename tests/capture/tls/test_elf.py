"""TLS code discovery in real ELF files: libssl, node, Go binaries (built here, also stripped)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from capture.tls import elf, procmaps, stale
from capture.tls.attach import probes_for

LIBSSL = Path("/usr/lib/x86_64-linux-gnu/libssl.so.3")


@pytest.fixture(scope="module")
def go_bins(go_binary, go_stripped):
    return go_binary, go_stripped


def _bytes_at(path: Path, vaddr: int, n: int) -> bytes:
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        return elf._read_vaddr(ELFFile(f), f, vaddr, n)


def test_dynamic_openssl_exports_every_probe_point():
    found = elf.inspect(str(LIBSSL))
    assert found.go is None and found.ssl.source == "openssl"
    assert {"SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex", "SSL_do_handshake"} <= set(found.ssl.funcs)
    library, probes = probes_for(str(LIBSSL), found)
    assert library == "openssl"
    # every read/write entry point is probed itself or seen through the internal function it calls
    probed = {p.addr for p in probes}
    assert all(a in probed or n in found.ssl.covered for n, a in found.ssl.funcs.items())
    # return probes on the wrappers probed and the internal read, none on the handshake or on the
    # internal write (it goes up at its entry)
    wrappers = [n for n in found.ssl.funcs if n != "SSL_do_handshake" and n not in found.ssl.covered]
    ret_points = {found.ssl.funcs[n] for n in wrappers} | (
        {found.ssl.internal["read"][0]} if "read" in found.ssl.internal else set())
    assert {p.addr for p in probes if p.ret} == ret_points
    assert sum(p.ret for p in probes) == len(wrappers) + ("read" in found.ssl.internal)
    # entry points are real code: endbr64 (CET) or a push/sub prologue, never zeros
    assert all(_bytes_at(LIBSSL, a, 4) != b"\0\0\0\0" for a in found.ssl.funcs.values())


def test_openssl_probes_sit_on_emulated_instructions():
    """Debian's OpenSSL 3 wrappers start with `sub rsp` (single-stepped); their internal functions
    with a push. Both directions go through those, for the _ex variants too, and no wrapper of
    theirs is probed besides (a call would go up twice). The write has no return probe."""
    found = elf.inspect(str(LIBSSL))
    assert set(found.ssl.internal) == {"read", "write"}
    assert {"SSL_read", "SSL_read_ex", "SSL_write", "SSL_write_ex"} <= set(found.ssl.covered)
    _, probes = probes_for(str(LIBSSL), found)
    for kind, (addr, out_arg) in found.ssl.internal.items():
        assert out_arg == 4 and elf.emulated(_bytes_at(LIBSSL, addr, 16), addr)
        assert [(p.fn, p.ret) for p in probes if p.addr == addr] == (
            [("tls_openssl_read_ex", False), ("tls_ssl_return", True)] if kind == "read"
            else [("tls_openssl_write_at_entry", False)])
    covered = {found.ssl.funcs[n] for n in found.ssl.covered}
    assert not covered & {p.addr for p in probes}
    assert not elf.emulated(_bytes_at(LIBSSL, found.ssl.funcs["SSL_read"], 16), found.ssl.funcs["SSL_read"])


def test_internal_call_needs_a_pointer_to_the_wrappers_stack():
    # mov rcx, rsp; movsxd rdx, edx; call +0x100 -> (target, argument 4)
    code = bytes.fromhex("4889e1") + bytes.fromhex("4863d2") + b"\xe8" + (0x100 - 11).to_bytes(4, "little", signed=True)
    assert elf._internal_call(code, 0x1000) == (0x1100, 4)
    # the same call without the stack pointer argument is no hand-over
    code = bytes.fromhex("4863d2") + b"\xe8" + (0x100 - 8).to_bytes(4, "little", signed=True)
    assert elf._internal_call(code, 0x1000) is None


def test_node_binary_embeds_openssl():
    node = shutil.which("node")
    found = elf.inspect(node)
    assert found.ssl.source == "node" and "SSL_read_ex" in found.ssl.funcs


def test_go_binary_version_and_every_ret_of_read(go_bins):
    plain, _ = go_bins
    found = elf.inspect(str(plain))
    go = found.go
    assert go.version.startswith("go1.") and not go.problem
    assert go.read and go.write and go.read != go.write
    assert len(go.read_rets) >= 1
    for addr in go.read_rets:  # each is a RET opcode inside (*Conn).Read
        assert go.read < addr and _bytes_at(plain, addr, 1) == b"\xc3"


def test_stripped_go_binary_is_located_through_gopclntab(go_bins):
    _, stripped = go_bins
    go = elf.inspect(str(stripped)).go
    assert go.version.startswith("go1.") and not go.problem and go.located_by == ".gopclntab"
    assert all(_bytes_at(stripped, addr, 1) == b"\xc3" for addr in go.read_rets)


def test_go_entry_probes_sit_on_the_prologue_jump(go_bins):
    # a uprobe on a jump is emulated by the kernel; on the first instruction (cmp/lea) it is
    # single-stepped, a second trap
    for binary in go_bins:
        go = elf.inspect(str(binary)).go
        for addr in (go.write, go.read):
            assert _bytes_at(binary, addr, 2) == b"\x0f\x86"  # jbe rel32 to morestack
        # Read's copy into the caller's buffer: one call to runtime.memmove, probed instead of its RETs
        assert len(go.read_copies) == 1 and go.read < go.read_copies[0] < max(go.read_rets)
        assert _bytes_at(binary, go.read_copies[0], 1) == b"\xe8"
        assert {p.fn for p in probes_for(str(binary), elf.TlsFile(go=go))[1]} == {
            "tls_go_write", "tls_go_read", "tls_go_read_copy"}


def test_entry_probe_point_only_moves_past_a_go_stack_check():
    small = bytes.fromhex("493b6610") + b"\x0f\x86\0\0\0\0"  # cmp rsp, [r14+16]; jbe
    big = bytes.fromhex("4c8d6424984d3b6610") + b"\x0f\x86\0\0\0\0"  # lea r12, [rsp-0x68]; cmp r12, …
    assert elf.entry_probe_point(small, 0x1000) == 0x1004
    assert elf.entry_probe_point(big, 0x1000) == 0x1009
    clobbers = bytes.fromhex("4889c3") + small  # mov rbx, rax first: arguments no longer in place
    assert elf.entry_probe_point(clobbers, 0x1000) == 0x1000
    assert elf.entry_probe_point(bytes.fromhex("4883ec18c3"), 0x1000) == 0x1000  # sub rsp, 0x18; ret


def test_ret_offsets_decode_instructions_not_bytes():
    # mov eax, 0xc3 (b8 c3 00 00 00) holds a 0xc3 byte that is no RET; then ret; int3; ret
    code = b"\xb8\xc3\x00\x00\x00\xc3\xcc\xc3"
    assert elf.ret_offsets(code, 0x1000) == [0x1005, 0x1007]


def test_non_elf_and_plain_libraries_have_no_tls(tmp_path):
    (tmp_path / "x").write_bytes(b"#!/bin/sh\n")
    assert elf.inspect(str(tmp_path / "x")) is None
    assert elf.inspect("/usr/lib/x86_64-linux-gnu/libc.so.6") is None
    assert elf.inspect(str(tmp_path / "missing")) is None


def test_maps_of_this_process_list_libc_once_by_inode():
    files = procmaps.mapped_files(os.getpid())
    libc = [m for m in files if "libc.so" in m.path]
    assert len(libc) == 1
    assert (libc[0].dev, libc[0].inode) == procmaps.file_identity(libc[0].path)
    assert procmaps.mapped_files(2 ** 22 + 12345) == []  # no such process


def test_leftover_bcc_probes_of_dead_processes_only():
    alive = os.getpid()
    text = (f"p:uprobes/p__usr_lib_libssl_so_3_0x35980_bcc_{alive} /usr/lib/libssl.so.3:0x35980\n"
            "r:uprobes/r__usr_lib_libssl_so_3_0x35980_bcc_4194000 /usr/lib/libssl.so.3:0x35980\n"
            "p:uprobes/other_tool /bin/true:0x10\n")
    assert stale.leftover_probes(text) == ["uprobes/r__usr_lib_libssl_so_3_0x35980_bcc_4194000"]


@pytest.mark.root
def test_leftover_bcc_probes_are_removed_from_tracefs():
    """A real uprobe event named as a killed BCC process leaves it is removed; one named after a
    live process stays (written the way BCC writes them: appended to uprobe_events)."""
    from capture.prereqs import tracefs_root

    root = tracefs_root()
    if os.geteuid() != 0 or root is None or not (root / "uprobe_events").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("tracefs uprobe_events is not writable here")
        pytest.skip("needs root and tracefs")
    events = root / "uprobe_events"
    target = os.path.realpath(shutil.which("true") or "/bin/true")
    dead, live = 4194001, os.getpid()
    names = [f"p__guardian_test_bcc_{dead}", f"p__guardian_test_bcc_{live}"]
    for name in names:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"p:uprobes/{name} {target}:0x0\n".encode())
        finally:
            os.close(fd)
    try:
        assert all(n in events.read_text() for n in names)
        assert stale.remove_dead_bcc_probes() >= 1
        text = events.read_text()
        assert names[0] not in text and names[1] in text
    finally:
        fd = os.open(events, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, f"-:uprobes/{names[1]}\n".encode())
        except OSError:
            pass
        finally:
            os.close(fd)


def test_entry_point_is_emulated_or_just_past_endbr64():
    push_rbx, sub_rsp, endbr = b"\x53", bytes.fromhex("4883ec18"), b"\xf3\x0f\x1e\xfa"
    assert elf.entry_point(push_rbx + sub_rsp, 0x100) == 0x100
    assert elf.entry_point(endbr + push_rbx, 0x100) == 0x104  # CET builds: the push after it
    assert elf.entry_point(sub_rsp, 0x100) is None
    assert elf.entry_point(endbr + sub_rsp, 0x100) is None
    assert not elf.emulated(bytes.fromhex("ff d0"), 0x100)  # call rax: an indirect call is single-stepped
    assert not elf.emulated(bytes.fromhex("ff 35 00 00 00 00"), 0x100)  # push qword ptr [rip]
