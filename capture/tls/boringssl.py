"""Finds BoringSSL's SSL_write, SSL_read and SSL_do_handshake in a binary without symbols.

grpcio links BoringSSL statically into its extension and keeps no SSL_* symbol. Two kinds of
evidence, independent of each other, must point at the same function, or nothing is found:

1. grpc's TSI code calls the function and logs a fixed message about it on failure
   (src/core/tsi/ssl_transport_security{,_utils}.cc, e.g. `SSL_write(...)` then
   `LOG(ERROR) << "SSL_write failed with error "`, or gpr_log's "SSL_write failed with
   error %s." before grpc 1.6x): the candidates are the direct call targets of every
   function that references a string starting so (or whose .cold part does).
2. BoringSSL's ssl/ssl_lib.cc raises errors with OPENSSL_PUT_ERROR(SSL, reason), compiled to
   ERR_put_error(ERR_LIB_SSL, 0, reason, "<path>/ssl/ssl_lib.cc", __LINE__): the lea of
   the file name with the immediates in EDI and EDX tells which reasons a function raises.
   SSL_write raises SSL_R_UNINITIALIZED and SSL_R_BAD_LENGTH itself; SSL_read raises
   ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED (SSL_peek's QUIC check) and SSL_R_UNINITIALIZED
   (ssl_read_impl) itself or through at most two direct calls, but never SSL_R_BAD_LENGTH;
   SSL_do_handshake raises SSL_R_CONNECTION_TYPE_NOT_SET itself.

Function boundaries come from .eh_frame_hdr (every C++ function has an unwind entry), so a
result is always a function start. Reason codes are BoringSSL's public ABI (include/openssl/
ssl.h, err.h); line numbers, which change with every release, are not used. Checked on
grpcio 1.62, 1.70 and 1.85 wheels; about a second for grpcio's 17 MB extension, once per file.
"""
from __future__ import annotations

import bisect
import re
import struct
from dataclasses import dataclass, field

import capstone
from elftools.elf.elffile import ELFFile

SSL_LIB_FILE = b"/ssl/ssl_lib.cc\x00"  # the end of __FILE__, whatever the build path
ERR_LIB_SSL = 16
ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED = 66  # 2 | ERR_R_FATAL
SSL_R_BAD_LENGTH = 111
SSL_R_CONNECTION_TYPE_NOT_SET = 134
SSL_R_UNINITIALIZED = 226


@dataclass(frozen=True, slots=True)
class Signature:
    """How one function is recognised: who logs about it, and what it raises (see module doc)."""
    logged_as: tuple[bytes, ...]  # how grpc TSI log messages about a failed call start
    raises: frozenset[int]  # reasons it (or its callees, within `depth` calls) raises
    never: frozenset[int] = frozenset()  # reasons it must not raise itself
    depth: int = 0


SIGNATURES = {
    "SSL_write": Signature((b"SSL_write failed with error ",),
                           frozenset({SSL_R_UNINITIALIZED, SSL_R_BAD_LENGTH})),
    "SSL_read": Signature((b"SSL_read failed with error ",),
                          frozenset({ERR_R_SHOULD_NOT_HAVE_BEEN_CALLED, SSL_R_UNINITIALIZED}),
                          never=frozenset({SSL_R_BAD_LENGTH}), depth=2),
    "SSL_do_handshake": Signature((b"Handshake failed with ",
                                   b"Unexpected error received from first SSL_do_handshake call: "),
                                  frozenset({SSL_R_CONNECTION_TYPE_NOT_SET})),
}
REQUIRED = ("SSL_write", "SSL_read")  # without these no plaintext: refuse the file


class Refused(Exception):
    """The binary holds BoringSSL but the evidence does not name one function per role."""


def locate(elf: ELFFile) -> dict[str, int] | None:
    """SSL_* name -> address of what the signatures find; None when there is no BoringSSL.

    Raises Refused when the file holds ssl_lib.cc but SSL_write or SSL_read is not found
    exactly once: a wrong address would probe the wrong function. SSL_do_handshake may be
    missing: a memory-BIO SSL* is then tied at its first SSL_write/SSL_read, whose bytes are lost.
    """
    rodata = elf.get_section_by_name(".rodata")
    if rodata is None or SSL_LIB_FILE not in rodata.data():
        return None
    image = Image(elf)
    found = {}
    for name, sig in SIGNATURES.items():
        matches = sorted(c for c in image.callees_of_loggers(sig.logged_as) if image.matches(c, sig))
        if len(matches) == 1:
            found[name] = matches[0]
        elif name in REQUIRED:
            raise Refused(f"{name}: {len(matches)} functions match "
                          f"({', '.join(hex(m) for m in matches[:4])})")
    return found


