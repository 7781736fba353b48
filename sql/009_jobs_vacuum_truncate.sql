-- 009: vacuum keeps worker.jobs' empty pages instead of cutting them off.
-- A queue empties often, and every time vacuum then finds empty pages at the
-- end of the table and truncates them, which takes an ACCESS EXCLUSIVE lock:
-- every claim and ack waits behind it. With autovacuum every second, rounds
-- of 10,000 jobs fell from about 30,000 to 4,000-6,000 jobs/s now and then;
-- without the truncation they did not. The pages stay in the table's free
-- space map and take the next jobs.
ALTER TABLE worker.jobs SET (vacuum_truncate = false);
