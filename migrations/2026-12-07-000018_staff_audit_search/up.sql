-- Staff accounts: one named token per person or system that uses the ops
-- API. Only a keyed hash of the token is kept (`token_hash`); a revoked
-- account keeps its row (the audit trail names it).
CREATE TABLE staff (
    name        TEXT PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    role        TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'refunder', 'admin')),
    token_hash  BYTEA NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by  TEXT NOT NULL,
    revoked_at  TIMESTAMPTZ
);

-- The page's sessions: a random id in an HttpOnly cookie, kept here as a
-- keyed hash, for one principal, until it expires or is signed out.
CREATE TABLE staff_sessions (
    id_hash     BYTEA PRIMARY KEY,
    -- The staff name, or NULL for the bootstrap admin (OPS_TOKEN).
    staff_name  TEXT REFERENCES staff (name),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ
);

-- Bumped by every change that can take a right away (a revoke, a
-- sign-out): each `serve` polls it and drops its cache of principals.
CREATE TABLE staff_epoch (
    one   BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
    n     BIGINT NOT NULL
);
INSERT INTO staff_epoch VALUES (true, 0);

-- The audit trail: every changing ops request, refused ones included,
-- written in the transaction of its change where it has one. Never pruned
-- (the contract keeps it at least 400 days).
CREATE TABLE audit_entries (
    id          BIGSERIAL PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor_type  TEXT NOT NULL CHECK (actor_type IN ('staff', 'system', 'gateway')),
    actor_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    request_id  TEXT,
    client_ip   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('succeeded', 'refused', 'failed'))
);
CREATE INDEX audit_entries_actor_idx ON audit_entries (actor_name, id DESC);
CREATE INDEX audit_entries_target_idx ON audit_entries (target, id DESC) WHERE target IS NOT NULL;

-- Who made an order's change: set for the transaction by the code that
-- makes it (`SET LOCAL orderflow.actor`); NULL is the service itself.
ALTER TABLE order_events ADD COLUMN actor JSONB;

CREATE OR REPLACE FUNCTION order_events_record() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kinds TEXT[];
    first INTEGER;
    who JSONB := nullif(current_setting('orderflow.actor', true), '')::jsonb;
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
    -- Moved to a cluster whose ids are younger than the log's: shift the
    -- log below this transaction before adding to it.
    IF webhook_log_moved() THEN
        PERFORM webhook_log_rebase();
    END IF;
    first := NEW.event_seq + 1;
    NEW.event_seq := NEW.event_seq + cardinality(kinds);
    WITH made AS (
        INSERT INTO order_events (order_id, sequence, type, order_row, created_at, actor)
        SELECT NEW.id, first + i - 1, kinds[i], to_jsonb(NEW), clock_timestamp(), who
        FROM generate_subscripts(kinds, 1) AS i
        RETURNING id, type)
    INSERT INTO webhook_log (xact, event_id, type)
    SELECT pg_current_xact_id()::text::bigint, made.id, made.type FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;

-- Search: a customer's email (case-insensitive) and a tracking number, each
-- from an index. (An order id prefix is a range of the primary key; a
-- payment intent id is asked of the gateway, whose intent names its order.)
CREATE INDEX orders_email_idx ON orders (lower(customer_email), created_at DESC, id DESC);
CREATE INDEX orders_tracking_idx ON orders (tracking_number) WHERE tracking_number IS NOT NULL;