@dataclass(slots=True)
class Function:
    start: int
    size: int
    insns: list = field(default_factory=list)  # capstone instructions
    calls: set[int] = field(default_factory=set)  # direct call targets
    jumps_out: set[int] = field(default_factory=set)  # jmp/jcc targets outside the function
    raises: set[int] = field(default_factory=set)  # ERR_LIB_SSL reasons raised from ssl_lib.cc


class Image:
    """The code of one ELF file: its function table (.eh_frame_hdr), strings and leas."""

    def __init__(self, elf: ELFFile) -> None:
        self.sections = {}
        for name in (".text", ".rodata", ".eh_frame_hdr", ".eh_frame"):
            sec = elf.get_section_by_name(name)
            if sec is None:
                raise Refused(f"no {name} section")
            self.sections[name] = (sec["sh_addr"], sec.data())
        self.starts, self.sizes = _fde_table(self.sections[".eh_frame_hdr"], self.sections[".eh_frame"])
        rodata_addr, rodata = self.sections[".rodata"]
        self.ssl_lib_files = frozenset(  # where each string ending in SSL_LIB_FILE starts
            rodata_addr + rodata.rfind(b"\0", 0, tail - rodata_addr) + 1
            for tail in self.strings(SSL_LIB_FILE))
        self._leas: dict[int, list[int]] | None = None
        self._funcs: dict[int, Function | None] = {}
        self._md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)

    def strings(self, needle: bytes) -> list[int]:
        """Addresses of `needle` in .rodata (a string may be the tail of another one)."""
        addr, data = self.sections[".rodata"]
        out, i = [], data.find(needle)
        while i >= 0:
            out.append(addr + i)
            i = data.find(needle, i + 1)
        return out

    def string_starts(self, prefix: bytes) -> list[int]:
        """Strings that start with `prefix` ("… error %s." with gpr_log, "… error " with absl LOG)."""
        addr, data = self.sections[".rodata"]
        return [a for a in self.strings(prefix) if a == addr or data[a - addr - 1] == 0]

    def callees_of_loggers(self, messages: tuple[bytes, ...]) -> set[int]:
        """Direct call targets of the functions that reference one of `messages`.

        A message logged on an error path often sits in the caller's .cold part (a separate
        unwind entry): the part jumps back into the middle of its parent, whose calls count
        too; a jump to a function's start is a tail call, which counts as a call. The loggers
        themselves are no candidates: they wrap the call (grpc's DoSslRead).
        """
        loggers: set[int] = set()
        for message in messages:
            for addr in self.string_starts(message):
                loggers |= self.referrers(addr)
        callees, wrappers = set(), set(loggers)
        for start in loggers:
            f = self.function(start)
            tail_calls = {t for t in f.jumps_out if self.function(t)}
            parents = {p.start for p in map(self.function_at, f.jumps_out - tail_calls) if p}
            callees |= tail_calls
            for g in (f, *map(self.function, parents)):
                callees |= g.calls
            wrappers |= parents
        return callees - wrappers

    def matches(self, start: int, sig: Signature) -> bool:
        f = self.function(start)
        if f is None or f.raises & sig.never:
            return False
        reached, level = set(f.raises), {start}
        for _ in range(sig.depth):
            level = {c for s in level for c in self.function(s).calls if self.function(c)}
            for c in level:
                reached |= self.function(c).raises
        return sig.raises <= reached

    def referrers(self, target: int) -> set[int]:
        """Starts of the functions holding a `lea reg, [rip + disp]` of `target`."""
        if self._leas is None:
            self._leas = _lea_targets(*self.sections[".text"])
        out = set()
        for at in self._leas.get(target, ()):
            f = self.function_at(at)
            if f is not None and any(i.address == at and i.mnemonic == "lea" for i in f.insns):
                out.add(f.start)  # a real instruction, not bytes inside another one
        return out

    def function_at(self, addr: int) -> Function | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i < 0 or addr >= self.starts[i] + self.sizes[i]:
            return None
        return self.function(self.starts[i])

    def function(self, start: int) -> Function | None:
        """The function starting exactly at `start` (decoded once), None if none does."""
        if start not in self._funcs:
            i = bisect.bisect_left(self.starts, start)
            text_addr, text = self.sections[".text"]
            if i == len(self.starts) or self.starts[i] != start or start < text_addr:
                self._funcs[start] = None
                return None
            f = Function(start, self.sizes[i])
            code = text[start - text_addr:start - text_addr + f.size]
            f.insns = list(self._md.disasm(code, start))
            _summarize(f, self.ssl_lib_files)
            self._funcs[start] = f
        return self._funcs[start]


