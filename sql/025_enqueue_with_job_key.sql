-- 025: producers may send job keys (sql/023, whose index sql/024 built),
-- and worker.enqueue takes one, with what to do when a job of the queue,
-- kind and key waits:
--   'replace'          (the default, as Graphile Worker's) its payload,
--                      idempotency key, priority, max_attempts and run time
--                      become the call's: a debounce with run_at in the future;
--   'preserve_run_at'  the same but its run time stays: a throttle;
--   'keep'             nothing changes: a dedupe.
-- Each returns the waiting job's id.
--
-- SECURITY DEFINER: producers insert, and may not update jobs; this updates
-- the one waiting job that the key names. A producer can change another
-- producer's waiting job of the same key: keys are shared, as queue names
-- are. Calls written for the function of sql/019, by position or by name,
-- work as before.

DROP FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text);
CREATE FUNCTION worker.enqueue(
    queue           text,
    kind            text,
    payload         jsonb       DEFAULT '{}',
    idempotency_key text        DEFAULT NULL,
    priority        smallint    DEFAULT 0,
    run_at          timestamptz DEFAULT now(),
    max_attempts    integer     DEFAULT NULL,
    ordering_key    text        DEFAULT NULL,
    job_key         text        DEFAULT NULL,
    job_key_mode    text        DEFAULT 'replace'
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    job_id bigint;
BEGIN
    IF job_key_mode IS NULL OR job_key_mode NOT IN ('replace', 'preserve_run_at', 'keep') THEN
        RAISE EXCEPTION 'job_key_mode must be ''replace'', ''preserve_run_at'' or ''keep'', not %',
            coalesce(quote_literal(job_key_mode), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job_key = '' OR octet_length(job_key) > 1024 THEN
        RAISE EXCEPTION 'a job_key is 1 to 1024 bytes, not %', octet_length(job_key)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job_key IS NOT NULL AND ordering_key IS NOT NULL THEN
        RAISE EXCEPTION 'a job takes a job_key or an ordering_key, not both'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF job_key IS NULL OR job_key_mode <> 'keep' THEN
        -- A conflict locks the waiting job and changes it: no claim takes
        -- it (and clears its key) before this transaction ends.
        INSERT INTO worker.jobs AS j
            (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts, ordering_key, job_key)
        VALUES (enqueue.queue, enqueue.kind, enqueue.payload, enqueue.idempotency_key, enqueue.priority,
                enqueue.run_at, enqueue.max_attempts, enqueue.ordering_key, enqueue.job_key)
        ON CONFLICT (queue, kind, job_key) WHERE job_key IS NOT NULL DO UPDATE SET
            payload = EXCLUDED.payload,
            idempotency_key = EXCLUDED.idempotency_key,
            priority = EXCLUDED.priority,
            max_attempts = EXCLUDED.max_attempts,
            visible_at = CASE WHEN enqueue.job_key_mode = 'replace' THEN EXCLUDED.visible_at ELSE j.visible_at END
        RETURNING j.id INTO job_id;
        IF enqueue.job_key IS NOT NULL THEN
            -- Replaced, it may be ready sooner than it was; the insert's
            -- trigger notifies new rows only.
            PERFORM pg_notify('worker_jobs', enqueue.queue);
        END IF;
        RETURN job_id;
    END IF;
    -- 'keep' locks nothing, so that a producer's open transaction holds no
    -- other producer's job back: the waiting job is looked up after the
    -- insert gave way to it, and if a claim took it meanwhile, the call
    -- inserts again.
    FOR attempt IN 1..100 LOOP
        INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts, job_key)
        VALUES (enqueue.queue, enqueue.kind, enqueue.payload, enqueue.idempotency_key, enqueue.priority,
                enqueue.run_at, enqueue.max_attempts, enqueue.job_key)
        ON CONFLICT (queue, kind, job_key) WHERE job_key IS NOT NULL DO NOTHING
        RETURNING id INTO job_id;
        IF job_id IS NULL THEN
            SELECT w.id INTO job_id FROM worker.jobs AS w
            WHERE w.queue = enqueue.queue AND w.kind = enqueue.kind AND w.job_key = enqueue.job_key;
        END IF;
        IF job_id IS NOT NULL THEN
            RETURN job_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'job key % was claimed 100 times while this call looked for its waiting job', quote_literal(job_key)
        USING ERRCODE = 'lock_not_available';
END
$$;
REVOKE ALL ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text, text, text)
    TO worker_producer, worker_admin;

GRANT INSERT (job_key) ON worker.jobs TO worker_producer;
