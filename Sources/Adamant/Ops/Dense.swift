import CBackend

/// ONNX `Gemm`: Y = alpha * A' * B' + beta * C with a constant B (and C), A the activations.
struct Gemm: Op {
    let type = "Gemm"
    let transA: Bool
    /// B stored as given, with its shape.
    let b: [Float]
    let bRows, bCols: Int
    let transB: Bool
    let alpha, beta: Float
    /// C broadcast to [1 or M, N] (nil = none).
    let c: [Float]?
    let cShape: [Int]

    var outFeatures: Int { transB ? bRows : bCols }
    var inFeatures: Int { transB ? bCols : bRows }
    var parameterCount: Int { b.count + (c?.count ?? 0) }

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
        let (m, n, k) = (out[0], out[1], inFeatures)
        var y = Tensor(zeros: out)
        if let c {
            let cs = [Int](repeating: 1, count: 2 - cShape.count) + cShape
            for i in 0..<m { for j in 0..<n { y.data[i * n + j] = beta * c[(cs[0] == 1 ? 0 : i) * cs[1] + (cs[1] == 1 ? 0 : j)] } }
        }
        // A' row by row (one sample per GEMM call: no dependence on batch-mates).
        let rows = transA ? transposed(a.data, rows: k, cols: m) : a.data
        gemmPerRow(m: m, n: n, k: k, alpha: alpha, a: rows, transB: transB, b: b, ldb: bCols, beta: c == nil ? 0 : 1,
                   c: &y.data)
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        let (m, n, k) = (g.shape[0], g.shape[1], inFeatures)
        // dA' = alpha * dY * B'^T row by row, with A' = A or A^T; B'^T is B^T or B.
        var dRows = [Float](repeating: 0, count: m * k)
        gemmPerRow(m: m, n: k, k: n, alpha: alpha, a: g.data, transB: !transB, b: b, ldb: bCols, beta: 0, c: &dRows)
        return [Tensor(shape: a.shape, data: transA ? transposed(dRows, rows: m, cols: k) : dRows)]
    }
}

/// ONNX `MatMul` with a constant 2-D right-hand side: [..., K] x [K, N].
struct MatMul: Op {
    let type = "MatMul"
    let b: [Float]
    let k, n: Int
    var parameterCount: Int { b.count }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let a = inputs[0]
        guard a.count >= 1, a.last == k else { throw fail(.shape, "MatMul: input \(a) does not end in \(k)") }
        return [Array(a.dropLast()) + [n]]
    }
    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { 2 * outputs[0].product * k }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let a = inputs[0]
        let out = try shapes([a.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        let m = a.count / k
        var y = Tensor(zeros: out)
        gemmPerRow(m: m, n: n, k: k, alpha: 1, a: a.data, transB: false, b: b, ldb: n, beta: 0, c: &y.data)
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        let m = a.count / k
        var da = Tensor(zeros: a.shape)
        gemmPerRow(m: m, n: k, k: n, alpha: 1, a: g.data, transB: true, b: b, ldb: n, beta: 0, c: &da.data)
        return [da]
    }
}

/// The transpose of a row-major [rows x cols] matrix.
func transposed(_ a: [Float], rows: Int, cols: Int) -> [Float] {
    var t = [Float](repeating: 0, count: a.count)
    for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = a[i * cols + j] } }
    return t
}
