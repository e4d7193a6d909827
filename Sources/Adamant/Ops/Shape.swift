/// ONNX `Identity`.
struct IdentityOp: Op {
    let type = "Identity"
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] { [inputs[0]] }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] { [inputs[0]] }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] { [gradOutputs[0]] }
}

/// ONNX `Flatten`: [d0 ... d(axis-1)] x [d(axis) ...].
struct Flatten: Op {
    let type = "Flatten"
    let axis: Int
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        let a = axis < 0 ? axis + x.count : axis
        guard a >= 0 && a <= x.count else { throw fail(.shape, "Flatten axis \(axis) out of range for shape \(x)") }
        return [[Array(x[..<a]).product, Array(x[a...]).product]]
    }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        var y = inputs[0]
        y.shape = try shapes([y.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        var g = gradOutputs[0]
        g.shape = inputs[0].shape
        return [g]
    }
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}

/// ONNX `Reshape` with a constant target shape. When the graph was exported with a fixed batch
/// (e.g. 1) and runs with another, a leading target dimension equal to the declared batch follows the
/// real batch, so per-sample graphs run batched.
///
/// A target entry equal to ``batchSentinel`` (what a `Shape` of an activation folds to for a
/// dynamic batch, e.g. PyTorch's `x.view(x.size(0), -1)`) is the input's first dimension.
struct Reshape: Op {
    let type = "Reshape"
    let target: [Int]
    let allowZero: Bool

    /// Stands for "the batch" in a shape folded at load.
    static let batchSentinel = -(1 << 40) - 17
    /// The batch the builder infers shapes with when the graph's batch is dynamic (a value no
    /// real dimension takes, so that a folded `Shape` can tell the batch dimension apart).
    static let placeholderBatch = 1_000_003

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        var t = target.map { $0 == Reshape.batchSentinel && !x.isEmpty ? x[0] : $0 }
        if let db = env.declaredBatch, db != env.batch, !t.isEmpty, t[0] == db, x.first == env.batch {
            t[0] = env.batch
        }
        var infer = -1
        var known = 1
        for i in 0..<t.count {
            if t[i] == 0 && !allowZero {
                guard i < x.count else { throw fail(.shape, "Reshape: 0 at position \(i) but input \(x) has no such dimension") }
                t[i] = x[i]
            }
            if t[i] == -1 {
                guard infer < 0 else { throw fail(.shape, "Reshape: more than one -1 in \(target)") }
                infer = i
            } else if t[i] < 0 {
                throw fail(.shape, "Reshape: invalid target \(target)\(t[i] < -(1 << 30) || t[i] > (1 << 40) ? " (arithmetic on a batch size read from a tensor shape is not supported; reshape with -1 instead)" : "")")
            } else {
                let (k, o) = known.multipliedReportingOverflow(by: t[i])
                guard !o else { throw fail(.shape, "Reshape: target \(target) has too many elements") }
                known = k
            }
        }
        let total = x.product
        if infer >= 0 {
            guard known > 0, total % known == 0 else { throw fail(.shape, "Reshape: cannot reshape \(x) to \(target)") }
            t[infer] = total / known
        }
        guard t.product == total else { throw fail(.shape, "Reshape: cannot reshape \(x) (\(total) elements) to \(t)") }
        return [t]
    }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        var y = inputs[0]
        y.shape = try shapes([y.shape], ShapeEnv(declaredBatch: ctx.declaredBatch, batch: ctx.batch))[0]
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        var g = gradOutputs[0]
        g.shape = inputs[0].shape
        return [g]
    }
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}

