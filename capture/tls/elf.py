"""What TLS code an ELF file holds: SSL_* symbols (OpenSSL, BoringSSL, node), BoringSSL without
symbols (grpcio: found by its code, capture/tls/boringssl.py) or Go crypto/tls.

Reads symbols with pyelftools (hash tables when present: node exports ~75k symbols), Go
functions of stripped binaries from .gopclntab, and with capstone the RET instructions of Go's
(*Conn).Read and the internal functions OpenSSL's SSL_read/SSL_write call (probed instead of
the wrappers where they start with an emulated instruction). Never executes the file.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import capstone
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.hash import ELFHashSection, GNUHashSection

from capture.tls import boringssl, gopclntab

# Entry programs in bpf/guardian.bpf.c are tls_<source>_<suffix>; all share one return probe.
SSL_FUNCS = {
    "SSL_write": "write",
    "SSL_read": "read",
    "SSL_write_ex": "write_ex",
    "SSL_write_ex2": "write_ex2",
    "SSL_read_ex": "read_ex",
    "SSL_do_handshake": "handshake",
}
GO_WRITE = "crypto/tls.(*Conn).Write"
GO_READ = "crypto/tls.(*Conn).Read"
GO_MEMMOVE = "runtime.memmove"  # copy(): how (*Conn).Read hands the plaintext to its caller
GO_BUILDINFO_MAGIC = b"\xff Go buildinf:"
MIN_GO = (1, 17)  # register ABI on amd64: the probes read arguments from registers


@dataclass(slots=True)
class SslLib:
    """SSL_* entry points of a library or a binary that links one statically."""
    source: str  # "openssl", "boringssl" or "node": the tls.library attribute
    funcs: dict[str, int] = field(default_factory=dict)  # SSL_* name -> virtual address
    problem: str = ""  # why it cannot be probed, else ""
    located_by: str = "symbols"  # or "heuristic": BoringSSL without symbols (capture/tls/boringssl.py)
    # "read"/"write" -> (where, n): the internal function SSL_read and SSL_read_ex (SSL_write and
    # SSL_write_ex[2]) call, probed instead of them at `where`, its entry or just past an endbr64
    # (see `internal_calls`); its argument n is the size_t * of bytes done
    internal: dict[str, tuple[int, int]] = field(default_factory=dict)
    covered: tuple[str, ...] = ()  # SSL_* functions whose calls the internal probes see


@dataclass(slots=True)
class GoTls:
    """crypto/tls of a Go binary: Write entry, Read entry and every RET of Read.

    `write` and `read` are where the entry probes go: the stack-check jump of the prologue
    when there is one (see `entry_probe_point`), else the function's first instruction.
    `read_copies`: the calls to runtime.memmove inside Read (its inlined bytes.Reader.Read
    copying plaintext into the caller's buffer); a probe there sees the bytes and their count
    on a call, which the kernel emulates, where a RET probe costs a single-stepped trap on
    every Read, those that return nothing included. Empty: the RETs are probed instead.
    """
    version: str
    write: int = 0
    read: int = 0
    read_rets: list[int] = field(default_factory=list)
    read_copies: list[int] = field(default_factory=list)
    problem: str = ""  # why it cannot be probed ("go1.16 stack ABI", "no RET"), else ""
    located_by: str = ""  # ".symtab", or ".gopclntab" for a stripped binary


def _dynsym_lookup(elf: ELFFile, names) -> dict[str, int]:
    for hash_name in (".gnu.hash", ".hash"):
        sec = elf.get_section_by_name(hash_name)
        if isinstance(sec, (GNUHashSection, ELFHashSection)):
            out = {}
            for name in names:
                sym = sec.get_symbol(name)
                if sym is not None and sym["st_value"] and sym["st_shndx"] != "SHN_UNDEF":
                    out[name] = sym["st_value"]
            return out
    return _scan_symbols(elf, ".dynsym", set(names))


def _name_offsets(strtab: bytes, names) -> dict[int, str]:
    """String-table offsets at which each name starts (a name may be stored more than once)."""
    out = {}
    for name in names:
        needle = b"\0" + name.encode() + b"\0"
        i = strtab.find(needle)
        while i >= 0:
            out[i + 1] = name
            i = strtab.find(needle, i + 1)
    return out


def _scan_symbols(elf: ELFFile, section: str, names, sizes: bool = False) -> dict:
    """Defined symbols among `names` in a symbol table without a hash (.symtab).

    Decodes the raw Elf64_Sym array: some files hold hundreds of thousands of symbols and
    walking them as pyelftools objects takes seconds each.
    """
    sec = elf.get_section_by_name(section)
    out: dict = {}
    if sec is None or sec["sh_type"] not in ("SHT_SYMTAB", "SHT_DYNSYM") or not elf.little_endian:
        return out
    wanted = _name_offsets(elf.get_section(sec["sh_link"]).data(), names)
    if not wanted:
        return out
    for st_name, _info, _other, shndx, value, size in struct.iter_unpack("<IBBHQQ", sec.data()):
        name = wanted.get(st_name)
        if name is not None and value and shndx != 0:  # 0: SHN_UNDEF
            out[name] = (value, size) if sizes else value
    return out


def ssl_library(elf: ELFFile, path: str) -> SslLib | None:
    """SSL_* functions the file defines (exports or, failing that, its .symtab)."""
    funcs = _dynsym_lookup(elf, SSL_FUNCS)
    if "SSL_write" not in funcs:
        funcs = _scan_symbols(elf, ".symtab", set(SSL_FUNCS))
    if "SSL_write" not in funcs or "SSL_read" not in funcs:
        return _boringssl_without_symbols(elf)
    if _dynsym_lookup(elf, ["BORINGSSL_self_test"]) or "boringssl" in path.lower():
        source = "boringssl"
    elif _dynsym_lookup(elf, ["napi_create_object"]):
        source = "node"
    else:
        source = "openssl"
    lib = SslLib(source, funcs)
    internal_calls(elf, lib)
    return lib


# Instructions the kernel's uprobes emulate on x86-64 (arch/x86/kernel/uprobes.c): a probe on any
# other runs a copy of it single-stepped, a debug trap that costs tens of times more in a VM
# (`python -m bench.uprobe_cost`).
_JCC = {"jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja", "js", "jns", "jp", "jnp", "jl", "jge", "jle", "jg"}
_RELATIVE = {"call", "jmp"} | _JCC  # emulated with an immediate target only
_REG = re.compile(r"[re]?[a-z0-9]{2,3}[dwb]?")
_OUT_ARG_REGS = {"rcx": 4, "r8": 5}  # System V: the 4th and 5th integer arguments
_OUT_PTR = re.compile(r"(?:mov (rcx|r8), rsp|lea (rcx|r8), \[rsp(?: \+ 0x[0-9a-f]+)?\])")
_READ_FAMILY = {"read": ("SSL_read", ("SSL_read_ex",)), "write": ("SSL_write", ("SSL_write_ex", "SSL_write_ex2"))}


def emulated(code: bytes, addr: int) -> bool:
    """Whether the instruction at `addr` (the start of `code`) is one the kernel emulates: a push
    of a register, a call or jump to an immediate address."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insn = next(md.disasm(code[:16], addr, 1), None)
    if insn is None:
        return False
    if insn.mnemonic == "push":
        return bool(_REG.fullmatch(insn.op_str))
    return insn.mnemonic in _RELATIVE and insn.op_str.startswith("0x")


def entry_point(code: bytes, addr: int) -> int | None:
    """Where an entry probe (and a uretprobe) of the C function at `addr` can sit on an emulated
    instruction: its first, or the one after an `endbr64` (CET builds), which moves neither the
    arguments nor the stack pointer; None when neither is emulated."""
    if emulated(code, addr):
        return addr
    if code[:4] == b"\xf3\x0f\x1e\xfa" and emulated(code[4:], addr + 4):  # endbr64
        return addr + 4
    return None


def _internal_call(code: bytes, addr: int) -> tuple[int, int] | None:
    """(target, n) of the first direct call in a wrapper's `code` whose argument n is set from
    the stack pointer just before it (OpenSSL's SSL_read: `mov rcx, rsp; ...; call
    ssl_read_internal`, the wrapper's own size_t of bytes read), or None."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    out_arg = 0
    for insn in md.disasm(code, addr, 24):
        if insn.mnemonic == "ret" or insn.mnemonic == "jmp":
            return None
        m = _OUT_PTR.fullmatch(f"{insn.mnemonic} {insn.op_str}")
        if m:
            out_arg = _OUT_ARG_REGS[m[1] or m[2]]
        elif insn.mnemonic == "call":
            return (int(insn.op_str, 16), out_arg) if out_arg and insn.op_str.startswith("0x") else None
    return None


def _reaches(code: bytes, addr: int, target: int) -> bool:
    """Whether `code` (a short wrapper) calls or jumps to `target` among its first instructions."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return any(insn.mnemonic in ("call", "jmp") and insn.op_str == hex(target)
               for insn in md.disasm(code, addr, 24))


