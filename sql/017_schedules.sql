-- 017: recurring jobs (EventBridge Scheduler's cron rules, on one PostgreSQL).
--
-- A schedule enqueues a job of its kind, queue and payload at every minute its
-- cron expression (five fields, UTC) names. Every workerd looks for due
-- schedules each second; a conditional write on next_run_at lets exactly one
-- of them enqueue each run, in the same statement that moves next_run_at on.
-- Operators use `workerctl schedules`, or plain SQL: a row inserted or a cron
-- changed without a next_run_at gets one from the next worker that sees it.
CREATE TABLE worker.schedules (
    name         text        PRIMARY KEY,
    cron         text        NOT NULL,
    queue        text        NOT NULL DEFAULT 'default',
    kind         text        NOT NULL,
    payload      jsonb       NOT NULL DEFAULT '{}',
    priority     smallint    NOT NULL DEFAULT 0,
    max_attempts integer,
    -- The next run; NULL until a worker reads the cron.
    next_run_at  timestamptz,
    -- The last run's time; its job's idempotency_key is schedule:<name>:<that time>.
    last_run_at  timestamptz,
    -- Why the cron does not parse, as a worker found; the schedule waits for a fix.
    error        text,
    paused       boolean     NOT NULL DEFAULT false,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_name_valid CHECK (length(name) BETWEEN 1 AND 128),
    CONSTRAINT schedules_queue_valid CHECK (length(queue) BETWEEN 1 AND 128),
    CONSTRAINT schedules_kind_valid CHECK (length(kind) BETWEEN 1 AND 128),
    CONSTRAINT schedules_max_attempts_valid CHECK (max_attempts IS NULL OR max_attempts >= 1)
);

-- A cron changed by SQL is read again: its error cleared and its next run
-- reset for the next worker to compute, unless the UPDATE also set
-- updated_at (as `workerctl schedules set` does, with the next run it computed).
CREATE FUNCTION worker.schedules_cron_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.next_run_at := NULL;
        NEW.updated_at := now();
    END IF;
    NEW.error := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER schedules_cron_changed
    BEFORE UPDATE OF cron ON worker.schedules
    FOR EACH ROW WHEN (OLD.cron IS DISTINCT FROM NEW.cron)
    EXECUTE FUNCTION worker.schedules_cron_changed();

REVOKE ALL ON FUNCTION worker.schedules_cron_changed() FROM PUBLIC;
GRANT SELECT, UPDATE (next_run_at, last_run_at, error) ON worker.schedules TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.schedules TO worker_admin;
