import ArgumentParser
import Adamant
import CBackend
import Foundation

/// Parses "8/255", "0.03" or "2e-3".
func parseNumber(_ s: String) throws -> Float {
    let parts = s.split(separator: "/")
    if parts.count == 2, let a = Float(parts[0]), let b = Float(parts[1]), b != 0 { return a / b }
    if parts.count == 1, let v = Float(s) { return v }
    throw ValidationError("'\(s)' is not a number (use e.g. 0.03 or 8/255)")
}

func parseList(_ s: String) throws -> [Float] {
    try s.split(separator: ",").map { try parseNumber(String($0)) }
}

/// How to load the model: one file, or a set of per-domain files.
struct ModelOptions: ParsableArguments {
    @Argument(help: "An ONNX model (plain, or adamant's single-file multi-domain format). Omit when using --domain.")
    var model: String?

    @Option(name: .customLong("domain"), help: ArgumentHelp("A per-domain export, as NAME=PATH (repeat; the first is the default).", valueName: "name=path"))
    var domainFiles: [String] = []

    @Option(help: ArgumentHelp("Per-channel mean in pixel units, e.g. 0.4914,0.4822,0.4465 (overrides the stored one).", valueName: "m0,m1,m2"))
    var mean: String?

    @Option(help: ArgumentHelp("Per-channel std in pixel units.", valueName: "s0,s1,s2"))
    var std: String?

    @Option(help: ArgumentHelp("Valid pixel range, default 0,1.", valueName: "lo,hi"))
    var pixelRange: String?

    @Option(help: "Name of the default BN domain.")
    var defaultDomain: String?

    @Option(help: ArgumentHelp("Cap adamant's kernels at this instruction set: avx512, avx2, scalar or auto (default: $ADAMANT_ISA, else the best the CPU and OS support).", valueName: "isa"))
    var isa: String?

    @Option(help: "Compute threads (0 = one per available CPU).")
    var threads: Int32?

    /// Applies --isa and --threads (process-wide) before a model is loaded.
    func configureBackend() throws {
        if let isa {
            do { try Backend.setISA(named: isa) } catch let e as AdamantError { throw ValidationError("--isa: \(e.message)") }
        }
        if let threads {
            guard threads >= 0 && threads <= 1024 else { throw ValidationError("--threads must be in [0, 1024]") }
            abk_set_threads(threads)
        }
    }

    /// Loads the model of a command that also takes images: with --domain, the first positional
    /// argument is an image, not a model.
    func loadWithImages(_ images: [String]) throws -> (Model, [String]) {
        var inputs = images, modelPath = model
        if !domainFiles.isEmpty, let first = modelPath { inputs.insert(first, at: 0); modelPath = nil }
        try configureBackend()
        let m = try loadModel(model: modelPath, domainFiles: domainFiles, mean: mean, std: std,
                              pixelRange: pixelRange, defaultDomain: defaultDomain)
        return (m, inputs)
    }

    func load() throws -> Model {
        try configureBackend()
        return try loadModel(model: model, domainFiles: domainFiles, mean: mean, std: std, pixelRange: pixelRange,
                      defaultDomain: defaultDomain)
    }
}

/// Loads one model file, or a set of per-domain files given as NAME=PATH, with overrides.
func loadModel(model: String?, domainFiles: [String], mean: String?, std: String?, pixelRange: String?,
               defaultDomain: String?) throws -> Model {
    var o = LoadOptions()
    if let m = mean { o.mean = try parseList(m) }
    if let s = std { o.std = try parseList(s) }
    if let r = pixelRange {
        let v = try parseList(r)
        guard v.count == 2 else { throw ValidationError("--pixel-range needs lo,hi") }
        o.pixelRange = (v[0], v[1])
    }
    o.defaultDomain = defaultDomain
    if !domainFiles.isEmpty {
        guard model == nil else { throw ValidationError("give either MODEL or --domain NAME=PATH, not both") }
        let list = try domainFiles.map { spec -> (name: String, path: String) in
            guard let eq = spec.firstIndex(of: "=") else { throw ValidationError("--domain expects NAME=PATH, got '\(spec)'") }
            return (String(spec[..<eq]), String(spec[spec.index(after: eq)...]))
        }
        return try Model.load(domains: list, options: o)
    }
    guard let model else { throw ValidationError("missing MODEL (or --domain NAME=PATH)") }
    return try Model.load(path: model, options: o)
}

/// Resolves "clean,adv" (or "all") to domain indices.
func resolveDomains(_ spec: String?, _ model: Model) throws -> [Int] {
    guard let spec, spec != "all" else { return Array(model.domains.indices) }
    return try spec.split(separator: ",").map { s in
        if let i = Int(s), i >= 0, i < model.domains.count { return i }
        return try model.domainIndex(String(s))
    }
}

/// A progress bar on stderr (redrawn in place on a terminal, a few lines otherwise).
final class ProgressBar {
    let total: Int
    let label: String
    let start = Date()
    let tty = isatty(2) != 0
    var lastDraw = Date.distantPast
    var lastPercent = -1

    init(total: Int, label: String) {
        self.total = max(1, total)
        self.label = label
    }

    func update(_ done: Int) {
        let now = Date()
        let pct = done * 100 / total
        if tty {
            guard now.timeIntervalSince(lastDraw) > 0.1 || done >= total else { return }
            lastDraw = now
            let width = 30
            let filled = width * done / total
            let elapsed = now.timeIntervalSince(start)
            let eta = done > 0 ? elapsed * Double(total - done) / Double(done) : 0
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = String(format: "\r%@ |%@| %d/%d %3d%% %.1fs<%.1fs", label, bar, done, total, pct, elapsed, eta)
            FileHandle.standardError.write(line.data(using: .utf8)!)
            if done >= total { FileHandle.standardError.write("\n".data(using: .utf8)!) }
        } else if pct / 25 != lastPercent / 25 || done >= total {
            lastPercent = pct
            let line = String(format: "%@: %d/%d (%d%%) %.1fs\n", label, done, total, pct, now.timeIntervalSince(start))
            FileHandle.standardError.write(line.data(using: .utf8)!)
        }
    }
}

/// Prints a table with aligned columns.
func printTable(_ header: [String], _ rows: [[String]]) {
    let widths = header.indices.map { c in ([header[c]] + rows.map { $0[c] }).map(\.count).max()! }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, s in
            i == 0 ? s.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                : String(repeating: " ", count: widths[i] - s.count) + s
        }.joined(separator: "  ")
    }
    print(line(header))
    print(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
    rows.forEach { print(line($0)) }
}

func writeJSON(_ object: Any, to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try data.write(to: URL(fileURLWithPath: path))
}

func percent(_ x: Double) -> String { String(format: "%.1f %%", 100 * x) }
