-- 027: a schedule may skip its runs while its last run's job still waits to
-- be claimed (its queue paused, or far behind): one job waiting rather than
-- one per run, each doing the same work when the queue moves again. Its
-- jobs carry a job key (sql/023) of the schedule's, which the claim clears:
-- a run while the last one runs is enqueued. `workerctl schedules set
-- --skip-while-waiting`.
--
-- The key is schedule:<name>:<run_key>: producers, who may send any job key
-- but read no schedule, cannot hold a schedule's runs back (or change its
-- waiting job) by sending its key.

ALTER TABLE worker.schedules
    ADD COLUMN skip_while_waiting boolean NOT NULL DEFAULT false,
    ADD COLUMN run_key uuid NOT NULL DEFAULT gen_random_uuid();
