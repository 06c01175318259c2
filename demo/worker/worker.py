"""Order worker (Python, pika): consumes the `orders` queue and records each order in
PostgreSQL. If it stops, orders pile up in RabbitMQ (the consumer-stopped fault)."""
from __future__ import annotations

import json
import time

from demo.shoplib import ShopResolver, env_addr, name_process

name_process("order-worker")

import pika  # noqa: E402
import psycopg  # noqa: E402

dns = ShopResolver()


def connect_db() -> psycopg.Connection:
    host, port = env_addr("SHOP_POSTGRES")
    return psycopg.connect(host=dns.resolve(host), port=port, user="postgres", dbname="shop",
                           autocommit=True)


def main() -> None:
    db = connect_db()

    def on_order(ch, method, _props, body: bytes) -> None:
        o = json.loads(body)
        db.execute("INSERT INTO orders (order_id, sku, quantity, amount_cents) VALUES (%s, %s, %s, %s)",
                   (o["order_id"], o["sku"], o["quantity"], o["amount_cents"]))
        ch.basic_ack(method.delivery_tag)

    while True:  # reconnect: a paused worker finds its connection closed when it resumes
        try:
            host, port = env_addr("SHOP_AMQP")
            conn = pika.BlockingConnection(pika.ConnectionParameters(dns.resolve(host), port, heartbeat=0))
            ch = conn.channel()
            ch.queue_declare("orders", durable=True)
            ch.basic_qos(prefetch_count=2)
            ch.basic_consume("orders", on_order)
            print("consuming orders", flush=True)
            ch.start_consuming()
        except pika.exceptions.AMQPConnectionError as e:
            print(f"amqp connection lost: {e}; reconnecting", flush=True)
            time.sleep(1)


if __name__ == "__main__":
    main()
