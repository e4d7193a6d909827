import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// A dense layer's weights W [out x in] packed for adamant's GEMM (`gemm.h`), built once at load (the
/// input gradient gathers W^T from the same panels). Samples are the GEMM's columns (one each), so a
/// sample's result never depends on its batch-mates.
final class DenseWeights: @unchecked Sendable {
    let outFeatures, inFeatures: Int
    let forward: [Float]

    /// `w` holds W [out x in] row-major, or W^T [in x out] when `transposed`.
    init(_ w: [Float], outFeatures: Int, inFeatures: Int, transposed: Bool) {
        self.outFeatures = outFeatures
        self.inFeatures = inFeatures
        // + slack: the input gradient's GEMM reads W^T from these panels (gemm.h)
        var f = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(outFeatures), Int32(inFeatures)) + AKN_GEMM_SLACK)
        akn_gemm_pack_a(w, transposed ? outFeatures : inFeatures, transposed ? 1 : 0, Int32(outFeatures),
                        Int32(inFeatures), &f)
        forward = f
    }

    /// y[r][o] = (sum_i x[r][i] W[o][i]) * scale[o] + bias[o] + res[r][o] for `rows` rows.
    func forward(_ x: [Float], rows: Int, scale: [Float]?, bias: [Float]?, residual: [Float]?, threads: Int) -> [Float] {
        var y = [Float](unsafeUninitializedCapacity: rows * outFeatures) { _, k in k = rows * outFeatures }
        run(packed: forward, transposed: false, m: outFeatures, k: inFeatures, x: x, rows: rows, scale: scale, bias: bias, residual: residual,
            y: &y, threads: threads)
        return y
    }

    /// dx[r][i] = sum_o g[r][o] W[o][i] * alpha.
    func backward(_ g: [Float], rows: Int, alpha: Float, threads: Int) -> [Float] {
        var dx = [Float](unsafeUninitializedCapacity: rows * inFeatures) { _, k in k = rows * inFeatures }
        let s: [Float]? = alpha == 1 ? nil : [Float](repeating: alpha, count: inFeatures)
        run(packed: forward, transposed: true, m: inFeatures, k: outFeatures, x: g, rows: rows, scale: s, bias: nil,
            residual: nil, y: &dx, threads: threads)
        return dx
    }

    private func run(packed: [Float], transposed: Bool, m: Int, k: Int, x: [Float], rows: Int, scale: [Float]?, bias: [Float]?,
                     residual: [Float]?, y: inout [Float], threads: Int) {
        guard rows > 0 else { return }
        packed.withUnsafeBufferPointer { pp in
            x.withUnsafeBufferPointer { xp in
                y.withUnsafeMutableBufferPointer { yp in
                    withOptionalBuffer(scale) { sp in withOptionalBuffer(bias) { bp in withOptionalBuffer(residual) { rp in
                        var io = akn_gemm_cols()
                        io.per = 1  // one column per sample: column j is row j of x
                        io.b = xp.baseAddress; io.ldb = 1; io.b_sample = k
                        io.c = yp.baseAddress; io.ldc = 1; io.c_sample = m
                        io.r = rp; io.ldr = 1; io.r_sample = m
                        io.scale = sp; io.bias = bp
                        gemm(m: m, n: rows, k: k, a: pp.baseAddress!, transposed: transposed, io: io, threads: threads)
                    } } }
                }
            }
        }
    }
}

/// ONNX `Gemm`: Y = alpha * A' * B' + beta * C with a constant B (and C), A the activations.
struct Gemm: Op {
    let type = "Gemm"
    let transA: Bool
    let bRows, bCols: Int
    let transB: Bool
    let alpha, beta: Float
    /// C broadcast to [1 or M, N] (nil = none).
    let c: [Float]?
    let cShape: [Int]
    /// B' = W^T, packed.
    let weights: DenseWeights

