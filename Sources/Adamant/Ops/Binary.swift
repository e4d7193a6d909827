import CKernels

/// Numpy-style (multidirectional) broadcast of two shapes.
func broadcastShapes(_ a: [Int], _ b: [Int]) throws -> [Int] {
    let r = max(a.count, b.count)
    let pa = [Int](repeating: 1, count: r - a.count) + a
    let pb = [Int](repeating: 1, count: r - b.count) + b
    var out = [Int](repeating: 1, count: r)
    for i in 0..<r {
        if pa[i] == pb[i] || pb[i] == 1 { out[i] = pa[i] }
        else if pa[i] == 1 { out[i] = pb[i] }
        else { throw fail(.shape, "shapes \(a) and \(b) cannot be broadcast together") }
    }
    return out
}

/// Strides of `shape` viewed inside `out` (0 along broadcast dimensions).
private func broadcastStrides(_ shape: [Int], into out: [Int]) -> [Int] {
    let padded = [Int](repeating: 1, count: out.count - shape.count) + shape
    let s = strides(of: padded)
    return (0..<out.count).map { padded[$0] == 1 && out[$0] != 1 ? 0 : s[$0] }
}

/// Calls `body(outOffset, aOffset, bOffset, count, aStep, bStep)` for every innermost row of `out`.
private func forEachRow(_ out: [Int], _ sa: [Int], _ sb: [Int],
                        _ body: (Int, Int, Int, Int, Int, Int) -> Void) {
    let r = out.count
    if r == 0 { body(0, 0, 0, 1, 0, 0); return }
    let len = out[r - 1]
    let rows = out.count > 1 ? Array(out[..<(r - 1)]).product : 1
    var idx = [Int](repeating: 0, count: max(0, r - 1))
    var oa = 0, ob = 0
    for row in 0..<rows {
        body(row * len, oa, ob, len, sa[r - 1], sb[r - 1])
        // Increment the multi-index over the outer dimensions.
        var d = r - 2
        while d >= 0 {
            idx[d] += 1
            oa += sa[d]; ob += sb[d]
            if idx[d] < out[d] { break }
            oa -= sa[d] * out[d]; ob -= sb[d] * out[d]
            idx[d] = 0
            d -= 1
        }
    }
}

/// ONNX `Add`, `Sub`, `Mul`, `Div` with broadcasting. Same-shape operands and a scalar operand
/// (a division by sqrt(C) or by H*W, a constant scale) run vector kernels (`tensor_ops.h`), in
/// place when the executor hands over the only reference to the first input; other broadcasts take
/// the general strided loop.
struct Binary: InPlaceOp {
    enum Kind: String { case add = "Add", sub = "Sub", mul = "Mul", div = "Div" }
    let kind: Kind
    var type: String { kind.rawValue }

    /// The kernel's op code for x op s (0-3), and for s op x (0, 4, 2, 5).
    private var code: Int32 {
        switch kind { case .add: 0; case .sub: 1; case .mul: 2; case .div: 3 }
    }
    private var reversedCode: Int32 {
        switch kind { case .add: 0; case .sub: 4; case .mul: 2; case .div: 5 }
    }

    func forwardInPlace(_ x: inout Tensor, _ others: [Tensor], _ ctx: ExecContext) throws -> Bool {
        guard let b = others.first else { return false }
        if b.shape == x.shape {
            runInPlace(&x.data, b.data, ctx)
            return true
        }
        if b.count == 1, b.rank <= x.rank {
            scalarInPlace(&x.data, b.data[0], code, ctx)
            return true
        }
        if perChannel(x.shape, b.shape) != nil {
            let shape = x.shape
            x.data.withUnsafeMutableBufferPointer { xp in
                planes(UnsafePointer(xp.baseAddress!), b.data, shape: shape, code, into: xp.baseAddress!, ctx)
            }
            return true
        }
        return false
    }

    /// The channel count when `b` is a per-channel operand of the [N, C, H, W] `a` (shape [C, 1, 1]
    /// or [1, C, 1, 1], as a model's own normalization has it), else nil.
    func perChannel(_ a: [Int], _ b: [Int]) -> Int? {
        guard a.count == 4 else { return nil }
        let s = b.count == 4 && b[0] == 1 ? Array(b.dropFirst()) : b
        return s == [a[1], 1, 1] ? a[1] : nil
    }

    /// out = x op s[c] over each H x W plane of channel c (akn_scalar_op: the general loop's values,
    /// plane by plane, vectorized; a batch's planes over the threads).
    private func planes(_ x: UnsafePointer<Float>, _ s: [Float], shape: [Int], _ op: Int32,
                        into out: UnsafeMutablePointer<Float>, _ ctx: ExecContext) {
        let (c, hw) = (shape[1], shape[2] * shape[3]), count = shape[0] * shape[1]
        s.withUnsafeBufferPointer { sp in
            Parallel.forRanges(count, threads: count * hw >= 1 << 16 ? ctx.threads : 1) { r in
                for p in r { akn_scalar_op(x + p * hw, sp[p % c], out + p * hw, hw, op) }
            }
        }
    }

