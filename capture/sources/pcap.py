"""Recorded traffic (pcap / pcapng) replayed through the same parsers as live capture.

Each TCP flow is reassembled per direction (capture/sources/reassembly.py), each UDP
datagram is one chunk. A flow's protocol comes from the registry's userspace detectors on
its first chunks, never from ports (recorded captures often use non-standard ones). The
client is the SYN sender, else the side whose first detected chunk is a request. Spans are
built from the client's point of view (role CLIENT) with packet timestamps.
"""
from __future__ import annotations

import socket
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterator

import dpkt

from capture.connection import Connection
from capture.pipeline import Pipeline
from capture.protocols import registry
from capture.protocols.base import Side
from capture.sources.reassembly import Chunk, Stream

_UDP_PROTOCOLS = ("DNS",)  # the only protocol of the registry that runs over UDP
MAX_DETECT_TRIES = 8  # same budget as the kernel (bpf/guardian.bpf.c)
FLUSH_EVERY = 256  # packets between hand-offs of finished spans to the sink
MAX_FRAGMENT_SETS = 1024
MAX_FLOWS = 16384  # flows tracked at once; beyond, the least recently active one is closed
RESOURCE = {"service.name": "pcap"}

Endpoint = tuple[str, int]
_PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"


# -- reading ---------------------------------------------------------------------------
def _link_decoders() -> dict[int, Callable[[bytes], object]]:
    """Link type (LINKTYPE_* of the pcap spec) -> decoder returning the network layer."""
    return {
        dpkt.pcap.DLT_EN10MB: lambda b: dpkt.ethernet.Ethernet(b).data,
        dpkt.pcap.DLT_LINUX_SLL: lambda b: dpkt.sll.SLL(b).data,
        276: lambda b: dpkt.sll2.SLL2(b).data,  # LINUX_SLL2
        dpkt.pcap.DLT_NULL: lambda b: dpkt.loopback.Loopback(b).data,
        dpkt.pcap.DLT_LOOP: lambda b: dpkt.loopback.Loopback(b).data,
        101: _raw_ip, 12: _raw_ip, 14: _raw_ip,  # LINKTYPE_RAW and its old DLT values
        228: dpkt.ip.IP, 229: dpkt.ip6.IP6,  # LINKTYPE_IPV4 / LINKTYPE_IPV6
    }


def _raw_ip(b: bytes):
    return dpkt.ip6.IP6(b) if b[:1] and b[0] >> 4 == 6 else dpkt.ip.IP(b)


def _ts_ns(ts) -> int:
    if isinstance(ts, Decimal):
        return int(ts * 1_000_000_000)
    return int(round(ts * 1_000_000)) * 1000  # a float holds microseconds exactly, not nanoseconds


def read_packets(path: str, stats: Counter[str]) -> Iterator[tuple[int, object]]:
    """(timestamp ns, dpkt IP/IP6 packet) for every IP packet in a pcap or pcapng file."""
    decoders = _link_decoders()
    with open(path, "rb") as f:
        is_pcapng = f.read(4) == _PCAPNG_MAGIC
        f.seek(0)
        try:
            reader = dpkt.pcapng.Reader(f) if is_pcapng else dpkt.pcap.Reader(f)
        except (dpkt.UnpackError, ValueError) as e:
            raise ValueError(f"{path}: not a pcap or pcapng file ({e})") from None
        decode = decoders.get(reader.datalink())
        if decode is None:
            raise ValueError(f"{path}: unsupported link type {reader.datalink()}")
        for ts, buf in reader:
            stats["packets"] += 1
            try:
                ip = decode(buf)
            except (dpkt.UnpackError, IndexError, ValueError):
                stats["undecodable_packets"] += 1
                continue
            if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
                yield _ts_ns(ts), ip
            else:
                stats["non_ip_packets"] += 1


class Defragmenter:
    """IP fragments (RFC 791 §3.2, RFC 8200 §4.5) -> whole datagrams, bounded; overlaps: last wins."""

    def __init__(self, stats: Counter[str]) -> None:
        self.stats = stats
        self._sets: dict[tuple, dict] = {}

    def add(self, key: tuple, proto: int, offset: int, more: bool, payload: bytes):
        """The transport layer of the datagram when this fragment completes it, else None."""
        frags = self._sets.setdefault(key, {"parts": {}, "total": None})
        if len(self._sets) > MAX_FRAGMENT_SETS:
            self._sets.pop(next(iter(self._sets)))
            self.stats["fragments_dropped"] += 1
        frags["parts"][offset] = payload
        if not more:
            frags["total"] = offset + len(payload)
        self.stats["fragments"] += 1
        total = frags["total"]
        if total is None:
            return None
        buf = bytearray(total)
        have = 0
        for off in sorted(frags["parts"]):
            if off > have:
                return None  # a hole: wait for more fragments
            part = frags["parts"][off]
            buf[off:off + len(part)] = part
            have = max(have, off + len(part))
        if have < total:
            return None
        del self._sets[key]
        transport = {dpkt.ip.IP_PROTO_TCP: dpkt.tcp.TCP, dpkt.ip.IP_PROTO_UDP: dpkt.udp.UDP}.get(proto)
        try:
            return transport(bytes(buf[:total])) if transport else None
        except (dpkt.UnpackError, IndexError, ValueError):
            self.stats["undecodable_packets"] += 1
            return None


