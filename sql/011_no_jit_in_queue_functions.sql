-- 011: no JIT compilation in the functions that turn plan nodes off.
--
-- Turning a node off (enable_seqscan = off and the like) does not forbid it,
-- it adds 10^10 to its cost. Should a function's statement find no other plan
-- (its index dropped, or left invalid by a failed REINDEX CONCURRENTLY), that
-- cost passes jit_above_cost and PostgreSQL compiles the plan with LLVM on
-- every call. With worker.jobs_claim_idx dropped over 20,000 waiting jobs, a
-- claim of 50 took 176-445 ms, and 9-13 ms with JIT off (the benchmark's
-- machine); with the index, claims take well under a millisecond. None of
-- these statements runs long enough for JIT to pay off.

ALTER FUNCTION worker.claim(text, integer, bigint, text) SET jit = off;
ALTER FUNCTION worker.lock_jobs(bigint[], uuid[]) SET jit = off;
ALTER FUNCTION worker.ack_jobs(bigint[], uuid[], text[], jsonb[]) SET jit = off;
ALTER FUNCTION worker.claim_keys(bigint[], text[], boolean[], bigint[]) SET jit = off;
ALTER FUNCTION app.apply_refunds(text[], text[], bigint[], text[], bigint[]) SET jit = off;
ALTER FUNCTION app.reserve_bookings(text[], text[], integer[], bigint[], text[]) SET jit = off;
