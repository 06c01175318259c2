"""Kafka wire protocol (kafka.apache.org/protocol): requests pair with responses by correlation id.

Request header v1/v2: api_key(int16) api_version(int16) correlation_id(int32) client_id(string)
[tagged fields]; response header v0/v1: correlation_id [tagged fields] (ApiVersions: always v0).
Every message: size(int32, big-endian) then the message. Produce/Fetch/Metadata bodies are read
for topics, partitions, record counts and error codes; other APIs for their top-level error.
Produce with acks=0 gets no response: it is recorded when sent.
Attributes: messaging.system "kafka", messaging.operation.name (the API), messaging.operation.type
("publish" Produce, "receive" Fetch, "settle" OffsetCommit), messaging.destination.name,
messaging.destination.partition.id, messaging.client.id, messaging.batch.message_count;
where semconv has none: kafka.api.version, kafka.error_code; error.type = the error's name.
"""
from __future__ import annotations

import struct

from capture.protocols.base import FramedParser, Record, Side
from capture.protocols.frames import Frame
from capture.protocols.kafka_wire import (ERRORS, MAX_API_VERSION, Reader, Short, api_name, error_first,
                                          flexible, record_count)

MAX_MESSAGE = 100 * 1024 * 1024
PRODUCE, FETCH, METADATA, OFFSET_COMMIT, API_VERSIONS = 0, 1, 3, 8, 18
_OPERATION_TYPE = {PRODUCE: "publish", FETCH: "receive", OFFSET_COMMIT: "settle"}