def _fragment(ip, v6: bool):
    """(key, proto, offset in bytes, more fragments, payload) if `ip` is a fragment, else None."""
    if v6:
        fh = ip.extension_hdrs.get(dpkt.ip.IP_PROTO_FRAGMENT) if hasattr(ip, "extension_hdrs") else None
        if fh is None:
            return None
        payload = ip.data if isinstance(ip.data, bytes) else bytes(ip.data)
        return (ip.src, ip.dst, fh.id, ip.p), ip.p, fh.frag_off * 8, bool(fh.m_flag), payload
    if not (ip.mf or ip.offset):
        return None
    payload = ip.data if isinstance(ip.data, bytes) else bytes(ip.data)
    return (ip.src, ip.dst, ip.id, ip.p), ip.p, ip.offset * 8, bool(ip.mf), payload


# -- flows -----------------------------------------------------------------------------
@dataclass(slots=True)
class _Flow:
    transport: str
    streams: dict[Endpoint, Stream]
    syn_sender: Endpoint | None = None
    conn: Connection | None = None
    client: Endpoint | None = None
    tries: int = 0
    ignored: bool = False
    fins: set[Endpoint] = field(default_factory=set)
    last_ts: int = 0


class PcapSource:
    """Replays one capture file into a Pipeline; `port` keeps only flows with that port at either end."""

    def __init__(self, pipeline: Pipeline, port: int | None = None) -> None:
        self.pipeline = pipeline
        self.port = port
        self.stats: Counter[str] = Counter()
        self._flows: dict[frozenset, _Flow] = {}
        self._defrag = Defragmenter(self.stats)
        self._next_id = 1

    def run(self, path: str) -> None:
        n = 0
        last_ts = 0
        for ts, ip in read_packets(path, self.stats):
            last_ts = ts
            self._packet(ts, ip)
            n += 1
            if n % FLUSH_EVERY == 0:
                self.pipeline.flush()
        for key, flow in list(self._flows.items()):
            self._close(key, flow.last_ts or last_ts)  # the capture ended: the flow's last packet
        self.pipeline.flush()

    # -- packets -------------------------------------------------------------------------
    def _packet(self, ts: int, ip) -> None:
        v6 = isinstance(ip, dpkt.ip6.IP6)
        l4 = ip.data
        frag = _fragment(ip, v6)
        if frag is not None:
            l4 = self._defrag.add(*frag)
            if l4 is None:
                return
        family = socket.AF_INET6 if v6 else socket.AF_INET
        src, dst = socket.inet_ntop(family, ip.src), socket.inet_ntop(family, ip.dst)
        if isinstance(l4, dpkt.tcp.TCP):
            # the IP length says how much was sent; the capture may hold less (snaplen)
            sent = 0 if frag else (ip.plen if v6 else ip.len - ip.hl * 4) - l4.off * 4
            self._tcp(ts, (src, l4.sport), (dst, l4.dport), l4, max(sent, len(l4.data)))
        elif isinstance(l4, dpkt.udp.UDP):
            self.stats["udp_datagrams"] += 1
            self._udp(ts, (src, l4.sport), (dst, l4.dport), bytes(l4.data), max(l4.ulen - 8, len(l4.data)))
        else:
            self.stats["other_transport_packets"] += 1

    def _wanted(self, a: Endpoint, b: Endpoint) -> bool:
        return self.port is None or self.port in (a[1], b[1])

    def _tcp(self, ts: int, src: Endpoint, dst: Endpoint, seg: dpkt.tcp.TCP, size: int) -> None:
        if not self._wanted(src, dst):
            return
        self.stats["tcp_segments"] += 1
        key = frozenset((src, dst))
        flags = seg.flags
        flow = self._flows.pop(key, None)  # re-inserted below: the dict stays in recency order
        if flow is not None:
            self._flows[key] = flow
        syn = flags & dpkt.tcp.TH_SYN
        if syn and not flags & dpkt.tcp.TH_ACK and flow is not None and flow.conn:
            self._close(key, ts)  # a new connection on the same 4-tuple
            flow = None
        if flow is None:
            if not (syn or size):
                return  # the last ACK/FIN of a closed flow, or a flow joined at a bare ACK
            self._make_room(ts)
            flow = self._flows[key] = _Flow("tcp", {src: Stream(self.stats), dst: Stream(self.stats)})
            self.stats["flows"] += 1
        flow.last_ts = ts
        mine, peer = flow.streams[src], flow.streams[dst]
        if syn:
            mine.syn(seg.seq)
            if not flags & dpkt.tcp.TH_ACK:
                flow.syn_sender = src
        chunks: list[tuple[Endpoint, Chunk]] = []
        if flags & dpkt.tcp.TH_ACK:
            chunks += [(dst, c) for c in peer.ack(seg.ack, ts)]
        if size:
            chunks += [(src, c) for c in mine.segment(seg.seq, bytes(seg.data), size, ts)]
        for sender, chunk in chunks:
            self._chunk(flow, sender, dst if sender == src else src, chunk)
        if flags & dpkt.tcp.TH_RST:
            self._close(key, ts)
        elif flags & dpkt.tcp.TH_FIN:
            flow.fins.add(src)
            if len(flow.fins) == 2:
                self._close(key, ts)

    def _udp(self, ts: int, src: Endpoint, dst: Endpoint, data: bytes, size: int) -> None:
        if not self._wanted(src, dst):
            return
        key = frozenset((src, dst))
        flow = self._flows.pop(key, None)
        if flow is not None:
            self._flows[key] = flow
        else:
            self._make_room(ts)
            flow = self._flows[key] = _Flow("udp", {})
            self.stats["flows"] += 1
        flow.last_ts = ts
        self._chunk(flow, src, dst, Chunk(ts, data, size))

    def _chunk(self, flow: _Flow, sender: Endpoint, receiver: Endpoint, chunk: Chunk) -> None:
        if flow.ignored:
            return
        if flow.conn is None:
            if not chunk.data or not self._detect(flow, sender, receiver, chunk.data):
                return
        self.pipeline.data(flow.conn, sender == flow.client, chunk.data, chunk.ts_ns, size=chunk.size)

    def _detect(self, flow: _Flow, sender: Endpoint, receiver: Endpoint, data: bytes) -> bool:
        """Mirror of the kernel: the first protocol whose detector recognises the chunk wins
        (a datagram is tried as DNS only, as bpf/detect.h does)."""
        for name in _UDP_PROTOCOLS if flow.transport == "udp" else registry.protocols():
            detect = registry.detector(name)
            side = detect(data) if detect else None
            if side is None:
                continue
            if flow.syn_sender is not None:
                client = flow.syn_sender
            else:
                client = sender if side == Side.CLIENT else receiver
            server = receiver if client == sender else sender
            flow.client = client
            flow.conn = Connection(conn_id=self._next_id, pid=0, protocol=name, role="CLIENT",
                                   transport=flow.transport, local=client, remote=server,
                                   resource=dict(RESOURCE), source="pcap")
            self._next_id += 1
            self.stats["flows_detected"] += 1
            self.stats[f"flows.{name}"] += 1
            return True
        flow.tries += 1
        if flow.tries >= MAX_DETECT_TRIES:
            flow.ignored = True
            self.stats["flows_undetected"] += 1
        return False

    def _make_room(self, ts: int) -> None:
        """At MAX_FLOWS, close the least recently active flow (its requests end unanswered)."""
        if len(self._flows) >= MAX_FLOWS:
            key = next(iter(self._flows))
            self.stats["flows_evicted"] += 1
            self._close(key, self._flows[key].last_ts or ts)

    def _close(self, key: frozenset, ts: int) -> None:
        flow = self._flows.pop(key)
        for sender, stream in flow.streams.items():
            receiver = next((e for e in flow.streams if e != sender), sender)
            for chunk in stream.finish(ts):
                self._chunk(flow, sender, receiver, chunk)
        if flow.conn is not None:
            self.pipeline.close(flow.conn, ts)


def replay(path: str, emit, port: int | None = None) -> dict[str, int]:
    """Replay `path` and hand spans to `emit(list[Span])`; returns the counters."""
    pipeline = Pipeline(emit)
    source = PcapSource(pipeline, port=port)
    source.run(path)
    stats = {f"pcap.{k}": v for k, v in source.stats.items()}
    stats.update({f"pipeline.{k}": v for k, v in pipeline.stats.items()})
    return stats
