-- 020: each worker's release in worker.workers, so that `workerctl workers`
-- shows which workers a rolling deploy has not reached yet. NULL in the rows
-- of workers older than this column (they need schema 19 and keep running).
ALTER TABLE worker.workers ADD COLUMN version text;
