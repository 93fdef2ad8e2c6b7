-- Payments the gateway settles: what the order keeps of its payment's
-- life after the charge, and the events a change of it writes.
--   payment_action   the gateway's client_secret and next_action while the
--                    customer must authenticate (3-D Secure)
--   refund_id        the refund orderflow asked for, or one the gateway
--                    reported; refund_source who made it
--   dispute_*        the chargeback the gateway reported, if any
ALTER TABLE orders ADD COLUMN payment_action JSONB;
ALTER TABLE orders ADD COLUMN refund_id TEXT;
ALTER TABLE orders ADD COLUMN refund_source TEXT CHECK (refund_source IN ('orderflow', 'gateway'));
ALTER TABLE orders ADD COLUMN dispute_id TEXT;
ALTER TABLE orders ADD COLUMN dispute_status TEXT;
ALTER TABLE orders ADD COLUMN dispute_reason TEXT;
ALTER TABLE orders ADD COLUMN dispute_due_by TIMESTAMPTZ;
ALTER TABLE orders DROP CONSTRAINT orders_attention_check;
ALTER TABLE orders ADD CONSTRAINT orders_attention_check
    CHECK (attention IN ('payment_unsettled', 'refund_unsettled', 'refund_failed'));
CREATE INDEX orders_disputed_idx ON orders (created_at DESC) WHERE dispute_id IS NOT NULL;

-- Payment events beside the status ones: the customer must authenticate,
-- a refund failed after it was accepted, a dispute opened and closed.
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
    IF new_row.status = 'payment_pending'
       AND new_row.payment_status = 'requires_action'
       AND old_row.payment_status IS DISTINCT FROM 'requires_action' THEN
        kinds := kinds || 'payment.requires_action'::TEXT;
    END IF;
    IF new_row.status <> old_row.status THEN
        kinds := kinds || ('order.' || new_row.status);
    END IF;
    IF new_row.payment_status = 'refunded'
       AND old_row.payment_status IS DISTINCT FROM 'refunded' THEN
        kinds := kinds || 'payment.refunded'::TEXT;
    END IF;
    IF new_row.payment_status = 'refund_failed'
       AND old_row.payment_status IS DISTINCT FROM 'refund_failed' THEN
        kinds := kinds || 'payment.refund_failed'::TEXT;
    END IF;
    IF new_row.dispute_id IS NOT NULL AND old_row.dispute_id IS DISTINCT FROM new_row.dispute_id THEN
        kinds := kinds || 'payment.disputed'::TEXT;
    END IF;
    IF new_row.dispute_status IN ('won', 'lost', 'warning_closed')
       AND old_row.dispute_status IS DISTINCT FROM new_row.dispute_status THEN
        kinds := kinds || 'payment.dispute_closed'::TEXT;
    END IF;
    RETURN kinds;
END $$;

-- Processing the gateway's events: when a pending event is next due (an
-- event for an order not recorded yet waits and is tried again), and who
-- holds it now.
ALTER TABLE gateway_events ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE gateway_events ADD COLUMN lease_until TIMESTAMPTZ;
DROP INDEX gateway_events_pending_idx;
CREATE INDEX gateway_events_due_idx ON gateway_events (next_attempt_at) WHERE status = 'pending';
CREATE INDEX gateway_events_done_idx ON gateway_events (received_at) WHERE status <> 'pending';
