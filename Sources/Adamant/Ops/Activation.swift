import CKernels

/// g where y > 0, else 0 (the ReLU backward), in a vectorized C kernel.
func reluMask(_ y: Tensor, _ g: Tensor) -> Tensor {
    var out = Tensor(uninitialized: g.shape)
    y.data.withUnsafeBufferPointer { yp in
        g.data.withUnsafeBufferPointer { gp in
            out.data.withUnsafeMutableBufferPointer { op in
                akn_relu_mask(yp.baseAddress!, gp.baseAddress!, op.baseAddress!, op.count)
            }
        }
    }
    return out
}

/// g = relu'(y) * g, in place (y the ReLU's output: the mask is y > 0), split over `threads`.
func reluMaskInPlace(_ y: Tensor, _ g: inout Tensor, threads: Int) {
    y.data.withUnsafeBufferPointer { yp in
        g.data.withUnsafeMutableBufferPointer { gp in
            let (yb, gb) = (yp.baseAddress!, gp.baseAddress!)
            Parallel.forSlices(gp.count, threads: threads) { r in
                akn_relu_mask(yb + r.lowerBound, gb + r.lowerBound, gb + r.lowerBound, r.count)
            }
        }
    }
}

/// ONNX `Relu`.
struct Relu: InPlaceOp {
    func forwardInPlace(_ x: inout Tensor, _ others: [Tensor], _ ctx: ExecContext) throws -> Bool {
        x.data.withUnsafeMutableBufferPointer { p in
            // max(x, 0) keeps NaN, as ONNX Runtime does (a NaN is never silently turned into 0).
            for i in 0..<p.count { p[i] = Swift.max(p[i], 0) }
        }
        return true
    }

    let type = "Relu"
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] { [inputs[0]] }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        var y = inputs[0]
        _ = try forwardInPlace(&y, [], ctx)
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        [reluMask(inputs[0], gradOutputs[0])]
    }
    func backwardRead(input i: Int) -> BackwardRead { .positive }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}

/// ONNX `Clip` (min/max as attributes before opset 11, as constant inputs after).
struct Clip: Op {
    let type = "Clip"
    let lo: Float
    let hi: Float
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] { [inputs[0]] }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        var y = inputs[0]
        for i in 0..<y.count { y.data[i] = min(max(y.data[i], lo), hi) }
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        var dx = gradOutputs[0]
        let x = inputs[0].data
        // Like PyTorch's clamp: gradient passes where lo <= x <= hi.
        for i in 0..<dx.count where x[i] < lo || x[i] > hi { dx.data[i] = 0 }
        return [dx]
    }
}

/// ONNX `Softmax` along one axis (opset >= 13 semantics; earlier opsets coerce to 2-D at `axis`).
struct Softmax: Op {
    let type = "Softmax"
    let axis: Int
    /// Opset < 13: flatten to [outer, inner] at axis and softmax over inner.
    let legacy: Bool

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let r = inputs[0].count
        guard axis >= -r && axis < r else { throw fail(.shape, "Softmax axis \(axis) out of range for rank \(r)") }
        return [inputs[0]]
    }

    /// (outer, axisLen, inner) view of the data.
    private func view(_ shape: [Int]) -> (Int, Int, Int) {
        let a = axis < 0 ? axis + shape.count : axis
        if legacy { return (Array(shape[..<a]).product, Array(shape[a...]).product, 1) }
        return (Array(shape[..<a]).product, shape[a], Array(shape[(a + 1)...]).product)
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        var y = try ctx.uninitialized(x.shape)
        let (outer, len, inner) = view(x.shape)
        guard len > 0 else { return [y] }
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                let (xb, yb) = (xp.baseAddress!, yp.baseAddress!)
                if inner == 1 {
                    // Contiguous rows (the last axis, or any axis before opset 13): the vector kernel,
                    // rows over the threads.
                    Parallel.forRanges(outer, threads: outer * len >= 1 << 15 ? ctx.threads : 1) { r in
                        akn_softmax_rows(xb + r.lowerBound * len, yb + r.lowerBound * len, r.count, len)
                    }
                    return
                }
                // A middle axis: strided, one (outer, inner) column at a time.
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * len * inner + i
                        var m = -Float.infinity
                        for k in 0..<len { m = max(m, xb[base + k * inner]) }
                        if m == -.infinity { m = 0 }
                        var s: Float = 0
                        for k in 0..<len { let e = (xb[base + k * inner] - m).exp(); yb[base + k * inner] = e; s += e }
                        let inv = 1 / s
                        for k in 0..<len { yb[base + k * inner] *= inv }
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

    /// dx = y * (g - sum(g * y)) along the axis, written over the (consumed) output gradient.
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], consuming gradOutputs: inout [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let y = outputs[0]
        var dx = gradOutputs[0]
        gradOutputs = []  // the only reference now: written in place
        let (outer, len, inner) = view(y.shape)
        guard len > 0 else { return [dx] }
        y.data.withUnsafeBufferPointer { yp in
            dx.data.withUnsafeMutableBufferPointer { dp in
                let (yb, db) = (yp.baseAddress!, dp.baseAddress!)
                if inner == 1 {
                    Parallel.forRanges(outer, threads: outer * len >= 1 << 15 ? ctx.threads : 1) { r in
                        akn_softmax_backward_rows(yb + r.lowerBound * len, db + r.lowerBound * len, db + r.lowerBound * len,
                                                  r.count, len)
                    }
                    return
                }
                for o in 0..<outer {
                    for i in 0..<inner {
                        let base = o * len * inner + i
                        var dot: Float = 0
                        for k in 0..<len { dot += db[base + k * inner] * yb[base + k * inner] }
                        for k in 0..<len {
                            let j = base + k * inner
                            db[j] = yb[j] * (db[j] - dot)
                        }
                    }
                }
            }
        }
        return [dx]
    }
}

extension Float {
    /// e^self
    @inline(__always) func exp() -> Float { Float(Foundation_exp(Double(self))) }
}

#if canImport(Glibc)
import Glibc
@inline(__always) func Foundation_exp(_ x: Double) -> Double { Glibc.exp(x) }
#endif
