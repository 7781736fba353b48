-- 022: fleet-wide rate limits per queue: at most max_per_second jobs of the
-- queue claimed per second, whichever workers claim them, with bursts of up
-- to `burst` (a token bucket, as API gateways and PgQueuer's
-- requests_per_second limit a caller), so that a downstream with a rate
-- limit of its own (a payment provider's API) is never sent more. Every
-- attempt takes a token: a retry calls the downstream again. `workerctl
-- limits set QUEUE --max-per-second R [--burst B]`.
--
-- The bucket is the queue's row of worker.queue_limits: `tokens` as of
-- `tokens_at`, refilled at max_per_second up to the burst: `burst` if the
-- operator gave one, else a second's worth of the rate (at least 1), which
-- follows the rate when it changes. A claim of a
-- rate-limited queue takes sql/021's advisory lock of the queue and the
-- bucket's row lock, both within sql/021's second, reads the bucket under
-- them (the claim before it may have taken tokens), claims at most the whole
-- tokens it holds, and writes back what it left; the locks are held until
-- the claim commits, so two claims never spend the same token. The row is
-- locked before the jobs: an UPDATE of it after them would wait, without a
-- limit and with the queue's lock and the claimed rows held, for an operator
-- whose transaction holds the row, and then overwrite what they set.
-- A claim that takes nothing writes nothing: the bucket's level follows
-- from its last write and the clock. Queues without a rate pay nothing:
-- their claim reads the same row it read before, or none.
--
-- A limit may now be a rate alone, a concurrency alone, or both. The claim
-- re-created here also stops counting attempts one short of int4's top.

ALTER TABLE worker.queue_limits
    ALTER COLUMN max_in_flight DROP NOT NULL,
    ADD COLUMN max_per_second double precision,
    ADD COLUMN burst integer,
    ADD COLUMN tokens double precision,
    ADD COLUMN tokens_at timestamptz,
    ADD CONSTRAINT queue_limits_some_limit CHECK (max_in_flight IS NOT NULL OR max_per_second IS NOT NULL),
    ADD CONSTRAINT queue_limits_rate_valid CHECK (
        max_per_second IS NULL
        OR (max_per_second > 0 AND max_per_second <= 1000000 AND (burst IS NULL OR burst >= 1)
            AND tokens IS NOT NULL AND tokens >= 0
            AND tokens <= coalesce(burst, greatest(1, ceil(max_per_second)))
            AND tokens_at IS NOT NULL AND isfinite(tokens_at)));

-- The claim spends tokens as the role that claims. That role could refill
-- them too, as it could lease jobs by hand: limits bind workerd's claims,
-- not a hostile login.
GRANT UPDATE (tokens, tokens_at) ON worker.queue_limits TO worker_consumer;

-- The most tokens a queue's bucket holds; NULL without a rate.
CREATE FUNCTION worker.rate_burst(l worker.queue_limits) RETURNS integer
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(l.burst, greatest(1, ceil(l.max_per_second))::integer)
$$;

-- The bucket of a queue's rate at `at`: its tokens refilled since tokens_at,
-- no more than its burst; NULL without a rate.
CREATE FUNCTION worker.rate_tokens(l worker.queue_limits, at timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT least(worker.rate_burst(l), l.tokens + l.max_per_second * greatest(extract(epoch FROM at - l.tokens_at), 0))
$$;

REVOKE ALL ON FUNCTION worker.rate_burst(worker.queue_limits), worker.rate_tokens(worker.queue_limits, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.rate_burst(worker.queue_limits), worker.rate_tokens(worker.queue_limits, timestamptz)
    TO worker_consumer, worker_admin;

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
    per_second double precision;
    tokens_left double precision;
    claimable integer := batch_size;
    leased_from timestamptz := now();
    lock_timeout_before text;
BEGIN
    -- A paused queue: nothing to read, at any level.
    IF EXISTS (SELECT FROM worker.queue_pauses AS p WHERE p.queue = claim_queue) THEN
        RETURN;
    END IF;
    SELECT l.max_in_flight, l.max_per_second INTO in_flight_limit, per_second
    FROM worker.queue_limits AS l WHERE l.queue = claim_queue;
    IF in_flight_limit IS NOT NULL OR per_second IS NOT NULL THEN
        -- Held until this claim commits: the next claim of the queue counts what it took.
        lock_timeout_before := current_setting('lock_timeout');
        BEGIN
            PERFORM set_config('lock_timeout', '1s', true);
            PERFORM pg_advisory_xact_lock(1818848617, hashtext(claim_queue));
            IF per_second IS NOT NULL THEN
                PERFORM FROM worker.queue_limits AS l WHERE l.queue = claim_queue FOR NO KEY UPDATE;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            RETURN;
        END;
        PERFORM set_config('lock_timeout', lock_timeout_before, true);
        leased_from := clock_timestamp();
        IF in_flight_limit IS NOT NULL THEN
            claimable := least(batch_size, in_flight_limit - worker.limited_in_flight(claim_queue, leased_from));
        END IF;
        IF per_second IS NOT NULL THEN
            -- Read again under the locks: the last claim may have spent tokens,
            -- `workerctl limits` may have changed or removed the rate.
            SELECT worker.rate_tokens(l, leased_from) INTO tokens_left
            FROM worker.queue_limits AS l WHERE l.queue = claim_queue AND l.max_per_second IS NOT NULL;
            IF tokens_left IS NOT NULL THEN
                claimable := least(claimable, floor(tokens_left)::integer);
            END IF;
        END IF;
        IF claimable <= 0 THEN
            RETURN;
        END IF;
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
        EXIT WHEN expired = 1 AND wanted < claimable;
        ids := ids[1:CASE WHEN expired IS NULL THEN wanted WHEN expired = 1 THEN 1 ELSE expired - 1 END];
        RETURN QUERY
        UPDATE worker.jobs AS j
        -- least(): a job an owner wrote with attempts at int4's top would
        -- make every claim of its queue fail on the overflow.
        SET attempts = least(j.attempts, 2147483646) + 1,
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
    IF tokens_left IS NOT NULL AND wanted < claimable THEN
        UPDATE worker.queue_limits AS l
        SET tokens = tokens_left - (claimable - wanted), tokens_at = leased_from
        WHERE l.queue = claim_queue;
    END IF;
END
$$;
