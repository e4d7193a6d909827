import COnnx

extension Model {
    /// Serializes the model in adamant's single-file format: the source graph with every
    /// BatchNormalization node rewired to the default domain's tensors (so ONNX Runtime runs it
    /// unchanged with that domain), each domain's BN tensors as initializers
    /// `adamant.domain.<domain>.<bn output>.<scale|bias|mean|var>`, and metadata_props naming the
    /// domains, the default and the preprocessing.
    public func serialized() throws -> [UInt8] {
        var err = [CChar](repeating: 0, count: 512)
        var parsed: OpaquePointer?
        let baseBytes = try origin.bytes()
        guard baseBytes.withUnsafeBytes({ ox_parse($0.baseAddress, $0.count, &parsed, &err, err.count) }) == 0,
              let m = parsed else { throw fail(.internal, "re-parsing the source model failed: \(String(cString: err))") }
        defer { ox_free(m) }
        let defName = domains[defaultDomain]
        for (slot, node) in graph.bnNodes.enumerated() {
            for (r, role) in FormatKeys.roles.enumerated() {
                let name = FormatKeys.tensorName(domain: defName, bnOutput: node.outputName, role: role)
                guard ox_set_node_input(m, node.onnxIndex, r + 1, name, &err, err.count) == 0 else {
                    throw fail(.internal, String(cString: err))
                }
            }
            _ = slot
        }
        ox_prune_unused(m)
        for (d, dname) in domains.enumerated() {
            for (slot, node) in graph.bnNodes.enumerated() {
                let p = bn[d][slot]
                for (role, values) in zip(FormatKeys.roles, [p.scale, p.bias, p.mean, p.variance]) {
                    let name = FormatKeys.tensorName(domain: dname, bnOutput: node.outputName, role: role)
                    let dims: [Int64] = [Int64(values.count)]
                    guard ox_set_initializer_float(m, name, dims, 1, values, &err, err.count) == 0 else {
                        throw fail(.internal, String(cString: err))
                    }
                }
            }
        }
        ox_set_metadata(m, FormatKeys.format, "1")
        ox_set_metadata(m, FormatKeys.domains, domains.joined(separator: ","))
        ox_set_metadata(m, FormatKeys.defaultDomain, defName)
        if let mean = preprocessing.mean { ox_set_metadata(m, FormatKeys.mean, mean.map { "\($0)" }.joined(separator: ",")) }
        if let std = preprocessing.std { ox_set_metadata(m, FormatKeys.std, std.map { "\($0)" }.joined(separator: ",")) }
        ox_set_metadata(m, FormatKeys.pixelRange, "\(preprocessing.pixelMin),\(preprocessing.pixelMax)")
        if preprocessing.channelOrder != .rgb { ox_set_metadata(m, FormatKeys.channelOrder, preprocessing.channelOrder.rawValue) }
        var out: UnsafeMutableRawPointer?
        var len = 0
        guard ox_serialize(m, &out, &len, &err, err.count) == 0, let out else {
            throw fail(.internal, String(cString: err))
        }
        defer { free(out) }
        return Array(UnsafeRawBufferPointer(start: out, count: len))
    }

    /// Writes ``serialized()`` to a file.
    public func save(to path: String) throws {
        let bytes = try serialized()
        guard let f = fopen(path, "wb") else { throw fail(.io, "cannot open '\(path)' for writing") }
        let n = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
        let closed = fclose(f)
        guard n == bytes.count, closed == 0 else { throw fail(.io, "writing '\(path)' failed") }
    }

    /// A copy of this model with one more domain (used by calibration).
    func adding(domain name: String, parameters: [BNParams]) throws -> Model {
        try validateDomainName(name)
        guard !domains.contains(name) else { throw fail(.domain, "the model already has a domain '\(name)'") }
        return try Model(graph: graph, bn: bn + [parameters], domains: domains + [name], defaultDomain: defaultDomain,
                         preprocessing: preprocessing, origin: origin, memoryLimit: memoryLimit)
    }
}

#if canImport(Glibc)
import Glibc
#endif
