"""Go's .gopclntab read from real binaries built here: stripped ones against their unstripped twin."""
from __future__ import annotations

import itertools
import shutil
import struct
import time

import pytest
from elftools.elf.elffile import ELFFile

from capture.tls import elf, gopclntab
from support import tls_targets as targets


@pytest.fixture(scope="module")
def stripped(go_stripped):
    return go_stripped


@pytest.fixture(scope="module")
def pie_stripped(go_dir):
    # PIE keeps the table in .data.rel.ro.gopclntab (it carries relocations there)
    return targets.build_go(go_dir / "pie-stripped", strip=True, pie=True)


def _symtab_funcs(path) -> dict[str, tuple[int, int]]:
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".symtab")
        return {s.name: (s["st_value"], s["st_size"]) for s in sec.iter_symbols()
                if s["st_info"]["type"] == "STT_FUNC"}


def _functions(path, names=None) -> dict[str, gopclntab.GoFunc]:
    with open(path, "rb") as f:
        return gopclntab.functions(ELFFile(f), names)


def test_stripped_binary_names_every_crypto_tls_function_of_its_unstripped_twin(go_binary, stripped):
    with open(stripped, "rb") as f:
        assert ELFFile(f).get_section_by_name(".symtab") is None
    funcs = _functions(stripped)
    assert len(funcs) > 4000  # thousands of functions (how long it takes is a benchmark's matter)
    syms = _symtab_funcs(go_binary)
    tls = {name: sym for name, sym in syms.items() if name.startswith("crypto/tls.")}
    assert len(tls) > 300 and elf.GO_READ in tls and elf.GO_WRITE in tls
    for name, (entry, size) in tls.items():
        assert funcs[name].entry == entry, name
        assert funcs[name].end >= entry + size, name  # pclntab's end includes the int3 padding
    # the same code at the same addresses in both builds: every Go function agrees, not only TLS
    same = [n for n in syms if n in funcs and funcs[n].entry == syms[n][0]]
    assert len(same) > 0.95 * len(funcs)


def test_lookup_by_name_matches_the_full_table(stripped):
    wanted = {elf.GO_WRITE, elf.GO_READ, "main.main", "no.such.function"}
    some = _functions(stripped, wanted)
    everything = _functions(stripped)
    assert set(some) == wanted - {"no.such.function"}
    assert all(some[n] == everything[n] for n in some)


def test_stripped_go_binary_is_probed_like_its_twin(go_binary, stripped):
    plain, bare = elf.inspect(str(go_binary)).go, elf.inspect(str(stripped)).go
    assert (plain.located_by, bare.located_by) == (".symtab", ".gopclntab")
    assert bare.version == plain.version and bare.version.startswith("go1.") and not bare.problem
    assert (bare.write, bare.read, bare.read_rets) == (plain.write, plain.read, plain.read_rets)


def test_stripped_pie(pie_stripped):
    with open(pie_stripped, "rb") as f:
        e = ELFFile(f)
        assert e["e_type"] == "ET_DYN" and e.get_section_by_name(".symtab") is None
        assert e.get_section_by_name(".gopclntab") is None
    go = elf.inspect(str(pie_stripped)).go
    assert go.located_by == ".gopclntab" and not go.problem and go.read_rets
    with open(pie_stripped, "rb") as f:
        assert all(elf._read_vaddr(ELFFile(f), f, a, 1) == b"\xc3" for a in go.read_rets)


def test_external_linker_pie_merges_the_table_into_data(go_dir):
    """cgo: gcc links, .gopclntab gets no section of its own; its header is found in the data."""
    plain = targets.build_go(go_dir / "ext-pie", pie=True, external=True)
    stripped = targets.build_go(go_dir / "ext-pie-stripped", strip=True, pie=True, external=True)
    with open(stripped, "rb") as f:
        e = ELFFile(f)
        assert e.get_section_by_name(".symtab") is None
        assert not any(e.get_section_by_name(name) for name in gopclntab.SECTIONS)
    funcs = _functions(stripped)
    tls = {n: sym for n, sym in _symtab_funcs(plain).items() if n.startswith("crypto/tls.")}
    assert len(tls) > 300 and all(funcs[n].entry == entry for n, (entry, _) in tls.items())
    plain_go, bare_go = elf.inspect(str(plain)).go, elf.inspect(str(stripped)).go
    assert bare_go.located_by == ".gopclntab" and not bare_go.problem
    assert (bare_go.write, bare_go.read, bare_go.read_rets) == (plain_go.write, plain_go.read, plain_go.read_rets)