    init(transA: Bool, b: [Float], bRows: Int, bCols: Int, transB: Bool, alpha: Float, beta: Float, c: [Float]?,
         cShape: [Int]) {
        self.transA = transA; self.bRows = bRows; self.bCols = bCols; self.transB = transB
        self.alpha = alpha; self.beta = beta; self.c = c; self.cShape = cShape
        // B' is [in x out]: W = B'^T is B itself when transB (B is [out x in]), else B^T.
        weights = DenseWeights(b, outFeatures: transB ? bRows : bCols, inFeatures: transB ? bCols : bRows, transposed: !transB)
    }

    var outFeatures: Int { transB ? bRows : bCols }
    var inFeatures: Int { transB ? bCols : bRows }
    var parameterCount: Int { bRows * bCols + (c?.count ?? 0) }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let a = inputs[0]
        guard a.count == 2 else { throw fail(.shape, "Gemm expects a 2-D input, got \(a)") }
        let (m, k) = transA ? (a[1], a[0]) : (a[0], a[1])
        guard k == inFeatures else { throw fail(.shape, "Gemm: input has \(k) features, weight expects \(inFeatures)") }
        if c != nil {
            let cs = cShape
            guard cs.count <= 2, (try? broadcastShapes([m, outFeatures], cs)) == [m, outFeatures] else {
                throw fail(.shape, "Gemm: C of shape \(cs) does not broadcast to \([m, outFeatures])")
            }
        }
        return [[m, outFeatures]]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { 2 * outputs[0].product * inFeatures }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let a = inputs[0]
        let out = try shapes([a.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        let (m, n) = (out[0], out[1])
        // The epilogue: alpha as a scale, beta * C as a bias (C over [1, N]) or a residual (C over [M, N]).
        var bias: [Float]? = nil, residual: [Float]? = nil
        if let c {
            let cs = [Int](repeating: 1, count: 2 - cShape.count) + cShape
            if cs[0] == 1 {
                bias = (0..<n).map { j in beta * c[cs[1] == 1 ? 0 : j] }
            } else {
                residual = (0..<(m * n)).map { e in beta * c[(e / n) * cs[1] + (cs[1] == 1 ? 0 : e % n)] }
            }
        }
        let rows = transA ? transposed(a.data, rows: a.shape[0], cols: a.shape[1]) : a.data
        let y = weights.forward(rows, rows: m, scale: alpha == 1 ? nil : [Float](repeating: alpha, count: n), bias: bias,
                                residual: residual, threads: ctx.threads)
        return [Tensor(shape: out, data: y)]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        let m = g.shape[0]
        // dA' = alpha * dY * B'^T, row by row (A' = A, or A^T when transA).
        let d = weights.backward(g.data, rows: m, alpha: alpha, threads: ctx.threads)
        return [Tensor(shape: a.shape, data: transA ? transposed(d, rows: m, cols: inFeatures) : d)]
    }
    /// The input gradient reads the weights and the input's shape alone.
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}

/// ONNX `MatMul` with a constant 2-D right-hand side: [..., K] x [K, N].
struct MatMul: Op {
    let type = "MatMul"
    let k, n: Int
    let weights: DenseWeights
    var parameterCount: Int { k * n }

    init(b: [Float], k: Int, n: Int) {
        self.k = k; self.n = n
        weights = DenseWeights(b, outFeatures: n, inFeatures: k, transposed: true)  // W = B^T
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let a = inputs[0]
        guard a.count >= 1, a.last == k else { throw fail(.shape, "MatMul: input \(a) does not end in \(k)") }
        return [Array(a.dropLast()) + [n]]
    }
    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { 2 * outputs[0].product * k }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let a = inputs[0]
        let out = try shapes([a.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        return [Tensor(shape: out, data: weights.forward(a.data, rows: a.count / k, scale: nil, bias: nil, residual: nil,
                                                          threads: ctx.threads))]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        return [Tensor(shape: a.shape, data: weights.backward(g.data, rows: a.shape.product / k, alpha: 1, threads: ctx.threads))]
    }
    /// The input gradient reads the weights and the input's shape alone.
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}

/// The transpose of a row-major [rows x cols] matrix.
func transposed(_ a: [Float], rows: Int, cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: a.count)
    for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = a[i * cols + j] } }
    return t
}
