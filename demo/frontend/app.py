"""Shop frontend (Python, FastAPI on uvicorn): the public HTTP API the load generator calls.

Talks to inventory (Go, HTTPS), payments (Node, HTTPS), recommend (gRPC), Redis (catalogue
cache) and RabbitMQ (orders), finding each peer by a DNS lookup in shop.local.
"""
from __future__ import annotations

import json
import os
import ssl
import threading
import uuid

from demo.shoplib import ResolveError, ShopResolver, env_addr, name_process

name_process("frontend")  # before uvicorn, grpc and the thread pool start threads

import grpc  # noqa: E402
import httpx  # noqa: E402
import pika  # noqa: E402
import redis  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from pydantic import BaseModel  # noqa: E402

app = FastAPI(title="shop frontend")
dns = ShopResolver()
tls = ssl.create_default_context(cafile=os.environ["SHOP_CA"])
http = httpx.Client(verify=tls, timeout=httpx.Timeout(3.0))


def _url(var: str, path: str) -> str:
    """https://<ip of the peer, looked up now>:<port><path>; DNS failures become 502s."""
    host, port = env_addr(var)
    try:
        ip = dns.resolve(host)
    except ResolveError as e:
        raise HTTPException(502, str(e)) from e
    return f"https://{ip}:{port}{path}"


def _call(method: str, var: str, path: str, body: dict | None = None) -> dict:
    peer = var.removeprefix("SHOP_").lower()
    try:
        r = http.request(method, _url(var, path), json=body)
    except httpx.ConnectError as e:  # refused, or a TLS handshake that failed verification
        raise HTTPException(502, f"{peer}: {e}") from e
    except httpx.TimeoutException as e:
        raise HTTPException(504, f"{peer}: timeout") from e
    if r.status_code >= 400:
        raise HTTPException(502 if r.status_code >= 500 else r.status_code, f"{peer}: {r.status_code} {r.text[:200]}")
    return r.json()


def _redis() -> redis.Redis:
    host, port = env_addr("SHOP_REDIS")
    return redis.Redis(dns.resolve(host), port, socket_timeout=2)


_cache = _redis()


class _Recommend:
    """gRPC client of /shop.Recommend/ForProduct; JSON-encoded messages keep the demo
    free of generated code (gRPC carries any bytes)."""

    def __init__(self) -> None:
        host, port = env_addr("SHOP_RECOMMEND")
        channel = grpc.insecure_channel(f"{dns.resolve(host)}:{port}")
        self.for_product = channel.unary_unary(
            "/shop.Recommend/ForProduct",
            request_serializer=lambda m: json.dumps(m).encode(),
            response_deserializer=json.loads,
        )


recommend = _Recommend()


class _Orders:
    """Publishes orders to the `orders` queue; one connection shared under a lock
    (pika connections are not thread-safe), reopened after a failure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ch = None

    def publish(self, order: dict) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._ch is None or self._ch.is_closed:
                        host, port = env_addr("SHOP_AMQP")
                        params = pika.ConnectionParameters(dns.resolve(host), port, heartbeat=0,
                                                           blocked_connection_timeout=3)
                        self._ch = pika.BlockingConnection(params).channel()
                        self._ch.queue_declare("orders", durable=True)
                    self._ch.basic_publish("", "orders", json.dumps(order).encode(),
                                           pika.BasicProperties(content_type="application/json"))
                    return
                except (pika.exceptions.AMQPError, ResolveError, OSError):
                    self._ch = None
                    if attempt == 2:
                        raise HTTPException(503, "orders queue unavailable")


orders = _Orders()


@app.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@app.get("/api/products")
def products() -> list:
    cached = _cache.get("catalog:top")
    if cached:
        return json.loads(cached)
    items = _call("GET", "SHOP_INVENTORY", "/products?limit=20")
    _cache.set("catalog:top", json.dumps(items), ex=2)
    return items


@app.get("/api/products/{sku}")
def product(sku: str) -> dict:
    item = _call("GET", "SHOP_INVENTORY", f"/products/{sku}")
    try:
        item["related"] = recommend.for_product({"sku": sku}, timeout=2.0)["skus"]
    except grpc.RpcError as e:
        raise HTTPException(504 if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED else 502,
                            f"recommend: {e.code().name}") from e
    return item


class CheckoutRequest(BaseModel):
    sku: str
    quantity: int = 1


@app.post("/api/checkout")
def checkout(req: CheckoutRequest) -> dict:
    order_id = uuid.uuid4().hex[:12]
    reserved = _call("POST", "SHOP_INVENTORY", "/reserve", {"sku": req.sku, "quantity": req.quantity})
    amount = reserved["price_cents"] * req.quantity
    charge = _call("POST", "SHOP_PAYMENTS", "/charge", {"order_id": order_id, "amount_cents": amount})
    orders.publish({"order_id": order_id, "sku": req.sku, "quantity": req.quantity, "amount_cents": amount})
    _cache.incr("orders:placed")
    return {"order_id": order_id, "payment": charge["id"], "amount_cents": amount}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["SHOP_PORT"]), log_level="warning",
                access_log=False)
