ALTER TABLE webhook_endpoints DROP COLUMN circuit_until;