/// ONNX `Concat` along one axis.
struct Concat: Op {
    let type = "Concat"
    let axis: Int
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        guard let first = inputs.first else { throw fail(.shape, "Concat needs inputs") }
        let a = axis < 0 ? axis + first.count : axis
        guard a >= 0 && a < first.count else { throw fail(.shape, "Concat axis \(axis) out of range for \(first)") }
        var out = first
        out[a] = 0
        for s in inputs {
            guard s.count == first.count else { throw fail(.shape, "Concat inputs differ in rank: \(inputs)") }
            for d in 0..<s.count where d != a && s[d] != first[d] {
                throw fail(.shape, "Concat inputs differ outside axis \(a): \(inputs)")
            }
            out[a] += s[a]
        }
        return [out]
    }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let out = try shapes(inputs.map(\.shape), ShapeEnv(declaredBatch: nil, batch: 0))[0]
        let a = axis < 0 ? axis + out.count : axis
        let outer = Array(out[..<a]).product
        let inner = Array(out[(a + 1)...]).product
        var y = try ctx.uninitialized(out)
        var off = 0
        y.data.withUnsafeMutableBufferPointer { yp in
            for t in inputs {
                let chunk = t.shape[a] * inner
                t.data.withUnsafeBufferPointer { tp in
                    for o in 0..<outer where chunk > 0 {
                        (yp.baseAddress! + o * out[a] * inner + off).update(from: tp.baseAddress! + o * chunk, count: chunk)
                    }
                }
                off += chunk
            }
        }
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let g = gradOutputs[0]
        let out = g.shape
        let a = axis < 0 ? axis + out.count : axis
        let outer = Array(out[..<a]).product
        let inner = Array(out[(a + 1)...]).product
        var off = 0
        var res: [Tensor?] = []
        for (k, t) in inputs.enumerated() {
            let chunk = t.shape[a] * inner
            if needs[k] {
                var d = try ctx.uninitialized(t.shape)
                g.data.withUnsafeBufferPointer { gp in
                    d.data.withUnsafeMutableBufferPointer { dp in
                        for o in 0..<outer where chunk > 0 {
                            (dp.baseAddress! + o * chunk).update(from: gp.baseAddress! + o * out[a] * inner + off, count: chunk)
                        }
                    }
                }
                res.append(d)
            } else { res.append(nil) }
            off += chunk
        }
        return res
    }
}

/// ONNX `Pad` (constant, reflect or edge mode) with constant pads.
struct Pad: Op {
    let type = "Pad"
    enum Mode: String { case constant, reflect, edge }
    let mode: Mode
    /// begin pads for each axis then end pads, as in ONNX
    let pads: [Int]
    let value: Float

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        guard pads.count == 2 * x.count else { throw fail(.shape, "Pad: \(pads.count) pads for a rank-\(x.count) input") }
        let out = (0..<x.count).map { x[$0] + pads[$0] + pads[$0 + x.count] }
        guard out.allSatisfy({ $0 >= 1 }) else { throw fail(.shape, "Pad: pads \(pads) empty the input \(x)") }
        if mode == .reflect {
            for d in 0..<x.count where pads[d] >= x[d] || pads[d + x.count] >= x[d] {
                throw fail(.shape, "Pad: reflect pads \(pads) too large for input \(x)")
            }
        }
        return [out]
    }

    /// Source index along one axis for output coordinate o, or nil for a constant pad.
    private func source(_ o: Int, _ begin: Int, _ size: Int) -> Int? {
        let i = o - begin
        if i >= 0 && i < size { return i }
        switch mode {
        case .constant: return nil
        case .edge: return min(max(i, 0), size - 1)
        case .reflect:
            var j = i
            let period = 2 * (size - 1)
            if period == 0 { return 0 }
            j = ((j % period) + period) % period
            return j < size ? j : period - j
        }
    }

    private func walk(_ x: [Int], _ out: [Int], _ body: (Int, Int?) -> Void) {
        let r = x.count
        let xs = strides(of: x)
        var idx = [Int](repeating: 0, count: r)
        for o in 0..<out.product {
            var src: Int? = 0
            for d in 0..<r {
                if let s = source(idx[d], pads[d], x[d]) { src = src.map { $0 + s * xs[d] } } else { src = nil; break }
            }
            body(o, src)
            var d = r - 1
            while d >= 0 { idx[d] += 1; if idx[d] < out[d] { break }; idx[d] = 0; d -= 1 }
        }
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let out = try shapes([x.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        var y = try ctx.zeros(out)
        walk(x.shape, out) { o, s in y.data[o] = s.map { x.data[$0] } ?? value }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let x = inputs[0], g = gradOutputs[0]
        var dx = try ctx.zeros(x.shape)
        walk(x.shape, g.shape) { o, s in if let s { dx.data[s] += g.data[o] } }
        return [dx]
    }
}
