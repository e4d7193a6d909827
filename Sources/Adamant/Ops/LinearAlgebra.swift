import CKernels

/// How ``batchedGEMM`` runs a product, from its shape alone: whether it computes C^T = B^T . A^T
/// instead (when C is wanted transposed and that moves fewer floats), the scratch floats per item
/// (packed A, a transposed B, a C to transpose) and how many items run at once.
struct BatchedGEMMShape {
    var m, n, k: Int
    var aTransposed, bTransposed, cTransposed, accumulate: Bool
    var items: Int
    /// No two items write the same output (else items run one after another, accumulating).
    var distinctOutputs: Bool

    var swapped: Bool {
        guard cTransposed else { return false }
        // Direct: pack A, transpose B if stored [n][k], then transpose C. Swapped: pack B^T,
        // transpose A^T if A is stored [m][k], write C^T as it is.
        let direct = m * k + 2 * ((bTransposed ? k * n : 0) + m * n)
        let swapped = n * k + 2 * (aTransposed ? 0 : m * k)
        return swapped <= direct
    }

    /// Scratch floats per item of the (unswapped) product.
    var perItem: Int {
        if swapped {
            return BatchedGEMMShape(m: n, n: m, k: k, aTransposed: !bTransposed, bTransposed: !aTransposed, cTransposed: false,
                                    accumulate: accumulate, items: items, distinctOutputs: distinctOutputs).perItem
        }
        return akn_gemm_packed_a_size(Int32(m), Int32(k)) + (bTransposed ? k * n : 0)
            + (cTransposed ? (accumulate ? 2 : 1) * m * n : 0)
    }

    /// Items processed concurrently: over the threads when each GEMM would run on one thread
    /// anyway and no two items write the same output; else one item at a time, the GEMM splitting
    /// its own work.
    func parts(threads: Int) -> Int {
        2 * m * n * k < 2_000_000 && distinctOutputs ? max(1, min(items, threads)) : 1
    }

    /// The one pooled scratch buffer a call takes (0 when there is nothing to multiply).
    func scratchFloats(threads: Int) -> Int {
        guard items > 0, m > 0, n > 0, k > 0 else { return 0 }
        return parts(threads: threads) * perItem
    }
}

/// One operand of ``batchedGEMM``: per batch item a logical [rows x cols] matrix at
/// `base + offsets[item]`, stored row-major as [rows][cols], or as [cols][rows] when `transposed`.
struct MatrixOperand {
    var base: UnsafePointer<Float>
    var offsets: [Int]
    var transposed: Bool

    /// The same storage read as the transposed matrix.
    var t: MatrixOperand { MatrixOperand(base: base, offsets: offsets, transposed: !transposed) }
}

