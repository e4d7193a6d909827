import ArgumentParser
import Adamant
import Foundation

/// `adamant eval --ray`: the images are decoded here (as without --ray), saved as .npy files in a
/// temporary directory and evaluated by the Python package's `adamant.distributed` on Ray workers;
/// its JSON results become eval's table.

/// `--ray=ADDRESS` -> `--ray --ray-address ADDRESS` (swift-argument-parser has no optional values).
func expandRayArgument(_ args: [String]) -> [String] {
    guard args.first == "eval" else { return args }
    var out: [String] = []
    for (i, a) in args.enumerated() {
        if a == "--" { out += args[i...]; break }
        if a.hasPrefix("--ray=") { out += ["--ray", "--ray-address", String(a.dropFirst("--ray=".count))] } else { out.append(a) }
    }
    return out
}

/// A .npy file (format 1.0, C order) of `shape` with dtype `descr` ('<f4', '<i8') and raw little-endian bytes.
func npyBytes(descr: String, shape: [Int], body: UnsafeRawBufferPointer) -> [UInt8] {
    let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
    var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': (\(dims)), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    let len = UInt16(header.utf8.count)
    return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(len & 0xff), UInt8(len >> 8)] + Array(header.utf8) + Array(body)
}

/// The interpreter for --ray: $ADAMANT_PYTHON (a path, or a name looked up on PATH), else python3 on PATH.
func findPython() throws -> String {
    let env = ProcessInfo.processInfo.environment
    let name = env["ADAMANT_PYTHON"].flatMap { $0.isEmpty ? nil : $0 } ?? "python3"
    let hint = "--ray runs the Python package adamant.distributed on Ray: install Python 3 and `pip install 'adamant[ray]'` (or set ADAMANT_PYTHON to an interpreter that has them)"
    if name.contains("/") {
        guard FileManager.default.isExecutableFile(atPath: name) else {
            throw CLIError(.failure, "ADAMANT_PYTHON='\(name)' is not an executable file; \(hint)")
        }
        return name
    }
    for dir in (env["PATH"] ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
        let p = "\(dir)/\(name)"
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    throw CLIError(.failure, "no '\(name)' on PATH; \(hint)")
}

/// Imports adamant.distributed (a clear message when the package is missing) and runs its main().
private let rayBootstrap = """
import sys
try:
    import adamant.distributed as d
except ImportError as e:
    sys.stderr.write("Error: adamant eval --ray needs the adamant Python package in %s (pip install 'adamant[ray]', or set ADAMANT_PYTHON): %s\\n" % (sys.executable, e))
    sys.exit(1)
sys.exit(d.main(sys.argv[1:]))
"""

extension Eval {
    /// Runs the evaluation on Ray; returns adamant.distributed's rows, workers and threads per worker.
    /// A failure of the Python side (it printed its message) exits with its status.
    func runOnRay(set: ImageSet, model m: Model, domains: [String], kind: String, steps: [Int], config base: PGDConfig,
                  attackDomain: String?) throws -> (results: [[String: Any]], workers: Int, threads: Int) {
        let python = try findPython()
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("adamant-ray-\(getpid())-\(UUID().uuidString)").path
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw CLIError(.cantCreate, "--ray: cannot create the temporary directory '\(dir)': \(error.localizedDescription)")
        }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let xPath = dir + "/x.npy", yPath = dir + "/y.npy", outPath = dir + "/results.json"
        try set.pixels.withUnsafeBytes { try writeFile(npyBytes(descr: "<f4", shape: [set.count] + set.shape, body: $0), to: xPath, "--ray") }
        try set.labels!.withUnsafeBytes { try writeFile(npyBytes(descr: "<i8", shape: [set.count], body: $0), to: yPath, "--ray") }

        // Exact float32 values (as decimals of their doubles), so Python attacks with the same eps/alpha.
        func exact(_ v: Float) -> String { String(format: "%.17g", Double(v)) }
        var args = ["-c", rayBootstrap]
        if let p = model.model { args.append(p) }
        for d in model.domainFiles { args += ["--domain", d] }
        if let v = model.mean { args += ["--mean", try finiteList(v, "--mean").map(exact).joined(separator: ",")] }
        if let v = model.std { args += ["--std", try finiteList(v, "--std").map(exact).joined(separator: ",")] }
        if let v = model.pixelRange { let r = try pixelRangeValue(v); args += ["--pixel-range", "\(exact(r.0)),\(exact(r.1))"] }
        if let v = model.defaultDomain { args += ["--default-domain", v] }
        if let v = model.memoryLimit { args += ["--memory-limit", "\(try byteSize(v, "--memory-limit"))"] }
        if let v = model.isa { args += ["--isa", v] }
        if let t = model.threads, t > 0 { args += ["--threads", "\(t)"] }
        args += ["--x", xPath, "--y", yPath, "--attack", kind, "--domains", domains.joined(separator: ","),
                 "--batch-size", "\(batchSize)", "--json", outPath, "--quiet"]
        if kind != "none" {
            args += ["--eps", exact(base.eps), "--alpha", exact(base.alpha), "--steps", steps.map(String.init).joined(separator: ","),
                     "--norm", attackOptions.norm.lowercased(), "--restarts", "\(base.restarts)", "--loss", attackOptions.loss.lowercased(),
                     "--seed", "\(base.seed)"]
            if !base.randomStart && kind == "pgd" { args.append("--no-random-start") }
            if base.earlyStop { args.append("--early-stop") }
            if let t = attackOptions.targetedValue { args += ["--targeted", t] }
            if let a = attackDomain { args += ["--attack-domain", a] }
        }
        if let w = workers { args += ["--workers", "\(w)"] }
        if let a = rayAddress { args += ["--address", a] }

        // Inside a build tree (dist/bin/adamant next to dist/lib and the repository's bindings/python),
        // Python uses this tree's package and library unless PYTHONPATH / ADAMANT_LIBRARY say otherwise.
        var env = ProcessInfo.processInfo.environment
        let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let lib = exe.appendingPathComponent("../lib/libadamant.so").standardized.path
        let pkg = exe.appendingPathComponent("../../bindings/python").standardized.path
        if env["ADAMANT_LIBRARY"] == nil && FileManager.default.fileExists(atPath: lib) { env["ADAMANT_LIBRARY"] = lib }
        if FileManager.default.fileExists(atPath: pkg + "/adamant/distributed.py") {
            env["PYTHONPATH"] = ([pkg] + (env["PYTHONPATH"].map { [$0] } ?? [])).joined(separator: ":")
        }

        let p = Process()
        p.executableURL = URL(fileURLWithPath: python)
        p.arguments = args
        p.environment = env
        do { try p.run() } catch { throw CLIError(.failure, "--ray: cannot run '\(python)': \(error.localizedDescription)") }
        p.waitUntilExit()
        let status = p.terminationStatus
        guard p.terminationReason == .exit, status == 0 else {
            try? FileManager.default.removeItem(atPath: dir)
            if p.terminationReason == .exit { Foundation.exit(status) }  // Python printed the reason
            throw CLIError(.failure, "--ray: '\(python)' was killed by signal \(status)")
        }
        guard let data = FileManager.default.contents(atPath: outPath),
              let obj = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
              let results = obj["results"] as? [[String: Any]] else {
            throw CLIError(.software, "--ray: adamant.distributed wrote no readable results to '\(outPath)'")
        }
        return (results, (obj["workers"] as? NSNumber)?.intValue ?? 0, (obj["threads_per_worker"] as? NSNumber)?.intValue ?? 0)
    }
}
