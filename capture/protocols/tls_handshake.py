"""TLS handshakes (RFC 8446 TLS 1.3, RFC 5246 TLS 1.2) seen as records: one span per FAILED one.

A failed handshake never has plaintext, so the TLS uprobes see nothing: these records are
all there is. Successful handshakes produce no span (counted as `handshakes_ok`); their
plaintext is parsed by its own protocol once the uprobes report it (capture/conntrack.py).

    record:    type (1) | version 0x03 0x0X (2) | length (2) | fragment
               20 ChangeCipherSpec · 21 Alert (level, description) · 22 Handshake · 23 Application data
    handshake: msg_type (1) | length (3) | body; 1 ClientHello (SNI, supported versions),
               2 ServerHello (negotiated version, cipher)

Rule 1: only the hellos and plaintext alerts are read; encrypted records are counted by
        type, length and direction. After garbage or lost bytes a direction resyncs at the
        next chunk that starts with a record header; a hostile length never buffers more
        than one record's bounded prefix.
Rule 2: a handshake FAILED, on evidence only:
        a. a plaintext fatal alert from either side (TLS 1.3: any alert but close_notify and
           user_canceled) -> error.type "tls alert: <description>", reported at once;
        b. an encrypted alert during the handshake, then no application data before close ->
           "tls alert: encrypted". TLS 1.2: an Alert record longer than 2 bytes (sent after
           its sender's ChangeCipherSpec) before both sides sent theirs. TLS 1.3: alerts are
           wrapped in application-data records of 2 + 1 + 16 (AEAD tag) = 19 bytes: the
           client's first encrypted record (where its Finished belongs), or the server's
           first after the client's Finished (where tickets and answers belong);
        c. the connection closed after the ClientHello without a ServerHello ->
           "tls handshake: no ServerHello" ("…: server did not answer with TLS" when the
           server sent non-TLS bytes), or after the ServerHello but before the handshake
           completed (TLS 1.2: both ChangeCipherSpecs or application data; TLS 1.3: the
           client's Finished) -> "tls handshake: closed before completion".
Rule 3: it SUCCEEDED when plaintext flows (`established()`, called by the capture when the
        TLS uprobes report plaintext on the connection) or when it completed as in 2c and
        no failure evidence stands at close. Either way: no span.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from capture.protocols.base import Parser, Record, Side

MAX_RECORD = 16384 + 2048  # RFC 8446 §5.2: ciphertext length limit
MAX_HANDSHAKE = 64 * 1024  # hello bytes buffered per direction (a ClientHello is a few KB)
ALERT_SIZE_13 = 2 + 1 + 16  # TLS 1.3 alert: level, description, inner content type, AEAD tag
_CCS, _ALERT, _HANDSHAKE, _APPDATA = 20, 21, 22, 23
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
_VERSIONS = {0x0300: "3.0", 0x0301: "1.0", 0x0302: "1.1", 0x0303: "1.2", 0x0304: "1.3"}
TLS13 = 0x0304
_ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure", 41: "no_certificate",
    42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
    45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
    49: "access_denied", 50: "decode_error", 51: "decrypt_error", 60: "export_restriction",
    70: "protocol_version", 71: "insufficient_security", 80: "internal_error",
    86: "inappropriate_fallback", 90: "user_canceled", 100: "no_renegotiation",
    109: "missing_extension", 110: "unsupported_extension", 111: "certificate_unobtainable",
    112: "unrecognized_name", 113: "bad_certificate_status_response",
    114: "bad_certificate_hash_value", 115: "unknown_psk_identity", 116: "certificate_required",
    120: "no_application_protocol",
}
_NOT_FATAL_13 = {0, 90}  # close_notify, user_canceled
_CIPHERS = {
    0x1301: "TLS_AES_128_GCM_SHA256", 0x1302: "TLS_AES_256_GCM_SHA384",
    0x1303: "TLS_CHACHA20_POLY1305_SHA256", 0xC02B: "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    0xC02C: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", 0xC02F: "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    0xC030: "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", 0xCCA8: "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    0xCCA9: "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", 0x009C: "TLS_RSA_WITH_AES_128_GCM_SHA256",
    0x009D: "TLS_RSA_WITH_AES_256_GCM_SHA384",
}
_SIDE = {Side.CLIENT: "client", Side.SERVER: "server"}


def _header_ok(b: bytes | bytearray, i: int = 0) -> bool:
    return 20 <= b[i] <= 23 and b[i + 1] == 3 and b[i + 2] <= 4 and \
        (b[i + 3] << 8 | b[i + 4]) <= MAX_RECORD


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/tls_handshake.h: a ClientHello or ServerHello record."""
    if len(data) < 5 or data[0] != 0x16 or data[1] != 3 or not 1 <= data[2] <= 4:
        return None
    rec_len = data[3] << 8 | data[4]
    if len(data) == 5:  # a record header read alone: the server reading the ClientHello
        return Side.CLIENT if 42 <= rec_len <= 16384 else None
    if len(data) < 44:
        return None
    hs_len = data[6] << 16 | data[7] << 8 | data[8]
    if rec_len > 16384 or hs_len < 38 or hs_len + 4 > rec_len:
        return None
    if data[9] != 3 or not 1 <= data[10] <= 3 or data[43] > 32:
        return None
    return {1: Side.CLIENT, 2: Side.SERVER}.get(data[5])


