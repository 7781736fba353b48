import WorkerCLI

@main
enum WorkerctlMain {
    static func main() async { await WorkerctlCommand.main() }
}
