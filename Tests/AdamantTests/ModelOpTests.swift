import CBackend
import XCTest
@testable import Adamant

/// The ops of non-local (feature-denoising) blocks, ResNeXt and Wide-ResNets: grouped Conv,
/// MatMul, Einsum, Softmax, Transpose, Reshape, Mul/Div, Dropout, Pad, AveragePool, Concat. Each
/// forward is checked against a plain loop written here, each input gradient against central
/// finite differences (``checkGradient``), table-driven.
final class ModelOpTests: XCTestCase {
    // MARK: references

    /// Row-major index of `idx` in `shape`.
    func flat(_ idx: [Int], _ shape: [Int]) -> Int { zip(idx, strides(of: shape)).reduce(0) { $0 + $1.0 * $1.1 } }

    /// Visits every multi-index of `shape`.
    func forEachIndex(_ shape: [Int], _ body: ([Int]) -> Void) {
        let n = shape.product
        var idx = [Int](repeating: 0, count: shape.count)
        for _ in 0..<n {
            body(idx)
            var d = shape.count - 1
            while d >= 0 { idx[d] += 1; if idx[d] < shape[d] { break }; idx[d] = 0; d -= 1 }
        }
    }

    /// Einsum by brute force over every assignment of the indices, in Double.
    func naiveEinsum(_ eq: String, _ xs: [Tensor]) -> Tensor {
        let parts = eq.split(separator: ">")
        let ins = parts[0].dropLast().split(separator: ",").map { Array($0) }
        let out = Array(parts[1])
        var size: [Character: Int] = [:]
        for (o, x) in zip(ins, xs) { for (c, d) in zip(o, x.shape) { size[c] = d } }
        let letters = Array(size.keys).sorted()
        let outShape = out.map { size[$0]! }
        var acc = [Double](repeating: 0, count: outShape.product)
        forEachIndex(letters.map { size[$0]! }) { idx in
            var v = 1.0
            for (o, x) in zip(ins, xs) {
                v *= Double(x.data[flat(o.map { idx[letters.firstIndex(of: $0)!] }, x.shape)])
            }
            acc[flat(out.map { idx[letters.firstIndex(of: $0)!] }, outShape)] += v
        }
        return Tensor(shape: outShape, data: acc.map { Float($0) })
    }

