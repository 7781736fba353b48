-- 007: autovacuum for the queue's churning tables. Every job is inserted,
-- updated by its claim and deleted by its ack, so worker.jobs holds two dead
-- row versions per job done until vacuum comes by; keys are inserted, updated
-- once and deleted by the sweeper. PostgreSQL's defaults wait until dead rows
-- reach a fifth of the live ones (400,000 behind a 2,000,000-job backlog,
-- every one of them scanned past by the claims) and throttle vacuum's I/O.
-- Here vacuum starts at 2% (keys 5%), runs unthrottled (the tables are hot and
-- their pages cached), and the statistics the claim is planned with follow
-- the backlog's size at 5%. scripts/soak shows the tables bounded; see the
-- README for its figures with these settings and with the defaults.
ALTER TABLE worker.jobs SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);

ALTER TABLE worker.idempotency_keys SET (
    autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0
);
