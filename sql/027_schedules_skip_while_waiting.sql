-- 027: a schedule may skip its runs while its last run's job still waits to
-- be claimed (its queue paused, or far behind): one job waiting rather than
-- one per run, each doing the same work when the queue moves again. Its
-- jobs carry the job key schedule:<name> (sql/023), which the claim clears:
-- a run while the last one runs is enqueued. `workerctl schedules set
-- --skip-while-waiting`.

ALTER TABLE worker.schedules ADD COLUMN skip_while_waiting boolean NOT NULL DEFAULT false;
