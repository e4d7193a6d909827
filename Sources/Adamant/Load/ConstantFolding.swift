/// Evaluates, at load, the small integer/shape subgraphs exporters leave between constants: PyTorch
/// writes `F.pad`'s pads as ConstantOfShape -> Concat -> Reshape -> Slice -> Transpose -> Reshape
/// -> Cast, and reshapes and unsqueezes of constant shapes appear in many exports. A node whose
/// every input is a constant and whose op is one of ``ops`` becomes a constant itself; the ops
/// that read it then see an ordinary initializer.
enum ConstantFolding {
    /// Ops folded when all their inputs are constants.
    static let ops: Set<String> = ["Add", "Cast", "Concat", "ConstantOfShape", "Div", "Gather", "Mul", "Reshape", "Slice",
                                   "Squeeze", "Sub", "Transpose", "Unsqueeze"]

    /// Values carried as Double (exact for the integers of shapes and pads, and for floats).
    private struct Value {
        var dims: [Int]
        var v: [Double]
        var isInt: Bool

        init(dims: [Int], v: [Double], isInt: Bool) { self.dims = dims; self.v = v; self.isInt = isInt }
        init(_ t: RawTensor) {
            dims = t.dims
            if let i = t.ints { v = i.map { Double($0) }; isInt = true } else { v = t.floats.map { Double($0) }; isInt = false }
        }
        var raw: RawTensor {
            RawTensor(name: "", dims: dims, floats: v.map { Float($0) },
                      ints: isInt ? v.map { $0 >= 9.2e18 ? Int64.max : $0 <= -9.2e18 ? Int64.min : Int64($0) } : nil)
        }
        var ints: [Int] { v.map { $0 >= 9.2e18 ? Int.max : $0 <= -9.2e18 ? Int.min : Int($0) } }
    }

