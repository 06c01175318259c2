"""Load generator: shoppers browsing the catalogue, viewing products and checking out,
at a steady rate against the frontend. Every few seconds it appends a line of per-route
stats (count, errors and what they were, p50/p95 ms) as JSON to $SHOP_STATS, which the demo,
tests and the soak read."""
from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter

from demo.shoplib import name_process

name_process("loadgen")

import httpx  # noqa: E402

ROUTES = (  # (route, weight)
    ("browse", 4),
    ("product", 4),
    ("checkout", 2),
)


class Stats:
    def __init__(self) -> None:
        self.lat: dict[str, list[float]] = {r: [] for r, _ in ROUTES}
        self.err: dict[str, int] = {r: 0 for r, _ in ROUTES}
        self.kinds: dict[str, Counter[str]] = {r: Counter() for r, _ in ROUTES}

    def add(self, route: str, ms: float, failure: str | None) -> None:
        """`failure`: None for an answer, else what went wrong ("status 503", "ReadTimeout", ...)."""
        self.lat[route].append(ms)
        if failure is not None:
            self.err[route] += 1
            self.kinds[route][failure] += 1

    def line(self) -> str:
        out = {"ts": time.time()}
        for r, lat in self.lat.items():
            s = sorted(lat)
            pick = (lambda q: round(s[min(int(q * len(s)), len(s) - 1)], 1)) if s else (lambda q: None)
            out[r] = {"count": len(s), "errors": self.err[r], "p50_ms": pick(0.5), "p95_ms": pick(0.95)}
            if self.kinds[r]:
                out[r]["failures"] = dict(self.kinds[r])
        return json.dumps(out)


async def shopper(client: httpx.AsyncClient, route: str) -> tuple[str, float, str | None]:
    sku = f"SKU-{random.randint(1, 200000):06d}"
    t = time.perf_counter()
    try:
        if route == "browse":
            r = await client.get("/api/products")
        elif route == "product":
            r = await client.get(f"/api/products/{sku}")
        else:
            r = await client.post("/api/checkout", json={"sku": sku, "quantity": random.randint(1, 3)})
        failure = f"status {r.status_code}" if r.status_code >= 500 else None
    except httpx.HTTPError as e:  # ConnectError (refused), ReadTimeout, RemoteProtocolError, ...
        failure = type(e).__name__
    return route, (time.perf_counter() - t) * 1000, failure


async def main() -> None:
    base = f"http://127.0.0.1:{os.environ['SHOP_FRONTEND_PORT']}"
    rate = float(os.environ.get("SHOP_RATE", "10"))
    every = float(os.environ.get("SHOP_STATS_EVERY", "5"))
    names, weights = zip(*ROUTES)
    current, last, tasks = [Stats()], time.monotonic(), set()

    def done(task: asyncio.Task) -> None:
        tasks.discard(task)
        current[0].add(*task.result())  # counted in the window it finished in

    async with httpx.AsyncClient(base_url=base, timeout=5.0,
                                 limits=httpx.Limits(max_connections=64)) as client:
        while True:
            # Poisson arrivals: shoppers don't wait for each other.
            await asyncio.sleep(random.expovariate(rate))
            task = asyncio.create_task(shopper(client, random.choices(names, weights)[0]))
            tasks.add(task)
            task.add_done_callback(done)
            if time.monotonic() - last >= every:
                with open(os.environ["SHOP_STATS"], "a") as f:
                    f.write(current[0].line() + "\n")
                current[0], last = Stats(), time.monotonic()


if __name__ == "__main__":
    asyncio.run(main())
