-- pgbench script: exactly the statements one keyed purchase executes, in the
-- same units of work (a transaction, then one statement) (see src/http/purchase.rs), plus the `SELECT 1` r2d2
-- runs on each of the two pool checkouts. The physical reference for the
-- purchase benchmark.
\set r random(1, 9000000000000000)
SELECT 1;
BEGIN;
INSERT INTO idempotency_keys (key, request_hash, state, order_id, expires_at) VALUES ('pgb-' || :r, 'fingerprint', 'in_progress', lpad(to_hex(:r::bigint), 32, '0')::uuid, now() + make_interval(secs => 86400)) ON CONFLICT (key) DO UPDATE SET request_hash = EXCLUDED.request_hash, state = 'in_progress', order_id = EXCLUDED.order_id, response_status = NULL, response_body = NULL, locked_at = now(), created_at = now(), expires_at = EXCLUDED.expires_at WHERE idempotency_keys.expires_at <= now() RETURNING key;
SELECT sku, name, price_cents, currency, active, created_at, updated_at FROM products WHERE sku = ANY(ARRAY['SKU-1', 'SKU-3']);
INSERT INTO orders (id, status, customer_email, customer_name, currency, total_cents, shipping_address, payment_method, created_at, updated_at) VALUES (lpad(to_hex(:r::bigint), 32, '0')::uuid, 'payment_pending', 'bench@example.com', 'Bench Buyer', 'usd', 3097, '{"line1": "1 Main St","line2": null,"city": "London","postal_code": "N1 9GU","country": "GB"}', 'pm_card_visa', now(), now());
INSERT INTO order_items (order_id, line_no, sku, name, quantity, unit_price_cents, line_total_cents) VALUES (lpad(to_hex(:r::bigint), 32, '0')::uuid, 0, 'SKU-1', 'Analytical Engine T-shirt', 2, 1299, 2598), (lpad(to_hex(:r::bigint), 32, '0')::uuid, 1, 'SKU-3', 'Punched-card notebook', 1, 499, 499);
COMMIT;
SELECT 1;
WITH o AS (UPDATE orders SET status = 'paid', payment_intent_id = COALESCE('pi_bench', payment_intent_id), payment_status = COALESCE('succeeded', payment_status), decline_code = NULL, delivery_status = COALESCE('queued', delivery_status), updated_at = now() WHERE id = lpad(to_hex(:r::bigint), 32, '0')::uuid AND status = 'payment_pending' RETURNING id), w AS (INSERT INTO owed_work (kind, order_id) SELECT 'deliver', id FROM o WHERE true ON CONFLICT DO NOTHING), k AS (UPDATE idempotency_keys SET state = 'completed', response_status = 201, response_body = '{"id": "x","status": "paid","total_cents": 3097,"items": [{"sku": "SKU-1","quantity": 2},{"sku": "SKU-3","quantity": 1}],"customer": {"email": "bench@example.com","name": "Bench Buyer"},"payment": {"intent_id": "pi_bench","status": "succeeded"},"delivery": {"status": "queued","attempts": 0}}' WHERE key = 'pgb-' || :r AND EXISTS (SELECT 1 FROM o)) SELECT count(*) AS n FROM o;
