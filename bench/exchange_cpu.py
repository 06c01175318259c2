"""What the capture's kernel side costs a traced process per exchange, without a server or a scheduler in the figure.

One process holds both ends of a loopback TCP connection (nonblocking) and does Redis PING
exchanges the way an event loop does them: the client sends, the server reads the request and
then reads again until EAGAIN, answers, and the client reads the answer and again until EAGAIN
(six syscalls, two of them empty reads, as pgbench and postgres do per query). The figure is the
process's own CPU time per exchange (user + system: the BPF programs and the tracepoints run in
it), alone and under `guardian capture --port` from each --tree, in rounds (the order reversed every
other round). CPU time per exchange of one process moves far less with the host's load than a
throughput does; the agent's own CPU is not in it (bench.dbload measures that).

Run as root: .venv/bin/python -m bench.exchange_cpu --tree /work/main --tree . [--exchanges 150000]
             [--rounds 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import time
from pathlib import Path

from bench import dbload
from support.ports import free_port
from support import results as bench_results

REQUEST, RESPONSE = b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n"


def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(4096)
        except BlockingIOError:
            pass


def _empty_recv(sock: socket.socket) -> None:
    try:
        sock.recv(4096)
    except BlockingIOError:
        pass


def exchanges(port: int, n: int) -> float:
    """CPU µs of this process per exchange over `n` exchanges on a new connection to itself."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(1)
        with socket.create_connection(("127.0.0.1", port)) as client:
            server, _ = listener.accept()
            with server:
                client.setblocking(False)
                server.setblocking(False)
                t0 = time.process_time()
                for _ in range(n):
                    client.send(REQUEST)
                    _recv(server)
                    _empty_recv(server)
                    server.send(RESPONSE)
                    _recv(client)
                    _empty_recv(client)
                return 1e6 * (time.process_time() - t0) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", type=Path, default=[], help="checkout whose agent runs (repeatable)")
    ap.add_argument("--exchanges", type=int, default=150_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    port = free_port()
    agents = [None, *(t.resolve() for t in args.tree)]
    rows = []
    for round_ in range(args.rounds):
        for tree in (agents if round_ % 2 == 0 else agents[::-1]):
            row = {"round": round_, "agent": str(tree) if tree else "none", "load": round(os.getloadavg()[0], 1)}
            if tree is None:
                row["cpu_us_per_exchange"] = round(exchanges(port, args.exchanges), 3)
            else:
                with dbload.capture(port, tree) as cap:
                    row["cpu_us_per_exchange"] = round(exchanges(port, args.exchanges), 3)
                row["spans_per_exchange"] = round(
                    sum(1 for s in cap.spans if s["kind"] == "CLIENT") / args.exchanges, 4)
            print(json.dumps(row), flush=True)
            rows.append(row)
    base = {r["round"]: r["cpu_us_per_exchange"] for r in rows if r["agent"] == "none"}
    for tree in agents[1:]:
        added = [round(r["cpu_us_per_exchange"] - base[r["round"]], 3) for r in rows if r["agent"] == str(tree)]
        print(f"{tree}: added CPU µs per exchange by round {added}")
    if args.json:
        bench_results.write(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
