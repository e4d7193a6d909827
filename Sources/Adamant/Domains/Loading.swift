import CBackend
import COnnx

/// Metadata keys of adamant's single-file multi-domain format.
enum FormatKeys {
    static let format = "adamant.format"
    static let domains = "adamant.domains"
    static let defaultDomain = "adamant.default_domain"
    static let mean = "adamant.mean"
    static let std = "adamant.std"
    static let pixelRange = "adamant.pixel_range"
    /// "rgb" or "bgr" (absent: rgb).
    static let channelOrder = "adamant.channel_order"
    static let roles = ["scale", "bias", "mean", "var"]

    /// Name of the initializer holding one BN tensor of one domain.
    static func tensorName(domain: String, bnOutput: String, role: String) -> String {
        "adamant.domain.\(domain).\(bnOutput).\(role)"
    }
}

/// The name a plain single-domain model gives its one domain.
public let plainDomainName = "default"

extension Model {
    /// Loads one ONNX file: a plain model (one domain, "default") or adamant's single-file format.
    public static func load(path: String, options: LoadOptions = LoadOptions()) throws -> Model {
        var file = try ONNXFile.read(path: path)
        let model = try load(file: &file, source: path, options: options)
        returnFreedMemory()
        return model
    }

    /// Loads a model from serialized ONNX bytes.
    public static func load(bytes: [UInt8], options: LoadOptions = LoadOptions()) throws -> Model {
        var file = try ONNXFile(bytes: bytes, source: "<memory>")
        let model = try load(file: &file, source: "<memory>", options: options)
        returnFreedMemory()
        return model
    }

    /// Hands the heap pages the parsed file and its float copies used back to the OS, so a loaded
    /// model's resident memory is its weights, not the peak of loading (glibc keeps freed small
    /// blocks otherwise).
    static func returnFreedMemory() {
        abk_trim_heap()
    }

    static func parseFloats(_ s: String, key: String, source: String) throws -> [Float] {
        let parts = s.split(separator: ",").map { $0.trimmingCharacters() }
        let v = parts.compactMap { Float($0) }
        guard v.count == parts.count, !v.isEmpty else { throw fail(.parse, "\(source): metadata \(key)='\(s)' is not a list of numbers") }
        return v
    }

    static func load(file: inout ONNXFile, source: String, options: LoadOptions) throws -> Model {
        let built = try GraphBuilder.build(&file, source: source)
        var pre = Preprocessing()
        var names = [plainDomainName]
        var bn = [built.bn]
        var def = 0
        if let list = file.metadata[FormatKeys.domains] {
            names = list.split(separator: ",").map { String($0) }
            guard !names.isEmpty, Set(names).count == names.count else {
                throw fail(.parse, "\(source): metadata \(FormatKeys.domains)='\(list)' must list distinct domain names")
            }
            try names.forEach(validateDomainName)
            bn = try names.map { d in
                try built.graph.bnNodes.enumerated().map { slot, node in
                    let t = try FormatKeys.roles.map { role -> [Float] in
                        let key = FormatKeys.tensorName(domain: d, bnOutput: node.outputName, role: role)
                        guard let t = file.initializers[key] else {
                            throw fail(.parse, "\(source): domain '\(d)' lacks tensor '\(key)'")
                        }
                        guard t.floats.count == node.channels else {
                            throw fail(.parse, "\(source): tensor '\(key)' has \(t.floats.count) values for \(node.channels) channels")
                        }
                        return t.floats
                    }
                    _ = slot
                    return BNParams(scale: t[0], bias: t[1], mean: t[2], variance: t[3])
                }
            }
            if let d = file.metadata[FormatKeys.defaultDomain] {
                guard let i = names.firstIndex(of: d) else {
                    throw fail(.parse, "\(source): default domain '\(d)' is not among the file's domains: \(names.joined(separator: ", "))")
                }
                def = i
            }
            if names.count > 1 && built.graph.bnNodes.isEmpty {
                throw fail(.domain, "\(source): \(names.count) domains declared but the graph has no BatchNormalization nodes")
            }
        }
        if let m = file.metadata[FormatKeys.mean] { pre.mean = try parseFloats(m, key: FormatKeys.mean, source: source) }
        if let s = file.metadata[FormatKeys.std] { pre.std = try parseFloats(s, key: FormatKeys.std, source: source) }
        if let r = file.metadata[FormatKeys.pixelRange] {
            let v = try parseFloats(r, key: FormatKeys.pixelRange, source: source)
            guard v.count == 2 else { throw fail(.parse, "\(source): \(FormatKeys.pixelRange) needs two numbers") }
            pre.pixelMin = v[0]; pre.pixelMax = v[1]
        }
        if let c = file.metadata[FormatKeys.channelOrder] {
            guard let order = ChannelOrder(rawValue: c.lowercased()) else {
                throw fail(.parse, "\(source): metadata \(FormatKeys.channelOrder)='\(c)' must be rgb or bgr")
            }
            pre.channelOrder = order
        }
        return try finish(graph: built.graph, bn: bn, names: names, defaultDomain: def, pre: pre,
                          origin: file.origin, options: options)
    }

