-- 004: what operators run the fleet with.

-- A paused queue: no worker of the fleet claims its jobs (jobs already
-- claimed finish); producers keep enqueueing. `workerctl pause` / `resume`.
CREATE TABLE worker.queue_pauses (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now(),
    -- Who paused it and why, for the next operator who wonders.
    paused_by text        NOT NULL DEFAULT current_user,
    reason    text
);

-- What each worker finished, in 10-second buckets: the throughput that
-- `workerctl stats` shows. Jobs are deleted when done, so this is the only
-- trace of them. Each worker writes its own rows (no row shared between
-- workers, so no lock contention) every 10 seconds; rows older than a day
-- are deleted by the workers.
CREATE TABLE worker.throughput (
    bucket        timestamptz NOT NULL,
    worker_id     text        NOT NULL,
    queue         text        NOT NULL,
    kind          text        NOT NULL,
    done          integer     NOT NULL DEFAULT 0,
    duplicates    integer     NOT NULL DEFAULT 0,
    rejected      integer     NOT NULL DEFAULT 0,
    retried       integer     NOT NULL DEFAULT 0,
    dead_lettered integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (bucket, worker_id, queue, kind)
);
