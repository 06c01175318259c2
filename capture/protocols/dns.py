"""DNS (RFC 1035) over UDP (one message per datagram) and TCP (2-byte length prefix, §4.2.2).

Header, question and A/AAAA/CNAME answers are read here (fast path, much cheaper than
dnspython's full decode: `python -m bench.parsers`);
other messages are decoded with dnspython, and one it rejects (truncated copy, bad EDNS) falls
back to the header and question. The fast path reports the header's 4-bit rcode (no EDNS
extension). Queries pair with responses by id (and question name), so concurrent queries on
one socket (glibc's A + AAAA) each get a record.
Attributes: `dns.question.name` (semconv), and where semconv has none: `dns.question.type`,
`dns.response_code` (NOERROR, NXDOMAIN …), `dns.answer.count`, `dns.answers` (first 8 rdata).
A response code other than NOERROR is an error, `error.type` = its name (semconv dns metrics).

    header: id(2) flags(2) qdcount(2) ancount(2) nscount(2) arcount(2) | question | …
    flags:  QR(1) opcode(4) AA TC RD | RA Z AD CD rcode(4)
"""
from __future__ import annotations

import socket
import struct

import dns.exception
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype

from capture.protocols.base import Parser, Pending, Record, Side
from capture.protocols.frames import FrameReader

HEADER = struct.Struct("!HHHHHH")
MAX_PENDING = 4096  # (id, name) keys waiting for an answer
MAX_RETRIES = 16  # queries kept under one key (a resolver's retransmissions)
QUERY_TIMEOUT_NS = 30_000_000_000  # a UDP query unanswered this long is reported as lost
_OPCODES = (0, 1, 2, 4, 5)  # QUERY IQUERY STATUS NOTIFY UPDATE


def _header_ok(b: bytes, off: int) -> Side | None:
    """Mirror of bpf/protocols/dns.h on one header at `off`."""
    if len(b) < off + 17:
        return None
    _id, flags, qd, an, ns, ar = HEADER.unpack_from(b, off)
    opcode, rcode = (flags >> 11) & 0xF, flags & 0xF
    if opcode not in _OPCODES or flags & 0x0040 or qd != 1 or rcode > 10:
        return None  # Z bit must be zero; one question is what every resolver sends
    first = b[off + 12]
    if first > 63:  # first label length (compression cannot appear in the first name)
        return None
    if not flags & 0x8000:  # a query: no answers; additional = EDNS OPT, TSIG, cookie
        return Side.CLIENT if an == 0 and ns <= 1 and ar <= 4 and rcode == 0 else None
    return Side.SERVER