def internal_calls(elf: ELFFile, lib: SslLib) -> None:
    """Where OpenSSL's SSL_read and SSL_write hand over to ssl_read_internal/ssl_write_internal.

    The wrappers start with `sub rsp`, which uprobes single-step, and their results need a
    uretprobe; the internal function (entered by a `push`, emulated) takes the same buffer and
    length and a size_t * of bytes done, for the _ex variants too. Probing it once instead of the
    wrappers sees every call for the cost of an emulated trap and a uretprobe. Used only when
    SSL_read's code calls it with a pointer to its own stack, the internal function starts with
    an emulated instruction, and every _ex variant reaches the same function (else the
    wrappers are probed as before, and never both: a call would be reported twice)."""
    stream = elf.stream
    for kind, (plain, variants) in _READ_FAMILY.items():
        addr = lib.funcs.get(plain)
        if not addr:
            continue
        found = _internal_call(_read_vaddr(elf, stream, addr, 96), addr)
        if found is None:
            continue
        target, out_arg = found
        if kind == "read" and out_arg != 4:  # the read programs take the pointer as argument 4
            continue
        probe_at = entry_point(_read_vaddr(elf, stream, target, 20), target)
        if probe_at is None:
            continue
        present = [v for v in variants if v in lib.funcs]
        if not all(_reaches(_read_vaddr(elf, stream, lib.funcs[v], 96), lib.funcs[v], target) for v in present):
            continue
        lib.internal[kind] = (probe_at, out_arg)
        lib.covered += (plain, *present)