/// C[i] (+)= A[i] . B[i] for every batch item i on adamant's GEMM (`gemm.h`): A logical m x k,
/// B k x n, C m x n (stored [n][m] when `cTransposed`). A is packed per item (either layout); a B
/// stored [n][k] and a C stored [n][m] go through a transpose in pooled scratch, on the side
/// that moves fewer floats (C^T = B^T . A^T swaps the operands). Every item is its own GEMM, so a
/// sample's result never depends on its batch-mates or on the threads (items split over the
/// threads when each GEMM is small, else each GEMM splits its columns).
/// With `accumulate`, C[i] += the product (items sharing an output offset add up, in item order).
func batchedGEMM(m: Int, n: Int, k: Int, a: MatrixOperand, b: MatrixOperand, c: UnsafeMutablePointer<Float>,
                 cOffsets: [Int], cTransposed: Bool, accumulate: Bool, _ ctx: ExecContext) throws {
    let items = cOffsets.count
    guard items > 0, m > 0, n > 0 else { return }
    if k == 0 {
        if !accumulate { for off in Set(cOffsets) { (c + off).update(repeating: 0, count: m * n) } }
        return
    }
    let shape = BatchedGEMMShape(m: m, n: n, k: k, aTransposed: a.transposed, bTransposed: b.transposed,
                                 cTransposed: cTransposed, accumulate: accumulate, items: items,
                                 distinctOutputs: Set(cOffsets).count == items)
    if shape.swapped {
        return try batchedGEMM(m: n, n: m, k: k, a: b.t, b: a.t, c: c, cOffsets: cOffsets, cTransposed: false,
                               accumulate: accumulate, ctx)
    }
    let packSize = akn_gemm_packed_a_size(Int32(m), Int32(k))
    let bSize = b.transposed ? k * n : 0
    let perItem = shape.perItem
    let parts = shape.parts(threads: ctx.threads)
    var scratch = try ctx.scratch(parts * perItem)
    defer { ctx.recycle(scratch) }
    scratch.withUnsafeMutableBufferPointer { sp in
        let sb = sp.baseAddress!
        Parallel.forRanges(parts, threads: parts) { pr in
            for part in pr {
                let pack = sb + part * perItem, bt = pack + packSize, ct = bt + bSize
                for i in (items * part / parts)..<(items * (part + 1) / parts) {
                    let ap = a.base + a.offsets[i]
                    akn_gemm_pack_a(ap, a.transposed ? m : k, a.transposed ? 1 : 0, Int32(m), Int32(k), pack)
                    var bp = b.base + b.offsets[i]
                    if b.transposed {
                        // stored [n][k] -> [k][n]
                        akn_transpose_block(bp, k, bt, n, k, n)
                        bp = UnsafePointer(bt)
                    }
                    let target = cTransposed ? ct : c + cOffsets[i]
                    var io = akn_gemm_cols()
                    io.per = Int32(n)
                    io.b = bp; io.ldb = n; io.b_sample = 0
                    io.c = target; io.ldc = n; io.c_sample = 0
                    if accumulate && !cTransposed { io.r = UnsafePointer(target); io.ldr = n; io.r_sample = 0 }
                    gemm(m: m, n: n, k: k, a: pack, io: io, threads: parts > 1 ? 1 : ctx.threads)
                    if cTransposed {
                        let dst = c + cOffsets[i]
                        if accumulate {
                            let tmp = ct + m * n
                            akn_transpose_block(ct, n, tmp, m, n, m)
                            akn_add_inplace(dst, tmp, m * n)
                        } else {
                            akn_transpose_block(ct, n, dst, m, n, m)  // [m][n] -> [n][m]
                        }
                    }
                }
            }
        }
    }
}

/// ONNX `MatMul` of two tensors (numpy semantics: 1-D operands promoted, batch dimensions
/// broadcast), both activations or either a constant of any rank: one GEMM per batch item
/// (``batchedGEMM``). A constant 2-D right-hand side is ``MatMul`` (weights packed once at load).
struct BatchedMatMul: Op {
    let type = "MatMul"

