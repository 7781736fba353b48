import WorkerTestSupport

extension TestDatabase {
    /// The shared buffers one claim of `batch` jobs from `queue` reads, as
    /// EXPLAIN (ANALYZE, BUFFERS) counts them. The claim runs twice in one
    /// session and the second counts: the first also plans its statements.
    func claimBuffers(queue: String = "default", batch: Int) async throws -> Int {
        try await execute("""
            CREATE OR REPLACE FUNCTION public.claim_buffers(claim_queue text, batch integer) RETURNS int
            LANGUAGE plpgsql AS $$
            DECLARE plan json;
            BEGIN
                FOR i IN 1..2 LOOP
                    EXECUTE format('EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM worker.claim(%L, %s, 30000, %L)',
                                   claim_queue, batch, 'w')
                        INTO plan;
                END LOOP;
                RETURN (plan -> 0 -> 'Plan' ->> 'Shared Hit Blocks')::int + (plan -> 0 -> 'Plan' ->> 'Shared Read Blocks')::int;
            END $$
            """)
        return try await int("SELECT public.claim_buffers(\(queue), \(batch)::integer)")
    }
}
