-- 021: fleet-wide concurrency limits per queue (Lambda's reserved
-- concurrency, SQS's maximum concurrency for an event source): at most
-- max_in_flight jobs of the queue hold a live lease at once, whichever
-- workers hold them, so that a downstream (a payment provider's rate, a
-- partner's API) sees no more. `workerctl limits`.
--
-- A job claimed under a limit is marked under_limit; its live leases are
-- what the claim counts, through a partial index that holds only them, so
-- queues without a limit pay nothing for it (no index entry, no count). A
-- claim of a limited queue holds the queue's advisory lock while it counts
-- and claims: two claims cannot both take the last free slot. It waits for
-- that lock for a second at most, then claims nothing (the lane tries again
-- at its next poll or wake-up): a claim stuck while it holds the lock (its
-- client stopped while the rows were sent) must not pile up the fleet's
-- claims behind it. Its leases run from when it got the lock. Jobs leased
-- before the limit was set count once they are claimed again. A lease that
-- expired frees its slot; a stalled worker's attempt may then still run
-- beside its successor's, as with any lease. A slot freed by an ack, retry,
-- snooze, dead letter or release wakes the queue's workers, whose lanes
-- otherwise wait for their poll after a claim that came back short.

CREATE TABLE worker.queue_limits (
    queue         text        PRIMARY KEY,
    max_in_flight integer     NOT NULL CHECK (max_in_flight > 0),
    set_at        timestamptz NOT NULL DEFAULT now(),
    set_by        text        NOT NULL DEFAULT current_user
);

ALTER TABLE worker.jobs ADD COLUMN under_limit boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_limited_leases_idx ON worker.jobs (queue, visible_at) WHERE under_limit AND lease_token IS NOT NULL;

-- What counts against the queue's limit: its jobs leased under the limit
-- whose lease is live at `live_at`.
CREATE FUNCTION worker.limited_in_flight(limited_queue text, live_at timestamptz) RETURNS integer
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*)::integer FROM worker.jobs AS f
    WHERE f.queue = limited_queue AND f.under_limit AND f.lease_token IS NOT NULL AND f.visible_at > live_at
$$;

CREATE FUNCTION worker.notify_limit_freed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pg_notify('worker_jobs', OLD.queue);
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_limit_freed_by_delete
    AFTER DELETE ON worker.jobs
    FOR EACH ROW WHEN (OLD.under_limit AND OLD.lease_token IS NOT NULL)
    EXECUTE FUNCTION worker.notify_limit_freed();

CREATE TRIGGER jobs_limit_freed_by_update
    AFTER UPDATE OF lease_token ON worker.jobs
    FOR EACH ROW WHEN (OLD.under_limit AND OLD.lease_token IS NOT NULL AND NEW.lease_token IS NULL)
    EXECUTE FUNCTION worker.notify_limit_freed();

REVOKE ALL ON FUNCTION worker.notify_limit_freed(), worker.limited_in_flight(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.limited_in_flight(text, timestamptz) TO worker_consumer, worker_admin;
GRANT SELECT ON worker.queue_limits TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.queue_limits TO worker_admin;

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
    in_flight_limit integer;
    claimable integer := batch_size;
    leased_from timestamptz := now();
    lock_timeout_before text;
BEGIN
    -- A paused queue: nothing to read, at any level.
    IF EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = claim_queue) THEN
        RETURN;
    END IF;
    SELECT l.max_in_flight INTO in_flight_limit FROM worker.queue_limits AS l WHERE l.queue = claim_queue;
    IF in_flight_limit IS NOT NULL THEN
        -- Held until this claim commits: the next claim of the queue counts what it took.
        lock_timeout_before := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '1s', true);
            PERFORM pg_advisory_xact_lock(1818848617, hashtext(claim_queue));
        EXCEPTION WHEN lock_not_available THEN
            RETURN;
        END;
        PERFORM set_config('lock_timeout', lock_timeout_before, true);
        leased_from := clock_timestamp();
        claimable := in_flight_limit - worker.limited_in_flight(claim_queue, leased_from);
        IF claimable <= 0 THEN
            RETURN;
        END IF;
        claimable := least(claimable, batch_size);
        wanted := claimable;
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
        IF expired = 1 AND wanted < claimable THEN
            RETURN;
        END IF;
        ids := ids[1:CASE WHEN expired IS NULL THEN wanted WHEN expired = 1 THEN 1 ELSE expired - 1 END];
        RETURN QUERY
        UPDATE worker.jobs AS j
        SET attempts = j.attempts + 1,
            visible_at = leased_from + visibility_ms * interval '1 millisecond',
            lease_token = gen_random_uuid(),
            leased_by = worker_id,
            leased_at = leased_from,
            under_limit = in_flight_limit IS NOT NULL,
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