def _boringssl_without_symbols(elf: ELFFile) -> SslLib | None:
    """BoringSSL linked in with no symbols left (grpcio's extension), found by its code."""
    try:
        funcs = boringssl.locate(elf)
    except boringssl.Refused as e:
        return SslLib("boringssl", problem=f"BoringSSL without symbols not located: {e}",
                      located_by="heuristic")
    return SslLib("boringssl", funcs, located_by="heuristic") if funcs else None


def _go_version(elf: ELFFile, stream) -> str | None:
    """The Go release that built the file ("go?" when unknown), None when it is no Go binary."""
    sec = elf.get_section_by_name(".go.buildinfo")
    if sec is None:
        return "go?" if any(elf.get_section_by_name(n) for n in gopclntab.SECTIONS) else None
    data = sec.data()[:512]
    if not data.startswith(GO_BUILDINFO_MAGIC):
        return "go?"
    if not data[15] & 2:  # before go1.18: a pointer to runtime.buildVersion, a Go string
        return _pointed_version(elf, stream, data)
    n, shift, i = 0, 0, 32
    while i < len(data):  # uvarint length, then the string
        b = data[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    return data[i:i + n].decode("ascii", "replace")


def _pointed_version(elf: ELFFile, stream, buildinfo: bytes) -> str:
    """runtime.buildVersion through the pre-go1.18 .go.buildinfo: tells go1.16 from go1.17."""
    if buildinfo[14] != 8 or buildinfo[15] & 1:  # 8-byte little-endian pointers only
        return "go?"
    (header,) = struct.unpack_from("<Q", buildinfo, 16)
    raw = _read_vaddr(elf, stream, header, 16)  # the string header: data pointer, length
    if len(raw) != 16:
        return "go?"
    ptr, n = struct.unpack("<QQ", raw)
    text = _read_vaddr(elf, stream, ptr, n) if 0 < n <= 64 else b""
    return text.decode("ascii", "replace") if text.startswith(b"go") else "go?"


def _at_least(version: str, minimum: tuple[int, int]) -> bool:
    m = re.match(r"go(\d+)\.(\d+)", version)
    return bool(m) and (int(m[1]), int(m[2])) >= minimum


def _read_vaddr(elf: ELFFile, stream, vaddr: int, size: int) -> bytes:
    for seg in elf.iter_segments("PT_LOAD"):
        start = seg["p_vaddr"]
        if start <= vaddr and vaddr + size <= start + seg["p_filesz"]:
            stream.seek(seg["p_offset"] + vaddr - start)
            return stream.read(size)
    return b""


def ret_offsets(code: bytes, addr: int) -> list[int]:
    """Addresses of the RET instructions in `code` (x86-64), which starts at `addr`."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = True  # Go pads functions with int3: keep decoding past odd bytes
    return [insn.address for insn in md.disasm(code, addr) if insn.mnemonic == "ret"]


# Go's stack-check prologues: `cmp rsp, [r14+16]` (small frames) or `lea r12, [rsp-N];
# cmp r12, [r14+16]`, then `jbe` to morestack. Neither touches an argument register.
_GO_PROLOGUE = re.compile(r"(lea r12, \[rsp - 0x[0-9a-f]+\]; )?cmp (rsp|r12), qword ptr \[r14 \+ 0x10\]; ")


def entry_probe_point(code: bytes, addr: int) -> int:
    """Where to put the entry uprobe of the Go function whose code starts `code` at `addr`.

    A uprobe on an instruction the kernel cannot emulate executes a copy of it single-stepped:
    a second trap, several times the cost of a jump or a push, which the kernel emulates
    (`python -m bench.tls` measures the cost per request). So the probe goes on the prologue's `jbe` to morestack, with
    the arguments still in their registers; like the entry itself, it runs again when the
    function restarts after growing its stack. Any other prologue keeps the entry.
    """
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    seen = ""
    for insn in md.disasm(code[:32], addr, 3):
        if insn.mnemonic == "jbe":
            return insn.address if _GO_PROLOGUE.fullmatch(seen) else addr
        seen += f"{insn.mnemonic} {insn.op_str}; "
    return addr


def calls_to(code: bytes, addr: int, target: int) -> list[int]:
    """Addresses of the direct `call target` instructions in `code` (x86-64), which starts at `addr`."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = True
    return [insn.address for insn in md.disasm(code, addr)
            if insn.mnemonic == "call" and insn.op_str == hex(target)]


def _go_funcs(elf: ELFFile) -> tuple[dict[str, tuple[int, int]], str]:
    """(*Conn).Write, Read and runtime.memmove as name -> (entry, end), from .symtab or,
    stripped, .gopclntab."""
    names = {GO_WRITE, GO_READ, GO_MEMMOVE}
    if elf.get_section_by_name(".symtab") is not None:
        syms = _scan_symbols(elf, ".symtab", names, sizes=True)
        return {name: (addr, addr + size) for name, (addr, size) in syms.items()}, ".symtab"
    funcs = gopclntab.functions(elf, names)
    return {name: (f.entry, f.end) for name, f in funcs.items()}, ".gopclntab"


def go_tls(elf: ELFFile, stream) -> GoTls | None:
    """Go crypto/tls probe points, or None when the file is no Go binary with crypto/tls."""
    version = _go_version(elf, stream)
    if version is None:
        return None
    try:
        funcs, located_by = _go_funcs(elf)
    except gopclntab.PclntabError as e:
        return GoTls(version, problem=f"stripped, and its .gopclntab is unreadable: {e}")
    if GO_READ not in funcs or GO_WRITE not in funcs:
        return None  # a Go program without TLS
    if version != "go?" and not _at_least(version, MIN_GO):
        return GoTls(version, problem=f"{version} uses the stack ABI (needs go1.17+)",
                     located_by=located_by)
    (write, _), (read, read_end) = funcs[GO_WRITE], funcs[GO_READ]
    read_code = _read_vaddr(elf, stream, read, read_end - read)
    rets = ret_offsets(read_code, read)
    if not rets:
        return GoTls(version, problem="no RET found in (*Conn).Read", located_by=located_by)
    copies = calls_to(read_code, read, funcs[GO_MEMMOVE][0]) if GO_MEMMOVE in funcs else []
    write = entry_probe_point(_read_vaddr(elf, stream, write, 32), write)
    return GoTls(version, write, entry_probe_point(read_code, read), rets, copies, located_by=located_by)


@dataclass(slots=True)
class TlsFile:
    ssl: SslLib | None = None
    go: GoTls | None = None


def inspect(path: str) -> TlsFile | None:
    """TLS code in the ELF file at `path`, or None (not ELF, unreadable, no TLS)."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            f.seek(0)
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_X86_64":
                return None
            go = go_tls(elf, f)
            ssl = None if go else ssl_library(elf, path)
    except (OSError, ELFError, ValueError):
        return None
    if go is None and ssl is None:
        return None
    return TlsFile(ssl, go)
