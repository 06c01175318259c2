"""Differential test of HTTP/1 exchange pairing on ring records: the records of the unpaired
path, and the same records as the kernel's pairing sends them (capture.pairing, the kernel's
specification), give the same spans (ids masked) through ConnTracker + Pipeline — on the
recorded nginx + hey traffic and on transcripts the kernel cannot frame (pipelining, bodies in
several chunks, chunked replies, HEAD, 204/304, upgrades, unanswered requests)."""
from __future__ import annotations

import json
from pathlib import Path

from bench.events import _Sockets, load
from capture import abi
from capture.conntrack import ConnTracker
from capture.pairing import pair, paired
from capture.pipeline import Pipeline

RECORDING = Path(__file__).parent / "fixtures" / "nginx_hey.events.gz"
LOOPBACK = b"\0" * 10 + b"\xff\xff" + bytes([127, 0, 0, 1])
E, I = abi.Direction.EGRESS, abi.Direction.INGRESS


def tracker_for(pipeline: Pipeline, header: dict | None = None) -> ConnTracker:
    """A tracker for transcripts (header None: each pid its own service) or for a recording's
    records (bench.events' header: its processes' resources, its server port and sockets)."""
    if header is None:
        return ConnTracker(pipeline, lambda pid: {"service.name": f"p{pid}"}, boot_offset_ns=0)
    resources = {int(pid): res for pid, res in header["resources"].items()}
    return ConnTracker(pipeline, lambda pid: resources.get(pid, {}), port=header["port"],
                       sockets=_Sockets(header["port"]), boot_offset_ns=0)


def spans(records, header: dict | None = None) -> list[str]:
    """Spans of `records` (closing what is open at the end), as sorted JSON with ids masked."""
    out: list = []
    pipeline = Pipeline(out.extend)
    tracker = tracker_for(pipeline, header)
    for i, raw in enumerate(records):
        tracker.on_event(raw)
        if i % 256 == 255:
            pipeline.flush()
    for tracked in tracker.conns.values():  # what close_all does, at a fixed time
        pipeline.close(tracked.conn, 1 << 62)
    pipeline.flush()
    return sorted(json.dumps({**s.to_dict(), "trace_id": "-", "span_id": "-"}, sort_keys=True) for s in out)


class Conn:
    """Records of one connection as the kernel sends them unpaired."""

    def __init__(self, conn_id: int, role: int, lport: int, rport: int) -> None:
        self.conn_id, self.role, self.lport, self.rport = conn_id, role, lport, rport
        self.pos = [0, 0]

    def data(self, direction: int, payload: bytes, ts: int, total: int | None = None, tid: int = 9) -> bytes:
        total = len(payload) if total is None else total
        pos, self.pos[direction] = self.pos[direction], self.pos[direction] + total
        return abi.EVENT_STRUCT.pack(ts, self.conn_id, pos, 40 + self.role, tid, 5, total, len(payload), 0,
                                     abi.EventKind.DATA, abi.Proto.HTTP1, direction, self.role, 0,
                                     abi.Source.SYSCALL, 0, abi.Transport.TCP, LOOPBACK, LOOPBACK,
                                     self.lport, self.rport, 2, 0, b"proc") + payload

    def close(self, ts: int) -> bytes:
        return abi.EVENT_STRUCT.pack(ts, self.conn_id, 0, 40 + self.role, 9, 5, 0, 0, 0, abi.EventKind.CLOSE,
                                     abi.Proto.HTTP1, 0, self.role, 0, abi.Source.SYSCALL, 0, abi.Transport.TCP,
                                     LOOPBACK, LOOPBACK, self.lport, self.rport, 2, 0, b"proc")


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\n" + extra + b"\r\n"


