-- 001: the queue, the dead-letter table and the producer's enqueue function.
-- Applied by `workerctl migrate` inside one transaction; never edit after release,
-- add a new numbered file instead.

CREATE SCHEMA IF NOT EXISTS worker;

CREATE TABLE worker.jobs (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue           text        NOT NULL DEFAULT 'default',
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}',
    idempotency_key text,
    -- Lower runs first, like Oban and River; ties are served oldest first.
    priority        smallint    NOT NULL DEFAULT 0,
    -- Committed by the claim, before the handler runs (the SQS receive count).
    attempts        integer     NOT NULL DEFAULT 0,
    -- NULL: the worker's retry policy for the kind decides.
    max_attempts    integer,
    -- The job is claimable once visible_at has passed: it is the lease expiry
    -- while leased and the retry time after a failure (the SQS visibility timeout).
    visible_at      timestamptz NOT NULL DEFAULT now(),
    -- Fencing token of the current lease; only its holder may ack or fail the job.
    lease_token     uuid,
    leased_by       text,
    leased_at       timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- One object per failed attempt: {"attempt", "at", "error", "worker"}.
    errors          jsonb       NOT NULL DEFAULT '[]',
    redrive_count   integer     NOT NULL DEFAULT 0,
    CONSTRAINT jobs_queue_valid CHECK (length(queue) BETWEEN 1 AND 128),
    CONSTRAINT jobs_kind_valid CHECK (length(kind) BETWEEN 1 AND 128),
    CONSTRAINT jobs_attempts_valid CHECK (attempts >= 0),
    CONSTRAINT jobs_max_attempts_valid CHECK (max_attempts IS NULL OR max_attempts >= 1)
);

-- The claim reads this index in order and stops after the batch: the cost of a
-- claim does not grow with the number of delayed or leased jobs of other queues.
CREATE INDEX jobs_claim_idx ON worker.jobs (queue, priority, visible_at, id);

CREATE TABLE worker.dead_letters (
    -- The id the job had in worker.jobs; redrive puts it back under the same id.
    id              bigint      PRIMARY KEY,
    queue           text        NOT NULL,
    kind            text        NOT NULL,
    payload         jsonb       NOT NULL,
    idempotency_key text,
    priority        smallint    NOT NULL,
    attempts        integer     NOT NULL,
    max_attempts    integer,
    created_at      timestamptz NOT NULL,
    redrive_count   integer     NOT NULL,
    -- max_attempts | non_retryable | expired | invalid_event | ...
    reason          text        NOT NULL,
    last_error      text,
    errors          jsonb       NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    failed_by       text
);

CREATE INDEX dead_letters_queue_idx ON worker.dead_letters (queue, failed_at);
CREATE INDEX dead_letters_failed_at_idx ON worker.dead_letters (failed_at);

-- Producers may call this instead of writing the INSERT themselves.
CREATE FUNCTION worker.enqueue(
    queue           text,
    kind            text,
    payload         jsonb       DEFAULT '{}',
    idempotency_key text        DEFAULT NULL,
    priority        smallint    DEFAULT 0,
    run_at          timestamptz DEFAULT now(),
    max_attempts    integer     DEFAULT NULL
) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts)
    VALUES (queue, kind, payload, idempotency_key, priority, run_at, max_attempts)
    RETURNING id
$$;

-- One notification per queue and statement, whatever the number of rows: a bulk
-- insert of a million jobs wakes the fleet once, not a million times.
CREATE FUNCTION worker.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('worker_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted) AS q;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON worker.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION worker.notify_jobs_inserted();
