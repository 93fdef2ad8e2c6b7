-- Let the updates that change no indexed column be HOT (no new index
-- entries, less WAL): starting a delivery attempt changes delivery_status,
-- delivery_attempts and updated_at only. updated_at was indexed (stale
-- payments were found by it), which made every update of an order write
-- every index; stale payments are now found by created_at, and pages keep
-- room for a new row version in place.
DROP INDEX orders_payment_pending_idx;
CREATE INDEX orders_payment_pending_idx ON orders (created_at) WHERE status = 'payment_pending';
ALTER TABLE orders SET (fillfactor = 70);
