-- The shop's database: a product catalogue big enough that a missing index hurts
-- (the slow-query fault drops products_sku_idx), stock reservations, and orders.
CREATE TABLE products (
    id          serial PRIMARY KEY,
    sku         text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL,
    price_cents integer NOT NULL,
    stock       integer NOT NULL
);
INSERT INTO products (sku, name, description, price_cents, stock)
SELECT 'SKU-' || lpad(i::text, 6, '0'),
       'Product ' || i,
       repeat(md5(i::text), 4),
       100 + (i * 37) % 9900,
       1000000
FROM generate_series(1, 200000) AS i;
CREATE UNIQUE INDEX products_sku_idx ON products (sku);

CREATE TABLE orders (
    id          bigserial PRIMARY KEY,
    order_id    text NOT NULL,
    sku         text NOT NULL,
    quantity    integer NOT NULL,
    amount_cents integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ANALYZE;
