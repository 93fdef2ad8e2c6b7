-- The purchase claims its Idempotency-Key with the id of the order it is
-- about to insert in the same transaction, saving a statement per purchase;
-- the foreign key is therefore checked at commit.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_order_id_fkey;
ALTER TABLE idempotency_keys ADD CONSTRAINT idempotency_keys_order_id_fkey
    FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED;
