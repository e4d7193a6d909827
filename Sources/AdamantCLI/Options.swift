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

    @Option(parsing: .unconditional, help: ArgumentHelp("Per-channel mean in pixel units, e.g. 0.4914,0.4822,0.4465 (overrides the stored one).", valueName: "m0,m1,m2"))
    var mean: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Per-channel std in pixel units.", valueName: "s0,s1,s2"))
    var std: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Valid pixel range, default 0,1.", valueName: "lo,hi"))
    var pixelRange: String?

    @Option(help: "Name of the default BN domain.")
    var defaultDomain: String?

    @Option(help: ArgumentHelp("Cap adamant's kernels at this instruction set: avx512, avx2, scalar or auto (default: $ADAMANT_ISA, else the best the CPU and OS support).", valueName: "isa"))
    var isa: String?

    @Option(parsing: .unconditional, help: "Compute threads, 0 to 1024 (0 = one per available CPU).")
    var threads: Int32?

    @Option(parsing: .unconditional, help: ArgumentHelp("Cap the model's memory: weights plus one call's activations (estimated from the plan before allocating), in bytes or with a K, M or G suffix (powers of 1024), e.g. 2G. Over it: exit 1. Default: no cap.", valueName: "bytes"))
    var memoryLimit: String?

    func validate() throws {
        if let threads { try require(threads, in: 0...1024, "--threads") }
        if let isa, !["avx512", "avx2", "scalar", "auto"].contains(isa.lowercased()) {
            throw ValidationError("--isa must be avx512, avx2, scalar or auto, got '\(isa)'")
        }
        if let mean { _ = try finiteList(mean, "--mean") }
        if let std {
            for v in try finiteList(std, "--std") where !(v > 0) {
                throw ValidationError("--std values must be positive, got \(v) in '\(std)'")
            }
        }
        if let pixelRange { _ = try pixelRangeValue(pixelRange) }
        for spec in domainFiles { _ = try domainSpec(spec) }
        if let d = defaultDomain, d.isEmpty { throw ValidationError("--default-domain must not be empty") }
        if let memoryLimit { _ = try byteSize(memoryLimit, "--memory-limit") }
    }

    /// Applies --isa and --threads (process-wide) before a model is loaded.
    func configureBackend() throws {
        if let isa {
            do { try Backend.setISA(named: isa) } catch let e as AdamantError { throw ValidationError("--isa: \(e.message)") }
        }
        if let threads { abk_set_threads(threads) }
    }

    /// Loads the model of a command that also takes images: with --domain, the first positional
    /// argument is an image, not a model.
    func loadWithImages(_ images: [String]) throws -> (Model, [String]) {
        var inputs = images, modelPath = model
        if !domainFiles.isEmpty, let first = modelPath { inputs.insert(first, at: 0); modelPath = nil }
        try configureBackend()
        let m = try loadModel(model: modelPath, domainFiles: domainFiles, mean: mean, std: std,
                              pixelRange: pixelRange, defaultDomain: defaultDomain,
                              memoryLimit: try memoryLimit.map { try byteSize($0, "--memory-limit") })
        return (m, inputs)
    }

    func load() throws -> Model {
        try configureBackend()
        return try loadModel(model: model, domainFiles: domainFiles, mean: mean, std: std, pixelRange: pixelRange,
                      defaultDomain: defaultDomain, memoryLimit: try memoryLimit.map { try byteSize($0, "--memory-limit") })
    }
}

/// A byte count: "1048576", "512K", "64M", "2G" or "1.5G" (powers of 1024), > 0.
func byteSize(_ s: String, _ option: String) throws -> Int {
    let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024, "T": 1024 * 1024 * 1024 * 1024]
    var text = s.uppercased()
    if text.hasSuffix("B") && text.count > 1 && units[text[text.index(text.endIndex, offsetBy: -2)]] != nil { text.removeLast() }
    var scale = 1.0
    if let last = text.last, let u = units[last] { scale = u; text.removeLast() }
    guard let v = Double(text), v.isFinite, v > 0, v * scale >= 1, v * scale < 9.2e18 else {
        throw ValidationError("\(option) must be a positive number of bytes, optionally with a K, M or G suffix (e.g. 2G), got '\(s)'")
    }
    return Int(v * scale)
}

/// --pixel-range lo,hi: two finite numbers with lo < hi.
func pixelRangeValue(_ r: String) throws -> (Float, Float) {
    let v = try finiteList(r, "--pixel-range")
    guard v.count == 2, v[0] < v[1] else { throw ValidationError("--pixel-range needs lo,hi with lo < hi, got '\(r)'") }
    return (v[0], v[1])
}

/// --domain NAME=PATH, both parts non-empty.
func domainSpec(_ spec: String) throws -> (name: String, path: String) {
    guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex, spec.index(after: eq) != spec.endIndex else {
        throw ValidationError("--domain expects NAME=PATH, got '\(spec)'")
    }
    return (String(spec[..<eq]), String(spec[spec.index(after: eq)...]))
}

/// Loads one model file, or a set of per-domain files given as NAME=PATH, with overrides.
/// A missing file exits 66, a malformed one 65, a --default-domain the model lacks 64.
func loadModel(model: String?, domainFiles: [String], mean: String?, std: String?, pixelRange: String?,
               defaultDomain: String?, memoryLimit: Int? = nil) throws -> Model {
    var o = LoadOptions()
    o.memoryLimit = memoryLimit
    if let m = mean { o.mean = try finiteList(m, "--mean") }
    if let s = std { o.std = try finiteList(s, "--std") }
    if let r = pixelRange { o.pixelRange = try pixelRangeValue(r) }
    o.defaultDomain = defaultDomain
    do {
        if !domainFiles.isEmpty {
            guard model == nil else { throw ValidationError("give either MODEL or --domain NAME=PATH, not both") }
            return try Model.load(domains: try domainFiles.map(domainSpec), options: o)
        }
        guard let model else { throw ValidationError("missing MODEL (or --domain NAME=PATH)") }
        return try Model.load(path: model, options: o)
    } catch let e as AdamantError {
        if e.kind == .domain, let d = defaultDomain, e.message.contains("default domain '\(d)'") {
            throw CLIError.usage("--default-domain: \(e.message)")
        }
        if e.kind == .invalidArgument && (e.message.hasPrefix("mean") || e.message.hasPrefix("std")) {
            throw CLIError.usage("--\(e.message)")
        }
        throw e
    }
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

func writeJSON(_ object: Any, to path: String, option: String = "--json") throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
    try writeFile([UInt8](data), to: path, option)
}

func percent(_ x: Double) -> String { String(format: "%.1f %%", 100 * x) }
