"""Write small synthetic pcap files (Ethernet/IPv4/TCP+UDP) with exact control over segments."""
from __future__ import annotations

import socket
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[3]
# Recorded captures of real traffic, in the repository (sources and licences: tests/captures/README.md).
CAPTURES = ROOT / "tests" / "captures"


class PcapWriter:
    """Packets are added in capture order; `seq` offsets are relative to each side's ISN."""

    def __init__(self, path: Path, client=("10.0.0.1", 40000), server=("10.0.0.2", 7777),
                 isn_client: int = 1000, isn_server: int = 5000, start_s: float = 1_700_000_000.0) -> None:
        self.path = path
        self.client, self.server = client, server
        self.isn = {client: isn_client, server: isn_server}
        self.next = {client: 1, server: 1}  # relative seq of the next byte (after the SYN)
        self.t = start_s
        self.packets: list[tuple[float, bytes]] = []

    def _ip(self, src, dst, l4, proto) -> bytes:
        ip = dpkt.ip.IP(src=socket.inet_aton(src[0]), dst=socket.inet_aton(dst[0]), p=proto, data=l4, ttl=64)
        ip.len = 20 + len(bytes(l4))
        eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
        return bytes(eth)

    def add(self, frame: bytes, dt: float = 0.001) -> None:
        self.t += dt
        self.packets.append((self.t, frame))

    def tcp(self, src, data: bytes = b"", flags: int = dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH,
            rel_seq: int | None = None, dt: float = 0.001, ack: bool = True) -> None:
        """A segment from `src`; by default at the side's next sequence number (advances it)."""
        dst = self.server if src == self.client else self.client
        rel = self.next[src] if rel_seq is None else rel_seq
        seq = (self.isn[src] + rel) & 0xFFFFFFFF
        ack_no = (self.isn[dst] + self.next[dst]) & 0xFFFFFFFF if ack else 0
        seg = dpkt.tcp.TCP(sport=src[1], dport=dst[1], seq=seq, ack=ack_no, flags=flags, data=data, win=65535)
        self.add(self._ip(src, dst, seg, dpkt.ip.IP_PROTO_TCP), dt)
        if rel_seq is None:
            self.next[src] += len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)

    def handshake(self) -> None:
        self.next = {self.client: 0, self.server: 0}
        self.tcp(self.client, flags=dpkt.tcp.TH_SYN, ack=False)
        self.tcp(self.server, flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)
        self.tcp(self.client, flags=dpkt.tcp.TH_ACK)

    def fin(self) -> None:
        self.tcp(self.client, flags=dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)
        self.tcp(self.server, flags=dpkt.tcp.TH_FIN | dpkt.tcp.TH_ACK)

    def udp(self, src, dst, data: bytes, dt: float = 0.001) -> None:
        u = dpkt.udp.UDP(sport=src[1], dport=dst[1], data=data)
        u.ulen = 8 + len(data)
        self.add(self._ip(src, dst, u, dpkt.ip.IP_PROTO_UDP), dt)

    def write(self) -> Path:
        with open(self.path, "wb") as f:
            w = dpkt.pcap.Writer(f)
            for ts, frame in self.packets:
                w.writepkt(frame, ts=ts)
        return self.path
