"""Python mirror of bpf/types.h, the kernel/userspace ABI.

Enums are read from the header itself (one source); struct layouts are ctypes mirrors that
tests/capture/test_abi.py checks against the header compiled by gcc.
"""
from __future__ import annotations

import ctypes
import enum
import re
import socket
import struct
from pathlib import Path

BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
TYPES_H = BPF_DIR / "types.h"


def _read_enums(path: Path) -> dict[str, dict[str, int]]:
    text = re.sub(r"/\*.*?\*/", "", path.read_text(), flags=re.S)
    enums: dict[str, dict[str, int]] = {}
    for name, body in re.findall(r"enum\s+(\w+)\s*\{(.*?)\}", text, flags=re.S):
        members: dict[str, int] = {}
        for m in re.finditer(r"(\w+)\s*=\s*(\d+)", body):
            members[m.group(1)] = int(m.group(2))
        enums[name] = members
    return enums


_ENUMS = _read_enums(TYPES_H)


def _int_enum(c_name: str, prefix: str) -> type[enum.IntEnum]:
    members = {k[len(prefix):]: v for k, v in _ENUMS[c_name].items() if k.startswith(prefix)}
    return enum.IntEnum(c_name, members)  # type: ignore[return-value]


Proto = _int_enum("guardian_proto", "PROTO_")
Direction = _int_enum("guardian_direction", "DIR_")
Role = _int_enum("guardian_role", "ROLE_")
MsgType = _int_enum("guardian_msg_type", "MSG_")
EventKind = _int_enum("guardian_event_kind", "EV_")
Source = _int_enum("guardian_source", "SRC_")
Transport = _int_enum("guardian_transport", "TRANSPORT_")
ConnFlags = _int_enum("guardian_conn_flags", "CONN_")
Stat = _int_enum("guardian_stat", "STAT_")


class Tuple(ctypes.Structure):
    _fields_ = [
        ("laddr", ctypes.c_uint8 * 16),
        ("raddr", ctypes.c_uint8 * 16),
        ("lport", ctypes.c_uint16),
        ("rport", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("_pad", ctypes.c_uint16),
    ]


class Conn(ctypes.Structure):
    _fields_ = [
        ("conn_id", ctypes.c_uint64),
        ("bytes", ctypes.c_uint64 * 2),
        ("t", Tuple),
        ("proto", ctypes.c_uint8),
        ("role", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("attempts", ctypes.c_uint8),
        ("transport", ctypes.c_uint8),
        ("held", ctypes.c_uint8),
        ("_pad", ctypes.c_uint8 * 2),
        ("sock_ino", ctypes.c_uint32),
        ("_pad2", ctypes.c_uint32),
    ]


class ConnKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("fd", ctypes.c_uint32)]


class Event(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("conn_id", ctypes.c_uint64),
        ("pos", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("fd", ctypes.c_uint32),
        ("total_len", ctypes.c_uint32),
        ("copied_len", ctypes.c_uint32),
        ("sock_ino", ctypes.c_uint32),
        ("kind", ctypes.c_uint8),
        ("proto", ctypes.c_uint8),
        ("direction", ctypes.c_uint8),
        ("role", ctypes.c_uint8),
        ("msg_type", ctypes.c_uint8),
        ("source", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("transport", ctypes.c_uint8),
        ("t", Tuple),
        ("comm", ctypes.c_char * 16),
    ]


EVENT_SIZE = ctypes.sizeof(Event)

# Fast decoding of the event header (struct.unpack is cheaper than ctypes field access: `python -m bench.events`).
# Layout: ts conn_id pos | tgid tid fd total copied sock_ino | 8 x u8 | laddr raddr lport rport family _pad | comm
EVENT_STRUCT = struct.Struct("<QQQ6I8B16s16sHHHH16s")
assert EVENT_STRUCT.size == EVENT_SIZE


def ip_text(addr16: bytes) -> str:
    """Text form of a 16-byte address stored as in guardian_tuple (IPv4 is IPv4-mapped)."""
    if addr16[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, addr16[12:])
    return socket.inet_ntop(socket.AF_INET6, addr16)


def ip_bytes(text: str) -> bytes:
    """Inverse of ip_text: 16 bytes, IPv4 as IPv4-mapped."""
    try:
        return b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, text)
    except OSError:
        return socket.inet_pton(socket.AF_INET6, text)


# ---- TLS uprobes: the TLS block of bpf/types.h ----------------------------------------------
class TlsCall(ctypes.Structure):
    _fields_ = [("ssl", ctypes.c_uint64), ("buf", ctypes.c_uint64), ("out_len", ctypes.c_uint64),
                ("dir", ctypes.c_uint8), ("source", ctypes.c_uint8), ("pending", ctypes.c_uint8),
                ("noret", ctypes.c_uint8), ("fd", ctypes.c_uint32), ("ts_ns", ctypes.c_uint64)]


class TlsSsl(ctypes.Structure):
    _fields_ = [("wbuf", ctypes.c_uint64), ("wlen", ctypes.c_uint32), ("fd", ctypes.c_uint32),
                ("wfailed", ctypes.c_uint8), ("_pad", ctypes.c_uint8 * 7)]


class TlsExec(ctypes.Structure):
    _fields_ = [("ts_ns", ctypes.c_uint64), ("pid", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


class TlsSslKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("ssl", ctypes.c_uint64)]


class TlsGoKey(ctypes.Structure):
    _fields_ = [("tgid", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("goid", ctypes.c_uint64)]


class TlsGoRead(ctypes.Structure):
    _fields_ = [("buf", ctypes.c_uint64), ("fd", ctypes.c_uint32), ("_pad", ctypes.c_uint32)]


TLS_EXEC_STRUCT = struct.Struct("<QI4x")  # struct tls_exec, read from the tls_execs ring
assert TLS_EXEC_STRUCT.size == ctypes.sizeof(TlsExec)


# ---- HTTP/1 exchange pairing: the pairing block of bpf/types.h -------------------------------
PAIR_PREFIX = int(re.search(r"#define PAIR_PREFIX (\d+)", TYPES_H.read_text()).group(1))


class PairHeld(ctypes.Structure):
    _fields_ = [("ev", Event), ("payload", ctypes.c_uint8 * PAIR_PREFIX)]
