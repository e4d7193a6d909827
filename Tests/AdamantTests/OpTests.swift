import XCTest
@testable import Adamant

/// Per-op forward checks against direct formulas, and backward checks against finite differences.
final class OpTests: XCTestCase {
    /// Direct (loop) convolution as the reference for im2col + GEMM.
    func naiveConv(_ x: Tensor, _ w: Tensor, _ b: [Float]?, stride: Int, pad: Int, dil: Int, group: Int) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let oh = (h + 2 * pad - dil * (kh - 1) - 1) / stride + 1
        let ow = (wd + 2 * pad - dil * (kw - 1) - 1) / stride + 1
        var y = Tensor(zeros: [n, m, oh, ow])
        let mg = m / group
        for s in 0..<n { for o in 0..<m { for i in 0..<oh { for j in 0..<ow {
            var acc = b?[o] ?? 0
            let g = o / mg
            for ci in 0..<cg { for ki in 0..<kh { for kj in 0..<kw {
                let ih = i * stride - pad + ki * dil, iw = j * stride - pad + kj * dil
                if ih < 0 || ih >= h || iw < 0 || iw >= wd { continue }
                acc += x.data[((s * c + g * cg + ci) * h + ih) * wd + iw] * w.data[((o * cg + ci) * kh + ki) * kw + kj]
            } } }
            y.data[((s * m + o) * oh + i) * ow + j] = acc
        } } } }
        _ = c
        return y
    }

    func testConvMatchesDirectConvolution() throws {
        for (stride, pad, dil, group, k, batch) in [(1, 1, 1, 1, 3, 3), (2, 1, 1, 1, 3, 2), (1, 0, 1, 1, 1, 5), (2, 3, 1, 1, 7, 1),
                                                    (1, 2, 2, 1, 3, 2), (1, 1, 1, 2, 3, 3), (2, 0, 1, 1, 1, 2)] {
            let x = randomTensor([batch, 4, 9, 11], seed: 1)
            let w = randomTensor([6, 4 / group, k, k], seed: 2)
            let b = randomTensor([6], seed: 3)
            let conv = try Conv(rawNode("Conv", ["strides": .ints([stride, stride]), "pads": .ints([pad, pad, pad, pad]),
                                                 "dilations": .ints([dil, dil]), "group": .int(group)]),
                                weight: raw(w), bias: raw(b))
            let y = try conv.forward([x], ctx(batch: batch))[0]
            let ref = naiveConv(x, w, b.data, stride: stride, pad: pad, dil: dil, group: group)
            XCTAssertEqual(y.shape, ref.shape)
            let err = zip(y.data, ref.data).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(err, 1e-4, "stride \(stride) pad \(pad) dil \(dil) group \(group) k \(k)")
            try checkGradient(conv, [x])
        }
    }

    func testConvWithFusedReluMatchesConvThenRelu() throws {
        let x = randomTensor([2, 3, 7, 7], seed: 30)
        var conv = try Conv(rawNode("Conv", ["pads": .ints([1, 1, 1, 1])]), weight: raw(randomTensor([4, 3, 3, 3], seed: 31)),
                            bias: raw(randomTensor([4], seed: 32)))
        let plain = try Relu().forward(try conv.forward([x], ctx(batch: 2)), ctx(batch: 2))[0]
        conv.fusedRelu = true
        XCTAssertEqual(try conv.forward([x], ctx(batch: 2))[0].data, plain.data)
        try checkGradient(conv, [x])
    }

    func testConvRejectsMismatchedKernelShape() {
        XCTAssertThrowsError(try Conv(rawNode("Conv", ["kernel_shape": .ints([5, 5])]), weight: raw(randomTensor([2, 3, 3, 3], seed: 1)), bias: nil)) {
            XCTAssertTrue(String(describing: $0).contains("kernel_shape"))
        }
    }

    func testPoolingGradients() throws {
        // Distinct values at least 0.01 apart, so finite differences never cross a max-pool tie.
        var rng = Xoshiro256(seed: 4)
        let x = Tensor(shape: [2, 3, 8, 7], data: (0..<336).map { Float($0) * 0.01 - 1.5 }.shuffled(using: &rng))
        for (kind, attrs) in [(Pool.Kind.max, ["kernel_shape": Attribute.ints([3, 3]), "strides": .ints([2, 2]), "pads": .ints([1, 1, 1, 1])]),
                              (.average, ["kernel_shape": .ints([2, 2]), "strides": .ints([2, 2])]),
                              (.average, ["kernel_shape": .ints([3, 3]), "pads": .ints([1, 1, 1, 1]), "count_include_pad": .int(1)]),
                              (.max, ["kernel_shape": .ints([3, 3]), "strides": .ints([2, 2]), "ceil_mode": .int(1)])] {
            let op = try Pool(rawNode(kind == .max ? "MaxPool" : "AveragePool", attrs), kind: kind)
            try checkGradient(op, [x], h: 1e-3)
        }
        // MaxPool forward on a known case.
        let t = Tensor(shape: [1, 1, 2, 2], data: [1, 5, 3, 2])
        let mp = try Pool(rawNode("MaxPool", ["kernel_shape": .ints([2, 2])]), kind: .max)
        XCTAssertEqual(try mp.forward([t], ctx(batch: 1))[0].data, [5])
        try checkGradient(GlobalAveragePool(), [x])
    }

    /// MaxPool's forward (the separable 3x3/2 kernel of every ISA path, the vectorized interior for
    /// 3-wide windows and the generic border code) against a naive loop with the same tap order and
    /// NaN rule, bit for bit (the first of +0 and -0 wins), over kernels, strides, pads, odd and
    /// even sizes, a row wider than the 3x3/2 kernel's 256-output passes, with NaN, -inf and signed
    /// zeros among the inputs.
    func testMaxPoolForwardMatchesNaiveLoop() throws {
        try forEachISA { _ in try checkMaxPoolForward() }
    }

    private func checkMaxPoolForward() throws {
        var rng = Xoshiro256(seed: 12)
        for (k, s, pad, h, w) in [(3, 2, 1, 112, 112), (3, 2, 1, 9, 7), (3, 1, 1, 6, 11), (3, 2, 0, 10, 13), (2, 2, 0, 8, 9),
                                  (3, 3, 1, 12, 12), (3, 2, 1, 1, 1), (3, 2, 1, 2, 5), (3, 2, 1, 5, 600), (3, 2, 0, 6, 531), (3, 2, 2, 9, 37)] {
            var data = (0..<(2 * h * w)).map { _ in Float(Double(rng.next() % 2001) / 1000 - 1) }
            if data.count > 20 { data[3] = .nan; data[17] = -.infinity; data[data.count - 2] = .nan }
            // signed zeros where they are the largest of their windows
            for i in stride(from: 40, to: data.count - 2, by: 97) { data[i] = -0.0; data[i + 1] = 0; data[i + 2] = -1 }
            let x = Tensor(shape: [1, 2, h, w], data: data)
            let op = try Pool(rawNode("MaxPool", ["kernel_shape": .ints([k, k]), "strides": .ints([s, s]),
                                                  "pads": .ints([pad, pad, pad, pad])]), kind: .max)
            let y = try op.forward([x], ctx(batch: 1))[0]
            let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1)
            XCTAssertEqual(y.shape, [1, 2, oh, ow])
            for c in 0..<2 {
                for i in 0..<oh {
                    for j in 0..<ow {
                        var m = -Float.infinity
                        for ki in 0..<k {
                            for kj in 0..<k {
                                let (r, q) = (i * s - pad + ki, j * s - pad + kj)
                                guard r >= 0, r < h, q >= 0, q < w else { continue }
                                let v = data[(c * h + r) * w + q]
                                if v > m || m.isNaN { m = v }
                            }
                        }
                        let got = y.data[(c * oh + i) * ow + j]
                        XCTAssertTrue(got.bitPattern == m.bitPattern || (got.isNaN && m.isNaN),
                                      "k\(k) s\(s) p\(pad) \(h)x\(w): (\(c), \(i), \(j)) = \(got), expected \(m)")
                    }
                }
            }
        }
    }

    /// MaxPool's input gradient (the 3x3/2 kernel of every ISA path, 256 outputs a pass, and the
    /// generic loop) against a naive loop: each output's gradient goes to the first largest tap of
    /// its window (a strict > from the first tap on: a NaN first tap keeps it, later NaNs never
    /// win), added in output order, bit for bit, over ties, NaN, -inf and signed zeros.
    func testMaxPoolBackwardMatchesNaiveLoop() throws {
        try forEachISA { _ in
            var rng = Xoshiro256(seed: 13)
            for (k, s, pad, h, w) in [(3, 2, 1, 112, 112), (3, 2, 1, 9, 7), (3, 2, 0, 10, 13), (3, 2, 2, 13, 11),
                                      (3, 1, 1, 6, 11), (2, 2, 0, 8, 9), (3, 2, 1, 1, 1), (3, 2, 1, 2, 5), (3, 2, 1, 5, 600)] {
                // few distinct values (ties), with NaN, -inf and signed zeros among them
                let data = (0..<(2 * h * w)).map { _ -> Float in
                    let r = rng.next() % 100
                    return r < 3 ? .nan : r < 6 ? -.infinity : r < 9 ? -0.0 : Float(rng.next() % 5)
                }
                let x = Tensor(shape: [1, 2, h, w], data: data)
                let op = try Pool(rawNode("MaxPool", ["kernel_shape": .ints([k, k]), "strides": .ints([s, s]),
                                                      "pads": .ints([pad, pad, pad, pad])]), kind: .max)
                let y = try op.forward([x], ctx(batch: 1))[0]
                let (oh, ow) = ((h + 2 * pad - k) / s + 1, (w + 2 * pad - k) / s + 1)
                let g = Tensor(shape: y.shape, data: (0..<y.count).map { _ in Float(Int(rng.next() % 2001) - 1000) / 77 })
                let dx = try op.backward([x], [y], [g], needs: [true], ctx(batch: 1))[0]!
                var expected = [Float](repeating: 0, count: data.count)
                for c in 0..<2 {
                    for i in 0..<oh {
                        for j in 0..<ow {
                            var best = -1
                            for ki in 0..<k {
                                for kj in 0..<k {
                                    let (r, q) = (i * s - pad + ki, j * s - pad + kj)
                                    guard r >= 0, r < h, q >= 0, q < w else { continue }
                                    let t = (c * h + r) * w + q
                                    if best < 0 || data[t] > data[best] { best = t }
                                }
                            }
                            if best >= 0 { expected[best] += g.data[(c * oh + i) * ow + j] }
                        }
                    }
                }
                let same = zip(dx.data, expected).allSatisfy { $0.bitPattern == $1.bitPattern }
                XCTAssertTrue(same, "k\(k) s\(s) p\(pad) \(h)x\(w): input gradient differs from the naive loop")
            }
        }
    }

    func testBinaryBroadcastingForwardAndGradients() throws {
        let a = randomTensor([2, 3, 4, 5], seed: 5)
        let b = randomTensor([1, 3, 1, 1], seed: 6, scale: 2).withOffset(3)  // away from 0 for Div
        for kind in [Binary.Kind.add, .sub, .mul, .div] {
            let op = Binary(kind: kind)
            let y = try op.forward([a, b], ctx(batch: 2))[0]
            XCTAssertEqual(y.shape, [2, 3, 4, 5])
            // Element (1, 2, 3, 4) against the formula.
            let i = ((1 * 3 + 2) * 4 + 3) * 5 + 4
            let av = a.data[i], bv = b.data[2]
            let expected: Float = kind == .add ? av + bv : kind == .sub ? av - bv : kind == .mul ? av * bv : av / bv
            XCTAssertEqual(y.data[i], expected, accuracy: 1e-6)
            try checkGradient(op, [a, b])
        }
        // A constant operand (needs no gradient), per channel or along the last axis: the input's
        // gradient equals the one the general broadcast path gives.
        for bShape in [[1, 3, 1, 1], [1, 1, 1, 5], [3, 1, 5]] {
            let bc = randomTensor(bShape, seed: 7, scale: 2).withOffset(3)
            for kind in [Binary.Kind.add, .sub, .mul, .div] {
                let op = Binary(kind: kind)
                let y = try op.forward([a, bc], ctx(batch: 2))[0]
                let g = randomTensor(y.shape, seed: 8)
                let both = try op.backward([a, bc], [y], [g], needs: [true, true], ctx(batch: 2))
                let only = try op.backward([a, bc], [y], [g], needs: [true, false], ctx(batch: 2))
                XCTAssertNil(only[1])
                XCTAssertEqual(only[0]!.data, both[0]!.data, "\(kind) by \(bShape)")
            }
        }
        // A per-channel operand ([1, C, 1, 1] or [C, 1, 1], either side) runs a vector pass per plane,
        // in place too: every element bit-identical to the formula.
        for bShape in [[1, 3, 1, 1], [3, 1, 1]] {
            let bc = randomTensor(bShape, seed: 9, scale: 2).withOffset(3)
            for kind in [Binary.Kind.add, .sub, .mul, .div] {
                let op = Binary(kind: kind)
                XCTAssertEqual(op.perChannel(a.shape, bc.shape), 3)
                func f(_ x: Float, _ y: Float) -> Float {
                    kind == .add ? x + y : kind == .sub ? x - y : kind == .mul ? x * y : x / y
                }
                let y = try op.forward([a, bc], ctx(batch: 2))[0], yr = try op.forward([bc, a], ctx(batch: 2))[0]
                var inPlace = a
                XCTAssertTrue(try op.forwardInPlace(&inPlace, [bc], ctx(batch: 2)))
                for i in 0..<a.count {
                    let c = (i / 20) % 3
                    XCTAssertEqual(y.data[i].bitPattern, f(a.data[i], bc.data[c]).bitPattern, "\(kind) \(bShape) at \(i)")
                    XCTAssertEqual(yr.data[i].bitPattern, f(bc.data[c], a.data[i]).bitPattern, "\(kind) \(bShape) reversed at \(i)")
                    XCTAssertEqual(inPlace.data[i].bitPattern, y.data[i].bitPattern, "\(kind) \(bShape) in place at \(i)")
                }
            }
        }
        XCTAssertNil(Binary(kind: .add).perChannel([2, 3, 4, 5], [1, 1, 4, 1]))
        XCTAssertNil(Binary(kind: .add).perChannel([2, 3, 4, 5], [2, 3, 1, 1]))
        XCTAssertThrowsError(try broadcastShapes([2, 3], [4]))
    }

    func testActivationsAndShapeOpsGradients() throws {
        let x = randomTensor([3, 5], seed: 7)
        try checkGradient(Relu(), [x])
        try checkGradient(Clip(lo: -0.3, hi: 0.4), [x])
        try checkGradient(Softmax(axis: -1, legacy: false), [x])
        try checkGradient(Softmax(axis: 1, legacy: true), [randomTensor([2, 3, 4], seed: 8)])
        let g = Gemm(transA: false, b: randomTensor([4, 5], seed: 9).data, bRows: 4, bCols: 5, transB: true, alpha: 0.5,
                     beta: 2, c: [1, 2, 3, 4], cShape: [4])
        let y = try g.forward([x], ctx(batch: 3))[0]
        XCTAssertEqual(y.shape, [3, 4])
        try checkGradient(g, [x])
        let gt = Gemm(transA: true, b: randomTensor([3, 4], seed: 10).data, bRows: 3, bCols: 4, transB: false, alpha: 1,
                      beta: 1, c: nil, cShape: [])
        try checkGradient(gt, [x])
        try checkGradient(MatMul(b: randomTensor([5, 2], seed: 11).data, k: 5, n: 2), [x])
        let img = randomTensor([2, 2, 3, 4], seed: 12)
        try checkGradient(Pad(mode: .constant, pads: [0, 0, 1, 2, 0, 0, 2, 1], value: 0.5), [img])
        try checkGradient(Pad(mode: .reflect, pads: [0, 0, 1, 2, 0, 0, 2, 1], value: 0), [img])
        try checkGradient(Pad(mode: .edge, pads: [0, 0, 1, 2, 0, 0, 2, 1], value: 0), [img])
        try checkGradient(Concat(axis: 1), [img, randomTensor([2, 3, 3, 4], seed: 13)])
        try checkGradient(Flatten(axis: 1), [img])
        try checkGradient(Reshape(target: [2, -1], allowZero: false), [img])
        // Reflect pad forward on a known row.
        let row = Tensor(shape: [1, 4], data: [1, 2, 3, 4])
        XCTAssertEqual(try Pad(mode: .reflect, pads: [0, 2, 0, 1], value: 0).forward([row], ctx(batch: 1))[0].data, [3, 2, 1, 2, 3, 4, 3])
    }

    func testBatchNormUsesSelectedDomain() throws {
        let bn = BatchNorm(slot: 0, channels: 3, epsilon: 1e-5)
        let p1 = BNParams(scale: [1, 2, 3], bias: [0, 1, 2], mean: [0.1, 0.2, 0.3], variance: [1, 2, 0.5])
        let p2 = BNParams(scale: [3, 2, 1], bias: [1, 1, 1], mean: [0, 0, 0], variance: [4, 4, 4])
        let x = randomTensor([2, 3, 2, 2], seed: 14)
        let y1 = try bn.forward([x], ctx(batch: 2, bn: [p1]))[0]
        let y2 = try bn.forward([x], ctx(batch: 2, bn: [p2]))[0]
        let i = ((1 * 3 + 1) * 2 + 1) * 2 + 0
        XCTAssertEqual(y1.data[i], (x.data[i] - 0.2) / (2 + 1e-5).squareRoot() * 2 + 1, accuracy: 1e-5)
        XCTAssertEqual(y2.data[i], x.data[i] / (4 + 1e-5).squareRoot() * 2 + 1, accuracy: 1e-5)
        try checkGradient(bn, [x], bn: [p1])
    }

    func testLossGradientsMatchFiniteDifferences() {
        let z: [Float] = [0.3, -1.2, 2.0, 0.5, 0.1, 0.0, -0.4, 1.5]
        for loss in [Loss.crossEntropy, .cwMargin] {
            let (l, dz) = Losses.evaluate(logits: z, classes: 4, labels: [2, 3], loss: loss)
            for j in 0..<z.count {
                var p = z, m = z
                p[j] += 1e-3; m[j] -= 1e-3
                let lp = Losses.evaluate(logits: p, classes: 4, labels: [2, 3], loss: loss).0
                let lm = Losses.evaluate(logits: m, classes: 4, labels: [2, 3], loss: loss).0
                let numeric = (lp[j / 4] - lm[j / 4]) / 2e-3
                XCTAssertEqual(numeric, dz[j], accuracy: 2e-2, "\(loss) logit \(j)")
            }
            XCTAssertEqual(l.count, 2)
        }
        // CE of a uniform logit vector is log(K).
        XCTAssertEqual(Losses.evaluate(logits: [0, 0, 0, 0], classes: 4, labels: [1], loss: .crossEntropy).0[0],
                       Float(log(4.0)), accuracy: 1e-6)
    }
}

extension Tensor {
    func withOffset(_ v: Float) -> Tensor { Tensor(shape: shape, data: data.map { $0 + v }) }
}