    static func finish(graph: Graph, bn: [[BNParams]], names: [String], defaultDomain: Int, pre: Preprocessing,
                       origin: ModelOrigin, options: LoadOptions) throws -> Model {
        var pre = pre
        if let m = options.mean { pre.mean = m }
        if let s = options.std { pre.std = s }
        if (pre.mean == nil) != (pre.std == nil) {
            if pre.mean == nil { pre.mean = [Float](repeating: 0, count: graph.inputShape[0]) }
            if pre.std == nil { pre.std = [Float](repeating: 1, count: graph.inputShape[0]) }
        }
        if let r = options.pixelRange { pre.pixelMin = r.0; pre.pixelMax = r.1 }
        var def = defaultDomain
        if let d = options.defaultDomain {
            guard let i = names.firstIndex(of: d) else {
                throw fail(.domain, "default domain '\(d)' is not among the model's domains: \(names.joined(separator: ", "))")
            }
            def = i
        }
        if let cap = options.memoryLimit, cap < 0 { throw fail(.invalidArgument, "memory limit must not be negative, got \(cap)") }
        return try Model(graph: graph, bn: bn, domains: names, defaultDomain: def, preprocessing: pre, origin: origin,
                         memoryLimit: options.memoryLimit)
    }

    /// Loads per-domain ONNX exports of one network (`[(name, path)]`, the first is the default
    /// unless the options say otherwise). Graphs and every non-BN tensor must be identical.
    public static func load(domains: [(name: String, path: String)], options: LoadOptions = LoadOptions()) throws -> Model {
        let model = try loadEach(domains: domains, options: options)
        returnFreedMemory()
        return model
    }

    /// Builds each file in turn: the first whole (its weights packed, its floats released as they
    /// are), every later one only for its BN parameters and its signature, checked against the
    /// first's and then dropped. Constants are compared by digest, so no file's floats outlive its
    /// build: two ResNet-638 domains from two files peaked at 3.7 GB (4 x the weights) when every
    /// file, graph and constant was kept until the end.
    static func loadEach(domains: [(name: String, path: String)], options: LoadOptions) throws -> Model {
        guard !domains.isEmpty else { throw fail(.invalidArgument, "no domain files given") }
        guard Set(domains.map(\.name)).count == domains.count else {
            throw fail(.invalidArgument, "domain names must be distinct: \(domains.map(\.name))")
        }
        try domains.forEach { try validateDomainName($0.name) }
        var base: BuiltGraph?
        var origin: ModelOrigin?
        var bn: [[BNParams]] = []
        for (k, d) in domains.enumerated() {
            let built: BuiltGraph
            do {
                var f = try ONNXFile.read(path: d.path)
                if f.metadata[FormatKeys.domains] != nil {
                    throw fail(.invalidArgument, "\(d.path) is already a multi-domain adamant file; load it on its own")
                }
                built = try GraphBuilder.build(&f, source: d.path, digests: domains.count > 1)
                if k == 0 { origin = f.origin }
            }
            bn.append(built.bn)
            guard let first = base else {
                if domains.count > 1 && built.graph.bnNodes.isEmpty {
                    throw fail(.domain, "\(d.path) has no BatchNormalization nodes (BN folded into Conv at export?), so it cannot carry the \(domains.count) BN domains \(domains.map(\.name)); export with BN kept (e.g. torch.onnx.export(..., do_constant_folding=False) or training=TrainingMode.PRESERVE)")
                }
                base = built
                continue
            }
            if let diff = firstDifference(first, built, paths: (domains[0].path, d.path)) {
                throw fail(.domain, "domain '\(d.name)' (\(d.path)) is not the same network as domain '\(domains[0].name)' (\(domains[0].path)): \(diff)")
            }
        }
        return try finish(graph: base!.graph, bn: bn, names: domains.map(\.name), defaultDomain: 0,
                          pre: Preprocessing(), origin: origin!, options: options)
    }

    /// The first structural or non-BN difference between two built graphs, or nil.
    /// Constants are compared by digest; on a mismatch both files are read again (the error path
    /// only) to name the first differing element.
    static func firstDifference(_ a: BuiltGraph, _ b: BuiltGraph, paths: (String, String)) -> String? {
        if a.graph.inputShape != b.graph.inputShape {
            return "input shapes differ: \(a.graph.inputShape) vs \(b.graph.inputShape)"
        }
        for (i, (x, y)) in zip(a.signature, b.signature).enumerated() {
            if x.opType != y.opType { return "node #\(i) is \(x.label) in one and \(y.label) in the other" }
            if x.attributes != y.attributes { return "\(x.label): attributes differ (\(x.attributes) vs \(y.attributes))" }
            if x.inputs.count != y.inputs.count { return "\(x.label): input counts differ" }
            for (k, (p, q)) in zip(x.inputs, y.inputs).enumerated() where p != q {
                if case .constant(let d1, _, let n1) = p, case .constant(let d2, _, let n2) = q {
                    if d1 != d2 { return "\(x.label): input \(k) has shape \(d1) vs \(d2)" }
                    let only = "only BatchNormalization parameters may differ between domains"
                    guard let v1 = try? ONNXFile.read(path: paths.0).initializers[n1]?.floats,
                          let v2 = try? ONNXFile.read(path: paths.1).initializers[n2]?.floats else {
                        return "\(x.label): constant input \(k) differs; \(only)"
                    }
                    let j = (0..<min(v1.count, v2.count)).first { v1[$0].bitPattern != v2[$0].bitPattern } ?? 0
                    return "\(x.label): constant input \(k) differs at element \(j) (\(v1[j]) vs \(v2[j])); \(only)"
                }
                return "\(x.label): input \(k) is wired differently"
            }
        }
        if a.signature.count != b.signature.count {
            return "node counts differ (\(a.signature.count) vs \(b.signature.count))"
        }
        return nil
    }
}

extension Substring {
    func trimmingCharacters() -> String {
        String(self.drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