def ok(code: int = 200, body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n" % (code, len(body)) + extra + b"\r\n" + body


def transcript() -> list[bytes]:
    """Unpaired records of a client and a server connection in ring order, every awkward case."""
    c = Conn(1, abi.Role.CLIENT, 41000, 8080)
    s = Conn(2, abi.Role.SERVER, 8080, 41001)
    out, t = [], 1000

    def at() -> int:
        nonlocal t
        t += 1000
        return t

    for conn in (c, s):
        req_dir, resp_dir = (E, I) if conn is c else (I, E)
        out += [conn.data(req_dir, get("/one"), at()), conn.data(resp_dir, ok(), at())]
        out += [conn.data(req_dir, get("/missing"), at()), conn.data(resp_dir, ok(404, b"no"), at())]
        out += [conn.data(req_dir, get("/boom"), at()), conn.data(resp_dir, ok(503, b"down"), at())]
        # POST whose body is a second write, and a response in three chunks (head, body, body)
        post = b"POST /items HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n"
        out += [conn.data(req_dir, post, at()), conn.data(req_dir, b"hello", at())]
        head = b"HTTP/1.1 201 Created\r\nContent-Length: 6000\r\n\r\n"
        out += [conn.data(resp_dir, head, at()), conn.data(resp_dir, b"x" * 4096, at(), total=5000),
                conn.data(resp_dir, b"y" * 1000, at())]
        # pipelined: two requests in one write, answered in one write and then another
        out += [conn.data(req_dir, get("/p1") + get("/p2"), at()),
                conn.data(resp_dir, ok(200, b"1"), at()), conn.data(resp_dir, ok(200, b"2"), at())]
        # chunked reply in pieces, HEAD with a length and no body, 204, 304
        out += [conn.data(req_dir, get("/chunked"), at()),
                conn.data(resp_dir, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", at()),
                conn.data(resp_dir, b"0\r\n\r\n", at())]
        out += [conn.data(req_dir, b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n", at()),
                conn.data(resp_dir, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", at())]
        out += [conn.data(req_dir, get("/nc"), at()), conn.data(resp_dir, b"HTTP/1.1 204 No Content\r\n\r\n", at())]
        out += [conn.data(req_dir, get("/cached", b"If-None-Match: x\r\n"), at()),
                conn.data(resp_dir, b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n", at())]
        # a request longer than the held prefix goes alone
        out += [conn.data(req_dir, get("/long", b"X-Pad: " + b"p" * 2000 + b"\r\n"), at()),
                conn.data(resp_dir, ok(), at())]
        # a request never answered: the close sends it first
        out += [conn.data(req_dir, get("/hang"), at()), conn.close(at())]
    # an upgrade: 101, then frames both ways on a new connection
    u = Conn(3, abi.Role.CLIENT, 41002, 8080)
    out += [u.data(E, get("/ws", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"), at()),
            u.data(I, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", at()),
            u.data(E, b"\x81\x02hi", at()), u.data(I, b"\x81\x02yo", at())]
    return out


def test_recorded_nginx_traffic_gives_the_same_spans_paired():
    header, records = load(str(RECORDING))
    sent = list(pair(records, held_at_end=True))
    kinds = [r[abi.Event.kind.offset] for r in sent]
    # one record per exchange: half the records, nearly all of them pairs
    assert len(sent) <= 0.52 * len(records)
    assert kinds.count(abi.EventKind.PAIR) >= 0.48 * len(records)
    old = spans(records, header)
    assert len(old) >= 1400
    assert spans(sent, header) == old


def test_transcripts_the_kernel_cannot_frame_give_the_same_spans_paired():
    records = transcript()
    sent = list(pair(records))
    assert sum(r[abi.Event.kind.offset] == abi.EventKind.PAIR for r in sent) >= 20
    old = spans(records)
    assert len(old) == 2 * 12 + 1  # 12 exchanges per side (/hang unanswered), the upgrade
    assert spans(sent) == old
    names = [json.loads(s)["name"] for s in old]
    assert names.count("GET /hang") == 2 and names.count("GET /p2") == 2


def test_the_comparison_sees_a_pairing_that_reorders():
    """Sending the response chunk before its request (the order a wrong pairing would give)
    changes the spans: the differential test above can fail."""
    records = transcript()

    def wrong(records):
        for raw in pair(records):
            if raw[abi.Event.kind.offset] == abi.EventKind.PAIR:
                copied = int.from_bytes(raw[abi.Event.copied_len.offset:][:4], "little")
                head = bytearray(raw[:abi.EVENT_SIZE + copied])
                head[abi.Event.kind.offset] = abi.EventKind.DATA
                yield bytes(head)  # the response first ...
                yield raw[abi.EVENT_SIZE + copied:]  # ... then its request
            else:
                yield raw

    assert spans(list(wrong(records))) != spans(records)


def test_a_pair_record_is_the_response_record_then_the_request_record():
    c = Conn(7, abi.Role.CLIENT, 41000, 80)
    req, resp = c.data(E, get("/x"), 10), c.data(I, ok(), 20)
    raw = paired(resp, req)
    assert raw[abi.Event.kind.offset] == abi.EventKind.PAIR
    assert raw[:abi.Event.kind.offset] == resp[:abi.Event.kind.offset]
    assert raw[abi.EVENT_SIZE + len(ok()):] == req
    spans_: list = []
    pipeline = Pipeline(spans_.extend)
    ConnTracker(pipeline, lambda pid: {}, boot_offset_ns=0).on_event(raw)
    pipeline.flush()
    [s] = spans_
    assert (s.name, s.start_time_unix_nano, s.end_time_unix_nano) == ("GET /x", 10, 20)


def test_redis_pipelines_and_pushes_give_the_same_spans_paired():
    c = Conn(5, abi.Role.CLIENT, 41005, 6379)
    s = Conn(6, abi.Role.SERVER, 6379, 41006)
    redis_records, t = [], 0
    for conn in (c, s):
        req_dir, resp_dir = (E, I) if conn is c else (I, E)

        def data(direction, payload):
            nonlocal t
            t += 1000
            return conn.data(direction, payload, t)

        redis_records += [data(req_dir, b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"), data(resp_dir, b"$1\r\nx\r\n")]
        # a pipeline of three in one write, answered over two reads
        redis_records += [data(req_dir, b"*1\r\n$4\r\nPING\r\n" * 3), data(resp_dir, b"+PONG\r\n+PONG\r\n"),
                          data(resp_dir, b"+PONG\r\n")]
        redis_records += [data(req_dir, b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n"),
                          data(resp_dir, b"-ERR value is not an integer\r\n")]
        # subscribe, then pushes no request asked for
        redis_records += [data(req_dir, b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\nn\r\n"),
                          data(resp_dir, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nn\r\n:1\r\n"),
                          data(resp_dir, b"*3\r\n$7\r\nmessage\r\n$1\r\nn\r\n$2\r\nhi\r\n")]
    redis_records = [r[:abi.Event.proto.offset] + bytes([abi.Proto.REDIS]) + r[abi.Event.proto.offset + 1:]
                     for r in redis_records]
    sent = list(pair(redis_records))
    assert sum(r[abi.Event.kind.offset] == abi.EventKind.PAIR for r in sent) == 8
    old = spans(redis_records)
    assert len(old) >= 2 * 6
    assert spans(sent) == old


def test_the_option_reaches_the_kernel_build(monkeypatch):
    from capture.config import CaptureConfig
    from capture.live import CaptureOptions, LiveCapture
    from capture.loader import Loader
    from guardian.cli.capture import live_options
    from guardian.cli.main import build_parser
    from guardian.config import load

    assert "-DPAIR_HTTP1=1" in Loader(pair=True).cflags
    assert "-DPAIR_HTTP1=0" in Loader().cflags
    assert CaptureConfig(options={"pair": False}).live_options().pair is False
    assert CaptureConfig().live_options().pair is True  # on by default
    env = "GUARDIAN_CAPTURE__OPTIONS__PAIR"
    monkeypatch.setenv(env, "0")  # options built in code are what they say, whatever the env
    assert "-DPAIR_HTTP1=1" in LiveCapture(CaptureOptions(), resource_for=lambda pid: {}).loader.cflags
    assert "-DPAIR_HTTP1=0" in LiveCapture(CaptureOptions(pair=False), resource_for=lambda pid: {}).loader.cflags
    # `guardian capture`: --pair / --no-pair, or the configuration's rule for capture.options.pair
    parse = build_parser().parse_args
    assert live_options(parse(["capture"]), load(None)).pair is False
    assert live_options(parse(["capture", "--pair"]), load(None)).pair is True
    monkeypatch.delenv(env)
    assert live_options(parse(["capture"]), load(None)).pair is True
    assert live_options(parse(["capture", "--no-pair"]), load(None)).pair is False
    # the ring's size likewise: the flag, else capture.options.ringbuf_pages
    monkeypatch.setenv("GUARDIAN_CAPTURE__OPTIONS__RINGBUF_PAGES", "1024")
    assert live_options(parse(["capture"]), load(None)).ringbuf_pages == 1024
    assert live_options(parse(["capture", "--ringbuf-pages", "64"]), load(None)).ringbuf_pages == 64
    monkeypatch.setenv("GUARDIAN_CAPTURE__OPTIONS__POLL_MS", "50")  # and the keys no flag names
    assert live_options(parse(["capture", "--port", "80"]), load(None)).poll_ms == 50
    assert live_options(parse(["capture", "--port", "80"]), load(None)).port == 80


PAIRED_RECORDING = Path(__file__).parent / "fixtures" / "nginx_hey_pair.events.gz"
UNPAIRED_RECORDING = Path(__file__).parent / "fixtures" / "nginx_hey_unpaired.events.gz"


def test_records_the_kernel_paired_give_the_spans_of_the_same_traffic_unpaired():
    """nginx + hey recorded live by two captures at once, one unpaired and one paired in the
    kernel (`python -m bench.events record UNPAIRED --paired PAIRED`): the same spans, each
    capture's programs stamping the same syscalls for themselves."""
    header, unpaired = load(str(UNPAIRED_RECORDING))
    pheader, paired_records = load(str(PAIRED_RECORDING))
    assert not header["paired"] and pheader["paired"]
    assert header["kernel_drops"] == pheader["kernel_drops"] == 0
    kinds = [r[abi.Event.kind.offset] for r in paired_records]
    assert kinds.count(abi.EventKind.PAIR) >= 0.95 * len(paired_records) - 50
    assert len(paired_records) <= 0.52 * len(unpaired)
    old, new = ([json.loads(s) for s in spans(records, header)] for records in (unpaired, paired_records))
    assert len(old) >= 2 * header["requests"]

    def key(d):
        return json.dumps({k: v for k, v in d.items() if not k.endswith("_unix_nano")}, sort_keys=True)

    old.sort(key=lambda d: (key(d), d["start_time_unix_nano"]))
    new.sort(key=lambda d: (key(d), d["start_time_unix_nano"]))
    assert [key(d) for d in new] == [key(d) for d in old]
    for a, b in zip(old, new):
        assert abs(a["start_time_unix_nano"] - b["start_time_unix_nano"]) < 5_000_000
        assert abs(a["end_time_unix_nano"] - b["end_time_unix_nano"]) < 5_000_000
