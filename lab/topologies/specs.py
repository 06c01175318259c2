"""Topologies as data: services (language, routes made of steps, queue consumers), the entry
load, the schema, and which faults make sense where. `mesh12` is the tuning topology;
`grid14` is used only for the held-out split (other names, other wiring).

Steps: {"call": svc, "route": "GET /x", "timeout": s, "retries": n} | {"par": [calls]} |
{"sql": "..."} ($R: a random id) | {"redis": [args]} | {"push": queue} | {"work": cpu ms} |
{"sleep": ms}.
"""
from __future__ import annotations

SCHEMA = """
CREATE TABLE items (id serial PRIMARY KEY, category int NOT NULL, name text NOT NULL, price_cents int NOT NULL);
INSERT INTO items (category, name, price_cents)
  SELECT (g % 400), 'item-' || g, 100 + (g * 7919) % 90000 FROM generate_series(1, 120000) g;
CREATE INDEX items_category_idx ON items (category);
CREATE TABLE prices (sku int NOT NULL, region int NOT NULL, cents int NOT NULL);
INSERT INTO prices SELECT g, g % 7, 100 + (g * 31) % 5000 FROM generate_series(1, 120000) g;
CREATE UNIQUE INDEX prices_sku_idx ON prices (sku);
CREATE TABLE stock (sku int PRIMARY KEY, qty int NOT NULL);
INSERT INTO stock SELECT g, 1000000 FROM generate_series(1, 20000) g;
CREATE TABLE orders (id bigserial PRIMARY KEY, sku int, at timestamptz DEFAULT now());
ANALYZE;
"""

MESH12 = {
    "name": "mesh12",
    "zone": "mesh.local",
    "schema": SCHEMA,
    "services": {
        "gateway": {"lang": "python", "dns": True, "routes": {
            "GET /home": [{"par": [{"call": "catalog", "route": "GET /items"}, {"call": "recs", "route": "GET /recs"},
                                   {"call": "ads", "route": "GET /banner", "timeout": 3},
                                   {"call": "profile", "route": "GET /me"}]}],
            "POST /order": [{"call": "profile", "route": "GET /me"}, {"call": "cart", "route": "GET /cart"},
                            {"call": "pricing", "route": "GET /quote", "timeout": 1.0, "retries": 2},
                            {"call": "orders", "route": "POST /orders", "timeout": 4}],
            "GET /search": [{"call": "search", "route": "GET /q", "timeout": 4}]}},
        "catalog": {"lang": "go", "routes": {
            "GET /items": [{"sql": "SELECT id, name, price_cents FROM items WHERE category = ($R % 400) "
                                   "ORDER BY price_cents DESC LIMIT 20"},
                           {"redis": ["GET", "catalog:hot:$R"]}, {"work": 1}],
            "GET /item": [{"sql": "SELECT id, name FROM items WHERE id = $R"}, {"work": 1}]}},
        "recs": {"lang": "python", "dns": True, "routes": {
            "GET /recs": [{"call": "catalog", "route": "GET /item"}, {"redis": ["ZREVRANGE", "recs:$R", "0", "9"]},
                          {"work": 2}]}},
        "ads": {"lang": "node", "routes": {
            "GET /banner": [{"sleep": 180}, {"redis": ["GET", "ads:$R"]}]}},
        "profile": {"lang": "node", "routes": {
            "GET /me": [{"call": "auth", "route": "GET /verify"}, {"redis": ["HGETALL", "user:$R"]}, {"work": 1}]}},
        "auth": {"lang": "go", "routes": {
            "GET /verify": [{"redis": ["GET", "session:$R"]}, {"work": 2}]}},
        "cart": {"lang": "python", "dns": True, "routes": {
            "GET /cart": [{"redis": ["HGETALL", "cart:$R"]},
                          {"call": "pricing", "route": "GET /quote", "timeout": 1.0, "retries": 2}, {"work": 1}]}},
        "pricing": {"lang": "go", "routes": {
            "GET /quote": [{"sql": "SELECT cents FROM prices WHERE sku = $R"}, {"call": "tax", "route": "GET /rate"},
                           {"work": 1}]}},
        "tax": {"lang": "node", "routes": {"GET /rate": [{"work": 1}]}},
        "orders": {"lang": "python", "pool": 2, "routes": {
            "POST /orders": [{"sql": "INSERT INTO orders (sku) VALUES ($R) RETURNING id"}, {"push": "fulfil-q"},
                             {"work": 1}]}},
        "fulfil": {"lang": "go", "consume": {
            "fulfil-q": [{"sql": "UPDATE stock SET qty = qty - 1 WHERE sku = ($R % 50) + 1 RETURNING qty"},
                         {"call": "notify", "route": "POST /send"}]}},
        "notify": {"lang": "node", "routes": {"POST /send": [{"sleep": 5}, {"work": 1}]}},
        "search": {"lang": "python", "routes": {
            "GET /q": [{"sql": "SELECT id FROM items WHERE name LIKE 'item-$R%' LIMIT 10"}]}},
        "partner-api": {"lang": "go", "routes": {
            "GET /feed": [{"call": "catalog", "route": "GET /items"}, {"call": "pricing", "route": "GET /quote"}]}},
    },
    "entries": [["gateway", "GET /home", 2.0], ["gateway", "POST /order", 0.6], ["gateway", "GET /search", 0.3],
                ["partner-api", "GET /feed", 0.15]],
    "always_slow": ["ads"],
    "batch": {"name": "report", "sql": "SELECT category, count(*), avg(price_cents) FROM items GROUP BY category"},
    "restartable": ["search", "notify", "tax", "ads"],
    "dns_target": "pricing",  # removed from the zone in dns_failure
    "timeout_target": "pricing",  # callers time out and retry (dependency_timeout)
    "indexes": {"catalog": ("items_category_idx", "CREATE INDEX items_category_idx ON items (category)"),
                "pricing": ("prices_sku_idx", "CREATE UNIQUE INDEX prices_sku_idx ON prices (sku)")},
    "lock": ("stock", "fulfil", "UPDATE stock"),  # table, the service that updates it, its operation
    "pool_target": "orders",
    "features": {"gateway": "the home page", "catalog": "the home page", "recs": "the home page",
                 "profile": "the home page", "auth": "the home page", "cart": "ordering", "pricing": "ordering",
                 "tax": "ordering", "orders": "ordering", "fulfil": "order fulfilment", "notify": "order fulfilment",
                 "search": "finding products", "partner-api": "the partner feed", "postgres": "the site", "redis": "the site"},
}

