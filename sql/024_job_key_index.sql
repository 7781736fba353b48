-- worker:no-transaction
-- 024: the unique index of sql/023's job keys, built concurrently: claims
-- and inserts go on while it reads the table. Run twice (after a failed
-- build, which migrate drops), IF NOT EXISTS keeps it from failing.

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS jobs_job_key_idx
    ON worker.jobs (queue, kind, job_key) WHERE job_key IS NOT NULL;