def _request_header(data: bytes) -> tuple[int, int, int, int] | None:
    """(size, api_key, api_version, correlation_id) if `data` starts like a request."""
    if len(data) < 14:
        return None
    size, key, version, corr, client_len = struct.unpack_from(">ihhih", data)
    if not 10 <= size <= MAX_MESSAGE or not 0 <= key < 80 or not 0 <= version <= MAX_API_VERSION:
        return None
    if corr < 0 or client_len < -1 or client_len > size - 10:
        return None
    if client_len > 0 and any(c < 0x20 or c > 0x7E for c in data[14:14 + min(client_len, 8)]):
        return None  # client ids are printable
    return size, key, version, corr


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/kafka.h: requests only (a response header is 8 bytes of
    little structure; the kernel sees the request first on every new connection)."""
    return Side.CLIENT if _request_header(data) else None


def _length(header: bytes) -> int | None:
    size = struct.unpack(">i", header)[0]
    return size + 4 if 4 <= size <= MAX_MESSAGE else None


class _Req:
    __slots__ = ("key", "version", "corr", "client_id", "start_ns", "end_ns", "topic", "partition",
                 "count", "acks")

    def __init__(self, key: int, version: int, corr: int, start_ns: int, end_ns: int) -> None:
        self.key, self.version, self.corr, self.start_ns, self.end_ns = key, version, corr, start_ns, end_ns
        self.client_id = self.topic = None
        self.partition: int | None = None
        self.count = 0
        self.acks = -1


class KafkaParser(FramedParser):
    protocol = "KAFKA"
    header_len = 4
    frame_length = staticmethod(_length)

    def __init__(self) -> None:
        super().__init__()
        self._topic_ids: dict[bytes, str] = {}  # Metadata v10+ topic ids, for Fetch v13+

    # -- requests ------------------------------------------------------------------------
    def _request(self, f: Frame, out: list[Record]) -> None:
        head = _request_header(f.data[:14] + b"\0" * max(0, 14 - len(f.data)))
        if head is None:
            self.stats["bad_request"] += 1
            self._lose(Side.CLIENT, "bad_request")
            return
        _size, key, version, corr = head
        r = _Req(key, version, corr, f.start_ns, f.end_ns)
        rd = Reader(f.data, 12)
        try:
            r.client_id = rd.legacy_string()  # client_id is never compact (KIP-482)
            rd.flex = flexible(key, version)
            rd.tags()
            if key == PRODUCE:
                self._produce_request(rd, r)
            elif key == FETCH:
                self._fetch_request(rd, r)
            elif key == METADATA:
                if version >= 10:
                    n = rd.array_len()
                    if n:
                        tid = rd._take(16)
                        r.topic = rd.string() or self._topic_ids.get(tid)
                else:
                    if rd.array_len():
                        r.topic = rd.string()
            elif key == OFFSET_COMMIT:
                rd.string()  # group_id
                if version >= 1:
                    rd.int32()
                    rd.string()  # generation, member
                if version >= 7:
                    rd.string()  # group_instance_id
                if 2 <= version <= 4:
                    rd.int64()  # retention_time_ms
                if rd.array_len():
                    r.topic = rd.string()
        except Short:
            self.stats["truncated_request"] += 1
        if key == PRODUCE and r.acks == 0:
            out.append(self._record(r, None, f.end_ns, expect_reply=False))
            return
        self._pending.put(corr, r)

    def _produce_request(self, rd: Reader, r: _Req) -> None:
        if r.version >= 3:
            rd.string()  # transactional_id
        r.acks = rd.int16()
        rd.int32()  # timeout_ms
        for t in range(rd.array_len()):
            name = rd.string() if r.version < 13 else self._topic_ids.get(rd._take(16))
            for p in range(rd.array_len()):
                index = rd.int32()
                if t == 0 and p == 0:
                    r.topic, r.partition = name, index
                try:
                    records = rd.bytes_()
                except Short:  # a truncated copy: count the batches we have
                    r.count += record_count(rd.b[rd.pos:])  # (its length prefix is read)
                    raise
                r.count += record_count(records)
                rd.tags()
            rd.tags()

    def _fetch_request(self, rd: Reader, r: _Req) -> None:
        v = r.version
        if v < 15:
            rd.int32()  # replica_id
        rd.skip(8)  # max_wait_ms, min_bytes
        if v >= 3:
            rd.int32()
        if v >= 4:
            rd.int8()
        if v >= 7:
            rd.skip(8)  # session id and epoch
        if rd.array_len():
            r.topic = rd.string() if v < 13 else self._topic_ids.get(rd._take(16))
            if rd.array_len():
                r.partition = rd.int32()

    # -- responses -----------------------------------------------------------------------
    def _response(self, f: Frame, out: list[Record]) -> None:
        if len(f.data) < 8:
            self.stats["bad_response"] += 1
            return
        corr = struct.unpack_from(">i", f.data, 4)[0]
        r = self._pending.take(corr)
        if r is None:
            self.stats["responses_without_request"] += 1
            return
        rd = Reader(f.data, 8, flexible(r.key, r.version) and r.key != API_VERSIONS)
        error = 0
        try:
            rd.tags()
            if r.key == PRODUCE:
                error = self._produce_response(rd, r)
            elif r.key == FETCH:
                error = self._fetch_response(rd, r)
            elif r.key == METADATA:
                error = self._metadata_response(rd, r)
            else:
                at = error_first(r.key, r.version)
                if at is not None:
                    rd.skip(at)
                    error = rd.int16()
        except Short:
            self.stats["truncated_response"] += 1
        out.append(self._record(r, error, f.end_ns))

    def _produce_response(self, rd: Reader, r: _Req) -> int:
        v, first = r.version, 0
        for _ in range(rd.array_len()):
            rd.string() if v < 13 else rd.skip(16)
            for _ in range(rd.array_len()):
                rd.int32()
                err = rd.int16()
                first = first or err
                rd.int64()
                if v >= 2:
                    rd.int64()
                if v >= 5:
                    rd.int64()
                if v >= 8:
                    for _ in range(rd.array_len()):
                        rd.int32()
                        rd.string()
                        rd.tags()
                    rd.string()
                rd.tags()
            rd.tags()
        return first

    def _fetch_response(self, rd: Reader, r: _Req) -> int:
        v = r.version
        if v >= 1:
            rd.int32()
        if v >= 7:
            top = rd.int16()
            rd.int32()
            if top:
                return top
        first, count = 0, 0
        for _ in range(rd.array_len()):
            rd.string() if v < 13 else rd.skip(16)
            for _ in range(rd.array_len()):
                rd.int32()
                err = rd.int16()
                first = first or err
                rd.int64()
                if v >= 4:
                    rd.int64()
                if v >= 5:
                    rd.int64()
                if v >= 4:
                    for _ in range(rd.array_len()):
                        rd.skip(16)
                        rd.tags()
                if v >= 11:
                    rd.int32()
                count += record_count(rd.bytes_())
                r.count = count
                rd.tags()
            rd.tags()
        return first

    def _metadata_response(self, rd: Reader, r: _Req) -> int:
        v, first = r.version, 0
        if v >= 3:
            rd.int32()
        for _ in range(rd.array_len()):
            rd.int32()
            rd.string()
            rd.int32()
            if v >= 1:
                rd.string()
            rd.tags()
        if v >= 2:
            rd.string()
        if v >= 1:
            rd.int32()
        for _ in range(rd.array_len()):
            err = rd.int16()
            name = rd.string()
            if v >= 10:
                tid = rd._take(16)
                if name:
                    self._topic_ids[tid] = name
            first = first or err
            if v >= 1:
                rd.int8()
            for _ in range(rd.array_len()):
                rd.skip(10)  # error_code, partition_index, leader_id
                if v >= 7:
                    rd.int32()
                for _ in range(2 + (v >= 5)):
                    rd.skip(4 * rd.array_len())
                rd.tags()
            if v >= 8:
                rd.int32()
            rd.tags()
        return first

    def _record(self, r: _Req, error: int | None, end_ns: int, expect_reply: bool = True) -> Record:
        op = api_name(r.key)
        attrs: dict = {"messaging.system": "kafka", "messaging.operation.name": op,
                       "kafka.api.version": r.version, "network.protocol.name": "kafka"}
        if r.key in _OPERATION_TYPE:
            attrs["messaging.operation.type"] = _OPERATION_TYPE[r.key]
        if r.topic:
            attrs["messaging.destination.name"] = r.topic
        if r.partition is not None:
            attrs["messaging.destination.partition.id"] = str(r.partition)
        if r.client_id:
            attrs["messaging.client.id"] = r.client_id
        if r.count:
            attrs["messaging.batch.message_count"] = r.count
        status, message = "UNSET", ""
        if error is None and expect_reply:
            status, message = "ERROR", "connection closed before a response"
            attrs["error.type"] = "no_response"
        elif error:
            name = ERRORS.get(error, str(error))
            status, message = "ERROR", name
            attrs["kafka.error_code"] = error
            attrs["error.type"] = name
        return Record(name=f"{op} {r.topic}" if r.topic else op, start_ns=r.start_ns, end_ns=end_ns,
                      attributes=attrs, status=status, status_message=message)


PARSER = KafkaParser
