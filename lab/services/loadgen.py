"""The lab's load generator: open-loop Poisson arrivals per entry route (service, route, rate),
the rates scaled by a factor the recorder sets in $LAB_CONTROL/loadgen (re-read every second)."""
from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from demo.shoplib import name_process

name_process("loadgen")

CFG = json.load(open(os.environ["LAB_CONFIG"]))
factor = 1.0
local = threading.local()


def read_factor() -> None:
    global factor
    path = os.path.join(CFG["control"], "loadgen")
    while True:
        try:
            factor = float(json.loads(open(path).read() or "{}").get("factor", 1.0))
        except (OSError, ValueError):
            pass
        time.sleep(1.0)


def request(port: int, route: str) -> None:
    method, path = route.split(" ", 1)
    conns = getattr(local, "conns", None)
    if conns is None:
        conns = local.conns = {}
    c = conns.get(port) or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conns[port] = c
    try:
        c.request(method, path, body=b"{}" if method == "POST" else None)
        c.getresponse().read()
    except (OSError, http.client.HTTPException):
        c.close()
        conns.pop(port, None)


def arrivals(pool: ThreadPoolExecutor, port: int, route: str, rate: float, rng: random.Random) -> None:
    while True:
        time.sleep(rng.expovariate(max(rate * factor, 1e-3)))
        pool.submit(request, port, route)


def main() -> None:
    threading.Thread(target=read_factor, daemon=True).start()
    pool = ThreadPoolExecutor(64)
    rng = random.Random(CFG.get("seed", 0))
    for svc, route, rate in CFG["entries"]:
        port = int(CFG["peers"][svc].rsplit(":", 1)[1])
        threading.Thread(target=arrivals, args=(pool, port, route, rate, random.Random(rng.random())),
                         daemon=True).start()
    print("loadgen running", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
