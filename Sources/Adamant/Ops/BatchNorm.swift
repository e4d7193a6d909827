/// The parameters of one BatchNormalization node in one BN domain.
public struct BNParams: Sendable, Equatable {
    /// gamma
    public var scale: [Float]
    /// beta
    public var bias: [Float]
    /// running mean
    public var mean: [Float]
    /// running variance
    public var variance: [Float]

    /// Per-channel (a, b) with y = a * x + b in inference mode.
    func affine(epsilon: Float) -> ([Float], [Float]) {
        var a = [Float](repeating: 0, count: scale.count)
        var b = a
        for c in 0..<scale.count {
            a[c] = scale[c] / (variance[c] + epsilon).squareRoot()
            b[c] = bias[c] - mean[c] * a[c]
        }
        return (a, b)
    }
}

/// ONNX `BatchNormalization` in inference mode. Its parameters are not stored in the op but looked up
/// by ``slot`` in the selected BN domain, so one graph serves every domain.
struct BatchNorm: Op {
    let type = "BatchNormalization"
    /// Index of this node's parameters in each domain's table.
    let slot: Int
    let channels: Int
    let epsilon: Float

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        guard x.count >= 2, x[1] == channels else {
            throw fail(.shape, "BatchNormalization expects \(channels) channels in dimension 1, got shape \(x)")
        }
        return [x]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { 2 * inputs[0].product }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let n = x.shape[0]
        let inner = x.shape.count > 2 ? Array(x.shape[2...]).product : 1
        let p = ctx.bn[slot]
        var a: [Float], b: [Float]
        if let rec = ctx.calibration {
            // Training-mode statistics of this batch.
            var mean = [Float](repeating: 0, count: channels)
            var varB = mean
            let m = Double(n * inner)
            for c in 0..<channels {
                var s = 0.0, s2 = 0.0
                for i in 0..<n {
                    let base = (i * channels + c) * inner
                    for j in 0..<inner { s += Double(x.data[base + j]) }
                }
                let mu = s / m
                for i in 0..<n {
                    let base = (i * channels + c) * inner
                    for j in 0..<inner { let d = Double(x.data[base + j]) - mu; s2 += d * d }
                }
                mean[c] = Float(mu)
                varB[c] = Float(s2 / m)
            }
            rec.record(slot: slot, mean: mean, biasedVariance: varB, count: n * inner, images: n)
            a = [Float](repeating: 0, count: channels); b = a
            for c in 0..<channels {
                a[c] = p.scale[c] / (varB[c] + epsilon).squareRoot()
                b[c] = p.bias[c] - mean[c] * a[c]
            }
        } else {
            (a, b) = p.affine(epsilon: epsilon)
        }
        var y = x
        y.data.withUnsafeMutableBufferPointer { yp in
            for i in 0..<n {
                for c in 0..<channels {
                    let base = (i * channels + c) * inner
                    let (ac, bc) = (a[c], b[c])
                    for j in 0..<inner { yp[base + j] = yp[base + j] * ac + bc }
                }
            }
        }
        return [y]
    }

    /// Inference mode: the input gradient is the output gradient scaled per channel (shapes alone).
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        guard needs[0] else { return [nil] }
        guard ctx.calibration == nil else { throw fail(.internal, "no gradient through training-mode BatchNorm") }
        let dy = gradOutputs[0]
        let n = dy.shape[0]
        let inner = dy.shape.count > 2 ? Array(dy.shape[2...]).product : 1
        let (a, _) = ctx.bn[slot].affine(epsilon: epsilon)
        var dx = dy
        dx.data.withUnsafeMutableBufferPointer { p in
            for i in 0..<n {
                for c in 0..<channels {
                    let base = (i * channels + c) * inner
                    let ac = a[c]
                    for j in 0..<inner { p[base + j] *= ac }
                }
            }
        }
        return [dx]
    }
}
