"""Recommendation service (Python, grpcio): /shop.Recommend/ForProduct returns related SKUs,
kept in Redis sorted sets. Messages are JSON bytes, so no generated stubs are needed."""
from __future__ import annotations

import json
import os
import time
import zlib
from concurrent import futures

from demo.shoplib import FaultSwitch, ShopResolver, env_addr, name_process

name_process("recommend")

import grpc  # noqa: E402
import redis  # noqa: E402

fault = FaultSwitch("recommend")
host, port = env_addr("SHOP_REDIS")
store = redis.Redis(ShopResolver().resolve(host), port, socket_timeout=2)


def for_product(request: bytes, context: grpc.ServicerContext) -> bytes:
    sku = json.loads(request)["sku"]
    if fault.mode == "slow":  # service-latency: this service itself got slow (e.g. a bad deploy)
        time.sleep(0.6)
    key = f"related:{sku}"
    related = [s.decode() for s in store.zrevrange(key, 0, 4)]
    if not related:
        seed = zlib.crc32(sku.encode())
        related = [f"SKU-{(seed * (k + 7)) % 200000 + 1:06d}" for k in range(5)]
        store.zadd(key, {s: 5 - k for k, s in enumerate(related)})
        store.expire(key, 60)
    return json.dumps({"sku": sku, "skus": related}).encode()


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handler = grpc.method_handlers_generic_handler(
        "shop.Recommend", {"ForProduct": grpc.unary_unary_rpc_method_handler(for_product)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{os.environ['SHOP_PORT']}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
