-- A circuit per webhook endpoint: after a few failures in a row its
-- drainer gives its slot and its lease back and no wake-up takes the
-- endpoint again until this time; then one attempt probes it. A success
-- (or an ops resend) closes it.
ALTER TABLE webhook_endpoints ADD COLUMN circuit_until TIMESTAMPTZ;
