ALTER TABLE orders RESET (fillfactor);
DROP INDEX orders_payment_pending_idx;
CREATE INDEX orders_payment_pending_idx ON orders (updated_at) WHERE status = 'payment_pending';
