-- Order events: the record of every change of an order, written by the
-- statement that makes the change (this trigger runs inside it), so no
-- change commits without its event and no event without its change. The
-- order row is locked by the change, so concurrent writers take turns and
-- `sequence` (kept on the row as `event_seq`) has no gaps. An event keeps
-- the order row as it was right after the change (lines never change and
-- are joined when it is rendered).
--
-- The events are also the outbox of webhook delivery: an event some
-- enabled endpoint subscribes to is queued in `webhook_fanout` by the same
-- statement, until a worker has made its deliveries.
ALTER TABLE orders ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
-- When the order entered its status: stuck orders are found by it.
ALTER TABLE orders ADD COLUMN status_since TIMESTAMPTZ NOT NULL DEFAULT now();
UPDATE orders SET status_since = updated_at;
CREATE INDEX orders_stuck_idx ON orders (status, status_since)
    WHERE status IN ('payment_pending', 'paid', 'fulfilling');

CREATE TABLE webhook_endpoints (
    id                   UUID PRIMARY KEY,
    url                  TEXT NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events               TEXT[] NOT NULL CHECK (cardinality(events) >= 1),
    description          TEXT NOT NULL DEFAULT '',
    enabled              BOOLEAN NOT NULL DEFAULT true,
    secret               TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_success_at      TIMESTAMPTZ,
    failing_since        TIMESTAMPTZ,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    -- One drainer per endpoint across all workers: the job that holds the
    -- lease, and until when.
    drain_task           TEXT,
    drain_until          TIMESTAMPTZ
);

CREATE TABLE order_events (
    id             UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id       UUID NOT NULL REFERENCES orders (id) ON DELETE CASCADE
                       DEFERRABLE INITIALLY DEFERRED,
    sequence       INTEGER NOT NULL CHECK (sequence >= 1),
    type           TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    order_row      JSONB NOT NULL,
    UNIQUE (order_id, sequence)
);

-- Events awaiting fan-out: small rows, deleted when fanned out (a wide
-- event row is never rewritten for it).
CREATE TABLE webhook_fanout (
    event_id   UUID PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

-- A delivery of one event to one endpoint (a resend is a new one), with
-- its last attempt's answer. Only the endpoint's drainer (one per endpoint,
-- by the drain lease) sends it: a drainer that dies leaves its in-flight
-- deliveries due, and the next drainer sends them again.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    endpoint_id     UUID NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id        UUID NOT NULL REFERENCES order_events (id) ON DELETE CASCADE,
    status          TEXT NOT NULL DEFAULT 'pending'
                        CHECK (status IN ('pending', 'delivered', 'retrying', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    response_status SMALLINT,
    error           TEXT,
    duration_ms     INTEGER,
    attempted_at    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02);
-- Both are queues: rows churn, so they are vacuumed often.
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (endpoint_id, next_attempt_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX webhook_deliveries_event_idx ON webhook_deliveries (event_id);

-- The attempts that did not deliver (the delivered one is on its delivery
-- row): with those rows, the delivery log.
CREATE TABLE webhook_attempts (
    id              BIGSERIAL PRIMARY KEY,
    delivery_id     BIGINT NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    endpoint_id     UUID NOT NULL,
    attempt         INTEGER NOT NULL CHECK (attempt >= 1),
    status          TEXT NOT NULL CHECK (status IN ('retrying', 'failed')),
    response_status SMALLINT,
    error           TEXT,
    duration_ms     INTEGER NOT NULL,
    attempted_at    TIMESTAMPTZ NOT NULL,
    next_attempt_at TIMESTAMPTZ
);
CREATE INDEX webhook_attempts_endpoint_idx ON webhook_attempts (endpoint_id, id DESC);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);

-- The event types a change makes, in the order they happened.
CREATE FUNCTION order_event_types(old_row orders, new_row orders) RETURNS TEXT[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    kinds TEXT[] := '{}';
BEGIN
    IF old_row IS NULL THEN
        kinds := ARRAY['order.created'];
        IF new_row.status <> 'payment_pending' THEN
            kinds := kinds || ('order.' || new_row.status);
        END IF;
        RETURN kinds;
    END IF;
    IF old_row.delivery_status = 'requested'
       AND new_row.delivery_status IN ('queued', 'failed')
       AND new_row.status = old_row.status THEN
        kinds := kinds || 'delivery.attempt_failed'::TEXT;
    END IF;
    IF new_row.delivery_status = 'failed' AND old_row.delivery_status <> 'failed' THEN
        kinds := kinds || 'delivery.failed'::TEXT;
    END IF;
    IF old_row.delivery_status = 'failed' AND new_row.delivery_status = 'queued' THEN
        kinds := kinds || 'delivery.retry_requested'::TEXT;
    END IF;
    IF new_row.status <> old_row.status THEN
        kinds := kinds || ('order.' || new_row.status);
    END IF;
    IF new_row.payment_status = 'refunded'
       AND old_row.payment_status IS DISTINCT FROM 'refunded' THEN
        kinds := kinds || 'payment.refunded'::TEXT;
    END IF;
    RETURN kinds;
END $$;

CREATE FUNCTION order_events_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kinds TEXT[];
    first INTEGER;
BEGIN
    IF TG_OP = 'INSERT' THEN
        kinds := order_event_types(NULL, NEW);
        NEW.event_seq := 0;
        NEW.status_since := NEW.created_at;
    ELSE
        kinds := order_event_types(OLD, NEW);
        NEW.event_seq := OLD.event_seq;
        IF NEW.status <> OLD.status THEN
            NEW.status_since := now();
        END IF;
    END IF;
    IF cardinality(kinds) = 0 THEN
        RETURN NEW;
    END IF;
    first := NEW.event_seq + 1;
    NEW.event_seq := NEW.event_seq + cardinality(kinds);
    WITH made AS (
        INSERT INTO order_events (order_id, sequence, type, order_row)
        SELECT NEW.id, first + i - 1, kinds[i], to_jsonb(NEW)
        FROM generate_subscripts(kinds, 1) AS i
        RETURNING id, type)
    INSERT INTO webhook_fanout (event_id)
    SELECT made.id FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE e.enabled AND (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;

CREATE TRIGGER orders_record_events BEFORE INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION order_events_record();
