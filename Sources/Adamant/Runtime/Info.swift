/// A summary of a model for `adamant info` and `adm_model_info_json`.
public struct ModelInfo: Sendable {
    public var inputName: String
    /// [C, H, W]
    public var inputShape: [Int]
    /// The batch the file fixes, if any.
    public var declaredBatch: Int?
    public var numClasses: Int
    public var domains: [String]
    public var defaultDomain: String
    public var opset: Int
    /// Op type -> node count.
    public var ops: [(String, Int)]
    public var parameters: Int
    /// Multiply-adds x 2 for one sample.
    public var flopsPerSample: Int
    public var batchNormNodes: Int
    public var preprocessing: Preprocessing
    /// Bytes the loaded weights take as adamant stores them (``Model/weightBytes``).
    public var weightBytes: Int = 0
    /// The memory cap given at load, bytes (nil = none).
    public var memoryLimit: Int? = nil
    /// Estimated activation bytes of a one-image predict and gradient (``Model/activationBytes(batch:kind:threads:)``).
    public var activationBytesPerImage: (predict: Int, gradient: Int) = (0, 0)

    /// The summary as a JSON object.
    public var json: String {
        let s = jsonString
        func floats(_ a: [Float]?) -> String { a.map { "[" + $0.map { "\($0)" }.joined(separator: ",") + "]" } ?? "null" }
        return "{" + [
            "\"input\":{\"name\":\(s(inputName)),\"shape\":[\(inputShape.map(String.init).joined(separator: ","))],\"declared_batch\":\(declaredBatch.map(String.init) ?? "null")}",
            "\"classes\":\(numClasses)",
            "\"domains\":[\(domains.map(s).joined(separator: ","))]",
            "\"default_domain\":\(s(defaultDomain))",
            "\"opset\":\(opset)",
            "\"ops\":{\(ops.map { "\(s($0.0)):\($0.1)" }.joined(separator: ","))}",
            "\"parameters\":\(parameters)",
            "\"flops_per_sample\":\(flopsPerSample)",
            "\"batchnorm_nodes\":\(batchNormNodes)",
            "\"memory\":{\"weight_bytes\":\(weightBytes),\"memory_limit\":\(memoryLimit.map(String.init) ?? "null"),\"predict_bytes_batch1\":\(activationBytesPerImage.predict),\"gradient_bytes_batch1\":\(activationBytesPerImage.gradient)}",
            "\"preprocessing\":{\"mean\":\(floats(preprocessing.mean)),\"std\":\(floats(preprocessing.std)),\"pixel_range\":[\(preprocessing.pixelMin),\(preprocessing.pixelMax)],\"channel_order\":\"\(preprocessing.channelOrder.rawValue)\"}",
        ].joined(separator: ",") + "}"
    }
}

/// A JSON string literal for `s` (quotes, backslashes and control characters escaped): the model
/// summary's, and the HTTP service's error bodies and replies (AdamantServe).
package func jsonString(_ s: String) -> String {
    var o = "\""
    for ch in s.unicodeScalars {
        switch ch {
        case "\"": o += "\\\""
        case "\\": o += "\\\\"
        case "\n": o += "\\n"
        case "\r": o += "\\r"
        case "\t": o += "\\t"
        default:
            if ch.value < 0x20 {
                let h = String(ch.value, radix: 16)
                o += "\\u" + String(repeating: "0", count: 4 - h.count) + h
            } else { o.unicodeScalars.append(ch) }
        }
    }
    return o + "\""
}

extension Model {
    /// Inputs, classes, domains, op counts, parameters and FLOPs.
    public func info() throws -> ModelInfo {
        let shapes = try graph.inferShapes(batch: 1)
        var counts: [String: Int] = [:]
        var flops = 0
        var params = 0
        for n in graph.nodes {
            counts[n.op.type, default: 0] += 1
            flops += n.op.flops(n.inputs.map { shapes[$0]! }, n.outputs.map { shapes[$0]! })
            params += n.op.parameterCount
        }
        params += graph.bnNodes.reduce(0) { $0 + 2 * $1.channels }  // BN affine parameters
        params += graph.constants.values.reduce(0) { $0 + $1.count }
        var info = ModelInfo(inputName: graph.inputName, inputShape: inputShape, declaredBatch: graph.declaredBatch,
                             numClasses: numClasses, domains: domains, defaultDomain: domains[defaultDomain], opset: opset,
                             ops: counts.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }, parameters: params,
                             flopsPerSample: flops, batchNormNodes: graph.bnNodes.count, preprocessing: preprocessing)
        info.weightBytes = weightBytes
        info.memoryLimit = memoryLimit
        info.activationBytesPerImage = (activationBytes(batch: 1, kind: .predict), activationBytes(batch: 1, kind: .gradient))
        return info
    }
}
