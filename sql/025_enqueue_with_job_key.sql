-- 025: producers may send job keys (sql/023, whose index sql/024 built),
-- and worker.enqueue takes one, with what to do when a job of the queue,
-- kind and key waits:
--   'replace'          (the default, as Graphile Worker's) its payload,
--                      idempotency key, priority, max_attempts and run time
--                      become the call's: a debounce with run_at in the future;
--   'preserve_run_at'  the same but its run time stays: a throttle;
--   'keep'             nothing changes: a dedupe.
-- Each returns the waiting job's id. A job of the key waiting under another
-- ordering key is an error: moving a job between keys would reorder both.
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
    waiting_ordering_key text;
BEGIN
    IF job_key_mode IS NULL OR job_key_mode NOT IN ('replace', 'preserve_run_at', 'keep') THEN
        RAISE EXCEPTION 'job_key_mode must be ''replace'', ''preserve_run_at'' or ''keep'', not %',
            coalesce(quote_literal(job_key_mode), 'NULL') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- A conflict locks the waiting job, whether it is updated or not: no
    -- claim takes it (and clears its key) before this transaction ends.
    INSERT INTO worker.jobs AS j
        (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts, ordering_key, job_key)
    VALUES (enqueue.queue, enqueue.kind, enqueue.payload, enqueue.idempotency_key, enqueue.priority,
            enqueue.run_at, enqueue.max_attempts, enqueue.ordering_key, enqueue.job_key)
    ON CONFLICT (queue, kind, job_key) WHERE job_key IS NOT NULL DO UPDATE SET
        payload = EXCLUDED.payload,
        idempotency_key = EXCLUDED.idempotency_key,
        priority = EXCLUDED.priority,
        max_attempts = EXCLUDED.max_attempts,
        -- A job parked behind its ordering key keeps its run time aside (sql/019).
        visible_at = CASE WHEN enqueue.job_key_mode = 'replace' AND j.parked_visible_at IS NULL
                          THEN enqueue.run_at ELSE j.visible_at END,
        parked_visible_at = CASE WHEN enqueue.job_key_mode = 'replace' AND j.parked_visible_at IS NOT NULL
                                 THEN enqueue.run_at ELSE j.parked_visible_at END
    WHERE enqueue.job_key_mode <> 'keep' AND j.ordering_key IS NOT DISTINCT FROM EXCLUDED.ordering_key
    RETURNING j.id INTO job_id;
    IF job_id IS NOT NULL THEN
        IF enqueue.job_key IS NOT NULL THEN
            -- Replaced, it may be ready sooner than it was; the insert's
            -- trigger notifies new rows only.
            PERFORM pg_notify('worker_jobs', enqueue.queue);
        END IF;
        RETURN job_id;
    END IF;
    SELECT w.id, w.ordering_key INTO job_id, waiting_ordering_key FROM worker.jobs AS w
    WHERE w.queue = enqueue.queue AND w.kind = enqueue.kind AND w.job_key = enqueue.job_key;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job key % conflicted with no waiting job', quote_literal(enqueue.job_key);
    END IF;
    IF waiting_ordering_key IS DISTINCT FROM enqueue.ordering_key THEN
        RAISE EXCEPTION 'job % of job key % waits under ordering key %, not %', job_id, quote_literal(enqueue.job_key),
            coalesce(quote_literal(waiting_ordering_key), 'NULL'), coalesce(quote_literal(enqueue.ordering_key), 'NULL')
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN job_id;
END
$$;
REVOKE ALL ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text, text, text)
    TO worker_producer, worker_admin;

GRANT INSERT (job_key) ON worker.jobs TO worker_producer;
