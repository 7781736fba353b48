import Testing
import WorkerEngine
import WorkerTestSupport

@Suite(.timeLimit(.minutes(2))) struct AutovacuumCheckTests {
    @Test func warnsOfAutovacuumOffOrANaptimeLongerThanTenSeconds() {
        let defaults = AutovacuumCheck(enabled: true, naptime: .seconds(60))
        #expect(defaults.warning?.contains("autovacuum_naptime is 60 s") == true)
        #expect(defaults.warning?.contains("autovacuum_naptime = 1s") == true)
        #expect(AutovacuumCheck(enabled: false, naptime: .seconds(1)).warning?.contains("autovacuum is off") == true)
        #expect(AutovacuumCheck(enabled: true, naptime: .seconds(10)).warning == nil)
        #expect(AutovacuumCheck(enabled: true, naptime: .seconds(1)).warning == nil)
    }

    @Test func readsTheServersSettings() async throws {
        try await withTestDatabase { db in
            let check = try await AutovacuumCheck.read(from: db.client, logger: db.logger)
            // pg_settings gives the naptime in seconds, whatever unit it was set in.
            let seconds = try await db.int("SELECT setting::int FROM pg_settings WHERE name = 'autovacuum_naptime'")
            #expect(check.naptime == .seconds(seconds))
            #expect(check.enabled == (try await db.string("SELECT setting FROM pg_settings WHERE name = 'autovacuum'") == "on"))
        }
    }
}
