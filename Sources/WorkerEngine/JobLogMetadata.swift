import Logging

/// The job a log line is about (`job_id`, `kind`, `attempt`, `lease`), held
/// in a task local while the job runs and read only when a line is written.
/// Setting it on each job's logger instead made swift-log's stream handler
/// render the metadata for every job, logged or not: a sixth of a no-op
/// drain's CPU time.
enum JobLogMetadata {
    @TaskLocal static var current: Logger.Metadata = [:]

    /// `logger` writing the current job's metadata beside its own.
    static func adding(to logger: Logger) -> Logger {
        var logger = logger
        let own = logger.handler.metadataProvider
        logger.handler.metadataProvider = .multiplex([own, Logger.MetadataProvider { current }].compactMap { $0 })
        return logger
    }
}