    func assertClose(_ a: Tensor, _ b: Tensor, _ tol: Float = 1e-4, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.shape, b.shape, what, file: file, line: line)
        guard a.shape == b.shape else { return }
        let err = zip(a.data, b.data).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
        XCTAssertLessThan(err, tol, what, file: file, line: line)
    }

    func ctx2(batch: Int) -> ExecContext { ExecContext(bn: [], declaredBatch: nil, batch: batch, threads: 2) }

    /// Grouped convolution by its definition.
    func naiveGroupedConv(_ x: Tensor, _ w: Tensor, _ b: [Float], stride: Int, pad: Int, group: Int) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (m, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let (oh, ow) = ((h + 2 * pad - kh) / stride + 1, (wd + 2 * pad - kw) / stride + 1)
        var y = Tensor(zeros: [n, m, oh, ow])
        for s in 0..<n { for o in 0..<m { for i in 0..<oh { for j in 0..<ow {
            var acc = Double(b[o])
            let g = o / (m / group)
            for ci in 0..<cg { for ki in 0..<kh { for kj in 0..<kw {
                let (ih, iw) = (i * stride - pad + ki, j * stride - pad + kj)
                guard ih >= 0, ih < h, iw >= 0, iw < wd else { continue }
                acc += Double(x.data[((s * c + g * cg + ci) * h + ih) * wd + iw]) * Double(w.data[((o * cg + ci) * kh + ki) * kw + kj])
            } } }
            y.data[((s * m + o) * oh + i) * ow + j] = Float(acc)
        } } } }
        return y
    }

    // MARK: tests

    func testTransposeAnyPermutation() throws {
        for (shape, perm) in [([2, 3], [1, 0]), ([2, 3, 4], [0, 2, 1]), ([2, 3, 4], [2, 0, 1]), ([2, 3, 4, 5], [0, 2, 3, 1]),
                              ([2, 3, 4, 5], [3, 1, 0, 2]), ([2, 1, 4, 5], [0, 3, 1, 2]), ([3, 4, 5, 2, 3], [4, 2, 0, 3, 1]),
                              ([2, 3, 4, 5], [0, 1, 2, 3]), ([2, 3, 4, 5], [1, 0, 2, 3]), ([2, 40, 33], [0, 2, 1])] as [([Int], [Int])] {
            let x = randomTensor(shape, seed: 1)
            let op = Transpose(perm: perm)
            for c in [ctx(batch: shape[0]), ctx2(batch: shape[0])] {
                let y = try op.forward([x], c)[0]
                var ref = Tensor(zeros: perm.map { shape[$0] })
                forEachIndex(shape) { idx in ref.data[flat(perm.map { idx[$0] }, ref.shape)] = x.data[flat(idx, shape)] }
                XCTAssertEqual(y.shape, ref.shape)
                XCTAssertEqual(y.data, ref.data, "perm \(perm) of \(shape)")
            }
            try checkGradient(op, [x])
        }
        // Default: reversed dimensions.
        let x = randomTensor([2, 3, 4], seed: 2)
        XCTAssertEqual(try Transpose(perm: nil).shapes([x.shape], ShapeEnv(batch: 2))[0], [4, 3, 2])
        XCTAssertThrowsError(try Transpose(perm: [0, 0, 1]).shapes([x.shape], ShapeEnv(batch: 2)))
    }

    func testBatchedMatMulBroadcastingAndPromotion() throws {
        for (a, b) in [([2, 3, 4], [2, 4, 5]), ([3, 4], [4, 5]), ([2, 1, 3, 4], [1, 3, 4, 2]), ([4], [2, 4, 3]), ([2, 3, 4], [4]),
                       ([2, 3, 4], [4, 6]), ([1, 3, 4], [2, 4, 5]), ([2, 70, 90], [2, 90, 80]), ([2, 5, 7], [1, 7, 3])]
                as [([Int], [Int])] {
            let (x, w) = (randomTensor(a, seed: 3), randomTensor(b, seed: 4))
            let op = BatchedMatMul()
            // numpy reference: promote, broadcast, multiply.
            let a2 = a.count == 1 ? [1] + a : a, b2 = b.count == 1 ? b + [1] : b
            let (m, k, n) = (a2[a2.count - 2], a2[a2.count - 1], b2[b2.count - 1])
            let batch = try broadcastShapes(Array(a2.dropLast(2)), Array(b2.dropLast(2)))
            var out = batch
            if a.count > 1 { out.append(m) }
            if b.count > 1 { out.append(n) }
            var ref = [Double](repeating: 0, count: batch.product * m * n)
            let pa = [Int](repeating: 1, count: batch.count - (a2.count - 2)) + a2.dropLast(2)
            let pb = [Int](repeating: 1, count: batch.count - (b2.count - 2)) + b2.dropLast(2)
            var item = 0
            forEachIndex(batch) { bi in
                let ia = flat(zip(bi, pa).map { $1 == 1 ? 0 : $0 }, pa), ib = flat(zip(bi, pb).map { $1 == 1 ? 0 : $0 }, pb)
                for i in 0..<m { for j in 0..<n { for p in 0..<k {
                    ref[(item * m + i) * n + j] += Double(x.data[(ia * m + i) * k + p]) * Double(w.data[(ib * k + p) * n + j])
                } } }
                item += 1
            }
            for c in [ctx(batch: 1), ctx2(batch: 1)] {
                let y = try op.forward([x, w], c)[0]
                assertClose(y, Tensor(shape: out, data: ref.map { Float($0) }), 1e-5, "MatMul \(a) x \(b)")
            }
            try checkGradient(op, [x, w], tolerance: 5e-3)
        }
        XCTAssertThrowsError(try BatchedMatMul().shapes([[2, 3], [4, 5]], ShapeEnv(batch: 2)))
        XCTAssertThrowsError(try BatchedMatMul().shapes([[2, 3, 4], [3, 4, 5]], ShapeEnv(batch: 2)))
    }

    func einsum(_ eq: String, _ n: Int) throws -> Einsum {
        try Einsum(equation: eq, inputs: n, fail: { fail(.unsupported, $0) })
    }

    func testEinsumBatchedMatrixProducts() throws {
        // (equation, operand shapes): the non-local block's two products (softmax and dot-product
        // versions), attention-like ones, transposed operands and outputs, indices needing permutes.
        let cases: [(String, [[Int]])] = [
            ("niab,nicd->nabcd", [[2, 3, 4, 5], [2, 3, 4, 5]]),
            ("nabcd,nicd->niab", [[2, 4, 5, 4, 5], [2, 3, 4, 5]]),
            ("nihw,njhw->nij", [[2, 3, 4, 5], [2, 6, 4, 5]]),
            ("nij,nihw->njhw", [[2, 3, 6], [2, 3, 4, 5]]),
            ("bij,bjk->bik", [[3, 4, 5], [3, 5, 6]]),
            ("bik,bjk->bij", [[3, 4, 5], [3, 6, 5]]),
            ("ij,jk->ki", [[4, 5], [5, 6]]),
            ("abc,cd->dba", [[2, 3, 4], [4, 5]]),
            ("bhid,bhjd->bhij", [[2, 2, 3, 4], [2, 2, 5, 4]]),
            ("ibj,jbk->bik", [[3, 2, 4], [4, 2, 5]]),
            ("ij,jk", [[3, 4], [4, 5]]),
            ("nchw->nhwc", [[2, 3, 4, 5]]),
            ("niab,nicd->nabcd", [[1, 16, 9, 9], [1, 16, 9, 9]]),   // 81 x 81 x 16: multi-threaded GEMM
            ("nabcd,nicd->niab", [[1, 9, 9, 9, 9], [1, 32, 9, 9]]),
        ]
        for (eq, shapes) in cases {
            let op = try einsum(eq, shapes.count)
            let xs = shapes.enumerated().map { randomTensor($1, seed: 10 + UInt64($0)) }
            let full = eq.contains("->") ? eq : eq + "->ik"
            let ref = naiveEinsum(full, xs)
            for c in [ctx(batch: shapes[0][0]), ctx2(batch: shapes[0][0])] {
                assertClose(try op.forward(xs, c)[0], ref, 1e-5, eq)
            }
            try checkGradient(op, xs, tolerance: 5e-3)
        }
    }

    func testEinsumRejectsWhatItCannotRunNamingTheNode() throws {
        for (eq, n, what) in [("...ij,...jk->...ik", 2, "ellipsis"), ("ii->i", 1, "repeated"), ("ij,k->i", 2, "summed"),
                              ("ij,jk,kl->il", 3, "operands"), ("ij->i", 1, "permutation")] {
            let node = RawNode(index: 4, opType: "Einsum", name: "attn", domain: "", inputs: (0..<n).map { "x\($0)" },
                               outputs: ["y"], attributes: ["equation": .string(eq)])
            XCTAssertThrowsError(try GraphBuilder.makeOp(node, Attrs(node: node, opset: 13), Array(repeating: nil, count: n),
                                                         opset: 13, bnSlot: 0)) { e in
                let msg = String(describing: e)
                XCTAssertTrue(msg.contains("Einsum 'attn'") && msg.contains(what), msg)
            }
        }
        // Sizes that disagree fail at shape inference.
        XCTAssertThrowsError(try einsum("ij,jk->ik", 2).shapes([[2, 3], [4, 5]], ShapeEnv(batch: 2)))
    }

    func testSoftmaxAxesAndLegacyCoercion() throws {
        func reference(_ x: Tensor, outer: Int, len: Int, inner: Int) -> Tensor {
            var y = x
            for o in 0..<outer { for i in 0..<inner {
                let idx = (0..<len).map { o * len * inner + $0 * inner + i }
                let m = idx.map { Double(x.data[$0]) }.max()!
                let s = idx.reduce(0.0) { $0 + Foundation_exp(Double(x.data[$1]) - m) }
                for j in idx { y.data[j] = Float(Foundation_exp(Double(x.data[j]) - m) / s) }
            } }
            return y
        }
        // (shape, axis, legacy, outer, len, inner)
        for (shape, axis, legacy, o, l, i) in [([2, 5], -1, false, 2, 5, 1), ([2, 3, 4, 5], 1, false, 2, 3, 20),
                                               ([2, 3, 4], 1, true, 2, 12, 1), ([2, 3, 4], -1, false, 6, 4, 1),
                                               ([1, 3, 400], 2, false, 3, 400, 1), ([2, 3, 4, 5], 2, true, 6, 20, 1),
                                               ([2, 17], 1, false, 2, 17, 1)] as [([Int], Int, Bool, Int, Int, Int)] {
            let x = randomTensor(shape, seed: 20, scale: 4)
            let op = Softmax(axis: axis, legacy: legacy)
            for c in [ctx(batch: shape[0]), ctx2(batch: shape[0])] {
                assertClose(try op.forward([x], c)[0], reference(x, outer: o, len: l, inner: i), 2e-6, "softmax \(shape) axis \(axis)")
            }
            try checkGradient(op, [x], tolerance: 1e-2, h: 1e-3)
        }
        // Extreme logits stay finite and sum to one.
        let big = Tensor(shape: [1, 4], data: [1000, -1000, 999, 0])
        let y = try Softmax(axis: -1, legacy: false).forward([big], ctx(batch: 1))[0]
        XCTAssertEqual(y.data.reduce(0, +), 1, accuracy: 1e-6)
        XCTAssertEqual(y.data[0], Float(1 / (1 + Foundation_exp(-1))), accuracy: 1e-6)
    }

    func testMulDivAddSubFastPathsAndBroadcasts() throws {
        let a = randomTensor([2, 3, 4, 5], seed: 30)
        let scalarB = Tensor(shape: [], data: [1.7])
        let scalarA = Tensor(shape: [1], data: [1.3])  // (checkGradient reads the batch from the first input's shape)
        let same = randomTensor([2, 3, 4, 5], seed: 31).withOffset(3)
        let channel = randomTensor([1, 3, 1, 1], seed: 32).withOffset(3)
        for kind in [Binary.Kind.add, .sub, .mul, .div] {
            let op = Binary(kind: kind)
            func f(_ x: Float, _ y: Float) -> Float {
                switch kind { case .add: return x + y; case .sub: return x - y; case .mul: return x * y; case .div: return x / y }
            }
            for (lhs, rhs) in [(a, scalarB), (scalarA, same), (a, same), (a, channel), (channel, a.withOffset(3))] {
                let out = try broadcastShapes(lhs.shape, rhs.shape)
                var ref = Tensor(zeros: out)
                let pl = [Int](repeating: 1, count: out.count - lhs.rank) + lhs.shape
                let pr = [Int](repeating: 1, count: out.count - rhs.rank) + rhs.shape
                forEachIndex(out) { idx in
                    let l = lhs.data[flat(zip(idx, pl).map { $1 == 1 ? 0 : $0 }, pl)]
                    let r = rhs.data[flat(zip(idx, pr).map { $1 == 1 ? 0 : $0 }, pr)]
                    ref.data[flat(idx, out)] = f(l, r)
                }
                let y = try op.forward([lhs, rhs], ctx(batch: 2))[0]
                XCTAssertEqual(y.shape, out)
                XCTAssertEqual(y.data, ref.data, "\(kind) \(lhs.shape) \(rhs.shape)")
                // In place (the executor's path when it owns the first input) gives the same values.
                var inPlace = Tensor(shape: lhs.shape, data: lhs.data.map { $0 })
                if try op.forwardInPlace(&inPlace, [rhs], ctx(batch: 2)) { XCTAssertEqual(inPlace.data, ref.data) }
                try checkGradient(op, [lhs, rhs], tolerance: 5e-3)
                // A constant operand: only the other's gradient.
                try checkGradient(op, [lhs, rhs], needs: [true, false], tolerance: 5e-3)
                try checkGradient(op, [lhs, rhs], needs: [false, true], tolerance: 5e-3)
            }
        }
    }

    func testGroupedAndDepthwiseConvolution() throws {
        // (channels in, out, group, kernel, stride, pad): ResNeXt-like (2 and 4 channels per group),
        // depthwise (group = C), depthwise with a channel multiplier.
        for (c, m, group, k, s, p) in [(64, 64, 32, 3, 1, 1), (64, 64, 32, 3, 2, 1), (32, 64, 8, 3, 1, 1), (16, 16, 16, 3, 1, 1),
                                       (16, 32, 16, 3, 2, 1), (12, 12, 12, 5, 1, 2), (8, 8, 4, 1, 1, 0)] {
            let x = randomTensor([2, c, 9, 8], seed: 40)
            let w = randomTensor([m, c / group, k, k], seed: 41, scale: 0.3)
            let b = randomTensor([m], seed: 42)
            let conv = try Conv(rawNode("Conv", ["strides": .ints([s, s]), "pads": .ints([p, p, p, p]), "group": .int(group)]),
                                weight: raw(w), bias: raw(b))
            let ref = naiveGroupedConv(x, w, b.data, stride: s, pad: p, group: group)
            for cx in [ctx(batch: 2), ctx2(batch: 2)] {
                assertClose(try conv.forward([x], cx)[0], ref, 1e-5, "group \(group) c \(c) m \(m) k \(k) s \(s)")
            }
            try checkGradient(conv, [x], tolerance: 5e-3)
        }
    }

    func testAveragePoolPaddingAndCeilModes() throws {
        let x = randomTensor([2, 3, 7, 8], seed: 50)
        // (kernel, stride, pad, count_include_pad, ceil_mode)
        for (k, s, p, include, ceil) in [(3, 2, 1, false, false), (3, 2, 1, true, false), (3, 2, 1, true, true), (3, 2, 1, false, true),
                                         (2, 2, 0, false, true), (7, 7, 0, false, false), (3, 1, 1, true, false)] {
            let op = try Pool(rawNode("AveragePool", ["kernel_shape": .ints([k, k]), "strides": .ints([s, s]),
                                                      "pads": .ints([p, p, p, p]), "count_include_pad": .int(include ? 1 : 0),
                                                      "ceil_mode": .int(ceil ? 1 : 0)]), kind: .average)
            // PyTorch's rule (which ONNX Runtime follows): the window clipped to the padded input
            // for the count with padding, to the input without; a last window must start inside
            // the input or the left padding.
            func outSize(_ n: Int) -> Int {
                let span = n + 2 * p - k
                var o = (ceil ? (span + s - 1) / s : span / s) + 1
                if ceil && (o - 1) * s >= n + p { o -= 1 }
                return o
            }
            let (oh, ow) = (outSize(7), outSize(8))
            var ref = Tensor(zeros: [2, 3, oh, ow])
            for plane in 0..<6 { for i in 0..<oh { for j in 0..<ow {
                let (h0, w0) = (i * s - p, j * s - p)
                let (h1, w1) = (min(h0 + k, 7 + p), min(w0 + k, 8 + p))
                var sum: Float = 0, count = 0
                for r in max(h0, 0)..<min(h1, 7) { for q in max(w0, 0)..<min(w1, 8) { sum += x.data[plane * 56 + r * 8 + q]; count += 1 } }
                let div = include ? (h1 - h0) * (w1 - w0) : count
                ref.data[(plane * oh + i) * ow + j] = sum / Float(div)
            } } }
            assertClose(try op.forward([x], ctx(batch: 2))[0], ref, 1e-6, "avgpool k\(k) s\(s) p\(p) include \(include) ceil \(ceil)")
            try checkGradient(op, [x], tolerance: 5e-3)
        }
        try checkGradient(GlobalAveragePool(), [x], tolerance: 5e-3)
    }

    func testConcatPadReshapeDropoutForwardAndGradients() throws {
        let a = randomTensor([2, 3, 4, 5], seed: 60), b = randomTensor([2, 2, 4, 5], seed: 61)
        let y = try Concat(axis: 1).forward([a, b], ctx(batch: 2))[0]
        XCTAssertEqual(y.shape, [2, 5, 4, 5])
        forEachIndex(y.shape) { idx in
            let v = idx[1] < 3 ? a.data[flat(idx, a.shape)] : b.data[flat([idx[0], idx[1] - 3, idx[2], idx[3]], b.shape)]
            XCTAssertEqual(y.data[flat(idx, y.shape)], v)
        }
        try checkGradient(Concat(axis: 1), [a, b], tolerance: 5e-3)
        try checkGradient(Concat(axis: -1), [a, randomTensor([2, 3, 4, 2], seed: 62)], tolerance: 5e-3)
        // Pad: constant, reflect, edge against index formulas.
        for mode in [Pad.Mode.constant, .reflect, .edge] {
            let op = Pad(mode: mode, pads: [0, 0, 1, 2, 0, 0, 2, 1], value: 0.25)
            let y = try op.forward([a], ctx(batch: 2))[0]
            XCTAssertEqual(y.shape, [2, 3, 7, 8])
            forEachIndex(y.shape) { idx in
                func src(_ o: Int, _ begin: Int, _ n: Int) -> Int? {
                    let i = o - begin
                    if i >= 0 && i < n { return i }
                    switch mode {
                    case .constant: return nil
                    case .edge: return min(max(i, 0), n - 1)
                    case .reflect: return i < 0 ? -i : 2 * (n - 1) - i
                    }
                }
                let (r, q) = (src(idx[2], 1, 4), src(idx[3], 2, 5))
                let v = r.flatMap { r in q.map { q in a.data[flat([idx[0], idx[1], r, q], a.shape)] } } ?? 0.25
                XCTAssertEqual(y.data[flat(idx, y.shape)], v, "\(mode) \(idx)")
            }
            try checkGradient(op, [a], tolerance: 5e-3)
        }
        // Reshape: 0 copies a dimension, -1 is inferred, allowzero keeps a literal 0.
        XCTAssertEqual(try Reshape(target: [0, -1, 5], allowZero: false).shapes([a.shape], ShapeEnv(batch: 2))[0], [2, 12, 5])
        XCTAssertEqual(try Reshape(target: [0, 0, -1], allowZero: false).shapes([a.shape], ShapeEnv(batch: 2))[0], [2, 3, 20])
        XCTAssertEqual(try Reshape(target: [0, 4], allowZero: true).shapes([[0, 3]], ShapeEnv(batch: 0))[0], [0, 4])
        XCTAssertThrowsError(try Reshape(target: [0, -1], allowZero: true).shapes([a.shape], ShapeEnv(batch: 2)))
        XCTAssertThrowsError(try Reshape(target: [7, -1], allowZero: false).shapes([a.shape], ShapeEnv(batch: 2)))
        try checkGradient(Reshape(target: [0, -1, 5], allowZero: false), [a], tolerance: 5e-3)
        // Dropout at inference: the identity; training mode is refused naming the node.
        XCTAssertEqual(try Dropout().forward([a], ctx(batch: 2))[0].data, a.data)
        try checkGradient(Dropout(), [a], tolerance: 5e-3)
        let node = RawNode(index: 2, opType: "Dropout", name: "drop", domain: "", inputs: ["x", "r", "t"], outputs: ["y"],
                           attributes: [:])
        let yes = RawTensor(name: "t", dims: [], floats: [1], ints: [1])
        XCTAssertThrowsError(try GraphBuilder.makeOp(node, Attrs(node: node, opset: 13), [nil, nil, yes], opset: 13, bnSlot: 0)) {
            XCTAssertTrue(String(describing: $0).contains("Dropout 'drop'"), String(describing: $0))
        }
        let no = RawTensor(name: "t", dims: [], floats: [0], ints: [0])
        XCTAssertNoThrow(try GraphBuilder.makeOp(node, Attrs(node: node, opset: 13), [nil, nil, no], opset: 13, bnSlot: 0))
    }

    /// A sample's result does not depend on its batch-mates or the thread count.
    func testResultsIndependentOfBatchAndThreads() throws {
        let ops: [(any Op, [[Int]])] = [
            (try einsum("niab,nicd->nabcd", 2), [[3, 8, 12, 12], [3, 8, 12, 12]]),
            (try einsum("nabcd,nicd->niab", 2), [[3, 12, 12, 12, 12], [3, 16, 12, 12]]),
            (BatchedMatMul(), [[3, 150, 70], [3, 70, 160]]),
            (Softmax(axis: -1, legacy: false), [[3, 10, 144]]),
            (Transpose(perm: [0, 2, 3, 1]), [[3, 5, 12, 12]]),
        ]
        for (op, shapes) in ops {
            let xs = shapes.enumerated().map { randomTensor($1, seed: 70 + UInt64($0)) }
            let full = try op.forward(xs, ctx2(batch: 3))[0]
            let one = xs.map { Tensor(shape: [1] + $0.shape.dropFirst(), data: Array($0.data[..<($0.count / 3)])) }
            let single = try op.forward(one, ctx(batch: 1))[0]
            XCTAssertEqual(Array(full.data[..<single.count]), single.data, "\(op.type): sample 0 alone vs in a batch of 3 on 2 threads")
        }
    }

    /// Whole models with the new ops (Tests/Fixtures/model_ops, exported from PyTorch by
    /// make_fixtures.py): after the first call with a batch size, predict and gradient take every
    /// buffer from the session's pool (Einsum's packed operands and transposes, Softmax, Transpose,
    /// MatMul included); the plan's memory estimate bounds the pool's real footprint; a sample's
    /// logits and gradient do not depend on its batch-mates or the thread count.
    func testWholeModelsPoolTheirBuffersAndStayBatchIndependent() throws {
        let before = abk_get_threads()
        defer { abk_set_threads(before) }
        for name in ["denoise_small", "tokens_small"] {
            let model = try Model.load(path: repoRoot + "/Tests/Fixtures/model_ops/\(name).onnx")
            let x = randomTensor([3, 3, 8, 8], seed: 80).data.map { ($0 + 1) / 2 }
            let labels: [Int64] = [1, 4, 7]
            var reference: [Float]? = nil, referenceGrad: [Float]? = nil
            for threads in [1, 2] {
                abk_set_threads(Int32(threads))
                let s = Session(model: model)
                let y = try s.predict(x, batch: 3, domain: 0)
                let g = try s.gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0).gradient
                let warm = s.bufferAllocations
                for _ in 0..<2 {
                    XCTAssertEqual(try s.predict(x, batch: 3, domain: 0), y)
                    XCTAssertEqual(try s.gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0).gradient, g)
                }
                XCTAssertEqual(s.bufferAllocations, warm, "\(name): allocated after warm-up (threads \(threads))")
                if let reference { XCTAssertEqual(y, reference, "\(name): logits depend on the thread count") }
                if let referenceGrad { XCTAssertEqual(g, referenceGrad, "\(name): gradient depends on the thread count") }
                reference = y; referenceGrad = g
                // Sample 1 alone.
                let one = Array(x[(3 * 64)..<(6 * 64)])
                XCTAssertEqual(try s.predict(one, batch: 1, domain: 0), Array(y[(y.count / 3)..<(2 * y.count / 3)]))
                XCTAssertEqual(try s.gradient(one, batch: 1, labels: [4], loss: .crossEntropy, domain: 0).gradient,
                               Array(g[(3 * 64)..<(6 * 64)]))
                for kind in [CallKind.predict, .gradient] {
                    let fresh = Session(model: model)
                    fresh.resetPeakMemory()
                    if kind == .predict { _ = try fresh.predict(x, batch: 3, domain: 0) } else {
                        _ = try fresh.gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0)
                    }
                    let real = fresh.peakPoolFootprint * 4
                    XCTAssertGreaterThanOrEqual(model.activationBytes(batch: 3, kind: kind, threads: threads), real,
                                                "\(name) \(kind): estimate below the pool's footprint")
                }
            }
        }
    }

    /// Shape arithmetic folded at load (ConstantFolding) against hand-computed results.
    func testConstantFoldingOfShapeArithmetic() throws {
        func ints(_ v: [Int], _ dims: [Int]? = nil) -> RawTensor {
            RawTensor(name: "", dims: dims ?? [v.count], floats: v.map { Float($0) }, ints: v.map { Int64($0) })
        }
        func fold(_ op: String, _ ins: [RawTensor?], _ attrs: [String: Attribute] = [:], opset: Int = 13) throws -> RawTensor {
            let node = RawNode(index: 0, opType: op, name: "f", domain: "", inputs: ins.map { _ in "i" }, outputs: ["o"], attributes: attrs)
            return try ConstantFolding.fold(node, Attrs(node: node, opset: opset), ins, opset: opset)
        }
        let m = ints(Array(0..<12), [3, 4])
        // PyTorch's pads: [0, 0, 1, 2] reversed in pairs by Slice with step -1.
        XCTAssertEqual(try fold("Slice", [ints([1, 2, 3, 4, 5, 6], [3, 2]), ints([-1]), ints([Int(Int64.min)]), ints([0]), ints([-1])]).ints,
                       [5, 6, 3, 4, 1, 2])
        XCTAssertEqual(try fold("Slice", [m, ints([1, 1]), ints([3, 100]), ints([0, 1]), ints([1, 2])]).ints, [5, 7, 9, 11])
        XCTAssertEqual(try fold("Gather", [m, ints([2, 0], [2])], ["axis": .int(1)]).ints, [2, 0, 6, 4, 10, 8])
        XCTAssertEqual(try fold("Transpose", [m], ["perm": .ints([1, 0])]).ints, [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11])
        XCTAssertEqual(try fold("Unsqueeze", [ints([7]), ints([0])]).dims, [1, 1])
        XCTAssertEqual(try fold("Unsqueeze", [ints([7])], ["axes": .ints([1])], opset: 11).dims, [1, 1])
        XCTAssertEqual(try fold("Squeeze", [ints([7], [1, 1]), ints([1])]).dims, [1])
        XCTAssertEqual(try fold("Concat", [ints([1, 2]), ints([3])], ["axis": .int(0)]).ints, [1, 2, 3])
        XCTAssertEqual(try fold("Mul", [ints([3, 4]), ints([5])]).ints, [15, 20])
        XCTAssertEqual(try fold("Div", [ints([-7, 7]), ints([2])]).ints, [-3, 3])
        XCTAssertEqual(try fold("Cast", [RawTensor(name: "", dims: [2], floats: [2.7, -2.7], ints: nil)], ["to": .int(7)]).ints, [2, -2])
        XCTAssertEqual(try fold("ConstantOfShape", [ints([2, 3])]).floats, [Float](repeating: 0, count: 6))
        XCTAssertEqual(try fold("Reshape", [m, ints([-1, 6])]).dims, [2, 6])
        XCTAssertThrowsError(try fold("Div", [ints([1]), ints([0])]))
        XCTAssertThrowsError(try fold("Gather", [m, ints([5])]))
        // A folded Shape's batch placeholder is the input's first dimension in Reshape.
        XCTAssertEqual(try Reshape(target: [Reshape.batchSentinel, -1], allowZero: false).shapes([[5, 3, 4]], ShapeEnv(batch: 5))[0], [5, 12])
    }
}
