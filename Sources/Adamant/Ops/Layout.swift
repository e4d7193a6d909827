import CKernels

/// Copies `src` (row-major `shape`) into `dst` permuted: output dimension i is input dimension
/// `perm[i]`. Dimensions of size 1 are dropped and runs of dimensions kept together are merged
/// first; the innermost copy is then a contiguous row copy or a tiled 2-D transpose
/// (`akn_transpose_block`). Pure data movement, so the split over `threads` changes nothing.
func permute(_ src: UnsafePointer<Float>, shape: [Int], perm: [Int], into dst: UnsafeMutablePointer<Float>, threads: Int) {
    let total = shape.product
    guard total > 0 else { return }
    // Drop size-1 dimensions, then merge input dimensions that stay adjacent and in order.
    let keep = shape.indices.filter { shape[$0] != 1 }
    var remap = [Int](repeating: -1, count: shape.count)
    for (j, d) in keep.enumerated() { remap[d] = j }
    var sizes = keep.map { shape[$0] }
    var p = perm.compactMap { remap[$0] >= 0 ? remap[$0] : nil }
    var merged = true
    while merged {
        merged = false
        for i in 0..<max(0, p.count - 1) where p[i + 1] == p[i] + 1 {
            let d = p[i]
            sizes[d] *= sizes[d + 1]
            sizes.remove(at: d + 1)
            p.remove(at: i + 1)
            p = p.map { $0 > d ? $0 - 1 : $0 }
            merged = true
            break
        }
    }
    let r = sizes.count
    if r <= 1 || p == Array(0..<r) {
        dst.update(from: src, count: total)
        return
    }
    let inStrides = strides(of: sizes)
    let outShape = p.map { sizes[$0] }
    let outStrides = strides(of: outShape)
    var outPos = [Int](repeating: 0, count: r)
    for (i, d) in p.enumerated() { outPos[d] = i }
    let q = p[r - 1]  // input dimension that is the output's innermost
    let last = r - 1  // input's innermost dimension
    // Outer dimensions: every input dimension but `last` and `q` (the same when the innermost
    // dimension stays innermost: then each unit copies one contiguous row).
    let outer = (0..<r).filter { $0 != last && $0 != q }
    let outerSizes = outer.map { sizes[$0] }
    let outerCount = outerSizes.product
    let (rows, cols) = (sizes[last], sizes[q])
    let (lds, ldd) = (inStrides[q], outStrides[outPos[last]])
    let t = total >= 1 << 16 ? threads : 1
    Parallel.forRanges(outerCount, threads: t) { range in
        for u in range {
            var rem = u, so = 0, dof = 0
            for j in stride(from: outer.count - 1, through: 0, by: -1) {
                let d = outer[j]
                let idx = rem % outerSizes[j]
                rem /= outerSizes[j]
                so += idx * inStrides[d]
                dof += idx * outStrides[outPos[d]]
            }
            if q == last {
                (dst + dof).update(from: src + so, count: rows)
            } else {
                akn_transpose_block(src + so, lds, dst + dof, ldd, rows, cols)
            }
        }
    }
}

/// ONNX `Transpose` (any permutation; default: reverse the dimensions). The gradient is the inverse
/// permutation of the output's gradient.
struct Transpose: Op {
    let type = "Transpose"
    /// nil: reverse the dimensions.
    let perm: [Int]?

    func resolved(_ rank: Int) throws -> [Int] {
        let p = perm ?? Array((0..<rank).reversed())
        guard p.count == rank, Set(p).count == rank, p.allSatisfy({ $0 >= 0 && $0 < rank }) else {
            throw fail(.shape, "Transpose: perm \(p) is not a permutation of the \(rank) dimensions of the input")
        }
        return p
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        return [try resolved(x.count).map { x[$0] }]
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let p = try resolved(x.rank)
        var y = try ctx.uninitialized(p.map { x.shape[$0] })
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                permute(xp.baseAddress!, shape: x.shape, perm: p, into: yp.baseAddress!, threads: ctx.threads)
            }
        }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let g = gradOutputs[0]
        let p = try resolved(g.rank)
        var inverse = [Int](repeating: 0, count: p.count)
        for (i, d) in p.enumerated() { inverse[d] = i }
        var dx = try ctx.uninitialized(inputs[0].shape)
        g.data.withUnsafeBufferPointer { gp in
            dx.data.withUnsafeMutableBufferPointer { dp in
                permute(gp.baseAddress!, shape: g.shape, perm: inverse, into: dp.baseAddress!, threads: ctx.threads)
            }
        }
        return [dx]
    }
}

/// ONNX `Dropout` at inference: the identity (a training-mode Dropout is rejected at load).
struct Dropout: Op {
    let type = "Dropout"
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] { [inputs[0]] }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] { [inputs[0]] }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] { [gradOutputs[0]] }
}
