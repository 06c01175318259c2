"""Go's own function table (.gopclntab): function name -> entry and end address.

The Go runtime needs this table for tracebacks and garbage collection, so it survives
`go build -ldflags="-s -w"` and `strip`, which remove .symtab: it is how functions are found
in stripped Go binaries. Reads the header, the functab and the names only, never the
line, file or pc-value tables. Little-endian files with 8-byte pointers (amd64) only.
Format: Go's src/debug/gosym/pclntab.go and runtime/symtab.go (pcHeader, functab, _func).

Header (runtime.pcHeader), offsets from the start of the table:

    0  magic u32 | 0 u8 | 0 u8 | pc quantum u8 | pointer size u8
    8  words of pointer size: nfunc, nfiles, [textStart, go1.18+ only], funcnameOffset,
       cuOffset, filetabOffset, pctabOffset, pclnOffset

At pclnOffset the functab: nfunc pairs (entry, funcoff), then one more entry, the end of the
last function. funcoff points (from pclnOffset) at the function's _func record, which starts
with its entry again and then nameoff (i32), the offset of its NUL-terminated name in the
funcname table. go1.18+ stores entries as u32 offsets from textStart and funcoff as u32;
go1.16/1.17 both as absolute pointers. go1.2-1.15 has no offset words: functab at byte 16,
_func records and names both relative to the start of the table.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Iterator

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile

# Go's internal linker names it .data.rel.ro.gopclntab in PIE builds (it holds relocations
# there); with an external linker (cgo) it has no section of its own: see tables()
SECTIONS = (".gopclntab", ".data.rel.ro.gopclntab")
NAMEOFF = struct.Struct("<i")
AMD64_HEADER = b"\0\0\x01\x08"  # after the magic: two zero bytes, pc quantum 1, 8-byte pointers


class PclntabError(ValueError):
    """A .gopclntab this reader cannot use (unknown magic, 32-bit, cut short, inconsistent)."""


@dataclass(frozen=True, slots=True)
class Layout:
    go: str  # the Go releases that write this format
    offsets: bool  # entries are u32 offsets from textStart (header word 2), funcoff u32
    names_word: int | None  # header word holding funcnameOffset; None: names from the table start
    funcs_word: int | None  # header word holding pclnOffset; None: functab at 16, _func from the start


LAYOUTS = {  # by magic
    0xFFFFFFF1: Layout("go1.20+", True, 3, 7),
    0xFFFFFFF0: Layout("go1.18-1.19", True, 3, 7),
    0xFFFFFFFA: Layout("go1.16-1.17", False, 2, 6),
    0xFFFFFFFB: Layout("go1.2-1.15", False, None, None),
}


@dataclass(frozen=True, slots=True)
class GoFunc:
    entry: int  # virtual address of the first instruction
    end: int  # the next function's entry: [entry, end) includes the int3 padding after it


def tables(elf: ELFFile) -> Iterator[bytes]:
    """Candidate pclntabs, from their header on: the section when the Go linker named one, else
    each header found in non-code data (an external linker merges it into .data.rel.ro)."""
    for name in SECTIONS:
        sec = elf.get_section_by_name(name)
        if sec is not None and sec["sh_type"] == "SHT_PROGBITS":
            yield sec.data()
            return
    for sec in elf.iter_sections():
        if sec["sh_type"] != "SHT_PROGBITS" or not sec["sh_flags"] & SH_FLAGS.SHF_ALLOC \
                or sec["sh_flags"] & SH_FLAGS.SHF_EXECINSTR:
            continue
        data = sec.data()
        for magic in LAYOUTS:
            header = struct.pack("<I", magic) + AMD64_HEADER
            i = data.find(header)
            while i >= 0:
                yield data[i:]
                i = data.find(header, i + 1)


def layout(data: bytes) -> Layout:
    """The table's format, from its magic; PclntabError for what this reader does not read."""
    if len(data) < 16:
        raise PclntabError("shorter than its header")
    magic, zeros, ptr_size = struct.unpack_from("<I2sxB", data)
    found = LAYOUTS.get(magic)
    if found is None or zeros != b"\0\0":
        raise PclntabError(f"unknown magic {magic:#x} (big-endian or not a pclntab)")
    if ptr_size != 8:
        raise PclntabError(f"{ptr_size}-byte pointers: 64-bit binaries only")
    return found


def functions(elf: ELFFile, names: Iterable[str] | None = None) -> dict[str, GoFunc]:
    """Go functions of the file by name (all, or only those in `names`); {} without a pclntab."""
    error = None
    for data in tables(elf):
        try:
            return parse(data, names)
        except PclntabError as e:  # a look-alike header in data: try the next one
            error = error or e
    if error is not None:
        raise error
    return {}


def parse(data: bytes, names: Iterable[str] | None = None) -> dict[str, GoFunc]:
    """Functions in a raw pclntab (from its header to at least the end of the table)."""
    fmt = layout(data)

    def word(i: int) -> int:
        return struct.unpack_from("<Q", data, 8 + 8 * i)[0]

    nfunc = word(0)
    if fmt.funcs_word is None:
        names_at, funcs_at, functab_at = 0, 0, 16
    else:
        names_at, funcs_at = word(fmt.names_word), word(fmt.funcs_word)
        functab_at = funcs_at
    base = word(2) if fmt.offsets else 0
    if fmt.offsets and not base:  # left to a relocation: .text is no stand-in (cgo puts C first)
        raise PclntabError("textStart is 0 in the file")
    field = "I" if fmt.offsets else "Q"
    size = struct.calcsize(field)
    if not 0 < nfunc < len(data) or functab_at + (2 * nfunc + 1) * size > len(data):
        raise PclntabError(f"{nfunc} functions do not fit in {len(data)} bytes")
    table = struct.unpack_from(f"<{2 * nfunc + 1}{field}", data, functab_at)
    entries, funcoffs = table[0::2], table[1::2]  # entries has nfunc + 1: the last is the end
    wanted = None if names is None else _name_offsets(data, names_at, names)
    out: dict[str, GoFunc] = {}
    for i, funcoff in enumerate(funcoffs):
        at = funcs_at + funcoff
        if at + size + 4 > len(data):
            raise PclntabError(f"_func of function {i} past the end")
        (nameoff,) = NAMEOFF.unpack_from(data, at + size)
        if wanted is None:
            stop = data.find(b"\0", names_at + nameoff)
            if stop < 0:
                raise PclntabError(f"name of function {i} not terminated")
            name = data[names_at + nameoff:stop].decode("utf-8", "replace")
        else:
            name = wanted.get(nameoff)
        # the _func repeats the entry: a mismatch means a misread table (a probe put on a wrong
        # address would corrupt the traced program). Checked on the first and on those returned.
        if (i == 0 or name is not None) and struct.unpack_from(f"<{field}", data, at)[0] != entries[i]:
            raise PclntabError(f"function {i}: functab and _func disagree on the entry")
        if name is None:
            continue
        # a name stored twice is a function and its ABI wrapper (Go <-> assembly calling
        # convention); functab is in address order and the definition comes first
        out.setdefault(name, GoFunc(base + entries[i], base + entries[i + 1]))
    return out


def _name_offsets(data: bytes, names_at: int, names: Iterable[str]) -> dict[int, str]:
    """Offsets in the funcname table at which each name is stored (NUL-terminated)."""
    out = {}
    for name in names:
        raw = name.encode() + b"\0"
        if data.startswith(raw, names_at):
            out[0] = name
        i = data.find(b"\0" + raw, names_at)
        while i >= 0:
            out[i + 1 - names_at] = name
            i = data.find(b"\0" + raw, i + 1)
    return out
