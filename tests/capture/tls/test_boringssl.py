"""The BoringSSL locator (capture/tls/boringssl.py) on the installed grpcio extension and on bytes."""
from __future__ import annotations

import os
import shutil
import struct
import sys

import capstone
import grpc
import pytest
from elftools.elf.elffile import ELFFile

from capture.tls import boringssl, elf

CYGRPC = os.path.realpath(grpc._cython.cygrpc.__file__)


def image_of(path):
    with open(path, "rb") as f:
        return boringssl.Image(ELFFile(f))


def locate(path):
    with open(path, "rb") as f:
        return boringssl.locate(ELFFile(f))


def test_finds_the_three_functions_at_function_starts():
    found = locate(CYGRPC)
    assert set(found) == {"SSL_write", "SSL_read", "SSL_do_handshake"}
    assert len(set(found.values())) == 3
    image = image_of(CYGRPC)
    text_addr, text = image.sections[".text"]
    for addr in found.values():
        assert addr in image.starts and text_addr <= addr < text_addr + len(text)
    # independent of the signatures: BoringSSL's SSL_write runs the handshake implicitly
    assert found["SSL_do_handshake"] in image.function(found["SSL_write"]).calls


def test_inspect_reports_boringssl_found_by_heuristic():
    found = elf.inspect(CYGRPC)
    assert found.ssl.source == "boringssl" and found.ssl.located_by == "heuristic"
    assert found.ssl.problem == "" and set(found.ssl.funcs) == {"SSL_write", "SSL_read", "SSL_do_handshake"}


@pytest.mark.parametrize("path", ["/usr/lib/x86_64-linux-gnu/libssl.so.3", sys.executable])
def test_no_boringssl_no_answer(path):
    if not os.path.exists(path):
        pytest.skip(f"{path} not here")
    assert locate(os.path.realpath(path)) is None


def test_missing_evidence_is_refused_not_guessed(tmp_path):
    """BoringSSL is there but grpc's log message next to SSL_write is gone: no guess."""
    copy = tmp_path / "cygrpc.so"
    shutil.copy(CYGRPC, copy)
    data = copy.read_bytes()
    needle = b"SSL_write failed with error \0"
    assert data.count(needle) == 1
    copy.write_bytes(data.replace(needle, b"X" * (len(needle) - 1) + b"\0"))
    with pytest.raises(boringssl.Refused, match="SSL_write: 0 functions"):
        locate(copy)
    found = elf.inspect(str(copy))
    assert found.ssl.funcs == {} and "not located" in found.ssl.problem


def summarize(code: bytes, file_addr: int, start: int = 0x1000) -> boringssl.Function:
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    f = boringssl.Function(start, len(code), insns=list(md.disasm(code, start)))
    boringssl._summarize(f, frozenset({file_addr}))
    return f


def put_error(at: int, file_addr: int, reason: int, callee: int, edi: int = 0x10) -> bytes:
    """OPENSSL_PUT_ERROR as clang emits it: line, file, reason, 0, ERR_LIB_SSL, call."""
    lea = b"\x48\x8d\x0d" + struct.pack("<i", file_addr - (at + 6 + 7))  # lea rcx, [rip + file]
    head = b"\x41\xb8\xd6\x03\x00\x00" + lea + b"\xba" + struct.pack("<I", reason) + b"\x31\xf6"
    head += b"\xbf" + struct.pack("<I", edi)
    return head + b"\xe8" + struct.pack("<i", callee - (at + len(head) + 5))


def test_put_error_sites_give_their_reason():
    code = put_error(0x1000, 0x9000, 111, 0x5000)
    code += put_error(0x1000 + len(code), 0x9000, 226, 0x5000)
    f = summarize(code, 0x9000)
    assert f.raises == {111, 226} and f.calls == {0x5000}


def test_other_libraries_and_other_files_raise_nothing():
    assert summarize(put_error(0x1000, 0x9000, 111, 0x5000, edi=0x11), 0x9000).raises == set()
    assert summarize(put_error(0x1000, 0x9100, 111, 0x5000), 0x9000).raises == set()


def test_boringssl_evidence_holds_where_symbols_tell_the_truth():
    """xllamacpp (the llm extra) links BoringSSL and keeps a .symtab: the raised-reason
    signatures accept the real SSL_write, SSL_read and SSL_do_handshake, and alone already
    single out SSL_write among the 47 functions raising from ssl_lib.cc. It has no grpc, so
    the caller evidence is missing there and the locator refuses."""
    xllamacpp = pytest.importorskip("xllamacpp")
    path = next(p for p in (os.path.join(os.path.dirname(xllamacpp.__file__), n)
                            for n in os.listdir(os.path.dirname(xllamacpp.__file__))) if p.endswith(".so"))
    with open(path, "rb") as f:
        e = ELFFile(f)
        truth = elf._scan_symbols(e, ".symtab", set(boringssl.SIGNATURES))
        image = boringssl.Image(e)
    if set(truth) != set(boringssl.SIGNATURES):
        pytest.skip("this xllamacpp build has no BoringSSL symbols")
    raising = set().union(*(image.referrers(a) for a in image.ssl_lib_files))
    for name, sig in boringssl.SIGNATURES.items():
        assert image.matches(truth[name], sig), name
    assert [a for a in raising if image.matches(a, boringssl.SIGNATURES["SSL_write"])] == [truth["SSL_write"]]
    with pytest.raises(boringssl.Refused):
        locate(path)
