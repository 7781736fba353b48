-- 028: cancelling a job while a worker runs it (`workerctl jobs cancel`).
-- A running job's row is locked by its worker's transaction, so the command
-- cannot move it; it writes a request here and sends NOTIFY worker_cancel
-- with the job ids. The worker running one of them stops its attempt,
-- abandons the batch (the server rolls back what it did) and moves the job
-- to the dead letters as cancelled, with the request's note.
--
-- Any role may NOTIFY any channel, so a notification alone cancels nothing:
-- workers act only on a request in this table, which only operators write,
-- or on the job's dead letter as cancelled (a job whose handler runs outside
-- a transaction is not locked: the command moves it, then tells its worker).
-- A request ends at expires_at (the command's wait), so that one left by a
-- command killed midway does not cancel a later attempt of its job; each
-- command withdraws its own (request_id) when it is done waiting.

CREATE TABLE worker.cancel_requests (
    job_id       bigint NOT NULL,
    request_id   uuid NOT NULL,
    note         text NOT NULL,
    requested_by text NOT NULL DEFAULT current_user,
    requested_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (job_id, request_id)
);

GRANT SELECT ON worker.cancel_requests TO worker_consumer;
GRANT SELECT, INSERT, UPDATE, DELETE ON worker.cancel_requests TO worker_admin;