    /// out = a op b elementwise (same shape), split over the threads (elementwise: no result depends on it).
    private func run(_ a: [Float], _ b: [Float], into out: inout [Float], _ ctx: ExecContext) {
        kindRun(code, a, b, into: &out, ctx)
    }

    /// x = x op b elementwise, in place.
    private func runInPlace(_ x: inout [Float], _ b: [Float], _ ctx: ExecContext) {
        let op = code
        b.withUnsafeBufferPointer { bp in
            x.withUnsafeMutableBufferPointer { xp in
                let (xb, bb) = (xp.baseAddress!, bp.baseAddress!)
                Parallel.forSlices(xp.count, threads: ctx.threads) { r in
                    akn_binary_op(xb + r.lowerBound, bb + r.lowerBound, xb + r.lowerBound, r.count, op)
                }
            }
        }
    }

    /// out = x op s (op codes of akn_scalar_op).
    private func scalar(_ x: [Float], _ s: Float, _ op: Int32, into out: inout [Float], _ ctx: ExecContext) {
        x.withUnsafeBufferPointer { xp in
            out.withUnsafeMutableBufferPointer { op_ in
                let (xb, ob) = (xp.baseAddress!, op_.baseAddress!)
                Parallel.forSlices(op_.count, threads: ctx.threads) { r in
                    akn_scalar_op(xb + r.lowerBound, s, ob + r.lowerBound, r.count, op)
                }
            }
        }
    }

