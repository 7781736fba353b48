-- 013: the claim reads one priority level at a time.
--
-- sql/008's claim read jobs_claim_idx (queue, priority, visible_at, id) from
-- the queue's first entry and filtered out the entries not yet visible. A
-- level whose jobs wait for later (scheduled, backing off after failures, or
-- leased) lies in that path whole whenever it has fewer ready jobs than the
-- batch: with 200,000 jobs of priority 0 scheduled for tomorrow, every claim
-- of 50 ready priority-1 jobs read past all of them, 9-13 ms a claim instead
-- of under one, and more with more of them; a retry storm of urgent jobs
-- slowed every other priority of its queue alike.
--
-- Now each statement reads a single level, and `visible_at <= now()` bounds
-- its index range: it stops at the level's first job that is not ready. The
-- next level is found by a probe that starts past the current one. The first
-- level is 0, the default, unless a job with a lower number exists; finding
-- the queue's lowest level with min() instead read past the entries of jobs
-- just claimed or acked that vacuum had not removed (100-400 buffers per
-- claim in a drain): the pgbench ceiling at about 0.90 of sql/008's claim in
-- six interleaved pairs. As written here it is at 0.96 (median of twelve pairs,
-- within the ceiling's run-to-run spread).

CREATE OR REPLACE FUNCTION worker.claim(claim_queue text, batch_size integer, visibility_ms bigint, worker_id text)
RETURNS TABLE (
    id bigint, queue text, kind text, payload text, idempotency_key text, priority smallint, attempts integer,
    max_attempts integer, created_at timestamptz, redrive_count integer, lease_token uuid)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
SET enable_hashjoin = off SET enable_mergejoin = off SET plan_cache_mode = force_generic_plan SET jit = off
AS $$
#variable_conflict use_column
DECLARE
    level smallint := 0;
    wanted integer := batch_size;
    got integer;
BEGIN
    -- Most queues hold the default priority only. This probe stops at the
    -- first index entry of level 0 without reading past it.
    IF EXISTS (SELECT FROM worker.jobs AS x WHERE x.queue = claim_queue AND x.priority < 0) THEN
        SELECT min(x.priority) INTO level FROM worker.jobs AS x WHERE x.queue = claim_queue;
    END IF;
    LOOP
        RETURN QUERY
        WITH ready AS (
            SELECT r.id FROM worker.jobs AS r
            WHERE r.queue = claim_queue
              AND r.priority = level
              AND r.visible_at <= now()
              AND NOT EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = claim_queue)
            ORDER BY r.visible_at, r.id
            LIMIT wanted
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
        GET DIAGNOSTICS got = ROW_COUNT;
        wanted := wanted - got;
        EXIT WHEN wanted <= 0;
        -- The next level; a job inserted meanwhile at a lower one waits for the next claim.
        SELECT min(x.priority) INTO level FROM worker.jobs AS x WHERE x.queue = claim_queue AND x.priority > level;
        EXIT WHEN level IS NULL;
    END LOOP;
END
$$;