GRID14 = {
    "name": "grid14",
    "zone": "grid.local",
    "schema": SCHEMA,
    "services": {
        "web": {"lang": "python", "dns": True, "routes": {
            "GET /": [{"call": "session", "route": "GET /s"},
                      {"par": [{"call": "listing", "route": "GET /list"}, {"call": "reviews", "route": "GET /top"},
                               {"call": "promo", "route": "GET /slot", "timeout": 3}]}],
            "POST /buy": [{"call": "session", "route": "GET /s"}, {"call": "fraud", "route": "POST /score"},
                          {"call": "ledger", "route": "POST /entry", "timeout": 4}]}},
        "mobile-bff": {"lang": "node", "routes": {
            "GET /m/feed": [{"par": [{"call": "listing", "route": "GET /list"}, {"call": "media", "route": "GET /thumb"}]}]}},
        "session": {"lang": "go", "routes": {"GET /s": [{"redis": ["GET", "sess:$R"]}, {"work": 1}]}},
        "listing": {"lang": "python", "dns": True, "routes": {
            "GET /list": [{"sql": "SELECT id, name FROM items WHERE category = ($R % 400) ORDER BY name LIMIT 15"},
                          {"call": "media", "route": "GET /thumb"}, {"work": 1}]}},
        "media": {"lang": "go", "routes": {"GET /thumb": [{"redis": ["GET", "img:$R"]}, {"work": 2}]}},
        "reviews": {"lang": "node", "routes": {"GET /top": [{"redis": ["ZREVRANGE", "rev:$R", "0", "4"]},
                                                            {"call": "geo", "route": "GET /where"}]}},
        "promo": {"lang": "node", "routes": {"GET /slot": [{"sleep": 220}]}},
        "fraud": {"lang": "python", "dns": True, "routes": {
            "POST /score": [{"call": "geo", "route": "GET /where"},
                            {"call": "rates", "route": "GET /fx", "timeout": 1.0, "retries": 3}, {"work": 3}]}},
        "geo": {"lang": "go", "routes": {"GET /where": [{"work": 1}]}},
        "rates": {"lang": "go", "routes": {"GET /fx": [{"sql": "SELECT cents FROM prices WHERE sku = $R"}]}},
        "ledger": {"lang": "python", "pool": 2, "routes": {
            "POST /entry": [{"sql": "INSERT INTO orders (sku) VALUES ($R) RETURNING id"}, {"push": "parcels"}]}},
        "shipping": {"lang": "python", "consume": {
            "parcels": [{"sql": "UPDATE stock SET qty = qty - 1 WHERE sku = ($R % 40) + 1 RETURNING qty"},
                        {"call": "mailer", "route": "POST /mail"}]}},
        "mailer": {"lang": "node", "routes": {"POST /mail": [{"sleep": 8}]}},
    },
    "entries": [["web", "GET /", 2.0], ["web", "POST /buy", 0.5], ["mobile-bff", "GET /m/feed", 0.4]],
    "always_slow": ["promo"],
    "batch": {"name": "archiver", "sql": "SELECT region, count(*), max(cents) FROM prices GROUP BY region"},
    "restartable": ["mailer", "promo", "mobile-bff"],
    "dns_target": "rates",
    "timeout_target": "rates",
    "indexes": {"listing": ("items_category_idx", "CREATE INDEX items_category_idx ON items (category)"),
                "rates": ("prices_sku_idx", "CREATE UNIQUE INDEX prices_sku_idx ON prices (sku)")},
    "lock": ("stock", "shipping", "UPDATE stock"),
    "pool_target": "ledger",
    "features": {"web": "the storefront", "session": "the storefront", "listing": "the storefront",
                 "media": "the storefront", "reviews": "the storefront", "promo": "the storefront",
                 "fraud": "buying", "geo": "buying", "rates": "buying", "ledger": "buying",
                 "shipping": "deliveries", "mailer": "deliveries", "mobile-bff": "the mobile app",
                 "postgres": "the site", "redis": "the site"},
}

SPECS = {"mesh12": MESH12, "grid14": GRID14}
