-- 012: no planner statistics for columns no query's plan depends on.
--
-- ANALYZE sorts a sample of up to 30,000 values of every column to find its
-- common values and histogram, and the queue's tables churn so fast that
-- autovacuum analyzes them every few seconds under load. Sorting payloads,
-- results and error histories (jsonb, compared container by container) and
-- long unique text keys (compared through strcoll in the cluster's C.UTF-8)
-- was most of it: in a 60,000-job refund/booking mix, autovacuum took 1.37 and
-- 1.60 s of CPU time (about 8% of the run's), 0.66 and 0.64 s without these
-- columns' statistics; the mix was faster without them in six of seven
-- interleaved pairs (median 6,623 -> 7,186 jobs/s).
--
-- None of these columns is searched by a range or a filter whose selectivity
-- the planner would estimate: payloads and results are only read back, and a
-- unique key's selectivity comes from its unique index, not its statistics.

ALTER TABLE worker.jobs
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN idempotency_key SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN errors SET STATISTICS 0;

ALTER TABLE worker.dead_letters
    ALTER COLUMN payload SET STATISTICS 0,
    ALTER COLUMN last_error SET STATISTICS 0,
    ALTER COLUMN errors SET STATISTICS 0;

ALTER TABLE worker.idempotency_keys
    ALTER COLUMN key SET STATISTICS 0,
    ALTER COLUMN payload_hash SET STATISTICS 0,
    ALTER COLUMN result SET STATISTICS 0;

ALTER TABLE app.payments ALTER COLUMN id SET STATISTICS 0;
ALTER TABLE app.refunds ALTER COLUMN refund_id SET STATISTICS 0;
ALTER TABLE app.bookings
    ALTER COLUMN request_id SET STATISTICS 0,
    ALTER COLUMN failures SET STATISTICS 0;
