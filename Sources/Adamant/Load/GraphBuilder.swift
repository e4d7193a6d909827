/// How a node input is wired, for comparing the per-domain exports of one network.
enum InputSignature: Equatable {
    case empty
    case graphInput
    case node(position: Int, output: Int)
    /// A constant, by its shape and a digest of its values' bits (``constantDigest(_:)``; 0 when the
    /// build kept none), and its initializer's name (to find the first differing element on a mismatch).
    case constant(dims: [Int], digest: UInt64, name: String)
    /// A BN parameter: allowed to differ between domains.
    case bnParameter
}

extension InputSignature {
    /// Equal wiring: a constant by shape and digest (its name may differ between exports).
    static func == (a: InputSignature, b: InputSignature) -> Bool {
        switch (a, b) {
        case (.empty, .empty), (.graphInput, .graphInput), (.bnParameter, .bnParameter): return true
        case let (.node(p1, o1), .node(p2, o2)): return p1 == p2 && o1 == o2
        case let (.constant(d1, h1, _), .constant(d2, h2, _)): return d1 == d2 && h1 == h2
        default: return false
        }
    }
}

/// A 64-bit digest of the bit patterns of `values` (four interleaved FNV-1a-style lanes over 32-bit
/// words, then mixed with the count): what per-domain files compare instead of keeping every
/// file's weights until all are read.
func constantDigest(_ values: [Float]) -> UInt64 {
    let prime: UInt64 = 0x100_0000_01b3
    var h: (UInt64, UInt64, UInt64, UInt64) = (0xcbf2_9ce4_8422_2325, 0x8422_2325_cbf2_9ce4, 0x9e37_79b9_7f4a_7c15, 0x7f4a_7c15_9e37_79b9)
    values.withUnsafeBufferPointer { vp in
        vp.withMemoryRebound(to: UInt32.self) { w in
            var i = 0
            while i + 4 <= w.count {
                h.0 = (h.0 ^ UInt64(w[i])) &* prime
                h.1 = (h.1 ^ UInt64(w[i + 1])) &* prime
                h.2 = (h.2 ^ UInt64(w[i + 2])) &* prime
                h.3 = (h.3 ^ UInt64(w[i + 3])) &* prime
                i += 4
            }
            while i < w.count { h.0 = (h.0 ^ UInt64(w[i])) &* prime; i += 1 }
        }
    }
    var x = h.0 ^ (h.1 &* 0x9e37_79b9_7f4a_7c15) ^ (h.2 &* 0xc2b2_ae3d_27d4_eb4f) ^ (h.3 &* 0x1656_67b1_9e37_79f9)
    x ^= UInt64(values.count) &* 0xff51_afd7_ed55_8ccd
    x ^= x >> 33; x = x &* 0xc4ce_b9fe_1a85_ec53; x ^= x >> 29
    return x
}

/// A node reduced to what must agree between domain files.
struct NodeSignature {
    var label: String
    var opType: String
    var attributes: String
    var inputs: [InputSignature]
}

/// The ops adamant runs, for error messages.
let supportedOps = ["Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "Div",
                    "Dropout", "Einsum", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool",
                    "Mul", "Pad", "Relu", "Reshape", "Softmax", "Sub", "Transpose"]

/// The result of building one file: the graph, its BN parameters and its signature.
struct BuiltGraph {
    var graph: Graph
    /// BN parameters of this file, by slot.
    var bn: [BNParams]
    var signature: [NodeSignature]
}