    /// Batch shape, m, k, n and whether each operand was promoted from 1-D.
    private func plan(_ a: [Int], _ b: [Int]) throws -> (batch: [Int], aBatch: [Int], bBatch: [Int], m: Int, k: Int, n: Int, out: [Int]) {
        guard !a.isEmpty, !b.isEmpty else { throw fail(.shape, "MatMul of a scalar: shapes \(a) and \(b)") }
        let a2 = a.count == 1 ? [1] + a : a
        let b2 = b.count == 1 ? b + [1] : b
        let (m, k) = (a2[a2.count - 2], a2[a2.count - 1])
        let (k2, n) = (b2[b2.count - 2], b2[b2.count - 1])
        guard k == k2 else { throw fail(.shape, "MatMul: shapes \(a) and \(b) do not agree (\(k) vs \(k2))") }
        let aBatch = Array(a2.dropLast(2)), bBatch = Array(b2.dropLast(2))
        let batch = try broadcastShapes(aBatch, bBatch)
        var out = batch
        if a.count > 1 { out.append(m) }
        if b.count > 1 { out.append(n) }
        return (batch, aBatch, bBatch, m, k, n, out)
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        [try plan(inputs[0], inputs[1]).out]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int {
        guard let p = try? plan(inputs[0], inputs[1]) else { return 0 }
        return 2 &* p.batch.product &* p.m &* p.n &* p.k
    }

    /// Element offsets of each batch item in an operand of batch shape `own` broadcast to `batch`.
    private func offsets(_ own: [Int], _ batch: [Int], matrix: Int) -> [Int] {
        let padded = [Int](repeating: 1, count: batch.count - own.count) + own
        let s = strides(of: padded)
        let count = batch.product
        var out = [Int](repeating: 0, count: count)
        var idx = [Int](repeating: 0, count: batch.count)
        for i in 0..<count {
            var off = 0
            for d in 0..<batch.count where padded[d] != 1 { off += idx[d] * s[d] }
            out[i] = off * matrix
            var d = batch.count - 1
            while d >= 0 { idx[d] += 1; if idx[d] < batch[d] { break }; idx[d] = 0; d -= 1 }
        }
        return out
    }

    func scratchCounts(_ inputs: [[Int]], backward: Bool, threads: Int) -> [Int] {
        guard let p = try? plan(inputs[0], inputs[1]) else { return [] }
        let items = p.batch.product
        let fwd = [BatchedGEMMShape(m: p.m, n: p.n, k: p.k, aTransposed: false, bTransposed: false, cTransposed: false,
                                    accumulate: false, items: items, distinctOutputs: true).scratchFloats(threads: threads)]
        guard backward else { return fwd }
        let sharedA = p.aBatch.product < items, sharedB = p.bBatch.product < items
        let da = BatchedGEMMShape(m: p.m, n: p.k, k: p.n, aTransposed: false, bTransposed: true, cTransposed: false,
                                  accumulate: sharedA, items: items, distinctOutputs: !sharedA)
        let db = BatchedGEMMShape(m: p.k, n: p.n, k: p.m, aTransposed: true, bTransposed: false, cTransposed: false,
                                  accumulate: sharedB, items: items, distinctOutputs: !sharedB)
        return mergedScratch(fwd, [da.scratchFloats(threads: threads), db.scratchFloats(threads: threads)])
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let (a, b) = (inputs[0], inputs[1])
        let p = try plan(a.shape, b.shape)
        var y = try ctx.uninitialized(p.out)
        let count = p.batch.product
        let cOff = (0..<count).map { $0 * p.m * p.n }
        try a.data.withUnsafeBufferPointer { ap in
            try b.data.withUnsafeBufferPointer { bp in
                try y.data.withUnsafeMutableBufferPointer { yp in
                    try batchedGEMM(m: p.m, n: p.n, k: p.k,
                                    a: MatrixOperand(base: ap.baseAddress!, offsets: offsets(p.aBatch, p.batch, matrix: p.m * p.k), transposed: false),
                                    b: MatrixOperand(base: bp.baseAddress!, offsets: offsets(p.bBatch, p.batch, matrix: p.k * p.n), transposed: false),
                                    c: yp.baseAddress!, cOffsets: cOff, cTransposed: false, accumulate: false, ctx)
                }
            }
        }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let (a, b, g) = (inputs[0], inputs[1], gradOutputs[0])
        let p = try plan(a.shape, b.shape)
        let count = p.batch.product
        let gOff = (0..<count).map { $0 * p.m * p.n }
        let aOff = offsets(p.aBatch, p.batch, matrix: p.m * p.k)
        let bOff = offsets(p.bBatch, p.batch, matrix: p.k * p.n)
        var grads: [Tensor?] = [nil, nil]
        try a.data.withUnsafeBufferPointer { ap in
            try b.data.withUnsafeBufferPointer { bp in
                try g.data.withUnsafeBufferPointer { gp in
                    let gm = MatrixOperand(base: gp.baseAddress!, offsets: gOff, transposed: false)
                    let am = MatrixOperand(base: ap.baseAddress!, offsets: aOff, transposed: false)
                    let bm = MatrixOperand(base: bp.baseAddress!, offsets: bOff, transposed: false)
                    if needs[0] {
                        // dA = dC . B^T, summed over the items A is broadcast to.
                        let shared = Set(aOff).count < count
                        var da = shared ? try ctx.zeros(a.shape) : try ctx.uninitialized(a.shape)
                        try da.data.withUnsafeMutableBufferPointer { dp in
                            try batchedGEMM(m: p.m, n: p.k, k: p.n, a: gm, b: bm.t, c: dp.baseAddress!, cOffsets: aOff,
                                            cTransposed: false, accumulate: shared, ctx)
                        }
                        grads[0] = da
                    }
                    if needs[1] {
                        // dB = A^T . dC
                        let shared = Set(bOff).count < count
                        var db = shared ? try ctx.zeros(b.shape) : try ctx.uninitialized(b.shape)
                        try db.data.withUnsafeMutableBufferPointer { dp in
                            try batchedGEMM(m: p.k, n: p.n, k: p.m, a: am.t, b: gm, c: dp.baseAddress!, cOffsets: bOff,
                                            cTransposed: false, accumulate: shared, ctx)
                        }
                        grads[1] = db
                    }
                }
            }
        }
        return grads
    }
}

/// ONNX `Einsum` with one operand (a permutation, e.g. "nchw->nhwc") or two operands whose every
/// index is a batch index (in both operands and the output), a contracted one (in both, not in
/// the output) or a free one (in one operand and the output): the batched matrix products of
/// non-local blocks ("niab,nicd->nabcd", "nabcd,nicd->niab", "nihw,njhw->nij", ...) and of
/// attention. Each operand is read in place when its indices already come as
/// batch-free-contracted or batch-contracted-free (else permuted once into pooled scratch), and the
/// product runs on ``batchedGEMM``. Ellipses, repeated indices and indices summed within one
/// operand are rejected at load.
struct Einsum: Op {
    let type = "Einsum"
    let equation: String
    /// Index letters of each operand and of the output.
    let operands: [[Character]]
    let output: [Character]
    /// Two operands: the index groups.
    let batch, aFree, bFree, contracted: [Character]