def _fde_table(hdr_sec, frame_sec) -> tuple[list[int], list[int]]:
    """Function starts and sizes from .eh_frame_hdr's sorted table and each FDE's pc_range.

    Handles the encoding every x86-64 toolchain emits (table: datarel sdata4; FDE pc_begin:
    pcrel sdata4); anything else is refused rather than misread.
    """
    hdr_addr, hdr = hdr_sec
    frame_addr, frame = frame_sec
    if len(hdr) < 12 or hdr[0] != 1 or hdr[2] != 0x03 or hdr[3] != 0x3B:
        raise Refused(f".eh_frame_hdr encoding {hdr[:4].hex()} not handled")
    (count,) = struct.unpack_from("<I", hdr, 8)
    if 12 + 8 * count > len(hdr):
        raise Refused(f".eh_frame_hdr too short for {count} entries")
    table = struct.unpack_from(f"<{2 * count}i", hdr, 12)
    starts, sizes = [], []
    for i in range(count):
        start, fde = hdr_addr + table[2 * i], hdr_addr + table[2 * i + 1]
        off = fde - frame_addr
        if not 0 <= off <= len(frame) - 16:
            raise Refused(f"FDE at {fde:#x} outside .eh_frame")
        pc_begin, pc_range = struct.unpack_from("<iI", frame, off + 8)
        if fde + 8 + pc_begin != start:
            raise Refused(f"FDE at {fde:#x}: pc_begin encoding not handled")
        starts.append(start)
        sizes.append(pc_range)
    return starts, sizes


# lea r64, [rip + disp32]: REX.W (+R), 8D, ModRM with mod=00 r/m=101. Lookahead: overlapping hits.
_LEA_RIP = re.compile(rb"(?=[\x48\x4c]\x8d[\x05\x0d\x15\x1d\x25\x2d\x35\x3d])", re.S)


def _lea_targets(text_addr: int, text: bytes) -> dict[int, list[int]]:
    """Byte-pattern candidates (may start mid-instruction: callers confirm by disassembly)."""
    out: dict[int, list[int]] = {}
    for m in _LEA_RIP.finditer(text):
        i = m.start()
        if i + 7 <= len(text):
            target = text_addr + i + 7 + struct.unpack_from("<i", text, i + 3)[0]
            out.setdefault(target, []).append(text_addr + i)
    return out


# ERR_put_error's argument registers, by every name an instruction may write them under
_ARG_REGS = {r: "edi" for r in ("rdi", "edi", "di", "dil")} | \
            {r: "edx" for r in ("rdx", "edx", "dx", "dl")} | \
            {r: "rcx" for r in ("rcx", "ecx", "cx", "cl")}


def _summarize(f: Function, ssl_lib_files: frozenset[int]) -> None:
    """Direct calls, jumps leaving the function, and OPENSSL_PUT_ERROR(SSL, …) sites of ssl_lib.cc.

    A put-error site is a call made while EDI holds ERR_LIB_SSL and RCX the file name, both
    set since the previous call or branch; EDX then holds the reason.
    """
    end = f.start + f.size
    regs: dict[str, int | None] = {}
    for insn in f.insns:
        m, ops = insn.mnemonic, insn.op_str
        dest, _, src = ops.partition(", ")
        if m == "call":
            target = _number(ops)
            if target is not None:
                f.calls.add(target)
            reason = regs.get("edx")
            if regs.get("edi") == ERR_LIB_SSL and regs.get("rcx") in ssl_lib_files and reason is not None:
                f.raises.add(reason)
            regs.clear()
        elif m.startswith("j") or m == "ret":
            target = _number(ops)
            if target is not None and not f.start <= target < end:
                f.jumps_out.add(target)
            regs.clear()
        elif dest in _ARG_REGS:
            if m == "mov" and dest in ("edi", "edx"):
                regs[_ARG_REGS[dest]] = _number(src)
            elif m == "lea" and dest == "rcx" and src.startswith("[rip + "):
                regs["rcx"] = insn.address + insn.size + int(src[len("[rip + "):-1], 0)
            else:
                regs.pop(_ARG_REGS[dest], None)


def _number(op: str) -> int | None:
    try:
        return int(op, 0)
    except ValueError:
        return None
