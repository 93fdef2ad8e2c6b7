-- Two timeline fixes.
-- 1. An attempt lost with its worker (its lease ran out and the next
--    attempt took the order over: delivery `requested` to `requested`,
--    attempts counted up) is a `delivery.attempt_failed`, like one that
--    answered.
-- 2. An event's `created_at` is the time of the change, taken in the row
--    trigger, after the order's row lock: `now()` is the transaction's start,
--    so a transaction that began earlier but changed the order later
--    stamped a time before the event it follows.
CREATE OR REPLACE FUNCTION order_event_types(old_row orders, new_row orders) RETURNS TEXT[]
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
    -- An attempt lost with its worker: the next one takes the order over.
    IF old_row.delivery_status = 'requested'
       AND new_row.delivery_status = 'requested'
       AND new_row.delivery_attempts > old_row.delivery_attempts THEN
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

CREATE OR REPLACE FUNCTION order_events_record() RETURNS trigger
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
        INSERT INTO order_events (order_id, sequence, type, order_row, created_at)
        SELECT NEW.id, first + i - 1, kinds[i], to_jsonb(NEW), clock_timestamp()
        FROM generate_subscripts(kinds, 1) AS i
        RETURNING id, type)
    INSERT INTO webhook_log (xact, event_id, type)
    SELECT pg_current_xact_id()::text::bigint, made.id, made.type FROM made
    WHERE EXISTS (SELECT 1 FROM webhook_endpoints e
                  WHERE (made.type = ANY (e.events) OR '*' = ANY (e.events)));
    RETURN NEW;
END $$;
