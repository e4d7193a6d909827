import ArgumentParser
import Adamant
import CBackend
import Foundation

/// One model's measurements, made in a child process (`adamant bench --measure-child PATH`) so that
/// its peak RSS (VmHWM, which only grows within a process) belongs to that model alone.
struct ChildReport: Codable {
    struct Row: Codable {
        var batch: Int
        var forwardS: Double
        var forwardRuns: Int
        var pgdStepS: Double
        var pgdStepRuns: Int
        /// Peak RSS while measuring this batch's forward pass, and its PGD step (VmHWM reset before each).
        var forwardPeakRSSBytes: Int
        var pgdPeakRSSBytes: Int
    }
    var loadS: Double
    var firstInferenceS: Double
    var firstInferenceBatch: Int
    var parameters: Int
    var weightBytes: Int
    var flopsPerSample: Int
    var inputShape: [Int]
    var classes: Int
    var logitsFinite: Bool
    var rows: [Row]
    var peakRSSBytes: Int
    /// Peak RSS of loading plus the first inference.
    var loadPeakRSSBytes: Int
}

/// Resets this process's VmHWM to its current RSS (Linux: "5" to /proc/self/clear_refs), so that a
/// later peakRSSBytes() measures one phase; false where the kernel refuses.
@discardableResult
func resetPeakRSS() -> Bool {
    (try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)) != nil
}

/// VmHWM (peak resident set) of this process, in bytes, from /proc/self/status.
func peakRSSBytes() -> Int {
    guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in s.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}

