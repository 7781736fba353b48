-- 008: the claim, the lock and the ack of a batch as functions, so that their
-- plans never depend on the statistics.
--
-- Planned over statistics taken while the queue was empty (or before a burst),
-- the claim's statement chose a bitmap scan and a sort of every ready job for
-- each batch: with 10,000 waiting, 6.6 ms per claim of 50 instead of 0.75, a
-- claim's cost growing with the backlog until autoanalyze came by. The lock
-- and the ack joined the batch's (id, lease token) pairs to worker.jobs, and
-- over such statistics a hash join scanned the whole table for every batch
-- (1.8 ms per ack of 50 with 10,000 waiting, instead of 0.15).
--
-- Here the statements name the batch's ids with `= ANY(array)`, not a join,
-- and inside the functions sequential scans, bitmap scans, sorts, hash and
-- merge joins are off. That leaves each statement one plan: the claim reads
-- jobs_claim_idx in order and stops after the batch; the others probe the
-- primary key once per job. Those plans are right at any backlog, so plpgsql
-- may keep them for the session (generic plans): a batch's statements are no
-- longer planned for every batch.

-- Ready jobs of an unpaused queue in (priority, visible_at, id) order, locked
-- with SKIP LOCKED so concurrent claims never wait on or share a row; the
-- attempt is committed here, with a fresh lease token (the fencing token every
-- later write names); a lease that expired is written into the job's history.
CREATE FUNCTION worker.claim(claim_queue text, batch_size integer, visibility_ms bigint, worker_id text)
RETURNS TABLE (
    id bigint, queue text, kind text, payload text, idempotency_key text, priority smallint, attempts integer,
    max_attempts integer, created_at timestamptz, redrive_count integer, lease_token uuid)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH ready AS (
        SELECT r.id FROM worker.jobs AS r
        WHERE r.queue = claim_queue AND r.visible_at <= now()
          AND NOT EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = claim_queue)
        ORDER BY r.priority, r.visible_at, r.id
        LIMIT batch_size
        FOR UPDATE SKIP LOCKED
    )
    UPDATE worker.jobs AS j
    SET attempts = j.attempts + 1,
        visible_at = now() + visibility_ms * interval '1 millisecond',
        lease_token = gen_random_uuid(),
        leased_by = worker_id,
        leased_at = now(),
        last_error = CASE WHEN j.lease_token IS NULL THEN j.last_error
            ELSE 'lease expired: attempt ' || j.attempts || ' by ' || coalesce(j.leased_by, '?') || ' did not finish' END,
        errors = CASE WHEN j.lease_token IS NULL THEN j.errors
            ELSE j.errors || jsonb_build_array(jsonb_build_object(
                'attempt', j.attempts, 'at', now(), 'error', 'lease expired', 'worker', j.leased_by)) END
    WHERE j.id = ANY (ARRAY(SELECT ready.id FROM ready))
    RETURNING j.id, j.queue, j.kind, j.payload::text, j.idempotency_key, j.priority, j.attempts,
              j.max_attempts, j.created_at, j.redrive_count, j.lease_token;
END
$$;

-- Locks the rows of the batch's jobs whose leases are still the caller's, in
-- id order (every worker locks in the same order), and answers each job's age
-- by the database clock and the session's backend pid. job_ids[i] holds
-- lease_tokens[i]; ids are distinct.
CREATE FUNCTION worker.lock_jobs(job_ids bigint[], lease_tokens uuid[])
RETURNS TABLE (id bigint, age_ms bigint, backend_pid integer)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT j.id, (extract(epoch FROM now() - j.created_at) * 1000)::bigint, pg_backend_pid()
    FROM worker.jobs AS j
    WHERE j.id = ANY (job_ids) AND j.lease_token = lease_tokens[array_position(job_ids, j.id)]
    ORDER BY j.id
    FOR UPDATE OF j;
END
$$;

-- Deletes the finished jobs whose leases are still the caller's and stores the
-- results of the idempotency keys they completed (completed_keys[i] gets
-- results[i]; keys are distinct); answers the ids deleted.
CREATE FUNCTION worker.ack_jobs(job_ids bigint[], lease_tokens uuid[], completed_keys text[], results jsonb[])
RETURNS TABLE (id bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH completed AS (
        UPDATE worker.idempotency_keys AS k
        SET status = 'completed', result = results[array_position(completed_keys, k.key)]
        WHERE k.key = ANY (completed_keys)
    )
    DELETE FROM worker.jobs AS j
    WHERE j.id = ANY (job_ids) AND j.lease_token = lease_tokens[array_position(job_ids, j.id)]
    RETURNING j.id;
END
$$;

REVOKE ALL ON FUNCTION worker.claim(text, integer, bigint, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION worker.lock_jobs(bigint[], uuid[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION worker.ack_jobs(bigint[], uuid[], text[], jsonb[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.claim(text, integer, bigint, text) TO worker_consumer;
GRANT EXECUTE ON FUNCTION worker.lock_jobs(bigint[], uuid[]) TO worker_consumer;
GRANT EXECUTE ON FUNCTION worker.ack_jobs(bigint[], uuid[], text[], jsonb[]) TO worker_consumer;