    /// Parses `equation`; `fail(message)` builds the error (it names the node).
    init(equation: String, inputs: Int, fail reject: (String) -> AdamantError) throws {
        self.equation = equation
        let eq = equation.filter { !$0.isWhitespace }
        guard !eq.contains(".") else { throw reject("Einsum '\(equation)': ellipsis ('...') is not supported") }
        var sides: [String] = [""]
        let chars = Array(eq)
        var i = 0
        while i < chars.count {
            if chars[i] == "-", i + 1 < chars.count, chars[i + 1] == ">" { sides.append(""); i += 2; continue }
            sides[sides.count - 1].append(chars[i])
            i += 1
        }
        guard sides.count <= 2 else { throw reject("Einsum '\(equation)': more than one '->'") }
        let ops = sides[0].split(separator: ",", omittingEmptySubsequences: false).map { Array($0) }
        guard ops.count == inputs else {
            throw reject("Einsum '\(equation)' names \(ops.count) operands but the node has \(inputs) inputs")
        }
        guard ops.count == 1 || ops.count == 2 else {
            throw reject("Einsum '\(equation)': \(ops.count) operands (1 or 2 are supported)")
        }
        for o in ops {
            guard o.allSatisfy({ $0.isLetter && $0.isASCII }) else { throw reject("Einsum '\(equation)': indices must be letters") }
            guard Set(o).count == o.count else {
                throw reject("Einsum '\(equation)': an index repeated within one operand (a diagonal) is not supported")
            }
        }
        var out: [Character]
        if sides.count == 2 {
            out = Array(sides[1])
            guard out.allSatisfy({ $0.isLetter && $0.isASCII }), Set(out).count == out.count else {
                throw reject("Einsum '\(equation)': invalid output indices")
            }
        } else {
            // Implicit output: the indices that appear once, in alphabetical order.
            let all = ops.flatMap { $0 }
            out = Set(all).filter { c in all.filter { $0 == c }.count == 1 }.sorted()
        }
        operands = ops
        output = out
        let inputLetters = Set(ops.flatMap { $0 })
        for c in out where !inputLetters.contains(c) {
            throw reject("Einsum '\(equation)': output index '\(c)' appears in no operand")
        }
        if ops.count == 1 {
            guard Set(out) == Set(ops[0]) else {
                throw reject("Einsum '\(equation)': a one-operand Einsum must be a permutation (sums and diagonals are not supported)")
            }
            batch = []; aFree = []; bFree = []; contracted = []
            return
        }
        let (a, b) = (ops[0], ops[1])
        batch = out.filter { a.contains($0) && b.contains($0) }
        aFree = out.filter { a.contains($0) && !b.contains($0) }
        bFree = out.filter { !a.contains($0) && b.contains($0) }
        contracted = a.filter { b.contains($0) && !out.contains($0) }
        for c in a where !b.contains(c) && !out.contains(c) {
            throw reject("Einsum '\(equation)': index '\(c)' is summed within the first operand alone (not supported)")
        }
        for c in b where !a.contains(c) && !out.contains(c) {
            throw reject("Einsum '\(equation)': index '\(c)' is summed within the second operand alone (not supported)")
        }
    }

