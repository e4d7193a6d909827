import ArgumentParser
import Adamant
import CBackend
import Foundation

struct AdamantCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "adamant",
        abstract: "Robust ResNets with BatchNorm domains: inspect, predict, attack, evaluate, calibrate.",
        discussion: """
        Models are ONNX files. A model may carry several BatchNorm domains (e.g. clean and adv, as in
        Mixture BN): load a single multi-domain file, or per-domain exports with --domain NAME=PATH.
        Images are in pixel space ([0,1] by default); eps and alpha are in pixel units (8/255 is fine).
        Option values are checked before any work: a bad one names the option and exits 64.

        \(Exit.table)
        """,
        version: "0.1.0",
        subcommands: [Info.self, Predict.self, Merge.self, Attack.self, Eval.self, Calibrate.self, Bench.self, Synth.self,
                      ImportCommand.self, ServeLauncher.self]
    )
}

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show inputs, classes, BN domains, ops, parameters and FLOPs.")
    @OptionGroup var model: ModelOptions
    @Flag(help: "Print JSON instead of text.") var json = false

    func run() throws {
        let m = try model.load()
        let i = try m.info()
        if json { print(i.json); return }
        print("input        \(i.inputName) [\(i.declaredBatch.map(String.init) ?? "N"), \(i.inputShape.map(String.init).joined(separator: ", "))]")
        if let b = i.declaredBatch { print("             (fixed batch \(b) in the file; adamant runs any batch)") }
        print("classes      \(i.numClasses)")
        print("domains      \(i.domains.enumerated().map { "\($0.offset):\($0.element)\($0.element == i.defaultDomain ? " (default)" : "")" }.joined(separator: ", "))")
        print("opset        \(i.opset)")
        print("BN nodes     \(i.batchNormNodes)\(i.batchNormNodes == 0 ? " (BN folded: one domain only)" : "")")
        print("parameters   \(i.parameters)")
        print(String(format: "FLOPs        %.3f GFLOP per sample", Double(i.flopsPerSample) / 1e9))
        print("memory       weights \(byteCount(i.weightBytes)); one image: predict \(byteCount(i.activationBytesPerImage.predict)), gradient \(byteCount(i.activationBytesPerImage.gradient)) (estimates)\(i.memoryLimit.map { "; limit \(byteCount($0))" } ?? "")")
        let pre = i.preprocessing
        print("pixels       [\(pre.pixelMin), \(pre.pixelMax)]" + (pre.mean.map { ", normalized: mean \($0) std \(pre.std ?? [])" } ?? ", no normalization outside the graph") + ", channel order \(pre.channelOrder.rawValue)")
        print("ops          " + i.ops.map { "\($0.0) x\($0.1)" }.joined(separator: ", "))
        print("backend      \(String(cString: backendInfo()))")
    }
}

