-- 023: job keys (Graphile Worker's job_key; the unique jobs of River and
-- Oban): at most one waiting job per queue, kind and job_key. A producer
-- that sends the same key again while the job waits changes that job
-- instead of adding a second one: it replaces its payload and run time (a
-- debounce: "reindex product 42 five seconds after its last change"), its
-- payload alone (a throttle), or nothing (a dedupe). worker.enqueue does
-- each (sql/025); a plain INSERT ... ON CONFLICT DO NOTHING dedupes.
--
-- The key belongs to the job while it waits, never once it is claimed: the
-- claim clears it, so that a change sent while the job runs makes a new job
-- rather than being lost in one already read. A job that fails and waits
-- out its backoff holds no key either: it retries what it read.
--
-- Three files: the column here, the unique index built concurrently in
-- sql/024 (an index built in a transaction would block every claim and
-- insert for as long as it reads the table), and in sql/025 the producer's
-- grant and worker.enqueue, whose ON CONFLICT needs the index.

ALTER TABLE worker.jobs ADD COLUMN job_key text;
-- NOT VALID: the new column is NULL in every row, so there is nothing to
-- check, and checking would read the whole table under this lock.
ALTER TABLE worker.jobs ADD CONSTRAINT jobs_job_key_valid
    CHECK (job_key <> '' AND octet_length(job_key) <= 1024) NOT VALID;
-- The jobs of an ordering key are events, each run in its turn; those of a
-- job key replace one another. Together, a producer's change of a parked
-- job would hold its row while the key's head hands over (sql/019's
-- hand-over waits for no producer), and could move it between keys.
ALTER TABLE worker.jobs ADD CONSTRAINT jobs_job_key_or_ordering_key
    CHECK (job_key IS NULL OR ordering_key IS NULL) NOT VALID;

CREATE FUNCTION worker.release_job_key() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.job_key := NULL;
    RETURN NEW;
END
$$;

-- A claim is the one update that gives a job a new lease token. Jobs
-- without a key do not call the function.
CREATE TRIGGER jobs_job_key_released_by_claim
    BEFORE UPDATE OF lease_token ON worker.jobs
    FOR EACH ROW WHEN (OLD.job_key IS NOT NULL AND NEW.lease_token IS NOT NULL)
    EXECUTE FUNCTION worker.release_job_key();

REVOKE ALL ON FUNCTION worker.release_job_key() FROM PUBLIC;
