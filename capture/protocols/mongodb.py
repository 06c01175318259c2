"""MongoDB wire protocol: OP_MSG, legacy OP_QUERY/OP_REPLY, OP_COMPRESSED (noop, zlib).

Spec: mongodb.com/docs/manual/reference/mongodb-wire-protocol. Responses pair with requests
by responseTo == requestID, so concurrent requests on one connection each get a record;
OP_MSG with moreToCome expects no reply. BSON is decoded with pymongo's codec; a truncated
document still yields its first element (the command name and collection).
Attributes: db.system "mongodb", db.operation.name (the command),
db.collection.name, db.namespace ($db), db.response.status_code (the server's error code),
error.type (codeName); db.query.text is not recorded (documents hold data, not queries).

    header: messageLength(int32) requestID(int32) responseTo(int32) opCode(int32), little-endian
    OP_MSG: flagBits(uint32) sections… [checksum]; section kind 0: a BSON document,
            kind 1: size(int32) identifier(cstring) documents…
"""
from __future__ import annotations

import struct
import zlib

import bson
from bson.errors import BSONError

from capture.protocols.base import FramedParser, Record, Side
from capture.protocols.frames import Frame

HEADER = struct.Struct("<iiii")
MAX_MESSAGE = 48 * 1000 * 1000  # maxMessageSizeBytes
OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS = 1, 2001, 2002, 2004, 2005, 2006, 2007
OP_COMPRESSED, OP_MSG = 2012, 2013
REQUEST_OPS = {OP_UPDATE: "update", OP_INSERT: "insert", OP_QUERY: "find", OP_GET_MORE: "getMore",
               OP_DELETE: "delete", OP_KILL_CURSORS: "killCursors", OP_MSG: "", OP_COMPRESSED: ""}
MORE_TO_COME = 1 << 1
CHECKSUM_PRESENT = 1 << 0
# commands whose first value names a collection
_NO_COLLECTION = {"hello", "isMaster", "ismaster", "ping", "buildInfo", "buildinfo", "listDatabases",
                  "endSessions", "saslStart", "saslContinue", "getMore", "killCursors", "listCollections",
                  "dropDatabase", "serverStatus", "getLastError", "abortTransaction", "commitTransaction"}


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/mongodb.h."""
    if len(data) < 21:
        return None
    length, _req, response_to, op = HEADER.unpack_from(data)
    if not 21 <= length <= MAX_MESSAGE:
        return None
    if op == OP_MSG:
        flags = struct.unpack_from("<I", data, 16)[0]
        if flags & ~0x10003 or data[20] > 1:
            return None  # unknown required flag bits, or an unknown section kind
        if len(data) >= 25:
            doc_len = struct.unpack_from("<i", data, 21)[0]
            if data[20] == 0 and not 5 <= doc_len <= length - 21:
                return None
        return Side.CLIENT if response_to == 0 else Side.SERVER
    if op == OP_QUERY and response_to == 0 and length >= 29:
        flags = struct.unpack_from("<i", data, 16)[0]
        return Side.CLIENT if 0 <= flags < 256 and not flags & 1 and 0x20 <= data[20] < 0x7f else None
    if op == OP_REPLY and response_to != 0 and length >= 36:
        flags = struct.unpack_from("<i", data, 16)[0]
        return Side.SERVER if 0 <= flags < 16 else None
    if op == OP_COMPRESSED and length >= 25 and len(data) >= 25:
        original, _size, compressor = struct.unpack_from("<iiB", data, 16)
        if original in (OP_MSG, OP_QUERY, OP_REPLY) and compressor <= 3:
            return Side.CLIENT if response_to == 0 else Side.SERVER
    return None


def _length(header: bytes) -> int | None:
    length, _r, _t, op = HEADER.unpack(header)
    if not 16 <= length <= MAX_MESSAGE or (op not in REQUEST_OPS and op != OP_REPLY):
        return None
    return length


def first_element(doc: bytes) -> tuple[str, object]:
    """(key, value) of a BSON document's first element, read from a prefix of it."""
    if len(doc) < 6:
        return "", None
    end = doc.find(b"\0", 5)
    if end < 0:
        return "", None
    key = doc[5:end].decode("utf-8", "replace")
    if doc[4] == 0x02 and len(doc) >= end + 5:  # string
        n = struct.unpack_from("<i", doc, end + 1)[0]
        return key, doc[end + 5:end + 4 + n].decode("utf-8", "replace")
    return key, None


def _decode(doc: bytes) -> dict:
    try:
        return bson.decode(doc)
    except (BSONError, ValueError, IndexError, struct.error):
        key, value = first_element(doc)
        return {key: value} if key else {}

_HELLOS = ("hello", "ismaster", "isMaster")


class _Op:
    __slots__ = ("request_id", "start_ns", "end_ns", "name", "collection", "db", "doc")

    def __init__(self, request_id: int, start_ns: int, end_ns: int) -> None:
        self.request_id, self.start_ns, self.end_ns = request_id, start_ns, end_ns
        self.name, self.collection, self.db, self.doc = "", None, None, {}


