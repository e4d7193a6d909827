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
        abk_sgemm(transA ? 1 : 0, transB ? 1 : 0, Int32(m), Int32(n), Int32(k), alpha, a.data, Int32(a.shape[1]),
                  b, Int32(bCols), c == nil ? 0 : 1, &y.data, Int32(n))
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        let (m, n, k) = (g.shape[0], g.shape[1], inFeatures)
        var da = Tensor(zeros: a.shape)
        // dA' = alpha * dY * B'^T, with A' = A or A^T.
        if !transA {
            abk_sgemm(0, transB ? 0 : 1, Int32(m), Int32(k), Int32(n), alpha, g.data, Int32(n), b, Int32(bCols), 0,
                      &da.data, Int32(k))
        } else {
            // A is [k, m]: dA = alpha * B' * dY^T
            abk_sgemm(transB ? 1 : 0, 1, Int32(k), Int32(m), Int32(n), alpha, b, Int32(bCols), g.data, Int32(n), 0,
                      &da.data, Int32(m))
        }
        return [da]
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
        abk_sgemm(0, 0, Int32(m), Int32(n), Int32(k), 1, a.data, Int32(k), b, Int32(n), 0, &y.data, Int32(n))
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let a = inputs[0], g = gradOutputs[0]
        let m = a.count / k
        var da = Tensor(zeros: a.shape)
        abk_sgemm(0, 1, Int32(m), Int32(k), Int32(n), 1, g.data, Int32(n), b, Int32(n), 0, &da.data, Int32(k))
        return [da]
    }
}