class _Malformed(Exception):
    pass


class _Reader:
    """Bounds-checked reads over one handshake message body."""

    __slots__ = ("b", "i")

    def __init__(self, b: bytes) -> None:
        self.b, self.i = b, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.i + n > len(self.b):
            raise _Malformed
        out = self.b[self.i:self.i + n]
        self.i += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def vec(self, len_bytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(len_bytes), "big"))

    def extensions(self) -> dict[int, bytes]:
        if self.i == len(self.b):
            return {}  # extensions are optional before TLS 1.3
        r, out = _Reader(self.vec(2)), {}
        while r.i < len(r.b):
            ext = r.u16()
            out[ext] = r.vec(2)
        return out


@dataclass(slots=True)
class _Direction:
    hdr: bytearray = field(default_factory=bytearray)  # partial record header
    body: bytearray = field(default_factory=bytearray)  # kept fragment (alerts, hellos)
    in_body: bool = False
    rtype: int = 0
    rlen: int = 0
    left: int = 0  # fragment bytes still to come
    cut: bool = False  # some of the fragment was not copied: not readable
    resync: bool = False
    start_ns: int = 0
    hs: bytearray = field(default_factory=bytearray)  # plaintext handshake stream
    hello_done: bool = False  # this side's hello read: its later handshake bytes are skipped
    ccs: bool = False  # sent ChangeCipherSpec (TLS 1.2: its later records are encrypted)
    encrypted: int = 0  # application-data records sent after the ServerHello
    garbage: bool = False