def _message(f: Frame) -> tuple[int, int, int, bytes]:
    """(requestID, responseTo, opCode, body), the body decompressed from OP_COMPRESSED."""
    _n, req, resp_to, op = HEADER.unpack_from(f.data)
    body = f.data[16:]
    if op == OP_COMPRESSED and len(body) >= 9:
        op, _size, compressor = struct.unpack_from("<iiB", body)
        raw = body[9:]
        if compressor == 0:
            body = raw
        elif compressor == 2:
            try:
                body = zlib.decompressobj().decompress(raw)
            except zlib.error:
                body = b""
        else:
            body = b""  # snappy / zstd: not in the standard library; the pairing still works
    return req, resp_to, op, body


def _msg_body(body: bytes) -> tuple[int, dict]:
    """flagBits and the kind-0 section of an OP_MSG."""
    if len(body) < 5:
        return 0, {}
    flags = struct.unpack_from("<I", body)[0]
    pos = 4
    while pos < len(body):
        kind = body[pos]
        if kind == 0:
            n = struct.unpack_from("<i", body, pos + 1)[0] if len(body) >= pos + 5 else 0
            return flags, _decode(body[pos + 1:pos + 1 + n])
        if kind != 1 or len(body) < pos + 5:
            break
        size = struct.unpack_from("<i", body, pos + 1)[0]
        if size < 5:  # size counts itself and a cstring: anything smaller is garbage, not a loop
            break
        pos += 1 + size
    return flags, {}


class MongoParser(FramedParser):
    protocol = "MONGODB"
    header_len = 16
    frame_length = staticmethod(_length)

    def _request(self, f: Frame, out: list[Record]) -> None:
        req, _to, op, body = _message(f)
        o = _Op(req, f.start_ns, f.end_ns)
        more_to_come = False
        if op == OP_MSG:
            flags, doc = _msg_body(body)
            more_to_come = bool(flags & MORE_TO_COME)
            o.name, value = next(iter(doc.items()), ("", None))
            o.doc, o.db = doc, doc.get("$db")
            if isinstance(value, str) and o.name not in _NO_COLLECTION:
                o.collection = value
        elif op == OP_QUERY:
            end = body.find(b"\0", 4)
            full = body[4:end].decode("utf-8", "replace") if end > 0 else ""
            o.db, _, coll = full.partition(".")
            doc = _decode(body[end + 9:]) if end > 0 else {}
            if coll == "$cmd":
                o.name, value = next(iter(doc.items()), ("", None))
                if isinstance(value, str) and o.name not in _NO_COLLECTION:
                    o.collection = value
            else:
                o.name, o.collection = "find", coll or None
        else:
            o.name = REQUEST_OPS.get(op, "")
            more_to_come = op in (OP_UPDATE, OP_INSERT, OP_DELETE, OP_KILL_CURSORS)  # legacy: no reply
        if more_to_come:
            out.append(self._record(o, None, f.end_ns, expect_reply=False))
            return
        self._pending.put(req, o)

    def _response(self, f: Frame, out: list[Record]) -> None:
        _req, resp_to, op, body = _message(f)
        o = self._pending.take(resp_to)
        if o is None:
            self.stats["responses_without_request"] += 1
            return
        doc: dict = {}
        if op == OP_MSG:
            doc = _msg_body(body)[1]
        elif op == OP_REPLY and len(body) >= 20:
            flags = struct.unpack_from("<i", body)[0]
            doc = _decode(body[20:]) if struct.unpack_from("<i", body, 16)[0] else {}
            if flags & 2:  # QueryFailure: the document is {$err, code}
                doc = {"ok": 0, "errmsg": doc.get("$err", ""), "code": doc.get("code")}
        out.append(self._record(o, doc, f.end_ns))

    def _record(self, o: _Op, reply: dict | None, end_ns: int, expect_reply: bool = True) -> Record:
        attrs: dict = {"db.system": "mongodb", "network.protocol.name": "mongodb"}
        if o.name:
            attrs["db.operation.name"] = o.name
        if o.collection:
            attrs["db.collection.name"] = o.collection
        if o.db:
            attrs["db.namespace"] = str(o.db)
        status, message = "UNSET", ""
        if reply is None and expect_reply and "maxAwaitTimeMS" in o.doc and o.name in _HELLOS:
            # a driver's monitor long-polls with an awaitable hello: the connection closing while
            # the server still waits is the driver shutting down, not a failed command
            attrs["mongodb.awaited"] = True
        elif reply is None and expect_reply:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        elif reply:
            error = _error_of(reply)
            if error is not None:
                code, code_name, message = error
                status = "ERROR"
                if code is not None:
                    attrs["db.response.status_code"] = str(code)
                attrs["error.type"] = code_name or (str(code) if code is not None else "error")
        name = f"{o.name} {o.collection}" if o.name and o.collection else (o.name or "mongodb")
        return Record(name=name, start_ns=o.start_ns, end_ns=end_ns, attributes=attrs,
                      status=status, status_message=message)


def _error_of(reply: dict) -> tuple[object, str, str] | None:
    """(code, codeName, message) of a failed command: ok 0, or a write error in an ok reply."""
    if reply.get("ok", 1) in (0, 0.0, False):
        return reply.get("code"), str(reply.get("codeName", "")), str(reply.get("errmsg", ""))
    errors = reply.get("writeErrors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        e = errors[0]
        return e.get("code"), str(e.get("codeName", "")), str(e.get("errmsg", ""))
    wce = reply.get("writeConcernError")
    if isinstance(wce, dict):
        return wce.get("code"), str(wce.get("codeName", "")), str(wce.get("errmsg", ""))
    return None


PARSER = MongoParser
