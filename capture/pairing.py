"""The kernel's exchange pairing (bpf/guardian.bpf.c, pairing section) over ring records.

pair() turns the records of the unpaired path, in ring order, into what the paired path sends:
the specification the differential tests hold the kernel to, and how bench.events replays a
recording as the paired path would have sent it. It parses nothing, as the kernel does not.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from capture import abi

_HDR = abi.EVENT_SIZE
_KIND = abi.Event.kind.offset
_PROTO, _DIR, _ROLE = abi.Event.proto.offset, abi.Event.direction.offset, abi.Event.role.offset
_CONN_ID = abi.Event.conn_id.offset
_COPIED = abi.Event.copied_len.offset
_DATA, _CLOSE, _PAIR = abi.EventKind.DATA, abi.EventKind.CLOSE, abi.EventKind.PAIR
# the kernel's list (pair_proto)
PAIRED_PROTOCOLS = frozenset((abi.Proto.HTTP1, abi.Proto.REDIS, abi.Proto.MEMCACHED, abi.Proto.POSTGRES,
                              abi.Proto.MYSQL))
_CLIENT, _UNKNOWN = abi.Role.CLIENT, abi.Role.UNKNOWN
_EGRESS, _INGRESS = abi.Direction.EGRESS, abi.Direction.INGRESS


def _u32(raw: bytes, at: int) -> int:
    return int.from_bytes(raw[at:at + 4], "little")


def paired(response: bytes, request: bytes) -> bytes:
    """The EV_PAIR record of a response chunk's record and its request chunk's record."""
    head = bytearray(response[:_HDR + _u32(response, _COPIED)])
    head[_KIND] = _PAIR
    return bytes(head) + request


def pair(records: Iterable[bytes], max_payload: int = 4096, prefix: int = abi.PAIR_PREFIX,
         held_at_end: bool = False) -> Iterator[bytes]:
    """`records` (unpaired, ring order) as the pairing sends them. Requests still held when
    the records end stay in the kernel unless `held_at_end` (then they follow, alone)."""
    held: dict[bytes, bytes] = {}  # conn_id -> the request chunk's record
    for raw in records:
        if len(raw) < _HDR:
            yield raw
            continue
        conn_id = raw[_CONN_ID:_CONN_ID + 8]
        kind, copied, role = raw[_KIND], _u32(raw, _COPIED), raw[_ROLE]
        if kind == _CLOSE:
            if conn_id in held:
                yield held.pop(conn_id)
            yield raw
            continue
        if kind != _DATA or raw[_PROTO] not in PAIRED_PROTOCOLS or role == _UNKNOWN or copied > max_payload:
            yield raw
            continue
        request_dir = _EGRESS if role == _CLIENT else _INGRESS
        if raw[_DIR] == request_dir:
            if conn_id in held:
                yield held.pop(conn_id)
            if copied > prefix:
                yield raw
            else:
                held[conn_id] = raw
        elif conn_id in held:
            yield paired(raw, held.pop(conn_id))
        else:
            yield raw
    if held_at_end:
        yield from held.values()