/// Turns an ``ONNXFile`` into a ``Graph``: topological sort, constant binding, op construction,
/// dead-code removal, validation.
enum GraphBuilder {
    /// Each initializer a Conv, Gemm or MatMul packs into its own layout is dropped, from `file` too,
    /// once its last reader is built: the file's floats and the packed weights then never coexist
    /// whole (ResNet-638's load peaked at twice its weights). With `digests` (per-domain files, which
    /// must agree outside their BNs), the signature holds a digest of every constant's values;
    /// without, 0.
    static func build(_ file: inout ONNXFile, source: String, digests: Bool = false) throws -> BuiltGraph {
        func err(_ kind: ErrorKind, _ msg: String) -> AdamantError { fail(kind, "\(source): \(msg)") }
        var consts = file.initializers

        // The image input: the one graph input that is not an initializer.
        let realInputs = file.inputs.filter { consts[$0.name] == nil }
        guard realInputs.count == 1 else {
            throw err(.unsupported, "adamant runs models with exactly one image input; this one has \(realInputs.count) (\(realInputs.map(\.name)))")
        }
        let inp = realInputs[0]
        guard let dims = inp.dims, dims.count == 4, dims[1...].allSatisfy({ $0 > 0 }) else {
            throw err(.unsupported, "input '\(inp.name)' must be a 4-D NCHW image tensor with known C, H, W; it is \(inp.dims.map { "\($0)" } ?? "unshaped")")
        }
        guard inp.elemType == 1 || inp.elemType == 0 else {
            throw err(.unsupported, "input '\(inp.name)' has ONNX element type \(inp.elemType); adamant runs float32 (type 1) images")
        }
        guard dims[1...].allSatisfy({ $0 <= 65_536 }),
              (try? checkedProduct(Array(dims[1...]), what: "input")).map({ $0 <= Graph.maxActivation }) == true else {
            throw err(.shape, "input '\(inp.name)' of shape \(dims) is too large")
        }
        guard let out = file.outputs.first else { throw err(.parse, "the graph has no outputs") }

        // Producers, duplicate outputs.
        var producer: [String: Int] = [:]
        for n in file.nodes {
            for o in n.outputs where !o.isEmpty {
                if producer[o] != nil || o == inp.name || consts[o] != nil {
                    throw err(.parse, "value '\(o)' is defined twice (again by \(n.label))")
                }
                producer[o] = n.index
            }
        }
        // Kahn's algorithm.
        var available = Set(consts.keys)
        available.insert(inp.name)
        for n in file.nodes {
            for i in n.inputs where !i.isEmpty && !available.contains(i) && producer[i] == nil {
                throw err(.parse, "\(n.label) reads '\(i)', which is neither an initializer, a graph input nor a node output (missing initializer?)")
            }
        }
        var remaining = file.nodes
        var order: [RawNode] = []
        while !remaining.isEmpty {
            let before = remaining.count
            var next: [RawNode] = []
            for n in remaining {
                if n.inputs.allSatisfy({ $0.isEmpty || available.contains($0) }) {
                    order.append(n)
                    for o in n.outputs where !o.isEmpty { available.insert(o) }
                } else { next.append(n) }
            }
            remaining = next
            if remaining.count == before {
                throw err(.parse, "the graph has a cycle through \(remaining.prefix(4).map(\.label).joined(separator: ", "))")
            }
        }
        guard available.contains(out.name) else { throw err(.parse, "output '\(out.name)' is never computed") }

        // Liveness: nodes the output needs.
        var needed: Set<String> = [out.name]
        var live = Set<Int>()
        for n in order.reversed() where n.outputs.contains(where: { needed.contains($0) }) {
            live.insert(n.index)
            for i in n.inputs where !i.isEmpty { needed.insert(i) }
        }

        var ids: [String: Int] = [:]
        var names: [String] = []
        var constants: [Int: Tensor] = [:]
        func id(_ name: String) -> Int {
            if let i = ids[name] { return i }
            ids[name] = names.count
            names.append(name)
            return names.count - 1
        }
        let inputId = id(inp.name)
        var nodes: [Node] = []
        var bnNodes: [(Int, String, Int)] = []
        var bnParams: [BNParams] = []
        var signature: [NodeSignature] = []
        var position: [String: (Int, Int)] = [:]  // value -> (signature position, output slot)

        // Shapes of the values built so far (batch: the declared one, else a placeholder), so that a
        // `Shape` of an activation folds to a constant (its batch dimension as Reshape.batchSentinel).
        let shapeBatch = dims[0] > 0 ? dims[0] : Reshape.placeholderBatch
        let shapeEnv = ShapeEnv(declaredBatch: dims[0] > 0 ? dims[0] : nil, batch: shapeBatch)
        var knownShapes: [String: [Int]] = [inp.name: [shapeBatch] + Array(dims[1...])]
        var readers: [String: Int] = [:]  // live nodes reading each value
        for raw in order where live.contains(raw.index) { for i in raw.inputs where !i.isEmpty { readers[i, default: 0] += 1 } }
        for raw in order where live.contains(raw.index) {
            if raw.domain != "" && raw.domain != "ai.onnx" {
                throw err(.unsupported, "\(raw.label): op domain '\(raw.domain)' is not supported (opset \(file.opset))")
            }
            let a = Attrs(node: raw, opset: file.opset)
            // Constants and identities of constants fold away.
            if raw.opType == "Constant" {
                consts[raw.outputs[0]] = try constantValue(a)
                continue
            }
            if raw.opType == "Identity", let c = consts[raw.inputs.first ?? ""] {
                consts[raw.outputs[0]] = c
                continue
            }
            // The shape of an activation is known now, but for the batch of a dynamic-batch graph.
            if raw.opType == "Shape", raw.inputs.count == 1, consts[raw.inputs[0]] == nil, let shape = knownShapes[raw.inputs[0]] {
                var v = shape
                if dims[0] <= 0, !v.isEmpty, v[0] == Reshape.placeholderBatch { v[0] = Reshape.batchSentinel }
                let r = v.count
                func clamp(_ i: Int) -> Int { min(max(i < 0 ? i + r : i, 0), r) }
                let (lo, hi) = (clamp(try a.int("start", 0)), clamp(try a.int("end", r)))
                v = lo < hi ? Array(v[lo..<hi]) : []
                consts[raw.outputs[0]] = RawTensor(name: "", dims: [v.count], floats: v.map { Float($0) }, ints: v.map { Int64($0) })
                continue
            }
            // Shape arithmetic between constants (PyTorch's pads, constant shapes) is evaluated now.
            if ConstantFolding.ops.contains(raw.opType), !raw.inputs.isEmpty, !raw.inputs[0].isEmpty,
               raw.inputs.allSatisfy({ $0.isEmpty || consts[$0] != nil }) {
                do {
                    consts[raw.outputs[0]] = try ConstantFolding.fold(raw, a, raw.inputs.map { $0.isEmpty ? nil : consts[$0] },
                                                                      opset: file.opset)
                } catch let e as AdamantError {
                    throw AdamantError(e.kind, "\(source): \(e.message)")
                }
                continue
            }
            let inputConsts = raw.inputs.map { $0.isEmpty ? nil : consts[$0] }
            var bound = Set<Int>()  // inputs bound into the op
            let op: any Op
            do {
                (op, bound) = try makeOp(raw, a, inputConsts, opset: file.opset, bnSlot: bnParams.count)
            } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(source): \(e.message)")
            }
            if let bn = op as? BatchNorm {
                let p = BNParams(scale: inputConsts[1]!.floats, bias: inputConsts[2]!.floats,
                                 mean: inputConsts[3]!.floats, variance: inputConsts[4]!.floats)
                bnParams.append(p)
                bnNodes.append((raw.index, raw.outputs[0], bn.channels))
            }
            var inIds: [Int] = []
            var sigInputs: [InputSignature] = []
            for (k, name) in raw.inputs.enumerated() {
                if name.isEmpty { sigInputs.append(.empty); continue }
                if let c = consts[name] {
                    sigInputs.append(op is BatchNorm && k >= 1 ? .bnParameter
                                     : .constant(dims: c.dims, digest: digests ? constantDigest(c.floats) : 0, name: name))
                } else if name == inp.name {
                    sigInputs.append(.graphInput)
                } else if let p = position[name] {
                    sigInputs.append(.node(position: p.0, output: p.1))
                }
                if bound.contains(k) { continue }
                let vid = id(name)
                if let c = consts[name], constants[vid] == nil { constants[vid] = Tensor(shape: c.dims, data: c.floats) }
                inIds.append(vid)
            }
            if op is Conv || op is Gemm || op is MatMul {
                for k in bound where k < raw.inputs.count && !raw.inputs[k].isEmpty {
                    let name = raw.inputs[k]
                    readers[name, default: 0] -= 1
                    if readers[name] == 0 && file.initializers[name] != nil {
                        consts[name] = nil
                        file.initializers[name] = nil
                    }
                }
            }
            let usedOutputs = raw.outputs.enumerated().filter { !$0.element.isEmpty && needed.contains($0.element) }
            if usedOutputs.contains(where: { $0.offset > 0 }) {
                throw err(.unsupported, "\(raw.label): only the first output is supported (opset \(file.opset))")
            }
            for (k, o) in raw.outputs.enumerated() where !o.isEmpty { position[o] = (signature.count, k) }
            signature.append(NodeSignature(label: raw.label, opType: raw.opType,
                                           attributes: describe(raw.attributes), inputs: sigInputs))
            nodes.append(Node(op: op, inputs: inIds, outputs: [id(raw.outputs[0])], label: raw.label, onnxIndex: raw.index))
            let inShapes = inIds.map { knownShapes[names[$0]] ?? constants[$0]?.shape }
            if inShapes.allSatisfy({ $0 != nil }), let outs = try? op.shapes(inShapes.map { $0! }, shapeEnv), let o = outs.first {
                knownShapes[raw.outputs[0]] = o
            }
        }
        let outputId: Int
        if let c = consts[out.name], ids[out.name] == nil {
            // A graph whose output is a constant: legal but useless; keep it working.
            outputId = id(out.name)
            constants[outputId] = Tensor(shape: c.dims, data: c.floats)
        } else {
            outputId = id(out.name)
        }
        guard dims[0] <= Graph.maxActivation else {
            throw fail(.unsupported, "\(source): the input '\(inp.name)' declares a batch of \(dims[0]), above \(Graph.maxActivation)")
        }
        let graph = Graph(valueNames: names, constants: constants, input: inputId, output: outputId, nodes: nodes,
                          inputShape: Array(dims[1...]), declaredBatch: dims[0] > 0 ? dims[0] : nil,
                          inputName: inp.name, outputName: out.name,
                          bnNodes: bnNodes.map { (onnxIndex: $0.0, outputName: $0.1, channels: $0.2) }, opset: file.opset)
        // Validate shapes end to end now, so a bad model fails at load, not at the first call.
        let shapes = try graph.inferShapes(batch: graph.declaredBatch ?? 1).map { $0 }
        guard let o = shapes[outputId], o.count == 2 else {
            throw err(.unsupported, "the output '\(out.name)' must be [batch, classes]; it is \(shapes[outputId].map { "\($0)" } ?? "unknown")")
        }
        return BuiltGraph(graph: graph, bn: bnParams, signature: signature)
    }

    /// The tensor of a `Constant` node.
    static func constantValue(_ a: Attrs) throws -> RawTensor {
        let n = a.node
        if case .tensor(let t)? = n.attributes["value"] { return t }
        if case .float(let f)? = n.attributes["value_float"] { return RawTensor(name: "", dims: [], floats: [f], ints: nil) }
        if case .floats(let f)? = n.attributes["value_floats"] { return RawTensor(name: "", dims: [f.count], floats: f, ints: nil) }
        if case .int(let i)? = n.attributes["value_int"] { return RawTensor(name: "", dims: [], floats: [Float(i)], ints: [Int64(i)]) }
        if case .ints(let i)? = n.attributes["value_ints"] {
            return RawTensor(name: "", dims: [i.count], floats: i.map { Float($0) }, ints: i.map { Int64($0) })
        }
        throw a.unsupported("a Constant without a tensor, float(s) or int(s) value")
    }

    static func describe(_ attrs: [String: Attribute]) -> String {
        attrs.keys.sorted().map { k -> String in
            switch attrs[k]! {
            case .float(let f): return "\(k)=\(f)"
            case .int(let i): return "\(k)=\(i)"
            case .string(let s): return "\(k)='\(s)'"
            case .floats(let f): return "\(k)=\(f)"
            case .ints(let i): return "\(k)=\(i)"
            case .tensor(let t): return "\(k)=tensor\(t.dims):\(t.floats.hashValue)"
            case .other(let t): return "\(k)=<type \(t)>"
            }
        }.joined(separator: ",")
    }

    /// Builds the op for a node; returns it and the input positions it binds as constants.
    static func makeOp(_ raw: RawNode, _ a: Attrs, _ c: [RawTensor?], opset: Int, bnSlot: Int) throws -> (any Op, Set<Int>) {
        func need(_ count: ClosedRange<Int>) throws {
            guard count.contains(raw.inputs.count) else {
                throw a.invalid("expects \(count.lowerBound == count.upperBound ? "\(count.lowerBound)" : "\(count.lowerBound)-\(count.upperBound)") inputs, has \(raw.inputs.count)")
            }
            guard !raw.inputs[0].isEmpty, c[0] == nil else { throw a.unsupported("a constant or missing first input") }
        }
        func const(_ i: Int, _ what: String) throws -> RawTensor {
            guard i < c.count, let t = c[i] else { throw a.unsupported("a non-constant \(what) (input \(i))") }
            return t
        }
        func ints(_ t: RawTensor) -> [Int] { (t.ints ?? t.floats.map { Int64($0) }).map { Int($0) } }
        switch raw.opType {
        case "Conv":
            try need(2...3)
            let w = try const(1, "weight")
            let b = raw.inputs.count > 2 && !raw.inputs[2].isEmpty ? try const(2, "bias") : nil
            return (try Conv(a, weight: w, bias: b), [1, 2])
        case "BatchNormalization":
            try need(5...5)
            if try a.int("training_mode", 0) != 0 { throw a.unsupported("training_mode=1") }
            if opset < 9, try a.int("spatial", 1) != 1 { throw a.unsupported("spatial=0") }
            let p = try (1...4).map { try const($0, ["scale", "bias", "mean", "var"][$0 - 1]) }
            let ch = p[0].floats.count
            guard p.allSatisfy({ $0.floats.count == ch }) else { throw a.invalid("scale, bias, mean and var differ in length") }
            let eps = try a.float("epsilon", 1e-5)
            guard eps >= 0, eps.isFinite else { throw a.invalid("epsilon must be a non-negative number, is \(eps)") }
            return (BatchNorm(slot: bnSlot, channels: ch, epsilon: eps), [1, 2, 3, 4])
        case "Relu":
            try need(1...1); return (Relu(), [])
        case "Identity":
            try need(1...1); return (IdentityOp(), [])
        case "Add", "Sub", "Mul", "Div":
            guard raw.inputs.count == 2 else { throw a.invalid("expects 2 inputs") }
            if opset < 7, raw.attributes["broadcast"] != nil || raw.attributes["axis"] != nil {
                throw a.unsupported("legacy broadcast/axis attributes")
            }
            return (Binary(kind: Binary.Kind(rawValue: raw.opType)!), [])
        case "MaxPool":
            try need(1...1); return (try Pool(a, kind: .max), [])
        case "AveragePool":
            try need(1...1); return (try Pool(a, kind: .average), [])
        case "GlobalAveragePool":
            try need(1...1); return (GlobalAveragePool(), [])
        case "Flatten":
            try need(1...1); return (Flatten(axis: try a.int("axis", 1)), [])
        case "Reshape":
            if opset < 5 {
                try need(1...1)
                guard let s = try a.ints("shape") else { throw a.invalid("missing shape attribute") }
                return (Reshape(target: s, allowZero: false), [])
            }
            try need(2...2)
            return (Reshape(target: ints(try const(1, "shape")), allowZero: try a.int("allowzero", 0) != 0), [1])
        case "Gemm":
            try need(2...3)
            let b = try const(1, "B")
            guard b.dims.count == 2 else { throw a.invalid("B must be 2-D, is \(b.dims)") }
            let cT = raw.inputs.count > 2 && !raw.inputs[2].isEmpty ? try const(2, "C") : nil
            return (Gemm(transA: try a.int("transA", 0) != 0, b: b.floats, bRows: b.dims[0], bCols: b.dims[1],
                         transB: try a.int("transB", 0) != 0, alpha: try a.float("alpha", 1), beta: try a.float("beta", 1),
                         c: cT?.floats, cShape: cT?.dims ?? []), [1, 2])
        case "MatMul":
            guard raw.inputs.count == 2, !raw.inputs[0].isEmpty, !raw.inputs[1].isEmpty else { throw a.invalid("expects 2 inputs") }
            if c[0] == nil, let b = c[1], b.dims.count == 2 {
                // A constant 2-D right-hand side: weights packed once.
                return (MatMul(b: b.floats, k: b.dims[0], n: b.dims[1]), [1])
            }
            return (BatchedMatMul(), [])
        case "Einsum":
            guard !raw.inputs.isEmpty, raw.inputs.allSatisfy({ !$0.isEmpty }) else { throw a.invalid("needs inputs") }
            guard case .string(let eq)? = raw.attributes["equation"] else { throw a.invalid("missing the equation attribute") }
            return (try Einsum(equation: eq, inputs: raw.inputs.count, fail: { fail(.unsupported, "\(raw.label) (opset \(opset)): \($0)") }), [])
        case "Transpose":
            try need(1...1)
            return (Transpose(perm: try a.ints("perm")), [])
        case "Dropout":
            try need(1...3)
            if opset < 7, try a.int("is_test", 0) == 0 { throw a.unsupported("a training-mode Dropout (is_test=0)") }
            if raw.inputs.count > 2 && !raw.inputs[2].isEmpty {
                guard let t = c[2] else { throw a.unsupported("a non-constant training_mode input") }
                if (t.ints?.first ?? Int64(t.floats.first ?? 0)) != 0 { throw a.unsupported("training_mode=true") }
            }
            return (Dropout(), [1, 2])
        case "Pad":
            let modeName = try a.string("mode", "constant")
            guard let mode = Pad.Mode(rawValue: modeName) else { throw a.unsupported("Pad mode '\(modeName)'") }
            if opset < 11 {
                try need(1...1)
                guard let p = try a.ints("pads") ?? a.ints("paddings") else { throw a.invalid("missing pads") }
                return (Pad(mode: mode, pads: p, value: try a.float("value", 0)), [])
            }
            try need(2...4)
            if raw.inputs.count > 3 && !raw.inputs[3].isEmpty { throw a.unsupported("the axes input") }
            let v = raw.inputs.count > 2 && !raw.inputs[2].isEmpty ? try const(2, "constant_value").floats.first ?? 0 : 0
            return (Pad(mode: mode, pads: ints(try const(1, "pads")), value: v), [1, 2, 3])
        case "Concat":
            guard !raw.inputs.isEmpty else { throw a.invalid("needs inputs") }
            guard let ax = raw.attributes["axis"], case .int(let axis) = ax else { throw a.invalid("missing axis") }
            return (Concat(axis: axis), [])
        case "Clip":
            if opset < 11 {
                try need(1...1)
                return (Clip(lo: try a.float("min", -.greatestFiniteMagnitude), hi: try a.float("max", .greatestFiniteMagnitude)), [])
            }
            try need(1...3)
            let lo = raw.inputs.count > 1 && !raw.inputs[1].isEmpty ? try const(1, "min").floats.first ?? -.infinity : -.infinity
            let hi = raw.inputs.count > 2 && !raw.inputs[2].isEmpty ? try const(2, "max").floats.first ?? .infinity : .infinity
            return (Clip(lo: lo, hi: hi), [1, 2])
        case "Softmax":
            try need(1...1)
            return (Softmax(axis: try a.int("axis", opset < 13 ? 1 : -1), legacy: opset < 13), [])
        default:
            throw fail(.unsupported, "op type '\(raw.opType)' (node '\(raw.name.isEmpty ? "#\(raw.index)" : raw.name)', opset \(opset)) is not supported; adamant runs \(supportedOps.joined(separator: ", "))")
        }
    }
}
