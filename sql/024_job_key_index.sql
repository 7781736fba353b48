-- worker:no-transaction
-- 024: the unique index of sql/023's job keys, built concurrently: claims
-- and inserts go on while it reads the table. Run again after a failed
-- build (whose invalid index migrate drops), IF NOT EXISTS skips an index
-- that is there; the check after it makes sure that index is a valid one.

CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS jobs_job_key_idx
    ON worker.jobs (queue, kind, job_key) WHERE job_key IS NOT NULL;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_index WHERE indexrelid = 'worker.jobs_job_key_idx'::regclass AND NOT indisvalid) THEN
        RAISE EXCEPTION 'worker.jobs_job_key_idx is left invalid from an earlier build'
            USING HINT = 'DROP INDEX CONCURRENTLY worker.jobs_job_key_idx; then migrate again';
    END IF;
END
$$;
