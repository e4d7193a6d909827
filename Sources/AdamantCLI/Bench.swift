import ArgumentParser
import Adamant
import CBackend
import Foundation

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Latency of inference and of one PGD step per model (e.g. as depth grows).",
        discussion: "Median wall time over --iters runs after one warm-up, on random pixels.")
    @Argument(help: "ONNX models.") var models: [String]
    @Option(help: "Batch sizes, comma-separated.") var batch: String = "1,32"
    @Option(help: "Timed runs per measurement.") var iters: Int = 10
    @Option(help: "Domain to run (name or index; default: the default domain).") var domain: String?
    @Option(help: "Threads (0 = one per CPU).") var threads: Int32 = 0
    @Option(help: "Write results as JSON to this file.") var json: String?

    func run() throws {
        abk_set_threads(threads)
        print("backend: \(String(cString: backendInfo()))")
        let batches = try batch.split(separator: ",").map { s -> Int in
            guard let b = Int(s), b >= 1 else { throw ValidationError("bad batch '\(s)'") }
            return b
        }
        var rows: [[String]] = []
        var out: [[String: Any]] = []
        for path in models {
            let m = try Model.load(path: path)
            let d = try domain.map { try resolveDomains($0, m)[0] } ?? m.defaultDomain
            let s = Session(model: m)
            let flops = Double(try m.info().flopsPerSample)
            for b in batches {
                var rng = Xoshiro256(seed: 1)
                let x = (0..<(b * m.inputShape.reduce(1, *))).map { _ in rng.unitFloat() }
                let labels = [Int64](repeating: 0, count: b)
                func median(_ body: () throws -> Void) rethrows -> Double {
                    try body()
                    var t: [Double] = []
                    for _ in 0..<max(1, iters) {
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        try body()
                        t.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                    }
                    return t.sorted()[t.count / 2]
                }
                let fwd = try median { _ = try s.predict(x, batch: b, domain: d) }
                let grad = try median { _ = try s.gradient(x, batch: b, labels: labels, loss: .crossEntropy, domain: d) }
                rows.append([(path as NSString).lastPathComponent, "\(b)", String(format: "%.2f ms", fwd * 1e3),
                             String(format: "%.1f", Double(b) / fwd), String(format: "%.1f", flops * Double(b) / fwd / 1e9),
                             String(format: "%.2f ms", grad * 1e3)])
                out.append(["model": path, "batch": b, "forward_s": fwd, "gradient_s": grad,
                            "images_per_s": Double(b) / fwd, "gflops": flops * Double(b) / fwd / 1e9])
            }
        }
        printTable(["model", "batch", "forward", "images/s", "GFLOP/s", "fwd+bwd (1 PGD step)"], rows)
        if let json { try writeJSON(["backend": String(cString: backendInfo()), "results": out], to: json) }
    }
}
