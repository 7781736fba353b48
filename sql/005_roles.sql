-- 005: three roles, without login, that the accounts of each side are given:
--   worker_producer  enqueues jobs (INSERT or worker.enqueue) and nothing else:
--                    it cannot read payloads, the dead letters or app tables;
--   worker_consumer  what workerd needs: claim, ack, retry, dead-letter,
--                    idempotency keys, the handlers' tables;
--   worker_admin     what workerctl needs: stats, dead letters, redrive,
--                    pause and resume, sweep. Migrations stay with the owner.
-- Grant them to login roles:  CREATE ROLE orders LOGIN PASSWORD '...' IN ROLE worker_producer;
-- Roles belong to the whole cluster: they are created once and reused by every
-- database that runs this migration.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['worker_producer', 'worker_consumer', 'worker_admin'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;  -- a migration of another database created it meanwhile
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role % does not exist and % may not create roles', name, current_user
                    USING HINT = format('a superuser runs: CREATE ROLE %I NOLOGIN; then migrate again', name);
            END;
        END IF;
    END LOOP;
END
$$;

-- Nothing for PUBLIC: every right below is given on purpose.
REVOKE ALL ON SCHEMA worker, app FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA worker, app FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA worker FROM PUBLIC;

-- Producer: the columns a job is made of, and its id back from RETURNING.
GRANT USAGE ON SCHEMA worker TO worker_producer;
GRANT INSERT (queue, kind, payload, idempotency_key, priority, visible_at, max_attempts) ON worker.jobs TO worker_producer;
GRANT SELECT (id) ON worker.jobs TO worker_producer;
GRANT EXECUTE ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer) TO worker_producer;
GRANT EXECUTE ON FUNCTION worker.notify_jobs_inserted() TO worker_producer, worker_consumer, worker_admin;

-- Consumer: the queue, the dead letters it writes, the keys, the handlers' tables.
GRANT USAGE ON SCHEMA worker, app TO worker_consumer;
GRANT SELECT ON worker.schema_migrations, worker.queue_pauses TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.throughput TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.jobs TO worker_consumer;
-- Reads dead letters only to count them for its queue metrics.
GRANT SELECT, INSERT ON worker.dead_letters TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.idempotency_keys TO worker_consumer;
GRANT SELECT, INSERT, UPDATE ON app.payments, app.refunds, app.flights, app.bookings TO worker_consumer;

-- Admin: everything in the queue's tables (redrive writes jobs back, purge
-- deletes dead letters); the business tables only to read.
GRANT USAGE ON SCHEMA worker, app TO worker_admin;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA worker TO worker_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA app TO worker_admin;
GRANT EXECUTE ON FUNCTION worker.enqueue(text, text, jsonb, text, smallint, timestamptz, integer) TO worker_admin;
