import ArgumentParser
import Foundation

/// `adamant serve ARGS...`: runs the HTTP service, the `adamant-serve` program installed beside
/// this one (a separate executable, so that this tool and libadamant never link SwiftNIO).
struct ServeLauncher: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a model over HTTP: predictions and PGD attacks (runs adamant-serve; see `adamant serve --help`).",
        discussion: "Every argument goes to adamant-serve, found beside this executable ($ADAMANT_SERVE overrides the path).")
    @Argument(parsing: .captureForPassthrough, help: "Arguments for adamant-serve (MODEL, --port, --threads, ...).")
    var arguments: [String] = []

    /// The adamant-serve executable: $ADAMANT_SERVE, else `adamant-serve` in this executable's directory.
    static func servePath() -> String {
        if let p = ProcessInfo.processInfo.environment["ADAMANT_SERVE"], !p.isEmpty { return p }
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: exe).deletingLastPathComponent().appendingPathComponent("adamant-serve").path
    }

    func run() throws {
        let path = ServeLauncher.servePath()
        guard access(path, X_OK) == 0 else {
            throw CLIError(.noInput, "adamant serve needs the adamant-serve program, not found at '\(path)' (\(errnoText())); `make dist` builds it into dist/bin beside adamant")
        }
        let argv = [path] + arguments
        var cargs = argv.map { strdup($0) } + [nil]
        execv(path, &cargs)
        let e = errno
        cargs.forEach { free($0) }
        throw CLIError(.failure, "cannot run '\(path)': \(errnoText(e))")
    }
}
