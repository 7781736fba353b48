-- 002: exactly-once effects. The idempotency table every kind with effects
-- goes through, and the payments and refunds the refund handler updates.

CREATE TABLE worker.idempotency_keys (
    -- The job's idempotency_key, else the event's business id as its handler
    -- defines it (refund:<refund_id>), else <kind>:<sha256 of the payload>.
    key          text        PRIMARY KEY,
    kind         text        NOT NULL,
    -- The job that owns the key; a duplicate is acked with this job's result.
    job_id       bigint      NOT NULL,
    -- sha256 of the canonical jsonb text: the same key with another payload is
    -- a conflict (a reused key with other parameters), not a duplicate.
    payload_hash text        NOT NULL,
    -- completed | rejected (a business rejection, recorded and not retried).
    -- 'processing' exists only inside the processing transaction: a committed
    -- row always holds the outcome.
    status       text        NOT NULL CHECK (status IN ('processing', 'completed', 'rejected')),
    result       jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- After this the key is dead: a new job may take it over, the sweeper deletes it.
    expires_at   timestamptz NOT NULL
);

CREATE INDEX idempotency_keys_expires_idx ON worker.idempotency_keys (expires_at);

CREATE SCHEMA IF NOT EXISTS app;

CREATE TABLE app.payments (
    id             text        PRIMARY KEY,
    amount_cents   bigint      NOT NULL CHECK (amount_cents > 0),
    refunded_cents bigint      NOT NULL DEFAULT 0,
    currency       char(3)     NOT NULL,
    -- captured | partially_refunded | refunded
    status         text        NOT NULL DEFAULT 'captured',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- The last line of defence: whatever a handler does, no payment is
    -- refunded below zero or beyond what was paid.
    CONSTRAINT payments_refund_within_amount CHECK (refunded_cents BETWEEN 0 AND amount_cents)
);

CREATE TABLE app.refunds (
    -- The producer's refund reference: the same refund twice applies once.
    refund_id    text        PRIMARY KEY,
    payment_id   text        NOT NULL REFERENCES app.payments (id),
    amount_cents bigint      NOT NULL CHECK (amount_cents > 0),
    currency     char(3)     NOT NULL,
    job_id       bigint      NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refunds_payment_idx ON app.refunds (payment_id);
