-- 026: a job of an ordering key sent with no run time (an explicit NULL
-- visible_at) is refused, as it is without a key. Parked, it kept a NULL
-- run time aside and looked like its key's head, which the hand-over then
-- waited for: the key's later jobs waited for ever. sql/019's trigger
-- function, with the check first; and such jobs already stuck are parked
-- properly (due at once) with their keys noted, for workerd's maintenance
-- to hand each over.

CREATE OR REPLACE FUNCTION worker.park_keyed_job() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.visible_at IS NULL THEN
        RAISE EXCEPTION 'null value in column "visible_at" of relation "jobs" violates not-null constraint'
            USING ERRCODE = 'not_null_violation', COLUMN = 'visible_at', TABLE = 'jobs', SCHEMA = 'worker';
    END IF;
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

-- Through jobs_ordering_key_idx: keyed jobs only.
WITH stuck AS (
    UPDATE worker.jobs SET parked_visible_at = created_at
    WHERE ordering_key IS NOT NULL AND visible_at = 'infinity' AND parked_visible_at IS NULL
    RETURNING queue, ordering_key
)
INSERT INTO worker.ordering_wakeups (queue, ordering_key) SELECT DISTINCT queue, ordering_key FROM stuck;
