import Adamant
import ArgumentParser
import CBackend
import Foundation
import Hummingbird
import Logging

/// `adamant serve` (installed as `adamant-serve`; `adamant serve ARGS` runs it): an HTTP inference
/// and attack service over one loaded model.
@main
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adamant serve",
        abstract: "Serve a model over HTTP: predictions and PGD attacks (JSON API, Prometheus metrics).",
        discussion: """
        Endpoints: POST /v1/predict, POST /v1/attack, GET /v1/model, GET /healthz, GET /metrics
        (docs/openapi.yaml). The model is loaded once; --threads workers, each with its own session,
        run the requests off the event loop; a full queue answers 503 with Retry-After. SIGTERM or
        SIGINT stops accepting connections, finishes the requests in flight and exits 0.
        """,
        version: "0.1.0")

    @Argument(help: "An ONNX model (plain, or adamant's single-file multi-domain format). Omit when using --domain.")
    var model: String?
    @Option(name: .customLong("domain"), help: ArgumentHelp("A per-domain export, NAME=PATH (repeat; the first is the default).", valueName: "name=path"))
    var domainFiles: [String] = []
    @Option(help: "Name of the default BN domain (used when a request names none).") var defaultDomain: String?
    @Option(parsing: .unconditional, help: ArgumentHelp("Per-channel mean in pixel units (overrides the stored one).", valueName: "m0,m1,m2")) var mean: String?
    @Option(parsing: .unconditional, help: ArgumentHelp("Per-channel std in pixel units.", valueName: "s0,s1,s2")) var std: String?
    @Option(help: "Address to listen on.") var host: String = "127.0.0.1"
    @Option(parsing: .unconditional, help: "TCP port, 0 to 65535 (0 = any free port; the chosen one is logged and written to --port-file).") var port: Int = 8080
    @Option(help: "Write the port actually listened on to this file once the server accepts connections.") var portFile: String?
    @Option(parsing: .unconditional, help: "Worker threads, each with its own session (default: one per CPU), 1 to 256.") var threads: Int?
    @Option(parsing: .unconditional, help: "Compute threads a model call may split its work over, 0 to 1024 (0 = one per CPU).") var computeThreads: Int32 = 0
    @Option(parsing: .unconditional, help: "Most images per request, and per dynamically batched model call (1 to 4096).") var maxBatch: Int = 64
    @Option(parsing: .unconditional, help: "Largest request body in bytes (413 beyond).") var maxBody: Int = 16 << 20
    @Option(parsing: .unconditional, help: "Most requests waiting for a worker before new ones get 503 (>= 1).") var maxQueue: Int = 64
    @Option(parsing: .unconditional, help: "Most PGD steps x restarts per attack request (422 beyond), 1 to 100000.") var maxSteps: Int = 1000
    @Option(parsing: .unconditional, help: "Dynamic batching window in milliseconds (0 = off, the default): predict requests on one domain arriving within it run as one model call, with the same results.") var batchWindowMs: Double = 0
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.") var logLevel: String = "info"

    func validate() throws {
        if let threads, !(1...256).contains(threads) { throw ValidationError("--threads must be in 1...256, got \(threads)") }
        guard (0...1024).contains(computeThreads) else { throw ValidationError("--compute-threads must be in 0...1024, got \(computeThreads)") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535, got \(port)") }
        guard (1...4096).contains(maxBatch) else { throw ValidationError("--max-batch must be in 1...4096, got \(maxBatch)") }
        guard maxBody >= 1 else { throw ValidationError("--max-body must be at least 1 byte, got \(maxBody)") }
        guard maxQueue >= 1 else { throw ValidationError("--max-queue must be at least 1, got \(maxQueue)") }
        guard (1...100_000).contains(maxSteps) else { throw ValidationError("--max-steps must be in 1...100000, got \(maxSteps)") }
        guard batchWindowMs.isFinite, (0...10_000).contains(batchWindowMs) else { throw ValidationError("--batch-window-ms must be in 0...10000, got \(batchWindowMs)") }
        guard Logger.Level(rawValue: logLevel.lowercased()) != nil else { throw ValidationError("--log-level must be one of trace, debug, info, notice, warning, error, critical; got '\(logLevel)'") }
        guard (model == nil) != domainFiles.isEmpty else { throw ValidationError("give either MODEL or --domain NAME=PATH (not both)") }
    }

    func floats(_ s: String, _ option: String) throws -> [Float] {
        let v = s.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.allSatisfy({ $0 != nil && $0!.isFinite }) else { throw ValidationError("\(option) must be a list of numbers, got '\(s)'") }
        return v.map { $0! }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel.lowercased())!
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        var log = Logger(label: "adamant.serve")
        log.logLevel = level
        let logger = log
        abk_set_threads(computeThreads)
        var o = LoadOptions()
        if let mean { o.mean = try floats(mean, "--mean") }
        if let std { o.std = try floats(std, "--std") }
        o.defaultDomain = defaultDomain
        let m: Model
        do {
            if let model { m = try Model.load(path: model, options: o) }
            else {
                let specs = try domainFiles.map { spec -> (name: String, path: String) in
                    guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex, spec.index(after: eq) != spec.endIndex else {
                        throw ValidationError("--domain expects NAME=PATH, got '\(spec)'")
                    }
                    return (String(spec[..<eq]), String(spec[spec.index(after: eq)...]))
                }
                m = try Model.load(domains: specs, options: o)
            }
        } catch let e as AdamantError {
            logger.critical("cannot load the model", metadata: ["error": "\(e.message)"])
            throw ExitCode(e.kind == .io ? 66 : 65)
        }
        let workers = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount)
        let settings = ServeSettings(workers: workers, computeThreads: Int(computeThreads), maxBatch: maxBatch, maxBody: maxBody,
                                     maxQueue: maxQueue, maxSteps: maxSteps, batchWindowMs: batchWindowMs)
        let name = model ?? domainFiles.joined(separator: ",")
        let service = try AdamantService(model: m, modelName: name, settings: settings, logger: logger)
        let portFile = self.portFile
        let app = Application(
            router: service.router(),
            configuration: .init(address: .hostname(host, port: port), serverName: "adamant"),
            onServerRunning: { channel in
                let p = channel.localAddress?.port ?? 0
                logger.info("listening", metadata: ["host": "\(host)", "port": "\(p)", "domains": "\(m.domains.joined(separator: ","))",
                                                    "workers": "\(workers)", "batch_window_ms": "\(settings.batchWindowMs)"])
                if let portFile {
                    let tmp = portFile + ".tmp"
                    if FileManager.default.createFile(atPath: tmp, contents: Data("\(p)\n".utf8)) {
                        _ = rename(tmp, portFile)
                    } else { logger.error("cannot write --port-file", metadata: ["path": "\(portFile)"]) }
                }
            },
            logger: logger)
        do {
            try await app.runService()
        } catch {
            logger.critical("server failed", metadata: ["error": "\(error)"])
            service.pool.shutdown()
            throw ExitCode(1)
        }
        service.pool.shutdown()
        logger.info("stopped")
    }
}


