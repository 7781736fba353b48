import WorkerCLI

@main
enum WorkerdMain {
    static func main() async { await WorkerdCommand.main() }
}
