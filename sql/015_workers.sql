-- 015: the fleet's workers, as each last reported itself.
--
-- Each workerd writes its row when it starts and every 10 seconds after,
-- marks it when it begins to stop and deletes it when it has stopped, so
-- `workerctl workers` shows who is running, what they hold and who went
-- silent: a worker killed, stalled or cut off keeps its last row, which turns
-- "gone" once it is 30 seconds old. Workers delete rows unseen for a day.
CREATE TABLE worker.workers (
    -- workerd's --worker-id: the name in worker.jobs.leased_by.
    id             text        PRIMARY KEY,
    -- The process, drawn at its start: a restart under the same id (a
    -- container's host name and pid 1 again) is another instance.
    instance       uuid        NOT NULL,
    host           text        NOT NULL,
    pid            integer     NOT NULL,
    queues         text[]      NOT NULL,
    concurrency    integer     NOT NULL,
    batch_size     integer     NOT NULL,
    -- Jobs it held leases on at its last report.
    leases         integer     NOT NULL DEFAULT 0,
    -- Jobs it finished since it started (done, duplicate, rejected or
    -- dead-lettered), at its last report.
    finished       bigint      NOT NULL DEFAULT 0,
    started_at     timestamptz NOT NULL DEFAULT now(),
    seen_at        timestamptz NOT NULL DEFAULT now(),
    -- Set when a graceful stop began: it claims nothing more and finishes
    -- what it holds.
    stopping_since timestamptz
);

GRANT SELECT, INSERT, UPDATE, DELETE ON worker.workers TO worker_consumer;
GRANT SELECT, DELETE ON worker.workers TO worker_admin;
