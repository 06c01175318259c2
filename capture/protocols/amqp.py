"""AMQP 0-9-1 (RabbitMQ): methods decoded with pamqp, framing and content tracked here.

    frame: type(1) channel(2) size(4) payload(size) 0xCE; the client opens with "AMQP\\0\\0\\x09\\x01"
    content: a method (publish, deliver, get-ok, return), a header frame (class, weight,
    body size, properties), then body frames up to that size.

Rule 1: a synchronous method the client sends pairs with its -ok on the same channel (FIFO; one is
        outstanding per channel in practice); a channel.close/connection.close from the server
        fails the pending one (reply code and text).
Rule 2: basic.publish is one span when its content is complete; on a confirm channel it waits for
        the broker's ack/nack (delivery tags count publishes, `multiple` settles many).
Rule 3: basic.deliver and basic.get-ok are spans when their content is complete; basic.ack/nack/
        reject sent by the client are "settle" spans. Handshake methods (start, tune) are not spans.
Attributes: messaging.system "rabbitmq", messaging.operation.name/type, messaging.destination.name
(exchange, or amq.default; the queue for get/deliver/settle), messaging.rabbitmq.destination.routing_key,
messaging.rabbitmq.message.delivery_tag, messaging.message.body.size; where semconv has none:
amqp.reply_code (the server's close code); error.type = the reply text's name (NOT_FOUND …).
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

from pamqp import commands, frame as pframe
from pamqp.exceptions import PAMQPException

from capture.protocols.base import Parser, Record, Side
from capture.protocols.frames import Frame, FrameReader

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE
MAX_FRAME = 128 * 1024 * 1024
MAX_TRACKED = 10000  # unconfirmed publishes kept per channel, consumer tags per connection
# channels followed per connection and synchronous methods awaiting a reply per channel: a peer
# (or garbled bytes) naming every 16-bit channel, or never replying, must not grow the parser
MAX_CHANNELS = 2048
# deliveries awaiting the consumer's ack, per channel: an auto-ack consumer (no_ack) never acks, so
# past this the oldest goes (counted: deliveries_evicted); an ack of it then names no queue
MAX_DELIVERIES = 1024
MAX_SYNC = 256
# publishes awaiting the broker's confirm, per connection (each keeps its span's attributes)
MAX_UNCONFIRMED = 2048
CLASSES = {10: "connection", 20: "channel", 40: "exchange", 50: "queue", 60: "basic", 85: "confirm", 90: "tx"}
_HANDSHAKE = {"Connection.StartOk", "Connection.TuneOk", "Connection.SecureOk", "Channel.CloseOk",
              "Connection.CloseOk"}
_SETTLE = {"Basic.Ack": "ack", "Basic.Nack": "nack", "Basic.Reject": "reject"}


def _method_shape(b: bytes) -> tuple[int, int] | None:
    """(class, method) of a method frame at the start of `b`, if its header and end byte check out."""
    if len(b) < 12 or b[0] != FRAME_METHOD:
        return None
    size = struct.unpack_from(">I", b, 3)[0]
    cls, meth = struct.unpack_from(">HH", b, 7)
    if cls not in CLASSES or not 4 <= size <= MAX_FRAME or meth == 0 or meth > 120:
        return None
    if len(b) > 7 + size and b[7 + size] != FRAME_END:
        return None
    return cls, meth


def detect(data: bytes) -> Side | None:
    """Userspace mirror of bpf/protocols/amqp.h."""
    if data[:8] == PROTOCOL_HEADER:
        return Side.CLIENT
    shape = _method_shape(data)
    if shape is None or len(data) < 8 + struct.unpack_from(">I", data, 3)[0]:
        return None  # mid-stream: only a whole method frame with its end byte counts
    if shape == (10, 10):  # connection.start
        return Side.SERVER if data[11:13] == b"\x00\x09" else None
    if shape in ((60, 40), (60, 80), (60, 70), (60, 20)):  # publish, ack, get, consume
        return Side.CLIENT
    if shape in ((60, 60), (60, 71)):  # deliver, get-ok
        return Side.SERVER
    return None


def _length(header: bytes) -> int | None:
    if header[:4] == b"AMQP":
        return 8
    if header[0] not in (FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT):
        return None
    size = struct.unpack_from(">I", header, 3)[0]
    return size + 8 if size <= MAX_FRAME else None


def _op_name(name: str) -> str:
    """Basic.Publish -> basic.publish (the spec's spelling)."""
    cls, _, meth = name.partition(".")
    return f"{cls.lower()}.{meth[0].lower()}{meth[1:]}".replace("Ok", "-ok") if meth else name.lower()


@dataclass(slots=True)
class _Op:
    name: str  # span name
    start_ns: int
    attrs: dict
    body_left: int = -1  # content still expected (-1: no content yet)
    end_ns: int = 0


@dataclass(slots=True)
class _Channel:
    sync: deque = field(default_factory=deque)  # (method name, _Op) awaiting a reply
    content: dict = field(default_factory=dict)  # side -> _Op collecting its content
    confirm: bool = False
    publish_seq: int = 0
    unconfirmed: dict = field(default_factory=dict)  # delivery tag -> _Op
    deliveries: dict = field(default_factory=dict)  # delivery tag -> queue


class AmqpParser(Parser):
    protocol = "AMQP"

    def __init__(self) -> None:
        super().__init__()
        self._readers = {side: FrameReader(7, _length, self.stats) for side in Side}
        self._channels: dict[int, _Channel] = {}
        self._consumers: dict[str, str] = {}  # consumer tag -> queue
        self._unconfirmed = 0  # publishes awaiting a confirm over all channels (kept, not summed per publish)
        self._out: list[Record] = []

    def feed(self, side: Side, data: bytes, ts_ns: int, size: int | None = None) -> list[Record]:
        for f in self._readers[side].feed(data, ts_ns, size):
            self._frame(side, f)
        out, self._out = self._out, []
        return out

    def close(self, ts_ns: int) -> list[Record]:
        for ch in self._channels.values():
            for _name, op in ch.sync:
                self._finish(op, ts_ns, "ERROR", "connection closed before a response", "no_response")
            for op in ch.unconfirmed.values():
                self._finish(op, ts_ns, "ERROR", "connection closed before a confirm", "no_response")
        self.stats["requests_without_response"] += len(self._out)
        self._channels.clear()
        self._unconfirmed = 0
        out, self._out = self._out, []
        return out

    # -- frames --------------------------------------------------------------------------
    def _frame(self, side: Side, f: Frame) -> None:
        if f.data[:4] == b"AMQP" or len(f.data) < 7:
            return
        kind, channel = f.data[0], struct.unpack_from(">H", f.data, 1)[0]
        ch = self._channels.get(channel)
        if ch is None:
            if len(self._channels) >= MAX_CHANNELS:
                self.stats["channel_overflow"] += 1
                return
            ch = self._channels[channel] = _Channel()
        if kind == FRAME_HEADER and len(f.data) >= 19:
            op = ch.content.get(side)
            if op is not None:
                op.body_left = struct.unpack_from(">Q", f.data, 11)[0]
                op.attrs["messaging.message.body.size"] = op.body_left
                self._content_progress(side, ch, op, 0, f.end_ns)
        elif kind == FRAME_BODY:
            op = ch.content.get(side)
            if op is not None and op.body_left >= 0:
                self._content_progress(side, ch, op, f.size - 8, f.end_ns)
        elif kind == FRAME_METHOD:
            if f.truncated:
                self.stats["truncated_methods"] += 1
                return
            try:
                _n, _ch, method = pframe.unmarshal(f.data)
            except (PAMQPException, ValueError, struct.error, IndexError, KeyError):
                self.stats["bad_method"] += 1
                return
            if side == Side.CLIENT:
                self._client_method(ch, method, f)
            else:
                self._server_method(ch, method, f)

    def _content_progress(self, side: Side, ch: _Channel, op: _Op, n: int, ts: int) -> None:
        op.body_left -= n
        if op.body_left > 0:
            return
        del ch.content[side]
        if op.attrs.get("messaging.operation.name") == "publish" and ch.confirm:
            ch.publish_seq += 1
            if self._unconfirmed < MAX_UNCONFIRMED:
                ch.unconfirmed[ch.publish_seq] = op
                self._unconfirmed += 1
            else:
                self.stats["pending_overflow"] += 1
            return
        self._finish(op, ts)

    def _client_method(self, ch: _Channel, m, f: Frame) -> None:
        name = m.name
        if name in _HANDSHAKE:
            return
        if isinstance(m, commands.Basic.Publish):
            dest = m.exchange or "amq.default"
            ch.content[Side.CLIENT] = _Op(f"publish {dest}", f.start_ns, self._attrs(
                "publish", "publish", dest, m.routing_key))
            return
        if name in _SETTLE:
            queue = ch.deliveries.pop(m.delivery_tag, None)
            if getattr(m, "multiple", False):
                for tag in [t for t in ch.deliveries if t <= m.delivery_tag]:
                    queue = queue or ch.deliveries[tag]
                    del ch.deliveries[tag]
            op = _Op(f"{_SETTLE[name]} {queue}" if queue else _SETTLE[name], f.start_ns,
                     self._attrs(_SETTLE[name], "settle", queue, None))
            op.attrs["messaging.rabbitmq.message.delivery_tag"] = m.delivery_tag
            self._finish(op, f.end_ns)
            return
        attrs = self._attrs(_op_name(name), None, None, None)
        target = getattr(m, "queue", None) or getattr(m, "exchange", None)
        if isinstance(m, commands.Basic.Get):
            attrs = self._attrs("get", "receive", m.queue, None)
        if target:
            attrs["messaging.destination.name"] = target
        op = _Op(f"{attrs['messaging.operation.name']} {target}" if target else attrs["messaging.operation.name"],
                 f.start_ns, attrs)
        if not m.synchronous or getattr(m, "nowait", False):
            self._finish(op, f.end_ns)
            return
        if len(ch.sync) >= MAX_SYNC:
            ch.sync.popleft()
            self.stats["pending_overflow"] += 1
        ch.sync.append((name, op))

    def _server_method(self, ch: _Channel, m, f: Frame) -> None:
        name = m.name
        if isinstance(m, (commands.Basic.Deliver, commands.Basic.GetOk)):
            if isinstance(m, commands.Basic.Deliver):
                queue = self._consumers.get(m.consumer_tag)
                op = _Op(f"deliver {queue}" if queue else "deliver", f.start_ns,
                         self._attrs("deliver", "receive", queue, m.routing_key))
            else:
                op = self._reply(ch, name, f)
                if op is None:
                    return
                queue = op.attrs.get("messaging.destination.name")
                op.attrs["messaging.rabbitmq.destination.routing_key"] = m.routing_key
            op.attrs["messaging.rabbitmq.message.delivery_tag"] = m.delivery_tag
            if len(ch.deliveries) >= MAX_DELIVERIES:
                del ch.deliveries[next(iter(ch.deliveries))]  # tags rise: the oldest delivery
                self.stats["deliveries_evicted"] += 1
            ch.deliveries[m.delivery_tag] = queue
            ch.content[Side.SERVER] = op
            return
        if isinstance(m, (commands.Basic.Ack, commands.Basic.Nack)) and ch.confirm:
            tags = [t for t in ch.unconfirmed if t <= m.delivery_tag] if m.multiple else [m.delivery_tag]
            for tag in tags:
                op = ch.unconfirmed.pop(tag, None)
                if op is not None:
                    self._unconfirmed -= 1
                    nack = isinstance(m, commands.Basic.Nack)
                    self._finish(op, f.end_ns, *(("ERROR", "nacked by the broker", "nack") if nack else ()))
            return
        if isinstance(m, (commands.Channel.Close, commands.Connection.Close)):
            self._server_close(ch, m, f)
            return
        op = self._reply(ch, name, f)
        if op is None:
            return
        if isinstance(m, commands.Basic.ConsumeOk):
            queue = op.attrs.get("messaging.destination.name")
            if queue and (m.consumer_tag in self._consumers or len(self._consumers) < MAX_TRACKED):
                self._consumers[m.consumer_tag] = queue
        elif isinstance(m, commands.Confirm.SelectOk):
            ch.confirm = True
        elif isinstance(m, commands.Queue.DeclareOk):
            op.attrs["messaging.destination.name"] = m.queue  # server-named queues
        if isinstance(m, commands.Basic.GetEmpty):
            op.attrs["messaging.batch.message_count"] = 0
        self._finish(op, f.end_ns)

    def _reply(self, ch: _Channel, reply: str, f: Frame) -> _Op | None:
        """The pending request this reply answers (FIFO within the channel)."""
        for i, (name, op) in enumerate(ch.sync):
            if reply in _valid_responses(name):
                del ch.sync[i]
                return op
        if reply not in ("Connection.Start", "Connection.Tune", "Connection.Secure"):
            self.stats["responses_without_request"] += 1
        return None

    def _server_close(self, ch: _Channel, m, f: Frame) -> None:
        text = str(m.reply_text or "")
        error = text.split(" ", 1)[0] or str(m.reply_code)
        failing = f"{CLASSES.get(m.class_id, m.class_id)}.{m.method_id}" if m.class_id else ""
        pending = list(ch.sync) if isinstance(m, commands.Channel.Close) else \
            [p for c in self._channels.values() for p in c.sync]
        if isinstance(m, commands.Connection.Close):
            for c in self._channels.values():
                c.sync.clear()
        else:
            ch.sync.clear()
        for name, op in pending:
            op.attrs["amqp.reply_code"] = m.reply_code
            self._finish(op, f.end_ns, "ERROR", text, error)
        if not pending and m.reply_code != 200:
            op = _Op(_op_name(m.name), f.start_ns, self._attrs(_op_name(m.name), None, None, None))
            op.attrs["amqp.reply_code"] = m.reply_code
            if failing:
                op.attrs["amqp.failed_method"] = failing
            self._finish(op, f.end_ns, "ERROR", text, error)

    # -- records -------------------------------------------------------------------------
    @staticmethod
    def _attrs(op_name: str, op_type: str | None, dest: str | None, routing_key: str | None) -> dict:
        a = {"messaging.system": "rabbitmq", "messaging.operation.name": op_name,
             "network.protocol.name": "amqp", "network.protocol.version": "0.9.1"}
        if op_type:
            a["messaging.operation.type"] = op_type
        if dest:
            a["messaging.destination.name"] = dest
        if routing_key:
            a["messaging.rabbitmq.destination.routing_key"] = routing_key
        return a

    def _finish(self, op: _Op, end_ns: int, status: str = "UNSET", message: str = "",
                error: str | None = None) -> None:
        if error:
            op.attrs["error.type"] = error
        self._out.append(Record(name=op.name, start_ns=op.start_ns, end_ns=end_ns, attributes=op.attrs,
                                status=status, status_message=message))


def _valid_responses(name: str) -> tuple[str, ...]:
    cls_name, _, meth = name.partition(".")
    cls = getattr(getattr(commands, cls_name, None), meth, None)
    return tuple(getattr(cls, "valid_responses", ()) or ())


PARSER = AmqpParser