    /// Letter -> size, checked across the operands.
    private func sizes(_ shapes: [[Int]]) throws -> [Character: Int] {
        var s: [Character: Int] = [:]
        for (o, shape) in zip(operands, shapes) {
            guard o.count == shape.count else {
                throw fail(.shape, "Einsum '\(equation)': operand '\(String(o))' has rank \(o.count) but the input has shape \(shape)")
            }
            for (c, d) in zip(o, shape) {
                if let e = s[c], e != d {
                    throw fail(.shape, "Einsum '\(equation)': index '\(c)' has size \(e) and \(d) (broadcasting is not supported)")
                }
                s[c] = d
            }
        }
        return s
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let s = try sizes(inputs)
        return [output.map { s[$0]! }]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int {
        guard operands.count == 2, let s = try? sizes(inputs) else { return 0 }
        return 2 &* outputs[0].product &* contracted.map { s[$0]! }.product
    }

    /// How an operand with `letters` is read as [batch][first][second] or [batch][second][first]:
    /// nil = in place with the flag; else the permutation to [batch][first][second].
    private func layout(_ letters: [Character], first: [Character], second: [Character]) -> (perm: [Int]?, transposed: Bool) {
        if letters == batch + first + second { return (nil, false) }
        if letters == batch + second + first { return (nil, true) }
        return ((batch + first + second).map { c in letters.firstIndex(of: c)! }, false)
    }

    private struct Plan {
        var m, n, k, items: Int
        var aLayout, bLayout, cLayout: (perm: [Int]?, transposed: Bool)
    }

    private func plan(_ shapes: [[Int]]) throws -> Plan {
        let s = try sizes(shapes)
        func size(_ l: [Character]) -> Int { l.map { s[$0]! }.product }
        // A as [batch][aFree][contracted], B as [batch][contracted][bFree], C as [batch][aFree][bFree].
        return Plan(m: size(aFree), n: size(bFree), k: size(contracted), items: size(batch),
                    aLayout: layout(operands[0], first: aFree, second: contracted),
                    bLayout: layout(operands[1], first: contracted, second: bFree),
                    cLayout: layout(output, first: aFree, second: bFree))
    }

    func scratchCounts(_ inputs: [[Int]], backward: Bool, threads: Int) -> [Int] {
        guard operands.count == 2, let p = try? plan(inputs) else { return [] }
        let (aCount, bCount, cCount) = (inputs[0].product, inputs[1].product, p.items * p.m * p.n)
        func gemm(_ m: Int, _ n: Int, _ k: Int, _ aT: Bool, _ bT: Bool, _ cT: Bool) -> Int {
            BatchedGEMMShape(m: m, n: n, k: k, aTransposed: aT, bTransposed: bT, cTransposed: cT, accumulate: false,
                             items: p.items, distinctOutputs: true).scratchFloats(threads: threads)
        }
        let (aT, bT, cT) = (p.aLayout.transposed, p.bLayout.transposed, p.cLayout.transposed)
        let permA = p.aLayout.perm == nil ? 0 : aCount, permB = p.bLayout.perm == nil ? 0 : bCount
        let permC = p.cLayout.perm == nil ? 0 : cCount
        let fwd = [permA, permB, permC, gemm(p.m, p.n, p.k, aT, bT, cT)]
        guard backward else { return fwd }
        let bwd = [permA, permB, permC, permA, gemm(p.m, p.k, p.n, cT, !bT, aT), permB, gemm(p.k, p.n, p.m, !aT, cT, bT)]
        return mergedScratch(fwd, bwd)
    }

    /// `t` permuted by `perm` into pooled scratch (the caller recycles it).
    private func permuted(_ t: Tensor, _ perm: [Int], _ ctx: ExecContext) throws -> [Float] {
        var out = try ctx.scratch(t.count)
        t.data.withUnsafeBufferPointer { tp in
            out.withUnsafeMutableBufferPointer { op in
                permute(tp.baseAddress!, shape: t.shape, perm: perm, into: op.baseAddress!, threads: ctx.threads)
            }
        }
        return out
    }

    /// Permutes `canonical` (laid out as `letters` reordered by `perm`) back into `dst` laid out as `letters`.
    private func unpermute(_ canonical: [Float], shape: [Int], perm: [Int], into dst: inout Tensor, _ ctx: ExecContext) {
        var inverse = [Int](repeating: 0, count: perm.count)
        for (i, d) in perm.enumerated() { inverse[d] = i }
        let cshape = perm.map { shape[$0] }
        canonical.withUnsafeBufferPointer { cp in
            dst.data.withUnsafeMutableBufferPointer { dp in
                permute(cp.baseAddress!, shape: cshape, perm: inverse, into: dp.baseAddress!, threads: ctx.threads)
            }
        }
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let outShape = try shapes(inputs.map(\.shape), ShapeEnv(declaredBatch: nil, batch: ctx.batch))[0]
        var y = try ctx.uninitialized(outShape)
        if operands.count == 1 {
            let perm = output.map { c in operands[0].firstIndex(of: c)! }
            inputs[0].data.withUnsafeBufferPointer { xp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    permute(xp.baseAddress!, shape: inputs[0].shape, perm: perm, into: yp.baseAddress!, threads: ctx.threads)
                }
            }
            return [y]
        }
        let p = try plan(inputs.map(\.shape))
        let aData = try p.aLayout.perm.map { try permuted(inputs[0], $0, ctx) }
        let bData = try p.bLayout.perm.map { try permuted(inputs[1], $0, ctx) }
        var cData = p.cLayout.perm == nil ? nil : try ctx.scratch(y.count)
        defer {
            for buf in [aData, bData, cData] { if let buf { ctx.recycle(buf) } }
        }
        try (aData ?? inputs[0].data).withUnsafeBufferPointer { ap in
            try (bData ?? inputs[1].data).withUnsafeBufferPointer { bp in
                func run(_ c: UnsafeMutablePointer<Float>) throws {
                    try batchedGEMM(m: p.m, n: p.n, k: p.k,
                                    a: MatrixOperand(base: ap.baseAddress!, offsets: (0..<p.items).map { $0 * p.m * p.k },
                                                     transposed: p.aLayout.transposed),
                                    b: MatrixOperand(base: bp.baseAddress!, offsets: (0..<p.items).map { $0 * p.k * p.n },
                                                     transposed: p.bLayout.transposed),
                                    c: c, cOffsets: (0..<p.items).map { $0 * p.m * p.n }, cTransposed: p.cLayout.transposed,
                                    accumulate: false, ctx)
                }
                if cData != nil {
                    try cData!.withUnsafeMutableBufferPointer { try run($0.baseAddress!) }
                } else {
                    try y.data.withUnsafeMutableBufferPointer { try run($0.baseAddress!) }
                }
            }
        }
        if let perm = p.cLayout.perm, let c = cData { unpermute(c, shape: outShape, perm: perm, into: &y, ctx) }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let g = gradOutputs[0]
        if operands.count == 1 {
            let perm = operands[0].map { c in output.firstIndex(of: c)! }
            var dx = try ctx.uninitialized(inputs[0].shape)
            g.data.withUnsafeBufferPointer { gp in
                dx.data.withUnsafeMutableBufferPointer { dp in
                    permute(gp.baseAddress!, shape: g.shape, perm: perm, into: dp.baseAddress!, threads: ctx.threads)
                }
            }
            return [dx]
        }
        let p = try plan(inputs.map(\.shape))
        var scratch: [[Float]] = []
        defer { scratch.forEach(ctx.recycle) }
        func keep(_ a: [Float]) -> [Float] { scratch.append(a); return a }
        // Canonical views of A, B and dC (permuted copies where the layout needs them).
        let aData = try p.aLayout.perm.map { keep(try permuted(inputs[0], $0, ctx)) } ?? inputs[0].data
        let bData = try p.bLayout.perm.map { keep(try permuted(inputs[1], $0, ctx)) } ?? inputs[1].data
        let gData = try p.cLayout.perm.map { keep(try permuted(g, $0, ctx)) } ?? g.data
        let aOff = (0..<p.items).map { $0 * p.m * p.k }
        let bOff = (0..<p.items).map { $0 * p.k * p.n }
        let cOff = (0..<p.items).map { $0 * p.m * p.n }
        var grads: [Tensor?] = [nil, nil]
        try aData.withUnsafeBufferPointer { ap in
            try bData.withUnsafeBufferPointer { bp in
                try gData.withUnsafeBufferPointer { gp in
                    let am = MatrixOperand(base: ap.baseAddress!, offsets: aOff, transposed: p.aLayout.transposed)
                    let bm = MatrixOperand(base: bp.baseAddress!, offsets: bOff, transposed: p.bLayout.transposed)
                    let gm = MatrixOperand(base: gp.baseAddress!, offsets: cOff, transposed: p.cLayout.transposed)
                    for (i, needed) in needs.enumerated() where needed {
                        let x = inputs[i]
                        let layoutI = i == 0 ? p.aLayout : p.bLayout
                        var dx = try ctx.uninitialized(x.shape)
                        var canon = layoutI.perm == nil ? nil : try ctx.scratch(x.count)
                        func run(_ c: UnsafeMutablePointer<Float>) throws {
                            if i == 0 {  // dA = dC . B^T  (m x k)
                                try batchedGEMM(m: p.m, n: p.k, k: p.n, a: gm, b: bm.t, c: c, cOffsets: aOff,
                                                cTransposed: layoutI.transposed, accumulate: false, ctx)
                            } else {     // dB = A^T . dC  (k x n)
                                try batchedGEMM(m: p.k, n: p.n, k: p.m, a: am.t, b: gm, c: c, cOffsets: bOff,
                                                cTransposed: layoutI.transposed, accumulate: false, ctx)
                            }
                        }
                        if canon != nil {
                            try canon!.withUnsafeMutableBufferPointer { try run($0.baseAddress!) }
                            unpermute(canon!, shape: x.shape, perm: layoutI.perm!, into: &dx, ctx)
                            ctx.recycle(canon!)
                        } else {
                            try dx.data.withUnsafeMutableBufferPointer { try run($0.baseAddress!) }
                        }
                        grads[i] = dx
                    }
                }
            }
        }
        return grads
    }
}

/// The buffers of a forward pass and of a backward pass that runs after it (the forward's buffers
/// back in the pool by then): each size as many times as the more demanding pass holds it.
func mergedScratch(_ forward: [Int], _ backward: [Int]) -> [Int] {
    var f: [Int: Int] = [:], b: [Int: Int] = [:]
    for c in forward where c > 0 { f[c, default: 0] += 1 }
    for c in backward where c > 0 { b[c, default: 0] += 1 }
    return Set(f.keys).union(b.keys).sorted().flatMap { c in [Int](repeating: c, count: max(f[c] ?? 0, b[c] ?? 0)) }
}