func stderrLine(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Latency of inference and of one PGD step per model, or per depth of a synthesized ResNet family.",
        discussion: """
        adamant bench m8.onnx m20.onnx --batch 1,128
        adamant bench --depths 50,101,638 --cifar-depths 20,1202 --csv d.csv

        --depths synthesizes the ImageNet bottleneck ResNets (default --batch 1,8) and --cifar-depths the \
        CIFAR ResNet-(6n+2) (default --cifar-batch 1,128) with `adamant synth` (random weights, --seed), into \
        --cache-dir (reused when present) or a temporary directory. Each model is measured in a child process \
        (this program re-executed): load time (file -> ready model), first-inference time (the first \
        forward after loading, at the first batch size), per batch the median latency of the forward pass \
        and of one PGD step (forward + input gradient of the cross-entropy, Session.gradient), images/s, \
        forward GFLOP/s (FLOPs counted by `adamant info`), and the child's peak RSS (VmHWM: loading plus \
        every batch of both measurements). Each measurement: one warm-up call, then timed calls until \
        --budget seconds are used (at least 3, at most --iters).
        """)
    @Argument(help: "ONNX models.") var models: [String] = []
    @Option(help: "ImageNet bottleneck ResNet depths to synthesize, e.g. 50,101,152,200,338,638.") var depths: String?
    @Option(help: "CIFAR ResNet-(6n+2) depths to synthesize, e.g. 20,56,110,1202.") var cifarDepths: String?
    @Option(help: "Batch sizes, comma-separated (default: 1,32 for MODEL..., 1,8 for --depths).") var batch: String?
    @Option(help: "Batch sizes for --cifar-depths.") var cifarBatch: String = "1,128"
    @Option(parsing: .unconditional, help: "Timed runs per measurement (at most), 1 to 1000000.") var iters: Int = 10
    @Option(parsing: .unconditional, help: "Seconds of timed runs per measurement, 0 to 86400 (at least 3 runs; 0 = always --iters; default 0 for MODEL..., 20 for depths).")
    var budget: Double?
    @Option(help: "Domain to run (name or index; default: the default domain).") var domain: String?
    @Option(parsing: .unconditional, help: "Threads, 0 to 1024 (0 = one per CPU).") var threads: Int32 = 0
    @Option(parsing: .unconditional, help: "Seed of the synthesized weights.") var seed: UInt64 = 0
    @Option(help: "Keep synthesized models in this directory (reused when present).") var cacheDir: String?
    @Option(help: "Write results as JSON to this file.") var json: String?
    @Option(help: "Write results as CSV to this file.") var csv: String?
    @Option(help: .hidden) var measureChild: String?

    func parseInts(_ s: String, what: String) throws -> [Int] {
        try intList(s, what, in: 1...(what.hasSuffix("depths") ? maxSynthDepth : 65_536))
    }

    func validate() throws {
        try require(iters, in: 1...1_000_000, "--iters")
        if let budget, !(budget.isFinite && budget >= 0 && budget <= 86_400) {
            throw ValidationError("--budget must be a number of seconds in [0, 86400], got \(budget)")
        }
        try require(threads, in: 0...1024, "--threads")
        if let batch { _ = try parseInts(batch, what: "--batch") }
        _ = try parseInts(cifarBatch, what: "--cifar-batch")
        for d in try depths.map({ try parseInts($0, what: "--depths") }) ?? [] { try checkSynthDepth(d, cifar: false, "--depths") }
        for d in try cifarDepths.map({ try parseInts($0, what: "--cifar-depths") }) ?? [] { try checkSynthDepth(d, cifar: true, "--cifar-depths") }
        if let domain, domain.isEmpty { throw ValidationError("--domain must name a domain") }
        if measureChild == nil && depths == nil && cifarDepths == nil && models.isEmpty {
            throw ValidationError("give MODEL files, --depths or --cifar-depths")
        }
    }

    func run() throws {
        if let path = measureChild { return try runChild(path) }
        let isDepth = depths != nil || cifarDepths != nil
        if let json { try checkOutputFile(json, "--json") }
        if let csv { try checkOutputFile(csv, "--csv") }
        for p in models where access(p, R_OK) != 0 { throw CLIError(.noInput, "cannot read MODEL '\(p)': \(errnoText())") }
        abk_set_threads(threads)
        let backend = String(cString: backendInfo())
        print("backend: \(backend)")
        let budget = self.budget ?? (isDepth ? 20 : 0)

        // The jobs: (label, family, depth, path or spec to synthesize, batches).
        struct Job { var name: String; var family: String; var depth: Int?; var path: String; var spec: ResNetSpec?; var batches: [Int] }
        var jobs: [Job] = []
        let modelBatches = try parseInts(batch ?? (isDepth ? "1,8" : "1,32"), what: "--batch")
        var tempDir: String?
        var dir = cacheDir
        if isDepth && dir == nil {
            let t = NSTemporaryDirectory() + "adamant_bench_\(getpid())"
            tempDir = t
            dir = t
        }
        if let dir { try makeOutputDirectory(dir, cacheDir == nil ? "the temporary directory" : "--cache-dir") }
        defer { if let tempDir { try? FileManager.default.removeItem(atPath: tempDir) } }
        for p in models {
            jobs.append(Job(name: (p as NSString).lastPathComponent, family: "file", depth: nil, path: p, spec: nil, batches: modelBatches))
        }
        for d in try depths.map({ try parseInts($0, what: "--depths") }) ?? [] {
            let s = try ResNetSpec.imagenet(depth: d, seed: seed)
            jobs.append(Job(name: s.name, family: "imagenet", depth: d, path: "\(dir!)/\(s.name)_seed\(seed).onnx", spec: s,
                            batches: modelBatches))
        }
        let cb = try parseInts(cifarBatch, what: "--cifar-batch")
        for d in try cifarDepths.map({ try parseInts($0, what: "--cifar-depths") }) ?? [] {
            let s = try ResNetSpec.cifar(depth: d, seed: seed)
            jobs.append(Job(name: s.name, family: "cifar", depth: d, path: "\(dir!)/\(s.name)_seed\(seed).onnx", spec: s, batches: cb))
        }

        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var rows: [[String]] = []
        var out: [[String: Any]] = []
        var csvLines = ["family,model,depth,batch,parameters,weight_bytes,file_bytes,flops_per_sample,synth_s,load_s,first_inference_s,forward_s,forward_runs,images_per_s,gflops,pgd_step_s,pgd_step_runs,peak_rss_bytes,load_peak_rss_bytes,forward_peak_rss_bytes,pgd_peak_rss_bytes,threads,logits_finite"]
        for (k, job) in jobs.enumerated() {
            let tag = "[\(k + 1)/\(jobs.count)] \(job.name)"
            var synthS: Double?
            if let spec = job.spec, !FileManager.default.fileExists(atPath: job.path) {
                stderrLine("\(tag): synthesizing \(spec.description) -> \(job.path)")
                let t0 = Date()
                // Written next to the target and renamed, so an interrupted run never leaves a partial file.
                let tmp = job.path + ".part\(getpid())"
                try runChildProcess(exe, ["synth", spec.block == .bottleneck ? "--depth" : "--cifar-depth", "\(job.depth!)",
                                          "--seed", "\(seed)", "-o", tmp], captureStdout: false)
                try FileManager.default.moveItem(atPath: tmp, toPath: job.path)
                synthS = Date().timeIntervalSince(t0)
            }
            stderrLine("\(tag): measuring batch \(job.batches.map(String.init).joined(separator: ",")) in a child process")
            var args = ["bench", "--measure-child", job.path, "--batch", job.batches.map(String.init).joined(separator: ","),
                        "--iters", "\(iters)", "--budget", "\(budget)", "--threads", "\(threads)"]
            if let domain { args += ["--domain", domain] }
            let data = try runChildProcess(exe, args, captureStdout: true)
            guard let line = String(data: data, encoding: .utf8)?.split(separator: "\n").last,
                  let r = try? JSONDecoder().decode(ChildReport.self, from: Data(line.utf8)) else {
                throw CLIError(.failure, "\(job.name): the measuring child process printed no report")
            }
            let fileBytes = (try? FileManager.default.attributesOfItem(atPath: job.path)[.size] as? Int) ?? 0
            let flops = Double(r.flopsPerSample)
            for row in r.rows {
                let b = Double(row.batch)
                let gflops = flops * b / row.forwardS / 1e9
                rows.append([job.name, job.depth.map(String.init) ?? "-", "\(row.batch)",
                             String(format: "%.1fM", Double(r.parameters) / 1e6), String(format: "%.1f MB", Double(r.weightBytes) / 1e6),
                             String(format: "%.2f", flops / 1e9), String(format: "%.2f s", r.loadS),
                             String(format: "%.1f ms", r.firstInferenceS * 1e3), String(format: "%.2f ms", row.forwardS * 1e3),
                             String(format: "%.1f", b / row.forwardS), String(format: "%.1f", gflops),
                             String(format: "%.2f ms", row.pgdStepS * 1e3),
                             String(format: "%.0f / %.0f / %.0f MB", Double(r.loadPeakRSSBytes) / 1e6,
                                    Double(row.forwardPeakRSSBytes) / 1e6, Double(row.pgdPeakRSSBytes) / 1e6)])
                var o: [String: Any] = [
                    "model": job.path, "name": job.name, "family": job.family, "batch": row.batch,
                    "forward_s": row.forwardS, "forward_runs": row.forwardRuns, "gradient_s": row.pgdStepS,
                    "pgd_step_s": row.pgdStepS, "pgd_step_runs": row.pgdStepRuns,
                    "images_per_s": b / row.forwardS, "gflops": gflops, "parameters": r.parameters,
                    "weight_bytes": r.weightBytes, "file_bytes": fileBytes, "flops_per_sample": r.flopsPerSample,
                    "load_s": r.loadS, "first_inference_s": r.firstInferenceS, "first_inference_batch": r.firstInferenceBatch,
                    "peak_rss_bytes": r.peakRSSBytes, "load_peak_rss_bytes": r.loadPeakRSSBytes,
                    "forward_peak_rss_bytes": row.forwardPeakRSSBytes, "pgd_peak_rss_bytes": row.pgdPeakRSSBytes,
                    "logits_finite": r.logitsFinite,
                ]
                if let d = job.depth { o["depth"] = d }
                if let synthS { o["synth_s"] = synthS }
                out.append(o)
                csvLines.append([job.family, job.name, job.depth.map(String.init) ?? "", "\(row.batch)", "\(r.parameters)",
                                 "\(r.weightBytes)", "\(fileBytes)", "\(r.flopsPerSample)", synthS.map { String(format: "%.3f", $0) } ?? "",
                                 String(format: "%.4f", r.loadS), String(format: "%.6f", r.firstInferenceS),
                                 String(format: "%.6f", row.forwardS), "\(row.forwardRuns)", String(format: "%.3f", b / row.forwardS),
                                 String(format: "%.3f", gflops), String(format: "%.6f", row.pgdStepS), "\(row.pgdStepRuns)",
                                 "\(r.peakRSSBytes)", "\(r.loadPeakRSSBytes)", "\(row.forwardPeakRSSBytes)", "\(row.pgdPeakRSSBytes)",
                                 "\(threads)", r.logitsFinite ? "true" : "false"]
                                .map { $0.contains(",") ? "\"\($0)\"" : $0 }.joined(separator: ","))
            }
            if !r.logitsFinite { stderrLine("\(tag): WARNING: non-finite logits") }
        }
        printTable(["model", "depth", "batch", "params", "weights", "GFLOP/img", "load", "first inf", "forward", "images/s",
                    "GFLOP/s", "PGD step (fwd+grad)", "peak RSS load / fwd / PGD"], rows)
        print("load: file -> ready model; first inf: first forward after loading (batch \(jobs.first?.batches.first ?? 1)); "
              + "GFLOP/s of the forward pass; peak RSS (VmHWM of the measuring child): load + first inference, then "
              + "this batch's forward passes, then its PGD steps (the peak is reset before each phase; each batch size starts with an empty buffer pool)")
        if let json {
            try writeJSON(["backend": backend, "threads": Int(threads), "seed": NSNumber(value: seed), "budget_s": budget, "iters": iters,
                           "peak_rss_method": "VmHWM of one child process per model: peak_rss_bytes over everything; load_peak_rss_bytes after load + first inference; forward_/pgd_peak_rss_bytes per batch, VmHWM reset (/proc/self/clear_refs) before each phase",
                           "results": out], to: json)
        }
        if let csv { try writeFile(Array((csvLines.joined(separator: "\n") + "\n").utf8), to: csv, "--csv") }
    }

    /// Runs this program with `args`, stderr passed through; fails on a non-zero exit.
    @discardableResult
    func runChildProcess(_ exe: String, _ args: [String], captureStdout: Bool) throws -> Data {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = captureStdout ? pipe : FileHandle.standardError
        try p.run()
        let data = captureStdout ? pipe.fileHandleForReading.readDataToEndOfFile() : Data()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CLIError(.failure, "child process `\(exe) \(args.joined(separator: " "))` failed with status \(p.terminationStatus)")
        }
        return data
    }

    /// The child: loads one model, measures it, prints one JSON line (ChildReport) on stdout.
    func runChild(_ path: String) throws {
        abk_set_threads(threads)
        let batches = try parseInts(batch ?? "1", what: "--batch")
        let budget = self.budget ?? 0
        let name = (path as NSString).lastPathComponent
        func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
        let t0 = now()
        let m = try Model.load(path: path)
        let loadS = now() - t0
        let d = try domain.map { try resolveDomains($0, m)[0] } ?? m.defaultDomain
        let s = Session(model: m)
        let info = try m.info()
        let bnFloats = try m.batchNormParameters(domain: d).reduce(0) { $0 + $1.mean.count + $1.variance.count }
        var rows: [ChildReport.Row] = []
        var first: Double = 0
        var finite = true
        var loadPeak = 0
        for (i, b) in batches.enumerated() {
            var rng = Xoshiro256(seed: 1, stream: UInt64(b))
            let x = (0..<(b * m.inputShape.reduce(1, *))).map { _ in rng.unitFloat() }
            let labels = (0..<b).map { _ in Int64(rng.next() % UInt64(m.numClasses)) }
            func measure(_ what: String, _ body: () throws -> Void) rethrows -> (Double, Int) {
                let w0 = now()
                try body()  // warm-up
                let warm = now() - w0
                let runs = budget > 0 ? max(min(iters, 3), min(iters, Int(budget / max(warm, 1e-6)))) : max(1, iters)
                stderrLine("  \(name) batch \(b): \(what), \(runs) timed runs of ~\(String(format: "%.3g", warm)) s")
                var t: [Double] = []
                for _ in 0..<runs {
                    let a = now()
                    try body()
                    t.append(now() - a)
                }
                return (t.sorted()[t.count / 2], runs)
            }
            // Each batch size from the loaded model alone: the previous size's buffers (a batch-1
            // gradient keeps every activation of a sample) are not counted in this one's peaks.
            if i > 0 { s.releaseMemory() }
            if i == 0 {
                // load + the first inference
                let z = try s.predict(x, batch: b, domain: d)
                first = now() - t0 - loadS
                if !z.allSatisfy({ $0.isFinite }) { finite = false }
                loadPeak = peakRSSBytes()
            }
            resetPeakRSS()
            let fwd = try measure("forward") {
                let z = try s.predict(x, batch: b, domain: d)
                if !z.allSatisfy({ $0.isFinite }) { finite = false }
            }
            let fwdPeak = peakRSSBytes()
            resetPeakRSS()
            let grad = try measure("PGD step (forward + input gradient)") {
                _ = try s.gradient(x, batch: b, labels: labels, loss: .crossEntropy, domain: d)
            }
            rows.append(.init(batch: b, forwardS: fwd.0, forwardRuns: fwd.1, pgdStepS: grad.0, pgdStepRuns: grad.1,
                              forwardPeakRSSBytes: fwdPeak, pgdPeakRSSBytes: peakRSSBytes()))
        }
        // BN running statistics are tensors of the file too, not counted as parameters by `info`.
        let report = ChildReport(loadS: loadS, firstInferenceS: first, firstInferenceBatch: batches[0],
                                 parameters: info.parameters, weightBytes: 4 * (info.parameters + bnFloats),
                                 flopsPerSample: info.flopsPerSample, inputShape: m.inputShape, classes: m.numClasses,
                                 logitsFinite: finite, rows: rows, peakRSSBytes: peakRSSBytes(), loadPeakRSSBytes: loadPeak)
        let data = try JSONEncoder().encode(report)
        print(String(data: data, encoding: .utf8)!)
    }
}
