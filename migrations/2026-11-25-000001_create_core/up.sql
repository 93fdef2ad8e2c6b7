-- Catalog. Prices are integer cents in the product's currency; the storefront
-- never sends prices.
CREATE TABLE products (
    sku         TEXT PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    name        TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    currency    TEXT NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One row per purchase. Status values are the contract's (API.md §2.1).
CREATE TABLE orders (
    id                  UUID PRIMARY KEY,
    status              TEXT NOT NULL CHECK (status IN (
                            'payment_pending', 'paid', 'payment_failed',
                            'fulfilling', 'shipped', 'delivered', 'cancelled')),
    customer_email      TEXT NOT NULL,
    customer_name       TEXT NOT NULL,
    currency            TEXT NOT NULL CHECK (currency ~ '^[a-z]{3}$'),
    total_cents         BIGINT NOT NULL CHECK (total_cents >= 0),
    shipping_address    JSONB NOT NULL,
    payment_method      TEXT NOT NULL,
    payment_intent_id   TEXT,
    payment_status      TEXT,
    decline_code        TEXT,
    delivery_status     TEXT NOT NULL DEFAULT 'not_requested' CHECK (delivery_status IN (
                            'not_requested', 'queued', 'requested', 'in_transit',
                            'delivered', 'failed')),
    shipment_id         TEXT,
    tracking_number     TEXT,
    delivery_attempts   INTEGER NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
    delivery_last_error TEXT,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Ops listing: newest first, keyset pagination, optionally by status.
CREATE INDEX orders_created_idx ON orders (created_at DESC, id DESC);
CREATE INDEX orders_status_created_idx ON orders (status, created_at DESC, id DESC);
-- Reconciliation finds stale pending payments without scanning settled orders.
CREATE INDEX orders_payment_pending_idx ON orders (updated_at) WHERE status = 'payment_pending';

CREATE TABLE order_items (
    order_id         UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          SMALLINT NOT NULL CHECK (line_no >= 0),
    sku              TEXT NOT NULL REFERENCES products (sku),
    name             TEXT NOT NULL,
    quantity         INTEGER NOT NULL CHECK (quantity > 0 AND quantity <= 1000),
    unit_price_cents BIGINT NOT NULL CHECK (unit_price_cents >= 0),
    line_total_cents BIGINT NOT NULL CHECK (line_total_cents = unit_price_cents * quantity),
    PRIMARY KEY (order_id, line_no),
    UNIQUE (order_id, sku)
);

-- Idempotency-Key records (API.md §2). A row is claimed `in_progress` in the
-- same transaction that records the order, and completed with the response in
-- the same transaction that settles the payment.
CREATE TABLE idempotency_keys (
    key             TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 255),
    request_hash    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    order_id        UUID REFERENCES orders (id) ON DELETE SET NULL,
    response_status SMALLINT,
    response_body   JSONB,
    locked_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at      TIMESTAMPTZ NOT NULL,
    CHECK (state = 'in_progress' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- Owed work: the transactional outbox. A row is written in the same
-- transaction as the state change that makes the work owed (e.g. `deliver`
-- with the `paid` update) and deleted by the job that completes it. Pushing
-- to Redis is only a wake-up; the sweeper re-pushes rows that linger.
CREATE TABLE owed_work (
    kind           TEXT NOT NULL CHECK (kind IN ('deliver', 'reconcile_payment', 'refund')),
    order_id       UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    owed_since     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_pushed_at TIMESTAMPTZ,
    PRIMARY KEY (kind, order_id)
);
CREATE INDEX owed_work_owed_since_idx ON owed_work (owed_since);
