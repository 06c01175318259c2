"""The async variant of recorded_app.py: one asyncio event loop (one thread) serves every
request and makes its Redis calls, so thread ids cannot tell concurrent requests apart.

usage: recorded_async_app.py NAME PORT LOGFILE REDIS_PORT
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time

NAME, PORT, LOG, REDIS = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])


def log(kind, name, start, end, local, peer, parent, span_id, extra=None):
    client, server = (peer, local) if kind == "SERVER" else (local, peer)
    rec = {"span_id": span_id, "truth_parent": parent, "kind": kind, "name": name, "start": start,
           "end": end, "service": NAME, "pid": os.getpid(), "tid": threading.get_native_id(),
           "client": client, "server": server, **(extra or {})}
    with open(LOG, "a") as f:
        f.write(json.dumps(rec) + "\n")


async def redis_get(key: str, parent: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", REDIS)
    try:
        span_id = os.urandom(8).hex()
        start = time.time_ns()
        writer.write(f"*2\r\n$3\r\nGET\r\n${len(key)}\r\n{key}\r\n".encode())
        await writer.drain()
        line = await reader.readline()
        if line.startswith(b"$") and int(line[1:]) >= 0:
            await reader.readexactly(int(line[1:]) + 2)
        end = time.time_ns()
        sock = writer.get_extra_info("socket")
        log("CLIENT", "GET", start, end, sock.getsockname()[:2], sock.getpeername()[:2], parent, span_id,
            {"db.system": "redis"})
    finally:
        writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    while True:
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            break
        start = time.time_ns()
        lines = head.decode().split("\r\n")
        path = lines[0].split()[1]
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        span_id = os.urandom(8).hex()
        await asyncio.sleep(0.002)  # some work, so requests overlap
        await redis_get("stock", span_id)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        end = time.time_ns()
        log("SERVER", "GET " + path, start, end, sock.getsockname()[:2], sock.getpeername()[:2],
            headers.get("X-Truth-Parent"), span_id)


async def main() -> None:
    server = await asyncio.start_server(lambda r, w: handle(r, w), "127.0.0.1", PORT)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.IncompleteReadError):
        pass
