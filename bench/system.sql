-- pgbench script: the reference of bench/system. An order-sized INSERT and
-- an UPDATE of it in one transaction, against a copy of the orders table
-- (its columns, indexes and CHECKs, without the events trigger, so the
-- reference does not change with what the application records): what
-- PostgreSQL can commit on this host.
\set r random(1, 9000000000000000)
BEGIN;
INSERT INTO orders_reference (id, status, customer_email, customer_name, currency, total_cents, shipping_address, payment_method, created_at, updated_at) VALUES (lpad(to_hex(:r::bigint), 32, '0')::uuid, 'payment_pending', 'pgbench@example.com', 'Bench Buyer', 'usd', 3097, '{"line1": "1 Main St", "line2": null, "city": "London", "postal_code": "N1 9GU", "country": "GB"}', 'pm_card_visa', now(), now());
UPDATE orders_reference SET status = 'paid', payment_intent_id = 'pi_bench', payment_status = 'succeeded', delivery_status = 'queued', updated_at = now() WHERE id = lpad(to_hex(:r::bigint), 32, '0')::uuid;
COMMIT;
