DROP INDEX gateway_events_done_idx;
DROP INDEX gateway_events_due_idx;
CREATE INDEX gateway_events_pending_idx ON gateway_events (received_at) WHERE status = 'pending';
ALTER TABLE gateway_events DROP COLUMN lease_until;
ALTER TABLE gateway_events DROP COLUMN next_attempt_at;

-- Back to migration 13's event types.
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

DROP INDEX orders_disputed_idx;
UPDATE orders SET attention = NULL, attention_since = NULL WHERE attention = 'refund_failed';
ALTER TABLE orders DROP CONSTRAINT orders_attention_check;
ALTER TABLE orders ADD CONSTRAINT orders_attention_check
    CHECK (attention IN ('payment_unsettled', 'refund_unsettled'));
ALTER TABLE orders DROP COLUMN dispute_due_by;
ALTER TABLE orders DROP COLUMN dispute_reason;
ALTER TABLE orders DROP COLUMN dispute_status;
ALTER TABLE orders DROP COLUMN dispute_id;
ALTER TABLE orders DROP COLUMN refund_source;
ALTER TABLE orders DROP COLUMN refund_id;
ALTER TABLE orders DROP COLUMN payment_action;