struct Predict: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Top-k predictions per BN domain for images (JPEG/PNG files or a CIFAR-style tar/dir).")
    @OptionGroup var model: ModelOptions
    @Argument(help: "Image files (JPEG/PNG), or one .tar/.tar.gz/directory of <class>/<image>.")
    var images: [String] = []
    @Option(help: "Domains to run (comma-separated names or indices, or 'all').") var domains: String = "all"
    @Option(parsing: .unconditional, help: "How many classes to show per image (>= 1).") var topK: Int = 5
    @Option(parsing: .unconditional, help: "Read at most this many images, spread over the classes (0 = all).") var limit: Int = 0
    @Option(parsing: .unconditional, help: "Images per inference call (>= 1).") var batchSize: Int = 128
    @Option(help: "Write the predictions as JSON to this file.") var json: String?
    @Flag(help: "Scale image files whose size differs from the model's input to it (bilinear); without this such a file is an error (exit 65).") var resize = false

    func validate() throws {
        try require(topK, atLeast: 1, "--top-k")
        try require(limit, atLeast: 0, "--limit", " (0 = all images)")
        try require(batchSize, atLeast: 1, "--batch-size")
        if domains.isEmpty { throw ValidationError("--domains must name at least one domain (or 'all')") }
    }

    func run() throws {
        if let json { try checkOutputFile(json, "--json") }
        let (m, inputs) = try model.loadWithImages(images)
        let set = try loadInputs(inputs, model: m, limit: limit, resize: resize)
        let doms = try resolveDomains(domains, m, option: "--domains")
        let session = Session(model: m)
        let k = m.numClasses, per = m.inputShape.reduce(1, *)
        var report: [[String: Any]] = []
        var accRows: [[String]] = []
        for d in doms {
            var logits: [Float] = []
            var start = 0
            while start < set.count {
                let n = min(batchSize, set.count - start)
                logits += try session.predict(Array(set.pixels[(start * per)..<((start + n) * per)]), batch: n, domain: d)
                start += n
            }
            var correct = 0
            for i in 0..<set.count {
                let z = Array(logits[(i * k)..<((i + 1) * k)])
                let order = z.indices.sorted { z[$0] > z[$1] }.prefix(max(1, min(topK, k)))
                let names = set.classNames
                let shown = order.map { c in "\(names.map { c < $0.count ? $0[c] : "\(c)" } ?? "\(c)")=\(String(format: "%.3f", z[c]))" }
                if set.count <= 50 || set.labels == nil {
                    print("[\(m.domains[d])] \(set.names[i]): \(shown.joined(separator: " "))")
                }
                if let l = set.labels, Int64(order.first!) == l[i] { correct += 1 }
                report.append(["domain": m.domains[d], "image": set.names[i], "top": order.map { ["class": $0, "logit": Double(z[$0])] },
                               "label": set.labels.map { Int($0[i]) } as Any])
            }
            if set.labels != nil { accRows.append([m.domains[d], "\(set.count)", percent(Double(correct) / Double(set.count))]) }
        }
        if !accRows.isEmpty { print(""); printTable(["domain", "images", "top-1 accuracy"], accRows) }
        if let json { try writeJSON(report, to: json) }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Merge per-domain ONNX exports into one multi-domain ONNX file.",
        discussion: "The result stays a valid ONNX model: ONNX Runtime runs it unchanged with the default domain.")
    @Option(name: .customLong("domain"), help: ArgumentHelp("A per-domain export, NAME=PATH (repeat; the first is the default).", valueName: "name=path"))
    var domainFiles: [String] = []
    @Option(name: [.customShort("o"), .long], help: "Output file.") var output: String
    @Option(parsing: .unconditional, help: "Per-channel mean in pixel units to store.") var mean: String?
    @Option(parsing: .unconditional, help: "Per-channel std in pixel units to store.") var std: String?
    @Option(parsing: .unconditional, help: "Pixel range lo,hi to store.") var pixelRange: String?
    @Option(help: "Default domain name.") var defaultDomain: String?

    func validate() throws {
        guard !domainFiles.isEmpty else { throw ValidationError("give at least one --domain NAME=PATH") }
        for spec in domainFiles { _ = try domainSpec(spec) }
        if let mean { _ = try finiteList(mean, "--mean") }
        if let std {
            for v in try finiteList(std, "--std") where !(v > 0) {
                throw ValidationError("--std values must be positive, got \(v) in '\(std)'")
            }
        }
        if let pixelRange { _ = try pixelRangeValue(pixelRange) }
    }

    func run() throws {
        try checkOutputFile(output, "--output")
        let m = try loadModel(model: nil, domainFiles: domainFiles, mean: mean, std: std, pixelRange: pixelRange,
                              defaultDomain: defaultDomain)
        try writingOutput(output, "--output") { try m.save(to: output) }
        print("wrote \(output): domains \(m.domains.joined(separator: ", ")) (default \(m.domains[m.defaultDomain]))")
    }
}
