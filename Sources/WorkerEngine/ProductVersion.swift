/// The release of workerd and workerctl: what `--version` prints and what
/// each workerd reports to `worker.workers`, so that a rolling deploy shows
/// which workers still run the old build. Bumped with each release.
public enum ProductVersion {
    public static let number = "0.1.0"

    /// As `--version` prints it: the release and the schema version it needs.
    public static var description: String { "\(number) (schema \(Migrator.requiredVersion))" }
}