    /// x = x op s, in place.
    private func scalarInPlace(_ x: inout [Float], _ s: Float, _ op: Int32, _ ctx: ExecContext) {
        x.withUnsafeMutableBufferPointer { xp in
            let xb = xp.baseAddress!
            Parallel.forSlices(xp.count, threads: ctx.threads) { r in
                akn_scalar_op(xb + r.lowerBound, s, xb + r.lowerBound, r.count, op)
            }
        }
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        [try broadcastShapes(inputs[0], inputs[1])]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { outputs[0].product }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let a = inputs[0], b = inputs[1]
        let outShape = try broadcastShapes(a.shape, b.shape)
        if a.shape == b.shape || (b.count == 1 && outShape == a.shape) {
            var y = try ctx.uninitialized(outShape)
            if a.shape == b.shape { run(a.data, b.data, into: &y.data, ctx) } else { scalar(a.data, b.data[0], code, into: &y.data, ctx) }
            return [y]
        }
        if a.count == 1 && outShape == b.shape {
            var y = try ctx.uninitialized(outShape)
            scalar(b.data, a.data[0], reversedCode, into: &y.data, ctx)
            return [y]
        }
        // A per-channel operand (a model's normalization, (x - mean) / std): a vector pass per plane.
        for (x, s, op) in [(a, b, code), (b, a, reversedCode)] where x.shape == outShape && perChannel(x.shape, s.shape) != nil {
            var y = try ctx.uninitialized(outShape)
            x.data.withUnsafeBufferPointer { xp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    planes(xp.baseAddress!, s.data, shape: outShape, op, into: yp.baseAddress!, ctx)
                }
            }
            return [y]
        }
        var y = try ctx.uninitialized(outShape)
        let k = kind
        a.data.withUnsafeBufferPointer { ap in
            b.data.withUnsafeBufferPointer { bp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    forEachRow(outShape, broadcastStrides(a.shape, into: outShape), broadcastStrides(b.shape, into: outShape)) {
                        o, ia, ib, n, sa, sb in
                        var ia = ia, ib = ib
                        switch k {
                        case .add: for i in 0..<n { yp[o + i] = ap[ia] + bp[ib]; ia += sa; ib += sb }
                        case .sub: for i in 0..<n { yp[o + i] = ap[ia] - bp[ib]; ia += sa; ib += sb }
                        case .mul: for i in 0..<n { yp[o + i] = ap[ia] * bp[ib]; ia += sa; ib += sb }
                        case .div: for i in 0..<n { yp[o + i] = ap[ia] / bp[ib]; ia += sa; ib += sb }
                        }
                    }
                }
            }
        }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        var g = gradOutputs
        return try backward(inputs, outputs, consuming: &g, needs: needs, ctx)
    }

    /// Add and Sub read their operands' shapes only (Mul and Div read the values).
    func backwardRead(input i: Int) -> BackwardRead { kind == .add || kind == .sub ? .shape : .values }
    func backwardRead(output i: Int) -> BackwardRead { kind == .add || kind == .sub ? .shape : .values }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], consuming gradOutputs: inout [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], b = inputs[1]
        let out = gradOutputs[0].shape
        if a.shape == b.shape && (kind == .add || kind == .sub) {
            // Residual connections: no broadcasting to undo.
            let g = gradOutputs[0]
            var db: Tensor? = nil
            if needs[1] {
                if kind == .add { db = g } else {
                    db = try ctx.uninitialized(g.shape)
                    scalar(g.data, -1, 2, into: &db!.data, ctx)
                }
            }
            return [needs[0] ? g : nil, db]
        }
        // A scalar operand that needs no gradient (a constant): the other's gradient is g scaled,
        // written over the consumed g.
        if !needs[1] && b.count == 1 && out == a.shape {
            var g = gradOutputs[0]
            gradOutputs = []
            switch kind {
            case .add: break
            case .sub: break
            case .mul: scalarInPlace(&g.data, b.data[0], 2, ctx)
            case .div: scalarInPlace(&g.data, b.data[0], 3, ctx)
            }
            return [g, nil]
        }
        if !needs[0] && a.count == 1 && out == b.shape && kind != .div {
            var g = gradOutputs[0]
            gradOutputs = []
            switch kind {
            case .add: break
            case .sub: scalarInPlace(&g.data, -1, 2, ctx)
            case .mul: scalarInPlace(&g.data, a.data[0], 2, ctx)
            case .div: break
            }
            return [nil, g]
        }
        // A broadcast constant b (a model's input normalization, (x - mean) / std per channel): a's
        // gradient is g itself, or g * b or g / b row by row over the consumed g, b constant along a
        // row where it is broadcast there.
        if !needs[1] && out == a.shape {
            var g = gradOutputs[0]
            gradOutputs = []
            if kind == .mul || kind == .div {
                let sa = broadcastStrides(a.shape, into: out), sb = broadcastStrides(b.shape, into: out)
                let div = kind == .div
                b.data.withUnsafeBufferPointer { bp in
                    g.data.withUnsafeMutableBufferPointer { gp in
                        let (bb, gb) = (bp.baseAddress!, gp.baseAddress!)
                        forEachRow(out, sa, sb) { o, _, ib0, n, _, sb1 in
                            let row = gb + o
                            if sb1 == 0 {
                                let v = bb[ib0]
                                if div { for i in 0..<n { row[i] = row[i] / v } } else { for i in 0..<n { row[i] = row[i] * v } }
                            } else {
                                for i in 0..<n {
                                    let v = bb[ib0 + i * sb1]
                                    row[i] = div ? row[i] / v : row[i] * v
                                }
                            }
                        }
                    }
                }
            }
            return [g, nil]
        }
        // Same shape Mul and Div: elementwise kernels.
        if a.shape == b.shape {
            let g = gradOutputs[0]
            var da: Tensor? = nil, db: Tensor? = nil
            if kind == .mul {
                if needs[0] { da = try ctx.uninitialized(a.shape); run(g.data, b.data, into: &da!.data, ctx) }
                if needs[1] { db = try ctx.uninitialized(b.shape); kindRun(2, g.data, a.data, into: &db!.data, ctx) }
            } else {
                // d/da (a / b) = g / b; d/db = -g * a / b^2 = -(g / b) * (a / b) = -(g / b) * y
                var q = try ctx.uninitialized(a.shape)
                kindRun(3, g.data, b.data, into: &q.data, ctx)
                if needs[1] {
                    db = try ctx.uninitialized(b.shape)
                    kindRun(2, q.data, outputs[0].data, into: &db!.data, ctx)
                    scalarInPlace(&db!.data, -1, 2, ctx)
                }
                if needs[0] { da = q } else { ctx.recycle(q) }
            }
            return [da, db]
        }
        let g = gradOutputs[0]
        let sa = broadcastStrides(a.shape, into: out), sb = broadcastStrides(b.shape, into: out)
        var da = needs[0] ? try ctx.zeros(a.shape) : nil
        var db = needs[1] ? try ctx.zeros(b.shape) : nil
        let k = kind
        forEachRow(out, sa, sb) { o, ia0, ib0, n, sa1, sb1 in
            var ia = ia0, ib = ib0
            for i in 0..<n {
                let gi = g.data[o + i]
                switch k {
                case .add:
                    da?.data[ia] += gi; db?.data[ib] += gi
                case .sub:
                    da?.data[ia] += gi; db?.data[ib] -= gi
                case .mul:
                    da?.data[ia] += gi * b.data[ib]; db?.data[ib] += gi * a.data[ia]
                case .div:
                    let bv = b.data[ib]
                    da?.data[ia] += gi / bv; db?.data[ib] -= gi * a.data[ia] / (bv * bv)
                }
                ia += sa1; ib += sb1
            }
        }
        return [da, db]
    }

    /// out = x op y elementwise with an explicit kernel code.
    private func kindRun(_ op: Int32, _ x: [Float], _ y: [Float], into out: inout [Float], _ ctx: ExecContext) {
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeBufferPointer { yp in
                out.withUnsafeMutableBufferPointer { o in
                    let (xb, yb, ob) = (xp.baseAddress!, yp.baseAddress!, o.baseAddress!)
                    Parallel.forSlices(o.count, threads: ctx.threads) { r in
                        akn_binary_op(xb + r.lowerBound, yb + r.lowerBound, ob + r.lowerBound, r.count, op)
                    }
                }
            }
        }
    }
}