    /// The constant a node computes from its constant inputs (nil entries: omitted optional inputs).
    static func fold(_ raw: RawNode, _ a: Attrs, _ inputs: [RawTensor?], opset: Int) throws -> RawTensor {
        let ins = inputs.map { $0.map(Value.init) }
        guard let x = ins.first ?? nil else { throw a.invalid("missing first input") }
        func axis(_ k: Int, _ rank: Int) throws -> Int {
            let r = k < 0 ? k + rank : k
            guard r >= 0 && r < rank else { throw a.invalid("axis \(k) out of range for rank \(rank)") }
            return r
        }
        func axesInput(_ name: String) throws -> [Int]? {
            if opset >= 13 { return ins.count > 1 ? ins[1]?.ints : nil }
            return try a.ints(name)
        }
        let n = x.v.count
        switch raw.opType {
        case "Add", "Sub", "Mul", "Div":
            guard ins.count == 2, let y = ins[1] else { throw a.invalid("expects 2 inputs") }
            let outDims = try broadcastShapes(x.dims, y.dims)
            let isInt = x.isInt && y.isInt
            let (xs, ys, os) = (strides(of: [Int](repeating: 1, count: outDims.count - x.dims.count) + x.dims),
                                strides(of: [Int](repeating: 1, count: outDims.count - y.dims.count) + y.dims),
                                strides(of: outDims))
            let px = [Int](repeating: 1, count: outDims.count - x.dims.count) + x.dims
            let py = [Int](repeating: 1, count: outDims.count - y.dims.count) + y.dims
            var out = [Double](repeating: 0, count: outDims.product)
            for o in 0..<out.count {
                var i = 0, j = 0
                for d in 0..<outDims.count {
                    let c = (o / os[d]) % outDims[d]
                    if px[d] != 1 { i += c * xs[d] }
                    if py[d] != 1 { j += c * ys[d] }
                }
                let (u, v) = (x.v[i], y.v[j])
                switch raw.opType {
                case "Add": out[o] = u + v
                case "Sub": out[o] = u - v
                case "Mul": out[o] = u * v
                default:
                    guard !(isInt && v == 0) else { throw a.invalid("integer division by zero") }
                    out[o] = isInt ? (u / v).rounded(.towardZero) : Double(Float(u) / Float(v))
                }
                if !isInt { out[o] = Double(Float(out[o])) }  // float32 arithmetic, as at run time
            }
            return Value(dims: outDims, v: out, isInt: isInt).raw
        case "Cast":
            let to = try a.int("to", 1)
            switch to {
            case 1, 10, 11, 16: return Value(dims: x.dims, v: x.v, isInt: false).raw
            case 9: return Value(dims: x.dims, v: x.v.map { $0 != 0 ? 1 : 0 }, isInt: true).raw
            case 2, 3, 4, 5, 6, 7, 12, 13: return Value(dims: x.dims, v: x.v.map { $0.rounded(.towardZero) }, isInt: true).raw
            default: throw a.unsupported("Cast to ONNX type \(to)")
            }
        case "ConstantOfShape":
            let shape = x.ints
            guard shape.allSatisfy({ $0 >= 0 }), shape.product <= Graph.maxActivation else { throw a.invalid("invalid shape \(shape)") }
            var fill = Value(dims: [], v: [0], isInt: false)
            if case .tensor(let t)? = raw.attributes["value"] { fill = Value(t) }
            return Value(dims: shape, v: [Double](repeating: fill.v.first ?? 0, count: shape.product), isInt: fill.isInt).raw
        case "Concat":
            let parts = ins.compactMap { $0 }
            let rank = x.dims.count
            let ax = try axis(try a.int("axis", 0), max(rank, 1))
            var dims = x.dims
            dims[ax] = 0
            for p in parts {
                guard p.dims.count == rank, (0..<rank).allSatisfy({ $0 == ax || p.dims[$0] == x.dims[$0] }) else {
                    throw a.invalid("Concat inputs \(parts.map(\.dims)) differ outside axis \(ax)")
                }
                dims[ax] += p.dims[ax]
            }
            let outer = Array(x.dims[..<ax]).product
            var out: [Double] = []
            out.reserveCapacity(dims.product)
            for o in 0..<outer {
                for p in parts {
                    let chunk = p.v.count / max(outer, 1)
                    out += p.v[(o * chunk)..<((o + 1) * chunk)]
                }
            }
            return Value(dims: dims, v: out, isInt: parts.allSatisfy(\.isInt)).raw
        case "Reshape":
            guard ins.count > 1, let s = ins[1] else { throw a.invalid("missing shape") }
            let shape = try Reshape(target: s.ints, allowZero: try a.int("allowzero", 0) != 0)
                .shapes([x.dims], ShapeEnv(declaredBatch: nil, batch: 0))[0]
            return Value(dims: shape, v: x.v, isInt: x.isInt).raw
        case "Transpose":
            let perm = try a.ints("perm") ?? Array((0..<x.dims.count).reversed())
            let t = Transpose(perm: perm)
            let outDims = try t.shapes([x.dims], ShapeEnv(declaredBatch: nil, batch: 0))[0]
            var out = [Double](repeating: 0, count: n)
            let xs = strides(of: x.dims), os = strides(of: outDims)
            for o in 0..<n {
                var src = 0
                for (i, p) in perm.enumerated() { src += (o / os[i]) % outDims[i] * xs[p] }
                out[o] = x.v[src]
            }
            return Value(dims: outDims, v: out, isInt: x.isInt).raw
        case "Unsqueeze":
            guard let axes = try axesInput("axes") else { throw a.invalid("missing axes") }
            let rank = x.dims.count + axes.count
            var dims = x.dims
            for ax in try axes.map({ try axis($0, rank) }).sorted() { dims.insert(1, at: ax) }
            return Value(dims: dims, v: x.v, isInt: x.isInt).raw
        case "Squeeze":
            let axes = try axesInput("axes").map { try $0.map { try axis($0, x.dims.count) } }
            var dims: [Int] = []
            for (i, d) in x.dims.enumerated() {
                if let axes, axes.contains(i) {
                    guard d == 1 else { throw a.invalid("cannot squeeze axis \(i) of size \(d)") }
                } else if axes != nil || d != 1 { dims.append(d) }
            }
            return Value(dims: dims, v: x.v, isInt: x.isInt).raw
        case "Gather":
            guard ins.count > 1, let idx = ins[1] else { throw a.invalid("missing indices") }
            let ax = try axis(try a.int("axis", 0), x.dims.count)
            let outer = Array(x.dims[..<ax]).product, inner = Array(x.dims[(ax + 1)...]).product
            let size = x.dims[ax]
            var out: [Double] = []
            for o in 0..<outer {
                for i in idx.ints {
                    let j = i < 0 ? i + size : i
                    guard j >= 0 && j < size else { throw a.invalid("Gather index \(i) out of range for size \(size)") }
                    out += x.v[((o * size + j) * inner)..<((o * size + j + 1) * inner)]
                }
            }
            return Value(dims: Array(x.dims[..<ax]) + idx.dims + Array(x.dims[(ax + 1)...]), v: out, isInt: x.isInt).raw
        case "Slice":
            let rank = x.dims.count
            var starts: [Int], ends: [Int], axes: [Int], steps: [Int]
            if opset < 10 {
                guard let s = try a.ints("starts"), let e = try a.ints("ends") else { throw a.invalid("missing starts/ends") }
                starts = s; ends = e
                axes = try a.ints("axes") ?? Array(0..<s.count)
                steps = [Int](repeating: 1, count: s.count)
            } else {
                guard ins.count > 2, let s = ins[1], let e = ins[2] else { throw a.invalid("missing starts/ends") }
                starts = s.ints; ends = e.ints
                axes = ins.count > 3 ? ins[3]?.ints ?? Array(0..<starts.count) : Array(0..<starts.count)
                steps = ins.count > 4 ? ins[4]?.ints ?? [Int](repeating: 1, count: starts.count) : [Int](repeating: 1, count: starts.count)
            }
            guard starts.count == ends.count, axes.count == starts.count, steps.count == starts.count else {
                throw a.invalid("Slice starts, ends, axes and steps differ in length")
            }
            var begin = [Int](repeating: 0, count: rank), step = [Int](repeating: 1, count: rank), count = x.dims
            for (j, axRaw) in axes.enumerated() {
                let ax = try axis(axRaw, rank)
                let d = x.dims[ax], st = steps[j]
                guard st != 0 else { throw a.invalid("Slice step 0") }
                func clampIndex(_ i: Int, _ lo: Int, _ hi: Int) -> Int {
                    let k = i < 0 ? (i == Int.min ? lo : i + d) : i
                    return min(max(k, lo), hi)
                }
                let s = st > 0 ? clampIndex(starts[j], 0, d) : clampIndex(starts[j], 0, d - 1)
                let e = st > 0 ? clampIndex(ends[j], 0, d) : clampIndex(ends[j], -1, d - 1)
                begin[ax] = s; step[ax] = st
                count[ax] = st > 0 ? max(0, (e - s + st - 1) / st) : max(0, (s - e + (-st) - 1) / (-st))
            }
            let xs = strides(of: x.dims), os = strides(of: count)
            let total = count.product
            var out = [Double](repeating: 0, count: total)
            for o in 0..<total {
                var src = 0
                for d in 0..<rank { src += (begin[d] + (o / os[d]) % count[d] * step[d]) * xs[d] }
                out[o] = x.v[src]
            }
            return Value(dims: count, v: out, isInt: x.isInt).raw
        default:
            throw a.unsupported("folding \(raw.opType)")
        }
    }
}
