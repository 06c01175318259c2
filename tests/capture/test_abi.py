"""The Python mirror of bpf/types.h matches the header as a C compiler lays it out."""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from capture import abi

STRUCTS = {
    "guardian_tuple": abi.Tuple,
    "guardian_conn": abi.Conn,
    "guardian_conn_key": abi.ConnKey,
    "guardian_event": abi.Event,
    # the TLS block of types.h
    "tls_call": abi.TlsCall,
    "tls_exec": abi.TlsExec,
    "tls_ssl_key": abi.TlsSslKey,
    "tls_ssl": abi.TlsSsl,
    "tls_go_key": abi.TlsGoKey,
    "tls_go_read": abi.TlsGoRead,
    # the pairing block
    "guardian_pair_held": abi.PairHeld,
}
ENUMS = {
    "PROTO_": abi.Proto, "DIR_": abi.Direction, "ROLE_": abi.Role, "MSG_": abi.MsgType,
    "EV_": abi.EventKind, "SRC_": abi.Source, "TRANSPORT_": abi.Transport, "CONN_": abi.ConnFlags,
    "STAT_": abi.Stat,
}


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory) -> dict[str, int]:
    """Compile a probe program with gcc that prints every size, offset and enum value."""
    if not shutil.which("gcc"):
        pytest.fail("gcc is needed to check the ABI (make setup installs build-essential)")
    lines = []
    for cname, cls in STRUCTS.items():
        lines.append(f'printf("sizeof.{cname} %zu\\n", sizeof(struct {cname}));')
        for field, *_ in cls._fields_:
            lines.append(f'printf("offsetof.{cname}.{field} %zu\\n", offsetof(struct {cname}, {field}));')
    for prefix, enum in ENUMS.items():
        for member in enum:
            lines.append(f'printf("enum.{prefix}{member.name} %d\\n", (int){prefix}{member.name});')
    src = "#include <stdio.h>\n#include <stddef.h>\n#include \"types.h\"\nint main(void){\n" + "\n".join(lines) + "\nreturn 0;}\n"
    d = tmp_path_factory.mktemp("abi")
    (d / "probe.c").write_text(src)
    subprocess.run(["gcc", "-I", str(abi.BPF_DIR), "-o", str(d / "probe"), str(d / "probe.c")], check=True)
    out = subprocess.run([str(d / "probe")], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("cname", STRUCTS)
def test_struct_layout_matches_header(c_layout, cname):
    cls = STRUCTS[cname]
    assert ctypes.sizeof(cls) == c_layout[f"sizeof.{cname}"]
    for field, *_ in cls._fields_:
        assert getattr(cls, field).offset == c_layout[f"offsetof.{cname}.{field}"], field


def test_enums_match_header(c_layout):
    for prefix, enum in ENUMS.items():
        for member in enum:
            assert member.value == c_layout[f"enum.{prefix}{member.name}"]


def test_every_header_enum_member_is_mirrored():
    text = re.sub(r"/\*.*?\*/", "", abi.TYPES_H.read_text(), flags=re.S)
    names = set(re.findall(r"\b((?:PROTO|DIR|ROLE|MSG|EV|SRC|TRANSPORT|CONN|STAT)_[A-Z0-9_]+)\s*=", text))
    mirrored = {f"{p}{m.name}" for p, e in ENUMS.items() for m in e}
    assert names == mirrored


def test_event_struct_unpacks_header_fields():
    ev = abi.Event(ts_ns=5, conn_id=7, pos=9, tgid=11, tid=12, fd=3, total_len=100, copied_len=10,
                   kind=1, proto=abi.Proto.HTTP1, direction=1, role=2, comm=b"curl")
    fields = abi.EVENT_STRUCT.unpack(bytes(ev))
    assert fields[:8] == (5, 7, 9, 11, 12, 3, 100, 10)
    assert fields[9:13] == (1, abi.Proto.HTTP1, 1, 2)
    assert fields[-1].rstrip(b"\0") == b"curl"


def test_every_protocol_with_a_parser_has_an_id():
    from capture.protocols import registry

    ids = {p.name for p in abi.Proto}
    for name in registry.protocols():
        assert name in ids, f"{name} is registered in userspace but has no PROTO_{name} in bpf/types.h"