def framing(data: bytes) -> str | None:
    """'tcp' when `data` starts with a length-prefixed message (or is a lone prefix), 'udp' for a bare one."""
    if len(data) >= 2:
        n = struct.unpack_from("!H", data)[0]
        if len(data) == 2 and n >= 17:
            return "tcp"  # the prefix written alone (writev of prefix + message)
        if n >= 17 and _header_ok(data, 2) is not None:
            return "tcp"
    return "udp" if _header_ok(data, 0) is not None else None


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/dns.h."""
    kind = framing(data)
    if kind is None:
        return None
    return _header_ok(data, 2 if kind == "tcp" else 0)


def _tcp_length(header: bytes) -> int | None:
    n = struct.unpack("!H", header)[0]
    return n + 2 if n >= 12 else None


class _Msg:
    __slots__ = ("id", "qr", "qname", "qtype", "rcode", "answers", "ts", "end_ns", "truncated_flag")

    def __init__(self, ts: int) -> None:
        self.ts, self.end_ns = ts, ts
        self.qname, self.qtype, self.rcode, self.answers, self.truncated_flag = "", "", 0, [], False


_FAST_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", 2: "NS", 12: "PTR", 15: "MX", 16: "TXT", 33: "SRV", 6: "SOA",
               65: "HTTPS", 255: "ANY"}


def _name(wire: bytes, pos: int) -> tuple[str, int]:
    """A (maybe compressed, RFC 1035 §4.1.4) name at `pos`: its text and the position after it."""
    labels, end, jumps = [], 0, 0
    while True:
        n = wire[pos]
        if n == 0:
            return ".".join(labels), end or pos + 1
        if n & 0xC0 == 0xC0:
            end = end or pos + 2
            pos = ((n & 0x3F) << 8) | wire[pos + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if n & 0xC0 or pos + 1 + n > len(wire):
            raise ValueError("bad label")
        labels.append(wire[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


def _fast(wire: bytes, m: _Msg) -> bool:
    """Header, question and A/AAAA/CNAME answers without dnspython (its full decode costs ~10x);
    False sends the message to dnspython."""
    _id, _f, qd, an, _ns, _ar = HEADER.unpack_from(wire)
    if qd != 1:
        return False
    m.qname, pos = _name(wire, 12)
    qtype = struct.unpack_from("!H", wire, pos)[0]
    m.qtype = _FAST_TYPES.get(qtype) or dns.rdatatype.to_text(qtype)
    pos += 4
    for _ in range(an if m.qr else 0):
        _n, pos = _name(wire, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack_from("!HHIH", wire, pos)
        pos += 10
        if pos + rdlen > len(wire):
            return False
        if rtype == 1 and rdlen == 4:
            m.answers.append(socket.inet_ntop(socket.AF_INET, wire[pos:pos + 4]))
        elif rtype == 28 and rdlen == 16:
            m.answers.append(socket.inet_ntop(socket.AF_INET6, wire[pos:pos + 16]))
        elif rtype == 5:
            m.answers.append(_name(wire, pos)[0] + ".")
        else:
            return False
        pos += rdlen
    return True


def decode(wire: bytes, ts: int) -> _Msg | None:
    """One DNS message; None if not even its header and question can be read."""
    if len(wire) < 12:
        return None
    m = _Msg(ts)
    m.id, flags = HEADER.unpack_from(wire)[:2]
    m.qr, m.rcode, m.truncated_flag = bool(flags & 0x8000), flags & 0xF, bool(flags & 0x0200)
    try:
        if _fast(wire, m):
            return m
    except (ValueError, IndexError, struct.error):
        pass
    m.answers = []
    try:
        msg = dns.message.from_wire(wire, ignore_trailing=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        try:
            msg = dns.message.from_wire(wire, question_only=True, ignore_trailing=True)
        except (dns.exception.DNSException, ValueError, IndexError):
            msg = None
    if msg is not None:
        if msg.question:
            q = msg.question[0]
            m.qname, m.qtype = q.name.to_text(omit_final_dot=True), dns.rdatatype.to_text(q.rdtype)
        m.rcode = msg.rcode()
        for rrset in msg.answer:
            for rd in rrset:
                m.answers.append(rd.to_text())
    else:
        try:
            name, used = dns.name.from_wire(wire, 12)
            m.qname = name.to_text(omit_final_dot=True)
            m.qtype = dns.rdatatype.to_text(struct.unpack_from("!H", wire, 12 + used)[0])
        except (dns.exception.DNSException, struct.error, IndexError, ValueError):
            pass
    return m


class DnsParser(Parser):
    protocol = "DNS"

    def __init__(self) -> None:
        super().__init__()
        # "udp" (a message per chunk) or "tcp" (length-prefixed streams), from the first chunk
        # that tells; a TCP client's first prefix may have been dropped before kernel detection,
        # so a bare first message followed by prefixed ones is TCP too
        self._transport: str | None = None
        self._readers = {side: FrameReader(2, _tcp_length, self.stats) for side in Side}
        # (id, lower-case name) -> the queries sent with it, oldest first (retransmissions share a key)
        self._pending: Pending[list[_Msg]] = Pending(self.stats, MAX_PENDING)

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        out: list[Record] = []
        if self._transport != "tcp" and data:
            kind = framing(data)
            if kind == "tcp" and self._transport == "udp":
                self._readers = {s: FrameReader(2, _tcp_length, self.stats) for s in Side}
            self._transport = kind or self._transport
        if self._transport is None:
            self.stats["garbage"] += 1
        elif self._transport == "udp":
            if data:
                self._message(side, data, ts_ns, ts_ns, out)
        else:
            for f in self._readers[side].feed(data, ts_ns, size):
                self._message(side, f.data[2:], f.start_ns, f.end_ns, out)
        self._expire(ts_ns, out)
        return out

    def close(self, ts_ns: int) -> list[Record]:
        # an unanswered query lasted until the connection closed, at most the timeout
        out = [self._record(q, None, min(ts_ns, q.ts + QUERY_TIMEOUT_NS))
               for qs in self._pending.drain() for q in qs]
        self.stats["requests_without_response"] += len(out)
        return out

    def _message(self, side: Side, wire: bytes, start: int, end: int, out: list[Record]) -> None:
        m = decode(wire, start) if _header_ok(wire, 0) is not None else None
        if m is None:
            self.stats["garbage"] += 1
            return
        m.end_ns = end
        key = (m.id, m.qname.lower())
        queue = self._pending.get(key)
        if not m.qr:
            if queue is None:
                self._pending.put(key, [m])
            else:
                if len(queue) >= MAX_RETRIES:
                    queue.pop(0)
                    self.stats["pending_overflow"] += 1
                queue.append(m)
            return
        if not queue:
            self.stats["responses_without_request"] += 1
            return
        q = queue.pop(0)
        if not queue:
            self._pending.take(key)
        out.append(self._record(q, m, end))

    def _expire(self, now: int, out: list[Record]) -> None:
        # keys are kept in the order their first query came: the front is the oldest, so expiry
        # stops at the first key still in time (cheap per chunk however many wait)
        while (oldest := self._pending.oldest()) is not None and now - oldest[1][0].ts > QUERY_TIMEOUT_NS:
            for q in self._pending.take(oldest[0]):
                self.stats["requests_without_response"] += 1
                out.append(self._record(q, None, now))

    def _record(self, q: _Msg, r: _Msg | None, end_ns: int) -> Record:
        attrs = {"dns.question.name": q.qname, "dns.question.type": q.qtype,
                 "network.protocol.name": "dns"}
        status, message = "UNSET", ""
        if r is None:
            status, message = "ERROR", "no response"
            attrs["error.type"] = "timeout"
        else:
            rcode = dns.rcode.to_text(r.rcode) if 0 <= r.rcode <= 4095 else str(r.rcode)
            attrs["dns.response_code"] = rcode
            attrs["dns.answer.count"] = len(r.answers)
            if r.answers:
                attrs["dns.answers"] = r.answers[:8]
            if r.truncated_flag:
                attrs["dns.truncated"] = True
            if r.rcode != 0:
                status, message = "ERROR", rcode
                attrs["error.type"] = rcode
        name = f"DNS {q.qtype} {q.qname}".rstrip() if q.qname else "DNS"
        return Record(name=name, start_ns=q.ts, end_ns=end_ns, attributes=attrs,
                      status=status, status_message=message)


PARSER = DnsParser
