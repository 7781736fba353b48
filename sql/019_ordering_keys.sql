-- 019: ordering keys, SQS FIFO's message groups on one table.
--
-- Jobs of one queue with the same ordering_key run one at a time, in id
-- order: a job waits while an earlier one of its key is in the queue (ready,
-- in flight or waiting out a retry's backoff); done, dead-lettered or
-- cancelled, the next one runs. Jobs without a key are not touched.
--
-- A waiting job is "parked": out of the claim index's ready range
-- (visible_at 'infinity'), its own visible_at kept in parked_visible_at, so
-- that claims never read past waiting jobs, however many one key gathers.
-- Exactly one job of a key is not parked: its head. Who parks and unparks
-- decides under a per-key advisory lock, and only ever tries it: a producer's
-- transaction or a worker's batch never waits for another's (nor can they
-- deadlock over keys). When the lock is taken, the job is parked all the same
-- and the key noted in worker.ordering_wakeups, which workerd looks at every
-- second (worker.release_ordering_keys) to unpark a head if its key has none.

ALTER TABLE worker.jobs ADD COLUMN ordering_key text, ADD COLUMN parked_visible_at timestamptz;
ALTER TABLE worker.dead_letters ADD COLUMN ordering_key text;

CREATE INDEX jobs_ordering_key_idx ON worker.jobs (queue, ordering_key, id) WHERE ordering_key IS NOT NULL;

-- A key may be noted more than once: with no unique constraint, noting it
-- never waits for another transaction that is noting it too.
CREATE TABLE worker.ordering_wakeups (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text NOT NULL,
    ordering_key text NOT NULL
);

-- The key's lock, tried; in the two-integer lock space, apart from the
-- single-bigint locks of migrate and sweep.
CREATE FUNCTION worker.try_lock_ordering_key(lock_queue text, lock_key text) RETURNS boolean
LANGUAGE sql AS $$
    SELECT pg_try_advisory_xact_lock(1869767268, hashtext(lock_queue || E'\x1f' || lock_key))
$$;

-- Under the key's lock: unparks the key's first job unless it has a head.
CREATE FUNCTION worker.unpark_ordering_key(key_queue text, key_name text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT FROM worker.jobs
               WHERE queue = key_queue AND ordering_key = key_name AND parked_visible_at IS NULL) THEN
        RETURN;
    END IF;
    LOOP
        UPDATE worker.jobs SET visible_at = parked_visible_at, parked_visible_at = NULL
        WHERE id = (SELECT min(id) FROM worker.jobs WHERE queue = key_queue AND ordering_key = key_name);
        IF FOUND THEN
            PERFORM pg_notify('worker_jobs', key_queue);
            RETURN;
        END IF;
        -- The first job was deleted (cancelled) under our feet: the next one, if any.
        EXIT WHEN NOT EXISTS (SELECT FROM worker.jobs WHERE queue = key_queue AND ordering_key = key_name);
    END LOOP;
END
$$;

CREATE FUNCTION worker.park_keyed_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.parked_visible_at := NULL;
    IF worker.try_lock_ordering_key(NEW.queue, NEW.ordering_key) THEN
        -- A statement of its own: its snapshot sees what committed before the lock was ours.
        IF NOT EXISTS (SELECT FROM worker.jobs WHERE queue = NEW.queue AND ordering_key = NEW.ordering_key) THEN
            RETURN NEW;  -- the key's head
        END IF;
    ELSE
        INSERT INTO worker.ordering_wakeups (queue, ordering_key) VALUES (NEW.queue, NEW.ordering_key);
    END IF;
    NEW.parked_visible_at := NEW.visible_at;
    NEW.visible_at := 'infinity';
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_park_keyed
    BEFORE INSERT ON worker.jobs
    FOR EACH ROW WHEN (NEW.ordering_key IS NOT NULL)
    EXECUTE FUNCTION worker.park_keyed_job();

-- A head that leaves the queue (ack, dead letter, cancel) hands over to the next.
CREATE FUNCTION worker.unpark_after_head() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF worker.try_lock_ordering_key(OLD.queue, OLD.ordering_key) THEN
        PERFORM worker.unpark_ordering_key(OLD.queue, OLD.ordering_key);
    ELSE
        INSERT INTO worker.ordering_wakeups (queue, ordering_key) VALUES (OLD.queue, OLD.ordering_key);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_unpark_after_head
    AFTER DELETE ON worker.jobs
    FOR EACH ROW WHEN (OLD.ordering_key IS NOT NULL AND OLD.parked_visible_at IS NULL)
    EXECUTE FUNCTION worker.unpark_after_head();

-- workerd's maintenance: each noted key whose lock is free gets a head if it
-- has none. Returns how many notes it settled; those of keys still locked
-- wait for the next call.
CREATE FUNCTION worker.release_ordering_keys(max_keys integer) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    noted record;
    settled integer := 0;
BEGIN
    FOR noted IN
        SELECT id, queue, ordering_key FROM worker.ordering_wakeups ORDER BY id LIMIT max_keys FOR UPDATE SKIP LOCKED
    LOOP
        CONTINUE WHEN NOT worker.try_lock_ordering_key(noted.queue, noted.ordering_key);
        PERFORM worker.unpark_ordering_key(noted.queue, noted.ordering_key);
        DELETE FROM worker.ordering_wakeups WHERE id = noted.id;
        settled := settled + 1;
    END LOOP;
    RETURN settled;
END
$$;

-- worker.enqueue takes the key too, as a new last argument: calls written
-- for the old one, by position or by name, work as before.
DROP FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer);
CREATE FUNCTION worker.enqueue(
    queue           text,
    kind            text,
    payload         jsonb       DEFAULT '{}',
    idempotency_key text        DEFAULT NULL,
    priority        smallint    DEFAULT 0,
    run_at          timestamptz DEFAULT now(),
    max_attempts    integer     DEFAULT NULL,
    ordering_key    text        DEFAULT NULL
) RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    INSERT INTO worker.jobs (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts, ordering_key)
    VALUES (queue, kind, payload, idempotency_key, priority, run_at, max_attempts, ordering_key)
    RETURNING id
$$;
REVOKE ALL ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer, text)
    TO worker_producer, worker_admin;

REVOKE ALL ON FUNCTION worker.try_lock_ordering_key(text, text), worker.unpark_ordering_key(text, text),
    worker.park_keyed_job(), worker.unpark_after_head(), worker.release_ordering_keys(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.release_ordering_keys(integer) TO worker_consumer, worker_admin;
GRANT INSERT (ordering_key) ON worker.jobs TO worker_producer;
GRANT SELECT, INSERT, DELETE ON worker.ordering_wakeups TO worker_admin;
