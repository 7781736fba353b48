-- 010: the batch's idempotency-key claim as a function, and the claim's plan
-- made once per session.
--
-- The key claim was a statement of its own, parsed and planned for every
-- batch. Inside a function its plan is made once per session, so it must be
-- right at any size of the tables: worker.jobs and worker.idempotency_keys
-- are read only through LATERAL lookups by primary key (LIMIT 1 keeps the
-- planner from turning them back into joins it could hash over a scan of the
-- table), and the batch's own rows are joined by hashing. Measured with one
-- lane (no contention) over a 20,000-job mix: 2.8 ms per batch of 50 as a
-- statement, 1.3 ms here; a first version with every join a nested loop
-- compared each key with every other and took 2.6 ms.
--
-- worker.claim's statement was planned per batch all the same (plpgsql kept
-- choosing custom plans: the LIMIT's parameter changes the estimates), 0.19
-- ms per claim. Its generic plan is the one plan sql/008 leaves it.

ALTER FUNCTION worker.claim(text, integer, bigint, text) SET plan_cache_mode = force_generic_plan;

-- Claims the keys of a batch's jobs (job_ids[i] asks for keys[i] when
-- given[i], else for <kind>:<sha256 of the payload>; it lives ttl_ms[i]) in
-- the batch's order: a key asked for twice goes to the first job. Rows are
-- inserted in key order, so two batches waiting on each other's keys wait in
-- one order; an expired key is taken over. Answers one row per job: its key,
-- its payload's hash, whether it owns the key now, and else the holder as
-- this statement's snapshot shows it (none: a holder that committed while
-- the insert waited for it; the caller looks it up with a new statement).
CREATE FUNCTION worker.claim_keys(job_ids bigint[], keys text[], given boolean[], ttl_ms bigint[])
RETURNS TABLE (
    job_id bigint, key text, payload_hash text, owned boolean, holder bigint, holder_hash text, holder_status text)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH input AS (
        SELECT i.ord, i.job_id, CASE WHEN i.given THEN i.key ELSE j.kind || ':' || h.hash END AS key,
               j.kind, h.hash, i.ttl_ms
        FROM unnest(job_ids, keys, given, ttl_ms) WITH ORDINALITY AS i(job_id, key, given, ttl_ms, ord)
        CROSS JOIN LATERAL (SELECT j.kind, j.payload FROM worker.jobs AS j WHERE j.id = i.job_id LIMIT 1) AS j
        CROSS JOIN LATERAL (SELECT encode(sha256(convert_to(j.payload::text, 'UTF8')), 'hex') AS hash) AS h
    ), first AS (
        SELECT DISTINCT ON (f.key) f.key, f.job_id, f.kind, f.hash, f.ttl_ms FROM input AS f ORDER BY f.key, f.ord
    ), claimed AS (
        INSERT INTO worker.idempotency_keys AS k (key, kind, job_id, payload_hash, status, expires_at)
        SELECT f.key, f.kind, f.job_id, f.hash, 'processing', now() + f.ttl_ms * interval '1 millisecond'
        FROM first AS f ORDER BY f.key
        ON CONFLICT (key) DO UPDATE
        SET kind = EXCLUDED.kind, job_id = EXCLUDED.job_id, payload_hash = EXCLUDED.payload_hash,
            status = 'processing', result = '{}', created_at = now(), expires_at = EXCLUDED.expires_at
        WHERE k.expires_at <= now()
        RETURNING k.key
    )
    SELECT i.job_id, i.key, i.hash, c.key IS NOT NULL AND f.job_id = i.job_id,
           CASE WHEN c.key IS NOT NULL THEN f.job_id ELSE e.job_id END,
           CASE WHEN c.key IS NOT NULL THEN f.hash ELSE e.payload_hash END,
           CASE WHEN c.key IS NOT NULL THEN 'processing' ELSE e.status END
    FROM input AS i
    JOIN first AS f ON f.key = i.key
    LEFT JOIN claimed AS c ON c.key = i.key
    LEFT JOIN LATERAL (SELECT e.job_id, e.payload_hash, e.status FROM worker.idempotency_keys AS e
                       WHERE e.key = i.key LIMIT 1) AS e ON true;
END
$$;

REVOKE ALL ON FUNCTION worker.claim_keys(bigint[], text[], boolean[], bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION worker.claim_keys(bigint[], text[], boolean[], bigint[]) TO worker_consumer;