def _old_pcln(magic: int, funcs: list[tuple[str, int]], end: int) -> bytes:
    """A go1.16/1.17 (0xfffffffa) or go1.2-1.15 (0xfffffffb) table: no Go of those releases here."""
    n = len(funcs)
    names = b"".join(name.encode() + b"\0" for name, _ in funcs)
    nameoffs = list(itertools.accumulate((len(name.encode()) + 1 for name, _ in funcs[:-1]), initial=0))
    if magic == 0xFFFFFFFA:  # header and 7 words, the names, then functab and _func (pclnOffset)
        names_at = 8 + 7 * 8
        funcs_at = names_at + len(names)
        head = struct.pack("<IHBB7Q", magic, 0, 1, 8, n, 0, names_at, 0, 0, 0, funcs_at) + names
    else:  # nfunc, functab at 16, _func records and names counted from the table start
        funcs_at = 0
        head = struct.pack("<IHBBQ", magic, 0, 1, 8, n)
    functab_end = len(head) + (2 * n + 1) * 8
    if magic != 0xFFFFFFFA:  # names after the 12-byte _func records
        nameoffs = [functab_end + 12 * n + off for off in nameoffs]
    first = functab_end - funcs_at
    functab = [v for i, (_, entry) in enumerate(funcs) for v in (entry, first + 12 * i)]
    records = b"".join(struct.pack("<Qi", entry, off) for (_, entry), off in zip(funcs, nameoffs))
    return head + struct.pack(f"<{2 * n + 1}Q", *functab, end) + records + (b"" if magic == 0xFFFFFFFA else names)


@pytest.mark.parametrize("magic", [0xFFFFFFFA, 0xFFFFFFFB], ids=["go1.16-1.17", "go1.2-1.15"])
def test_older_layouts_absolute_entries(magic):
    data = _old_pcln(magic, [("main.main", 0x401000), (elf.GO_READ, 0x401100)], 0x401180)
    read = gopclntab.GoFunc(0x401100, 0x401180)
    assert gopclntab.parse(data) == {"main.main": gopclntab.GoFunc(0x401000, 0x401100), elf.GO_READ: read}
    assert gopclntab.parse(data, [elf.GO_READ]) == {elf.GO_READ: read}


def test_garbage_and_cut_tables_raise(stripped):
    with open(stripped, "rb") as f:
        data = next(gopclntab.tables(ELFFile(f)))
    with pytest.raises(gopclntab.PclntabError, match="magic"):
        gopclntab.parse(b"\xfb\xff\xff\xfe" + data[4:])
    with pytest.raises(gopclntab.PclntabError, match="64-bit"):
        gopclntab.parse(data[:7] + b"\x04" + data[8:])
    with pytest.raises(gopclntab.PclntabError):
        gopclntab.parse(data[:4096])
    with pytest.raises(gopclntab.PclntabError, match="textStart"):
        gopclntab.parse(data[:24] + bytes(8) + data[32:])
    functab = struct.unpack_from("<Q", data, 8 + 7 * 8)[0]  # pclnOffset: go1.18+ layout
    (first,) = struct.unpack_from("<I", data, functab)
    with pytest.raises(gopclntab.PclntabError, match="disagree"):  # functab moved, _func not
        gopclntab.parse(data[:functab] + struct.pack("<I", first + 1) + data[functab + 4:], [elf.GO_READ])
    with pytest.raises(gopclntab.PclntabError):
        gopclntab.parse(b"\xf0\xff\xff\xff")


def test_unreadable_pclntab_of_a_stripped_binary_is_a_problem_not_a_probe(stripped, tmp_path):
    bad = tmp_path / "bad-magic"
    shutil.copy(stripped, bad)
    with open(bad, "r+b") as f:
        offset = ELFFile(f).get_section_by_name(".gopclntab")["sh_offset"]
        f.seek(offset)
        f.write(b"\x00\x00\x00\x00")
    go = elf.inspect(str(bad)).go
    assert go.version.startswith("go1.") and "unreadable" in go.problem and not go.read_rets


def _file_offset(e: ELFFile, vaddr: int) -> int:
    seg = next(s for s in e.iter_segments("PT_LOAD") if s["p_vaddr"] <= vaddr < s["p_vaddr"] + s["p_filesz"])
    return seg["p_offset"] + vaddr - seg["p_vaddr"]


def test_pre_go118_buildinfo_version_behind_pointers(go_binary, tmp_path):
    """go1.16/1.17 .go.buildinfo points at runtime.buildVersion: a go1.16 binary is not probed."""
    doctored = tmp_path / "old-buildinfo"
    shutil.copy(go_binary, doctored)
    with open(doctored, "r+b") as f:
        e = ELFFile(f)
        build_version = next(s["st_value"] for s in e.get_section_by_name(".symtab").iter_symbols()
                             if s.name == "runtime.buildVersion")
        f.seek(e.get_section_by_name(".go.buildinfo")["sh_offset"] + 15)
        f.write(b"\x00" + struct.pack("<Q", build_version))  # flags 0: the pre-go1.18 layout
        ptr, n = struct.unpack("<QQ", elf._read_vaddr(e, f, build_version, 16))
        version = elf._read_vaddr(e, f, ptr, n).decode()
        string_at = _file_offset(e, ptr)
    go = elf.inspect(str(doctored)).go
    assert go.version == version and version.startswith("go1.") and not go.problem
    with open(doctored, "r+b") as f:
        f.seek(string_at)
        f.write(b"go1.16.0"[:n].ljust(n))
    go = elf.inspect(str(doctored)).go
    assert go.version.startswith("go1.16") and "stack ABI" in go.problem and not go.read_rets
