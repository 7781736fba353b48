-- 016: a paused queue is checked once per claim, not once per priority level.
--
-- sql/013's claim read one level at a time, and each level's statement
-- checked the pause in its own WHERE: a paused queue with jobs at many
-- levels was probed level by level (a statement and a min() each) at every
-- claim of every idle lane, to find nothing: 1,213 buffers for a claim of a
-- paused queue with 201 levels. The pause is now checked before the first
-- level. A claim already past that check when a pause commits finishes, and
-- the next claim sees the pause: `workerctl pause` never promised more, as a
-- batch claimed just before it runs to its end all the same.

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
    ids bigint[];
    expired integer;
BEGIN
    -- A paused queue: nothing to read, at any level.
    IF EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = claim_queue) THEN
        RETURN;
    END IF;
    -- Most queues hold the default priority only. This probe stops at the
    -- first index entry of level 0 without reading past it.
    IF EXISTS (SELECT FROM worker.jobs AS x WHERE x.queue = claim_queue AND x.priority < 0) THEN
        SELECT min(x.priority) INTO level FROM worker.jobs AS x WHERE x.queue = claim_queue;
    END IF;
    LOOP
        -- The level's ready jobs in claim order, locked; which of them had a
        -- lease that expired (their last attempt did not finish).
        SELECT array_agg(r.id ORDER BY r.visible_at, r.id),
               array_position(array_agg(r.lease_token IS NOT NULL ORDER BY r.visible_at, r.id), true)
        INTO ids, expired
        FROM (
            SELECT r.id, r.visible_at, r.lease_token FROM worker.jobs AS r
            WHERE r.queue = claim_queue
              AND r.priority = level
              AND r.visible_at <= now()
            ORDER BY r.visible_at, r.id
            LIMIT wanted
            FOR UPDATE SKIP LOCKED
        ) AS r;
        -- A batch stops before a job whose lease expired; such a job goes alone.
        IF expired = 1 AND wanted < batch_size THEN
            RETURN;
        END IF;
        ids := ids[1:CASE WHEN expired IS NULL THEN wanted WHEN expired = 1 THEN 1 ELSE expired - 1 END];
        RETURN QUERY
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
        WHERE j.id = ANY (ids)
        RETURNING j.id, j.queue, j.kind, j.payload::text, j.idempotency_key, j.priority, j.attempts,
                  j.max_attempts, j.created_at, j.redrive_count, j.lease_token;
        GET DIAGNOSTICS got = ROW_COUNT;
        wanted := wanted - got;
        EXIT WHEN wanted <= 0 OR expired IS NOT NULL;
        -- The next level; a job inserted meanwhile at a lower one waits for the next claim.
        SELECT min(x.priority) INTO level FROM worker.jobs AS x WHERE x.queue = claim_queue AND x.priority > level;
        EXIT WHEN level IS NULL;
    END LOOP;
END
$$;