class TlsHandshakeParser(Parser):
    protocol = "TLS_HANDSHAKE"

    def __init__(self) -> None:
        super().__init__()
        self.dirs = (_Direction(), _Direction())
        self.attrs: dict = {}
        self.client_hello = False
        self.server_hello = False
        self.version = 0  # negotiated (ServerHello), 0 until known
        self.client_finished = False  # TLS 1.3
        self.server_after_finished = 0  # TLS 1.3: server records after the client's Finished
        self.app_data = False
        self.evidence: tuple[str, str, int] | None = None  # (error.type, message, ts)
        self.start_ns = 0
        self.done = False  # decided: reported a failure or counted a success
        self._out: list[Record] = []

    # -- input -----------------------------------------------------------------------------
    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        if self.done:
            return []
        d = self.dirs[side]
        if d.resync:
            if len(data) < 5 or not _header_ok(data):
                self.stats["resync_skipped_chunks"] += 1
                return []
            d.resync, d.in_body, d.hdr = False, False, bytearray()
            self.stats["resyncs"] += 1
        i, n = 0, len(data)
        while i < n and not self.done:
            if not d.in_body:
                take = data[i:i + 5 - len(d.hdr)]
                d.hdr += take
                i += len(take)
                if len(d.hdr) < 5:
                    break
                if not _header_ok(d.hdr):
                    self._garbage(side, d)
                    return self._drain()
                d.rtype, d.rlen = d.hdr[0], d.hdr[3] << 8 | d.hdr[4]
                d.left, d.in_body, d.cut, d.body = d.rlen, True, False, bytearray()
                d.start_ns = ts_ns
            take = data[i:i + d.left]
            if d.rtype in (_ALERT, _HANDSHAKE):
                d.body += take
            i += len(take)
            d.left -= len(take)
            if d.left == 0:
                self._record(side, d, ts_ns)
        missing = (size or 0) - n
        if missing > 0 and not self.done:
            if d.in_body and d.left >= missing:  # the rest of this record was not copied
                d.left -= missing
                d.cut = True
                if d.left == 0:
                    self._record(side, d, ts_ns)
            else:  # whole records lost: framing with them
                self.stats["lost_chunks"] += 1
                d.resync, d.in_body, d.hdr = True, False, bytearray()
        return self._drain()

    def established(self) -> None:
        """The TLS library reported plaintext on this connection: the handshake succeeded."""
        if not self.done:
            self.done = True
            self.stats["handshakes_ok"] += 1

    def close(self, ts_ns: int) -> list[Record]:
        if self.done:
            return self._drain()
        c, s = self.dirs
        if self.evidence is not None:
            self._fail(*self.evidence)
        elif self.client_hello and not self.server_hello:
            if s.garbage:
                self._fail("tls handshake: server did not answer with TLS",
                           "the server answered the ClientHello with bytes that are not TLS", ts_ns)
            else:
                self._fail("tls handshake: no ServerHello",
                           "the connection closed after the ClientHello, before any ServerHello", ts_ns)
        elif self.server_hello and not self._completed():
            self._fail("tls handshake: closed before completion",
                       "the connection closed during the handshake, before any application data", ts_ns)
        elif self.client_hello or self.server_hello:
            self.done = True
            self.stats["handshakes_ok"] += 1
        return self._drain()

    # -- records -----------------------------------------------------------------------------
    def _record(self, side: Side, d: _Direction, ts_ns: int) -> None:
        d.in_body, d.hdr = False, bytearray()
        self.stats["records"] += 1
        if not self.start_ns:
            self.start_ns = d.start_ns
        body = None if d.cut else bytes(d.body)
        d.body = bytearray()
        _ON_RECORD[d.rtype](self, side, d, d.rlen, body, ts_ns)

    def _ccs(self, side: Side, d: _Direction, length: int, body: bytes | None, ts: int) -> None:
        d.ccs = True

    def _alert(self, side: Side, d: _Direction, length: int, body: bytes | None, ts: int) -> None:
        if length != 2 or body is None:  # TLS 1.2 alert after its sender's ChangeCipherSpec
            self.stats["alerts_encrypted"] += 1
            if not self._completed():
                self._suspect("tls alert: encrypted", f"the {_SIDE[side]} sent an encrypted alert "
                              "during the handshake (its description is encrypted)", ts)
            return
        level, desc = body
        name = _ALERTS.get(desc, f"alert_{desc}")
        self.stats[f"alerts.{name}"] += 1
        if level == 2 or (self.version == TLS13 and desc not in _NOT_FATAL_13):
            self.attrs["tls.alert.description"] = name
            self.attrs["tls.alert.sent_by"] = _SIDE[side]
            self._fail(f"tls alert: {name}", f"the {_SIDE[side]} sent a fatal TLS alert: {name}", ts)

    def _handshake(self, side: Side, d: _Direction, length: int, body: bytes | None, ts: int) -> None:
        if d.hello_done or (d.ccs and self.server_hello and self.version != TLS13):
            self.stats["handshake_records_skipped"] += 1  # encrypted Finished, certificates …
            return
        if body is None or len(d.hs) + len(body) > MAX_HANDSHAKE:
            self.stats["hello_unreadable"] += 1
            d.hello_done, d.hs = True, bytearray()
            return
        d.hs += body
        while len(d.hs) >= 4 and not d.hello_done:
            mlen = d.hs[1] << 16 | d.hs[2] << 8 | d.hs[3]
            if 4 + mlen > MAX_HANDSHAKE:
                self.stats["hello_unreadable"] += 1
                d.hello_done, d.hs = True, bytearray()
                return
            if len(d.hs) < 4 + mlen:
                return  # the message continues in the next record
            mtype, msg = d.hs[0], bytes(d.hs[4:4 + mlen])
            del d.hs[:4 + mlen]
            try:
                if mtype == 1 and side == Side.CLIENT:
                    self._client_hello(msg)
                    d.hello_done = True
                elif mtype == 2 and side == Side.SERVER:
                    d.hello_done = self._server_hello(msg)
                else:
                    self.stats["unexpected_handshake_messages"] += 1
            except _Malformed:
                self.stats["malformed_hellos"] += 1
                d.hello_done = True
        if d.hello_done:
            d.hs = bytearray()

    def _appdata(self, side: Side, d: _Direction, length: int, body: bytes | None, ts: int) -> None:
        if not self.server_hello:
            self.stats["records_before_server_hello"] += 1  # 0-RTT, or joined mid-stream
            return
        d.encrypted += 1
        if self.version != TLS13:
            self._application_data()
            return
        alert_sized = length == ALERT_SIZE_13
        if side == Side.CLIENT and not self.client_finished:
            if alert_sized:
                self._suspect("tls alert: encrypted", "the client sent an encrypted alert instead of "
                              "its Finished (typically: it rejected the server's certificate)", ts)
            else:
                self.client_finished = True
            return
        if side == Side.SERVER and self.client_finished:
            self.server_after_finished += 1
            if self.server_after_finished == 1 and alert_sized:
                self._suspect("tls alert: encrypted", "the server sent an encrypted alert after the "
                              "client's Finished (typically: it rejected the client's certificate)", ts)
                return
        if side == Side.SERVER and d.encrypted == 1 and alert_sized:
            self._suspect("tls alert: encrypted", "the server sent an encrypted alert instead of "
                          "its handshake messages", ts)
            return
        if side == Side.CLIENT or self.client_finished:
            self._application_data()

    # -- hellos ----------------------------------------------------------------------------
    def _client_hello(self, msg: bytes) -> None:
        r = _Reader(msg)
        legacy = r.u16()
        r.take(32)
        r.vec(1)  # session id
        r.vec(2)  # cipher suites
        r.vec(1)  # compression methods
        ext = r.extensions()
        self.client_hello = True
        if 0 in ext:  # server_name: list length, type 0 (host_name), name
            sni = _Reader(ext[0])
            names = _Reader(sni.vec(2))
            if names.u8() == 0:
                self.attrs["tls.server_name"] = names.vec(2).decode("ascii", "replace")[:255]
        offered = [legacy]
        if 43 in ext:  # supported_versions
            v = _Reader(_Reader(ext[43]).vec(1))
            offered = [v.u16() for _ in range(len(v.b) // 2)]
        names = [_VERSIONS[x] for x in offered if x in _VERSIONS]  # skips GREASE values
        if names:
            self.attrs["tls.client.supported_versions"] = ",".join(names)

    def _server_hello(self, msg: bytes) -> bool:
        """Read a ServerHello; False for a HelloRetryRequest (the real one follows)."""
        r = _Reader(msg)
        legacy = r.u16()
        if r.take(32) == _HRR_RANDOM:
            self.stats["hello_retry_requests"] += 1
            return False
        r.vec(1)
        cipher = r.u16()
        r.u8()
        ext = r.extensions()
        version = legacy
        if 43 in ext and len(ext[43]) == 2:
            version = int.from_bytes(ext[43], "big")
        self.server_hello, self.version = True, version
        self.attrs["tls.protocol.version"] = _VERSIONS.get(version, f"0x{version:04x}")
        self.attrs["tls.cipher"] = _CIPHERS.get(cipher, f"0x{cipher:04x}")
        return True

    # -- verdicts --------------------------------------------------------------------------
    def _completed(self) -> bool:
        if self.app_data:
            return True
        if self.version == TLS13:
            return self.client_finished
        return self.dirs[0].ccs and self.dirs[1].ccs

    def _application_data(self) -> None:
        self.app_data = True
        if self.evidence is not None:  # data after an alert-sized record: it was not an alert
            self.stats["alert_sized_records_not_alerts"] += 1
            self.evidence = None

    def _suspect(self, error_type: str, message: str, ts: int) -> None:
        if self.evidence is None:
            self.evidence = (error_type, message, ts)

    def _garbage(self, side: Side, d: _Direction) -> None:
        self.stats["garbage_chunks"] += 1
        d.garbage = True
        d.resync, d.in_body, d.hdr, d.body = True, False, bytearray(), bytearray()

    def _fail(self, error_type: str, message: str, ts: int) -> None:
        self.done = True
        self.stats["handshakes_failed"] += 1
        attrs = {"tls.protocol.name": "tls", **self.attrs, "error.type": error_type}
        self._out.append(Record(name="TLS handshake", start_ns=self.start_ns or ts, end_ns=ts,
                                attributes=attrs, status="ERROR", status_message=message))

    def _drain(self) -> list[Record]:
        out, self._out = self._out, []
        return out


_ON_RECORD = {_CCS: TlsHandshakeParser._ccs, _ALERT: TlsHandshakeParser._alert,
              _HANDSHAKE: TlsHandshakeParser._handshake, _APPDATA: TlsHandshakeParser._appdata}

PARSER = TlsHandshakeParser
