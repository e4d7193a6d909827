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

/// ONNX `Add`, `Sub`, `Mul`, `Div` with broadcasting.
struct Binary: InPlaceOp {
    func forwardInPlace(_ x: inout Tensor, _ others: [Tensor], _ ctx: ExecContext) throws -> Bool {
        guard kind == .add, let b = others.first, b.shape == x.shape else { return false }
        x.data.withUnsafeMutableBufferPointer { xp in
            b.data.withUnsafeBufferPointer { bp in for i in 0..<xp.count { xp[i] += bp[i] } }
        }
        return true
    }

    enum Kind: String { case add = "Add", sub = "Sub", mul = "Mul", div = "Div" }
    let kind: Kind
    var type: String { kind.rawValue }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        [try broadcastShapes(inputs[0], inputs[1])]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { outputs[0].product }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let a = inputs[0], b = inputs[1]
        let outShape = try broadcastShapes(a.shape, b.shape)
        var sum = a
        if try forwardInPlace(&sum, [b], ctx) { return [sum] }  // same-shape Add
        var y = Tensor(zeros: outShape)
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
        let a = inputs[0], b = inputs[1], g = gradOutputs[0]
        let out = g.shape
        if a.shape == b.shape && (kind == .add || kind == .sub) {
            // Residual connections: no broadcasting to undo.
            var db: Tensor? = nil
            if needs[1] {
                db = g
                if kind == .sub { db!.data.withUnsafeMutableBufferPointer { p in for i in 0..<p.count { p[i] = -p[i] } } }
            }
            return [needs[0] ? g : nil, db]
        }
        let sa = broadcastStrides(a.shape, into: out), sb = broadcastStrides(b.shape, into: out)
        var da = needs[0] ? Tensor(zeros: a.shape) : nil
        var db = needs[1] ? Tensor(zeros: b.shape) : nil
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
}
