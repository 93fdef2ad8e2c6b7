-- Secret rotation: the secret an endpoint had before its last rotation,
-- valid (and signed with, beside the new one) until `previous_secret_until`.
-- Both columns hold sealed values (`sealed1:…`, ChaCha20-Poly1305 under
-- WEBHOOK_SECRETS_KEY, sealed by the application); `secret` does too from
-- now on. Secrets written before sealing stay readable and are sealed by
-- the workers' sweep.
ALTER TABLE webhook_endpoints
    ADD COLUMN previous_secret TEXT,
    ADD COLUMN previous_secret_until TIMESTAMPTZ;
