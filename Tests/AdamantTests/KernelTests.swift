import XCTest
import CKernels
@testable import Adamant

/// adamant's own kernels against plain references, once per instruction-set path this machine has:
/// the GEMM (every tile shape, multi-sample columns, the epilogue), and every convolution algorithm
/// (Winograd, direct 3x3, im2col, pointwise) with its input gradient.
final class KernelTests: XCTestCase {
    /// C = relu?((A . (bscale . B)) * scale + bias + R) in double precision, B's elements counted only
    /// where `bmask` (laid out like B) is > 0.
    func referenceGEMM(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, per: Int, bscale: [Float]?, scale: [Float]?,
                       bias: [Float]?, res: [Float]?, relu: Bool, bmask: [Float]? = nil) -> [Float] {
        // B and C are stored per sample: [samples][k or m][per].
        var c = [Float](repeating: 0, count: m * n)
        for j in 0..<n {
            let (s, pos) = (j / per, j % per)
            for i in 0..<m {
                var acc = 0.0
                for p in 0..<k {
                    let at = (s * k + p) * per + pos
                    if let bmask, !(bmask[at] > 0) { continue }
                    acc += Double(a[i * k + p]) * Double(b[at]) * Double(bscale?[p] ?? 1)
                }
                var v = acc * Double(scale?[i] ?? 1) + Double(bias?[i] ?? 0)
                let at = (s * m + i) * per + pos
                if let res { v += Double(res[at]) }
                c[at] = Float(relu ? max(v, 0) : v)
            }
        }
        return c
    }

    /// Runs akn_gemm on the packed A `pa`, or with `transposedFrom`, akn_gemm_transposed on those
    /// packed panels of W (k x m, A = W^T).
    func runGEMM(_ pa: [Float], _ b: [Float], m: Int, n: Int, k: Int, per: Int, bscale: [Float]?, scale: [Float]?,
                 bias: [Float]?, res: [Float]?, relu: Bool, split: (rows: [Int], cols: [Int]),
                 transposedFrom pw: [Float]? = nil, bmask: [Float]? = nil) -> [Float] {
        var c = [Float](repeating: .nan, count: m * n)
        withOptionalBuffer(bmask) { bm in b.withUnsafeBufferPointer { bp in
            c.withUnsafeMutableBufferPointer { cp in
                withOptionalBuffer(bscale) { bs in withOptionalBuffer(scale) { sc in withOptionalBuffer(bias) { bi in
                    withOptionalBuffer(res) { rp in
                        var io = akn_gemm_cols()
                        io.per = Int32(per)
                        io.b = bp.baseAddress; io.ldb = per; io.b_sample = k * per
                        io.c = cp.baseAddress; io.ldc = per; io.c_sample = m * per
                        io.r = rp; io.ldr = per; io.r_sample = m * per
                        io.bscale = bs; io.scale = sc; io.bias = bi; io.relu = relu ? 1 : 0
                        io.bmask = bm
                        var scratch = [Float](repeating: 0, count: akn_gemm_scratch_size(Int32(k), Int32(n)))
                        // Rows and columns in the given pieces (as threads would), in any order.
                        for (ri, r0) in split.rows.enumerated().reversed() {
                            let r1 = ri + 1 < split.rows.count ? split.rows[ri + 1] : m
                            for (ci, c0) in split.cols.enumerated() {
                                let c1 = ci + 1 < split.cols.count ? split.cols[ci + 1] : n
                                if let pw {
                                    akn_gemm_transposed(Int32(m), Int32(n), Int32(k), pw, &io, Int32(r0), Int32(r1), Int32(c0),
                                                        Int32(c1), &scratch)
                                } else {
                                    akn_gemm(Int32(m), Int32(n), Int32(k), pa, &io, Int32(r0), Int32(r1), Int32(c0), Int32(c1), &scratch)
                                }
                            }
                        }
                    }
                } } }
            }
        } }
        return c
    }

    /// Layers long enough to run their loops in several ranges per thread (Parallel.split): forward
    /// and input gradient (fused BN scale, residual and ReLU) bit for bit the same for every number
    /// of ranges and on one thread -- on every instruction-set path. The shapes: a 1x1 layer (GEMM,
    /// B packed once and shared), an F(4x4) and an F(2x2) Winograd layer, a phased stem and a
    /// 3x3/2 im2col layer (col2im).
    func testRangesPerThreadNeverChangeAResult() throws {
        let cases: [(Int, Int, Int, Int, Int, Int, ConvAlgorithm)] = [
            (256, 256, 14, 14, 1, 1, .pointwise), (64, 64, 28, 28, 3, 1, .winograd), (128, 128, 14, 14, 3, 1, .winograd2),
            (3, 64, 64, 64, 7, 2, .phased), (64, 128, 28, 28, 3, 2, .im2col),
            // one column chunk or less (B packed by input channels on each thread): a 3x3 layer on a
            // 2x2 map (4 columns: the few-column kernel on B packed once) and on a 4x4 map
            (128, 128, 2, 2, 3, 1, .im2col), (64, 96, 4, 4, 3, 1, .im2col),
        ]
        let before = Parallel.split
        defer { Parallel.split = before }
        try forEachISA { isa in
            for (i, (c, m, h, w, k, stride, expected)) in cases.enumerated() {
                let what = "\(isa.name) \(expected) c\(c) m\(m) \(h)x\(w) k\(k)/\(stride)"
                let pad = k / 2
                let x = randomTensor([1, c, h, w], seed: UInt64(150 + i))
                let attrs: [String: Attribute] = ["pads": .ints([pad, pad, pad, pad]), "strides": .ints([stride, stride])]
                var conv = try Conv(rawNode("Conv", attrs), weight: raw(randomTensor([m, c, k, k], seed: UInt64(160 + i), scale: 0.1)),
                                    bias: raw(randomTensor([m], seed: UInt64(170 + i))))
                XCTAssertEqual(conv.algorithm(h, w), expected, what)
                conv.scale = randomTensor([m], seed: 180).data.map { $0 + 1.5 }
                conv.fusedResidual = true
                conv.fusedRelu = true
                let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1)
                let r = randomTensor([1, m, oh, ow], seed: 181), g = randomTensor([1, m, oh, ow], seed: 182)
                func run(threads: Int, split: Int) throws -> ([Float], [Float]) {
                    Parallel.split = split
                    let cx = ExecContext(bn: [], declaredBatch: nil, batch: 1, threads: threads)
                    let y = try conv.forward([x, r], cx)[0]
                    return (y.data, try conv.backward([x, r], [y], [g], needs: [true, false], cx)[0]!.data)
                }
                let (y1, dx1) = try run(threads: 1, split: 1)
                XCTAssertGreaterThan(dx1.map { abs($0) }.max()!, 0, what)
                for split in [1, 2, 4, 7] {
                    let (y, dx) = try run(threads: 2, split: split)
                    XCTAssertTrue(y == y1, "\(what): forward with \(split) ranges a thread differs")
                    XCTAssertTrue(dx == dx1, "\(what): input gradient with \(split) ranges a thread differs")
                }
            }
        }
    }

    func testGEMMMatchesReferenceAndNeverDependsOnTheSplit() throws {
        // (m, n, k, per): edges of the 6/12-row and 16/32-column tiles, samples narrower than a
        // panel, k = 0 and 1, a wide one, and narrow ones (split: a last block of 4 columns).
        let cases = [(1, 1, 1, 1), (5, 7, 3, 7), (6, 16, 8, 16), (12, 32, 9, 32), (13, 33, 17, 11), (25, 70, 40, 5),
                     (7, 130, 64, 65), (30, 100, 0, 50), (64, 196, 147, 49), (10, 40, 33, 1),
                     // blocks of up to 256 columns (by k) packed 64 at a time: several blocks and a last
                     // partial one, samples across sub-blocks, and a one-column tail after a block's tiles
                     (20, 588, 300, 98), (13, 289, 1100, 289), (8, 514, 200, 257),
                     // one- and two-column tails over more rows than one group of the one-column kernel (48)
                     (100, 49, 70, 49), (61, 98, 30, 49),
                     // three- and four-column tails (a 14x14 map's 196 = 12 x 16 + 4)
                     (50, 196, 40, 196), (100, 52, 70, 52), (61, 35, 20, 35),
                     // five- to eight-column tails, in half tiles (a 7x7 map at batch 8: 392 = 24 x 16 + 8)
                     (61, 56, 30, 56), (100, 392, 70, 49), (25, 21, 33, 7),
                     // at most 4 columns: one at a time, rows in the lanes (a dense layer at batch 1, a 2x2 map)
                     (100, 1, 1024, 1), (53, 4, 9, 4), (13, 3, 17, 1), (49, 36, 5, 2),
                     // two to four columns over several groups of rows and a partial last one, k = 1
                     // (only the last step) and a long k; an A of more than 1 MB (prefetched)
                     (100, 4, 1024, 4), (77, 3, 64, 1), (31, 2, 1, 2), (128, 4, 1152, 4), (19, 3, 2, 3),
                     (300, 2, 1024, 2),
                     // one position a sample (a dense layer's batch): 16-sample panels packed by 8 x 8
                     // transposes, k not a multiple of 8, a partial last panel
                     (100, 128, 1024, 1), (10, 37, 21, 1)]
        try forEachISA { isa in
            for (ci, (m, n, k, per)) in cases.enumerated() {
                let a = randomTensor([m, max(k, 1)], seed: UInt64(10 + ci)).data
                let aa = k == 0 ? [] : Array(a[0..<(m * k)])
                let b = randomTensor([max(1, n * k)], seed: UInt64(20 + ci)).data
                let res = randomTensor([m * n], seed: UInt64(30 + ci)).data
                let scale = randomTensor([m], seed: 40).data.map { $0 + 1.5 }
                let bias = randomTensor([m], seed: 41).data
                let bscale = randomTensor([max(k, 1)], seed: 42).data
                // A ReLU's mask laid out like B (the gradient path): about half of it <= 0.
                let bmask = randomTensor([max(1, n * k)], seed: 43).data
                var pa = [Float](repeating: 0, count: max(1, akn_gemm_packed_a_size(Int32(m), Int32(k))))
                akn_gemm_pack_a(aa, k, 0, Int32(m), Int32(k), &pa)
                for (epi, relu) in [(false, false), (true, true)] {
                    let bm = epi ? bmask : nil
                    let ref = referenceGEMM(aa, b, m: m, n: n, k: k, per: per, bscale: epi ? bscale : nil, scale: epi ? scale : nil,
                                            bias: epi ? bias : nil, res: epi ? res : nil, relu: relu, bmask: bm)
                    let whole = runGEMM(pa, b, m: m, n: n, k: k, per: per, bscale: epi ? bscale : nil, scale: epi ? scale : nil,
                                        bias: epi ? bias : nil, res: epi ? res : nil, relu: relu, split: ([0], [0]), bmask: bm)
                    let err = zip(whole, ref).map { abs($0 - $1) }.max() ?? 0
                    XCTAssertLessThan(err, 1e-4 * Float(max(1, k)), "\(isa.name) m\(m) n\(n) k\(k) per\(per)")
                    // Any split into row blocks (multiples of 6) and column blocks (multiples of 16) is
                    // bit-identical to one call.
                    let rows = stride(from: 0, to: m, by: 6).map { $0 }, cols = stride(from: 0, to: n, by: 16).map { $0 }
                    let split = runGEMM(pa, b, m: m, n: n, k: k, per: per, bscale: epi ? bscale : nil, scale: epi ? scale : nil,
                                        bias: epi ? bias : nil, res: epi ? res : nil, relu: relu, split: (rows, cols), bmask: bm)
                    XCTAssertTrue(split == whole, "\(isa.name) m\(m) n\(n) k\(k): the split changed the result")
                    // The same A read as the transpose of W = A^T's packed panels (the input-gradient
                    // path): bit-identical, whole and split, with the panels followed by exactly the
                    // documented slack (NaN, which must never reach a stored element).
                    var pw = [Float](repeating: 0, count: max(1, akn_gemm_packed_a_size(Int32(k), Int32(m))))
                    if k > 0 { akn_gemm_pack_a(aa, k, 1, Int32(k), Int32(m), &pw) }
                    pw += [Float](repeating: .nan, count: AKN_GEMM_SLACK)
                    for sp in [([0], [0]), (rows, cols)] {
                        let t = runGEMM(pa, b, m: m, n: n, k: k, per: per, bscale: epi ? bscale : nil, scale: epi ? scale : nil,
                                        bias: epi ? bias : nil, res: epi ? res : nil, relu: relu, split: sp, transposedFrom: pw,
                                        bmask: bm)
                        XCTAssertTrue(t == whole, "\(isa.name) m\(m) n\(n) k\(k): transposed read differs")
                    }
                    // B packed whole, in column pieces of 64 or in row pieces of 6 (as threads would), then
                    // shared: bit-identical, for A packed and A read transposed.
                    for (pw_, byRows) in [(nil, false), (pw, false), (nil, true), (pw, true)] {
                        var pb = [Float](repeating: .nan, count: akn_gemm_packed_b_size(Int32(k), Int32(n)))
                        var c = [Float](repeating: .nan, count: m * n)
                        withOptionalBuffer(bm) { bmp in b.withUnsafeBufferPointer { bp in c.withUnsafeMutableBufferPointer { cp in
                            withOptionalBuffer(epi ? bscale : nil) { bs in withOptionalBuffer(epi ? scale : nil) { sc in
                                withOptionalBuffer(epi ? bias : nil) { bi in withOptionalBuffer(epi ? res : nil) { rp in
                                    var io = akn_gemm_cols()
                                    io.per = Int32(per)
                                    io.b = bp.baseAddress; io.ldb = per; io.b_sample = k * per
                                    io.c = cp.baseAddress; io.ldc = per; io.c_sample = m * per
                                    io.r = rp; io.ldr = per; io.r_sample = m * per
                                    io.bscale = bs; io.scale = sc; io.bias = bi; io.relu = relu ? 1 : 0
                                    io.bmask = bmp
                                    if byRows {
                                        for p0 in stride(from: 0, to: k, by: 6).reversed() {
                                            akn_gemm_pack_b_rows(&io, Int32(k), Int32(n), Int32(p0), Int32(min(k, p0 + 6)), &pb)
                                        }
                                    } else {
                                        for j0 in stride(from: 0, to: n, by: 64).reversed() {
                                            akn_gemm_pack_b(&io, Int32(k), Int32(n), Int32(j0), Int32(min(n, j0 + 64)), &pb)
                                        }
                                    }
                                    var tile = [Float](repeating: 0, count: 12 * 32 + 16)
                                    for (ri, r0) in rows.enumerated() {
                                        let r1 = ri + 1 < rows.count ? rows[ri + 1] : m
                                        akn_gemm_prepacked(Int32(m), Int32(n), Int32(k), pw_ ?? pa, pw_ == nil ? 0 : 1, pb, &io,
                                                           Int32(r0), Int32(r1), 0, Int32(n), &tile)
                                    }
                                } }
                            } }
                        } } }
                        XCTAssertTrue(c == whole, "\(isa.name) m\(m) n\(n) k\(k): prepacked B differs (transposed \(pw_ != nil), by rows \(byRows))")
                    }
                    // And the gathered W^T panels are A's packed panels.
                    var gathered = [Float](repeating: -1, count: pa.count)
                    if k > 0 { akn_gemm_gather_transposed(pw, Int32(m), Int32(k), 0, Int32(m), &gathered) }
                    XCTAssertTrue(k == 0 || gathered == pa, "\(isa.name) m\(m) k\(k): gathered W^T panels differ")
                }
            }
        }
    }

    /// A convolution's implicit im2col packed by whole input channels (akn_gemm_pack_b_rows, as the
    /// threads of a GEMM whose columns make one chunk share it) is the packing by columns bit for bit,
    /// on every path: 2x2, 4x4 and 7x7 outputs at batch 1 (on avx2 a 2x2 map's panels take one gather
    /// of 8), two samples in one panel, stride 2, a 5x5 window, and pieces of one channel or uneven.
    func testConvPackingByChannelsMatchesByColumns() throws {
        // (c, h, w, k, stride, pad, samples)
        let cases = [(128, 2, 2, 3, 1, 1, 1), (64, 4, 4, 3, 1, 1, 1), (40, 14, 14, 3, 2, 1, 1), (7, 2, 2, 3, 1, 1, 2),
                     (9, 8, 8, 5, 1, 2, 1), (5, 4, 4, 3, 2, 1, 3)]
        try forEachISA { isa in
            for (i, (c, h, w, k, stride, pad, samples)) in cases.enumerated() {
                let what = "\(isa.name) c\(c) \(h)x\(w) k\(k)/\(stride) n\(samples)"
                let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1)
                let (kdim, n, taps) = (c * k * k, samples * oh * ow, k * k)
                let x = randomTensor([samples * c * h * w], seed: UInt64(90 + i)).data
                var geom = akn_conv_b(h: Int32(h), w: Int32(w), ow: Int32(ow), kh: Int32(k), kw: Int32(k), sh: Int32(stride),
                                      sw: Int32(stride), dh: 1, dw: 1, pt: Int32(pad), pl: Int32(pad))
                var byColumns = [Float](repeating: .nan, count: akn_gemm_packed_b_size(Int32(kdim), Int32(n)))
                var byChannels = byColumns
                x.withUnsafeBufferPointer { xp in
                    withUnsafePointer(to: &geom) { gp in
                        var io = akn_gemm_cols()
                        io.per = Int32(oh * ow)
                        io.b = xp.baseAddress; io.ldb = h * w; io.b_sample = c * h * w
                        io.conv = gp
                        akn_gemm_pack_b(&io, Int32(kdim), Int32(n), 0, Int32(n), &byColumns)
                        // pieces of 1, 2, ... channels, in reverse order (as threads finish), past k clamped
                        var bounds = [0], step = 1
                        while bounds.last! < c { bounds.append(min(c, bounds.last! + step)); step += 1 }
                        for j in (0..<(bounds.count - 1)).reversed() {
                            akn_gemm_pack_b_rows(&io, Int32(kdim), Int32(n), Int32(bounds[j] * taps),
                                                 Int32(bounds[j + 1] * taps + (j == bounds.count - 2 ? taps : 0)), &byChannels)
                        }
                        // a piece that is not whole channels packs nothing
                        if taps > 1 {
                            var untouched = [Float](repeating: .nan, count: byColumns.count)
                            akn_gemm_pack_b_rows(&io, Int32(kdim), Int32(n), 1, Int32(taps), &untouched)
                            XCTAssertTrue(untouched.allSatisfy(\.isNaN), what)
                        }
                    }
                }
                XCTAssertTrue(byChannels.map(\.bitPattern) == byColumns.map(\.bitPattern), "\(what): packed by channels differs")
                // zeros in the last panel's lanes past n
                if n % 16 != 0 {
                    let last = (n / 16) * kdim * 16
                    for p in 0..<kdim { for l in (n % 16)..<16 { XCTAssertEqual(byColumns[last + p * 16 + l].bitPattern, 0, what) } }
                }
                // and the packing is the im2col: spot-check column 0 (sample 0, output (0, 0)) and the last
                for j in [0, n - 1] {
                    let (s, pos) = (j / (oh * ow), j % (oh * ow))
                    for p in Swift.stride(from: 0, to: kdim, by: max(1, kdim / 23)) {
                        let (ci, t) = (p / taps, p % taps)
                        let iy = (pos / ow) * stride - pad + t / k, ix = (pos % ow) * stride - pad + t % k
                        let want: Float = iy >= 0 && iy < h && ix >= 0 && ix < w ? x[((s * c + ci) * h + iy) * w + ix] : 0
                        XCTAssertEqual(byColumns[(j / 16) * kdim * 16 + p * 16 + j % 16], want, "\(what) row \(p) column \(j)")
                    }
                }
            }
        }
    }

    func testElementwiseOpsAreTheSameOnEveryPath() throws {
        // x op s and a op b (akn_scalar_op, akn_binary_op: one variant per ISA path) give the bits of
        // the plain scalar formula on every path, for lengths around the vector widths and for
        // special values (signed zeros, infinities, NaN, subnormals).
        let special: [Float] = [0, -0.0, .infinity, -.infinity, .nan, Float.leastNonzeroMagnitude, -1e-40, 3, -2.5, 1e30]
        for n in [0, 1, 7, 8, 15, 16, 17, 33, 100] {
            let a = (0..<n).map { i in i % 3 == 0 ? special[i % special.count] : Float(i) * 0.37 - 5 }
            let b = (0..<n).map { i in i % 4 == 1 ? special[(i + 3) % special.count] : Float(i) * -0.11 + 0.5 }
            for s in [Float(0.247), 0, -.infinity, .nan] {
                let formulas: [(Float, Float) -> Float] = [{ $0 + $1 }, { $0 - $1 }, { $0 * $1 }, { $0 / $1 }, { $1 - $0 }, { $1 / $0 }]
                try forEachISA { isa in
                    for op in 0..<6 {
                        var y = [Float](repeating: 1, count: n)
                        akn_scalar_op(a, s, &y, n, Int32(op))
                        let want = a.map { formulas[op]($0, s) }
                        XCTAssertEqual(y.map(\.bitPattern), want.map(\.bitPattern), "\(isa.name) scalar op \(op) n \(n) s \(s)")
                    }
                    for op in 0..<4 {
                        var y = [Float](repeating: 1, count: n)
                        akn_binary_op(a, b, &y, n, Int32(op))
                        let want = zip(a, b).map { formulas[op]($0, $1) }
                        XCTAssertEqual(y.map(\.bitPattern), want.map(\.bitPattern), "\(isa.name) binary op \(op) n \(n)")
                    }
                }
            }
        }
    }

    /// Direct (loop) convolution in double precision.
    func naiveConv(_ x: Tensor, _ w: Tensor, _ b: [Float]?, stride: Int, pad: Int) -> Tensor {
        let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (m, _, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let oh = (h + 2 * pad - kh) / stride + 1, ow = (wd + 2 * pad - kw) / stride + 1
        var y = Tensor(zeros: [n, m, oh, ow])
        for s in 0..<n { for o in 0..<m { for i in 0..<oh { for j in 0..<ow {
            var acc = Double(b?[o] ?? 0)
            for ci in 0..<c { for ki in 0..<kh { for kj in 0..<kw {
                let ih = i * stride - pad + ki, iw = j * stride - pad + kj
                if ih < 0 || ih >= h || iw < 0 || iw >= wd { continue }
                acc += Double(x.data[((s * c + ci) * h + ih) * wd + iw]) * Double(w.data[((o * c + ci) * kh + ki) * kw + kj])
            } } }
            y.data[((s * m + o) * oh + i) * ow + j] = Float(acc)
        } } } }
        return y
    }

    /// Every algorithm against direct loops (forward), the adjoint identity <conv(x), g> = <x, conv'(g)>
    /// (input gradient), and the fused epilogue (scale, bias, residual, ReLU) against its parts.
    func testEveryConvolutionAlgorithm() throws {
        // (c, m, h, w, k, stride, pad, expected algorithm)
        let cases: [(Int, Int, Int, Int, Int, Int, Int, ConvAlgorithm)] = [
            (64, 70, 26, 29, 3, 1, 1, .winograd), (64, 64, 28, 28, 3, 1, 1, .winograd), (64, 64, 14, 14, 3, 1, 1, .direct3x3),
            // Winograd F(4x4, 3x3) on a row of 133 tiles: the input transform's two width chunks (128 + 5)
            (64, 64, 6, 530, 3, 1, 1, .winograd),
            (5, 13, 7, 5, 3, 1, 1, .direct3x3), (16, 16, 32, 32, 3, 1, 1, .direct3x3), (2, 9, 3, 33, 3, 1, 1, .direct3x3),
            (128, 20, 7, 7, 3, 1, 1, .im2col), (6, 10, 9, 11, 3, 2, 1, .im2col), (3, 8, 15, 15, 7, 2, 3, .im2col),
            (12, 20, 9, 9, 1, 1, 0, .pointwise), (12, 20, 9, 9, 1, 2, 0, .strided1x1),
            // 1x1 layers on maps of 7x7 (output): the input gradient on W^T's own panels
            (40, 30, 7, 7, 1, 1, 0, .pointwise), (24, 36, 13, 14, 1, 2, 0, .strided1x1),
            // strided 1x1: rows subsampled 16 at a time (and the scalar rest), stride 3
            (20, 24, 64, 64, 1, 2, 0, .strided1x1), (8, 12, 57, 57, 1, 2, 0, .strided1x1), (6, 10, 10, 11, 1, 3, 0, .strided1x1),
            // implicit im2col: positions of several samples in one 16-column panel (2x2, 4x4), panels of
            // two 8-wide output rows (stride 1 and 2, padding lanes zeroed), and a kernel of 81 taps (the
            // packing's taps in two blocks)
            // (3x3/1 im2col layers: the input gradient with the flipped weights, but above flippedAdjointMaxFloats)
            (130, 12, 2, 2, 3, 1, 1, .im2col), (32, 40, 8, 8, 3, 2, 1, .im2col), (64, 24, 4, 4, 3, 1, 1, .im2col),
            (128, 129, 2, 2, 3, 1, 1, .im2col), (20, 22, 3, 5, 3, 1, 1, .im2col),
            (16, 16, 16, 16, 3, 2, 1, .im2col), (4, 6, 12, 12, 9, 1, 4, .im2col),
            // panels of 16 columns in one output row (found per panel, not per lane), including both
            // ends of the row and padding rows: a stem's 7x7/2 and a 5x5/1 (5 channels: with fewer,
            // the phased kernel below)
            (5, 8, 64, 64, 7, 2, 3, .im2col), (5, 6, 20, 20, 5, 1, 2, .im2col),
            // the phased kernel (few input channels read in place from stride phases; bit-identical to
            // im2col, checked below): a stem's 7x7/2, a 5x5/1, a 3x3/2 with a 1-column last panel, an
            // even kernel without padding, and output channels past whole 12-row tiles
            (3, 8, 64, 64, 7, 2, 3, .phased), (4, 6, 20, 20, 5, 1, 2, .phased), (1, 16, 33, 33, 3, 2, 1, .phased),
            (2, 7, 18, 40, 4, 1, 0, .phased), (3, 70, 40, 37, 7, 2, 3, .phased),
            // panels straddling two output rows (28- and 12-wide outputs), each row a masked run, and
            // at stride 2 up to four rows (7-, 5- and 4-wide outputs: AKN_RUNS on avx512)
            (6, 8, 56, 56, 3, 2, 1, .im2col), (4, 6, 12, 12, 5, 1, 2, .im2col), (24, 16, 14, 14, 3, 2, 1, .im2col),
            // the channel-blocked direct kernel's shapes (on avx512 and avx2), forward and input gradient
            (32, 32, 16, 16, 3, 1, 1, .direct3x3), (16, 32, 8, 8, 3, 1, 1, .direct3x3),
            // its stride-2 forms (on avx512 and avx2: usesStridedC16), a CIFAR ResNet's downsampling layers (and
            // odd inputs); the 3x3/2 input gradient channel-blocked too where usesStridedC16Adjoint (widths in
            // multiples of 4), else im2col's; the 1x1/2 one strided1x1's
            (16, 32, 32, 32, 3, 2, 1, .im2col), (32, 64, 15, 15, 3, 2, 1, .im2col), (16, 32, 32, 32, 1, 2, 0, .strided1x1),
            (8, 16, 15, 16, 3, 2, 1, .im2col), (48, 16, 8, 12, 3, 2, 1, .im2col),
            (16, 16, 63, 63, 1, 2, 0, .strided1x1),
            // a few-channel stem whose outputs come in blocks of 16 (cifar10_sri_resnet_a's): on avx2
            // its forward channel-blocked too, its input gradient phased
            (3, 16, 32, 32, 3, 2, 1, .phased),
            // Winograd F(2x2, 3x3): odd sizes (a partial last tile; 7x7, ResNet stage 4), channels not
            // a multiple of 6, and the input gradient through the forward's matrices transposed
            (130, 128, 9, 11, 3, 1, 1, .winograd2), (128, 134, 14, 13, 3, 1, 1, .winograd2),
            (128, 130, 7, 7, 3, 1, 1, .winograd2),
            // a direct layer above cachedAdjointMaxFloats: its input gradient reads the forward panels
            // in place (partial blocks on both sides)
            (70, 75, 14, 13, 3, 1, 1, .direct3x3),
        ]
        try forEachISA { isa in
            for (i, (c, m, h, w, k, stride, pad, expected)) in cases.enumerated() {
                let what = "\(isa.name) \(expected) c\(c) m\(m) \(h)x\(w) k\(k)/\(stride)"
                let batch = 2
                let x = randomTensor([batch, c, h, w], seed: UInt64(50 + i))
                let wt = randomTensor([m, c, k, k], seed: UInt64(60 + i), scale: 0.3)
                let b = randomTensor([m], seed: UInt64(70 + i))
                let attrs: [String: Attribute] = ["pads": .ints([pad, pad, pad, pad]), "strides": .ints([stride, stride])]
                let conv = try Conv(rawNode("Conv", attrs), weight: raw(wt), bias: raw(b))
                XCTAssertEqual(conv.algorithm(h, w), expected, what)
                let ow = (w + 2 * pad - k) / stride + 1
                if stride == 2 && m % 16 == 0 && [8, 16, 32].contains(ow) && (k == 1 || (k == 3 && [.im2col, .phased].contains(expected))) {
                    XCTAssertEqual(conv.usesStridedC16(h: h, w: w), expected == .phased ? isa == .avx2 : isa != .scalar, what)
                }
                let cx = ExecContext(bn: [], declaredBatch: nil, batch: batch, threads: 2)
                let y = try conv.forward([x], cx)[0]
                let ref = naiveConv(x, wt, b.data, stride: stride, pad: pad)
                XCTAssertEqual(y.shape, ref.shape, what)
                let top = ref.data.map { abs($0) }.max()!
                let err = zip(y.data, ref.data).map { abs($0 - $1) }.max()!
                // Winograd rounds more than direct summation; both stay far below 1e-4 of the output's scale.
                XCTAssertLessThan(err / top, expected == .winograd ? 2e-5 : expected == .winograd2 ? 1e-5 : 2e-6, what)
                // Input gradient: the adjoint identity, in double.
                let g = randomTensor(y.shape, seed: 43)
                let noBias = try Conv(rawNode("Conv", attrs), weight: raw(wt), bias: nil)
                let y0 = try noBias.forward([x], cx)[0]
                let dx = try noBias.backward([x], [y0], [g], needs: [true], cx)[0]!
                let lhs = zip(y0.data, g.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                let rhs = zip(x.data, dx.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                XCTAssertEqual(lhs, rhs, accuracy: 1e-4 * max(1, abs(lhs)), what)
                // Fused epilogue == the separate ops, and its gradients (both inputs) by finite differences.
                var fused = conv
                fused.scale = randomTensor([m], seed: 80).data.map { $0 + 1.5 }
                fused.fusedResidual = true
                fused.fusedRelu = true
                let r = randomTensor(y.shape, seed: 81)
                let yf = try fused.forward([x, r], cx)[0]
                // A layer's own input-gradient kernel (with the ReLU's mask and the BN scale) against the one
                // it replaces (im2col + col2im's, or the GEMM reading W transposed in place: `enable(false)`
                // runs it), another order of the same sums, and the same bits on 1 and 2 threads.
                func againstColumns(_ enable: (Bool) -> Void, _ uses: () -> Bool, _ kind: String) throws {
                    let own = try fused.backward([x, r], [yf], [g], needs: [true, false], cx)[0]!
                    let oneThread = ExecContext(bn: [], declaredBatch: nil, batch: batch, threads: 1)
                    XCTAssertEqual(try fused.backward([x, r], [yf], [g], needs: [true, false], oneThread)[0]!.data, own.data,
                                   "\(what) \(kind)")
                    enable(false)
                    defer { enable(true) }
                    XCTAssertFalse(uses(), "\(what) \(kind)")
                    let viaColumns = try fused.backward([x, r], [yf], [g], needs: [true, false], cx)[0]!
                    let gTop = viaColumns.data.map { abs($0) }.max()!
                    XCTAssertGreaterThan(gTop, 0, "\(what) \(kind)")
                    XCTAssertLessThan(zip(own.data, viaColumns.data).map { abs($0 - $1) }.max()! / gTop, 1e-5, "\(what) \(kind)")
                }
                // the channel-blocked 3x3/2 adjoint
                let stridedAdjoint = k == 3 && stride == 2 && isa != .scalar && c * m * 9 <= ConvWeights.cachedAdjointMaxFloats
                    && w % 4 == 0 && w >= 8 && (c % 16 == 0 || (c % 16 == 8 && isa == .avx2))
                XCTAssertEqual(conv.usesStridedC16Adjoint(h: h, w: w), stridedAdjoint, what)
                if stridedAdjoint {
                    try againstColumns({ Conv.stridedAdjointEnabled = $0 }, { conv.usesStridedC16Adjoint(h: h, w: w) }, "strided")
                }
                // the 3x3/1 layer's forward GEMM on the padded output gradient with the flipped weights
                let flipped = k == 3 && stride == 1 && expected == .im2col && c * m * 9 <= ConvWeights.flippedAdjointMaxFloats
                XCTAssertEqual(conv.usesFlippedAdjoint(h: h, w: w), flipped, what)
                if flipped {
                    try againstColumns({ Conv.flippedAdjointEnabled = $0 }, { conv.usesFlippedAdjoint(h: h, w: w) }, "flipped")
                }
                // the few-channel 3x3/2 adjoint (positions in the lanes)
                let few = k == 3 && stride == 2 && pad == 1 && c <= 4 && w % 16 == 0 && isa != .scalar
                XCTAssertEqual(conv.usesStridedFewAdjoint(h: h, w: w), few, what)
                if few {
                    try againstColumns({ Conv.stridedFewAdjointEnabled = $0 }, { conv.usesStridedFewAdjoint(h: h, w: w) }, "few")
                }
                // W^T's own panels (1x1 and F(2x2) layers on small maps) against W's read transposed
                let oh = (h + 2 * pad - k) / stride + 1
                let ownPanels = [.pointwise, .strided1x1].contains(expected) ? oh * ow <= Conv.transposedPanelsMaxPositions
                    : expected == .winograd2 && ((h + 1) / 2) * ((w + 1) / 2) <= Conv.transposedPanelsMaxTiles
                XCTAssertEqual(conv.usesTransposedPanels(h: h, w: w), ownPanels, what)
                if ownPanels {
                    try againstColumns({ Conv.transposedPanelsEnabled = $0 }, { conv.usesTransposedPanels(h: h, w: w) }, "transposed")
                }
                if expected == .phased {
                    // The input gradient over the input's phase grid (with the ReLU's mask and the BN
                    // scale) against im2col + col2im's, another order of the same sums, and the same
                    // bits on 1 and 2 threads.
                    let viaPhases = try fused.backward([x, r], [yf], [g], needs: [true, false], cx)[0]!
                    let oneThread = ExecContext(bn: [], declaredBatch: nil, batch: batch, threads: 1)
                    XCTAssertEqual(try fused.backward([x, r], [yf], [g], needs: [true, false], oneThread)[0]!.data, viaPhases.data, what)
                    Conv.phasedAdjointEnabled = false
                    let viaColumns = try fused.backward([x, r], [yf], [g], needs: [true, false], cx)[0]!
                    Conv.phasedAdjointEnabled = true
                    let gTop = viaColumns.data.map { abs($0) }.max()!
                    XCTAssertGreaterThan(gTop, 0, what)
                    XCTAssertLessThan(zip(viaPhases.data, viaColumns.data).map { abs($0 - $1) }.max()! / gTop, 1e-5, what)
                    // the same bits as im2col + GEMM, plain and with every epilogue term
                    Conv.phasedEnabled = false
                    defer { Conv.phasedEnabled = true }
                    XCTAssertEqual(conv.algorithm(h, w), .im2col)
                    XCTAssertEqual(try conv.forward([x], cx)[0].data, y.data, what)
                    XCTAssertEqual(try fused.forward([x, r], cx)[0].data, yf.data, what)
                }
                var plain = conv
                plain.scale = fused.scale
                let yp = try plain.forward([x], cx)[0]
                let expectedF = zip(yp.data, r.data).map { max($0 + $1, 0) }
                XCTAssertLessThan(zip(yf.data, expectedF).map { abs($0 - $1) }.max()!, 1e-5 * max(1, top), what)
                // Gradients of both inputs by finite differences (without the ReLU, whose kinks defeat
                // them), then the ReLU's mask exactly: backward(g) == backward-without-ReLU(g masked).
                var linear = fused
                linear.fusedRelu = false
                // (not the 9x9 kernel: its 324-term sums leave a float32 difference quotient too noisy
                // for a directional derivative this small; the adjoint identity above checks it in double)
                if c * m * h * w <= 20_000 && k <= 7 { try checkGradient(linear, [x, r]) }
                let gf = try fused.backward([x, r], [yf], [g], needs: [true, true], cx)
                let masked = Tensor(shape: g.shape, data: zip(yf.data, g.data).map { $0 > 0 ? $1 : 0 })
                let gl = try linear.backward([x, r], [yf], [masked], needs: [true, true], cx)
                XCTAssertTrue(gf[0]!.data == gl[0]!.data && gf[1]!.data == masked.data, what)
            }
        }
    }

    /// Winograd F(2x2, 3x3) on a ResNet stage-3 layer (256 channels, 14x14): its rounding against
    /// direct summation (forward), and its input gradient (the forward's matrices, transposed and
    /// permuted) against the direct kernel's, on every ISA path.
    func testWinograd2AgainstDirectConvolution() throws {
        let (c, hw) = (256, 14)
        let x = randomTensor([2, c, hw, hw], seed: 92)
        let wt = randomTensor([c, c, 3, 3], seed: 93, scale: Float(1 / (3 * Double(c).squareRoot())))
        let g = randomTensor([2, c, hw, hw], seed: 94)
        let conv = try Conv(rawNode("Conv", ["pads": .ints([1, 1, 1, 1])]), weight: raw(wt), bias: nil)
        let direct = try Conv(rawNode("Conv", ["pads": .ints([1, 1, 1, 1])]), weight: raw(wt), bias: nil)
        direct.weights.winograd2Allowed = false
        XCTAssertEqual(conv.algorithm(hw, hw), .winograd2)
        XCTAssertEqual(direct.algorithm(hw, hw), .direct3x3)
        let ref = naiveConv(x, wt, nil, stride: 1, pad: 1)
        let top = ref.data.map { abs($0) }.max()!
        try forEachISA { isa in
            let cx = ExecContext(bn: [], declaredBatch: nil, batch: 2, threads: 2)
            let y = try conv.forward([x], cx)[0]
            let err = zip(y.data, ref.data).map { abs($0 - $1) }.max()!
            print("Winograd F(2x2,3x3) error (\(isa.name)), c\(c) \(hw)x\(hw): \(err / top) of the largest output")
            XCTAssertLessThan(err / top, 5e-6, "\(isa.name): F(2x2, 3x3) error \(err / top) of the largest output")
            // The same sample alone gives the same bits (no dependence on the batch).
            let x1 = Tensor(shape: [1, c, hw, hw], data: Array(x.data[(c * hw * hw)...]))
            let y1 = try conv.forward([x1], ExecContext(bn: [], declaredBatch: nil, batch: 1, threads: 1))[0]
            XCTAssertTrue(y1.data == Array(y.data[(c * hw * hw)...]), "\(isa.name): batch-dependent result")
            let dx = try conv.backward([x], [y], [g], needs: [true], cx)[0]!
            let dref = try direct.backward([x], [y], [g], needs: [true], cx)[0]!
            let dtop = dref.data.map { abs($0) }.max()!
            let derr = zip(dx.data, dref.data).map { abs($0 - $1) }.max()!
            XCTAssertLessThan(derr / dtop, 5e-6, "\(isa.name): F(2x2, 3x3) input gradient error \(derr / dtop)")
        }
    }

    /// An im2col layer's input gradient in bands of output rows (a stem's 7.4 MB of columns would
    /// leave L2) gives the same bits as one GEMM and col2im over all the columns, on every ISA path:
    /// the bands run from the last to the first, so each input element gets its terms in order.
    func testBandedIm2colGradientMatchesUnbanded() throws {
        for (c, m, hw, k, s, pad, mask) in [(3, 8, 128, 7, 2, 3, true), (4, 6, 61, 5, 1, 2, false), (5, 7, 40, 3, 2, 1, true)] {
            let wt = randomTensor([m, c, k, k], seed: 81, scale: 0.3)
            let conv = try Conv(rawNode("Conv", ["pads": .ints([pad, pad, pad, pad]), "strides": .ints([s, s])]), weight: raw(wt),
                                bias: nil)
            var relu = conv
            relu.fusedRelu = mask
            let x = randomTensor([2, c, hw, hw], seed: 82)
            XCTAssertTrue([.im2col, .phased].contains(conv.algorithm(hw, hw)))  // (the same input gradient)
            let cx = ExecContext(bn: [], declaredBatch: nil, batch: 2, threads: 2)
            let y = try relu.forward([x], cx)[0]
            let g = randomTensor(y.shape, seed: 83)
            let kdim = c * k * k, (oh, ow) = (y.shape[2], y.shape[3])
            let saved = Conv.bandFloats
            defer { Conv.bandFloats = saved }
            Conv.bandFloats = kdim * oh * ow / 3  // three or four bands
            XCTAssertNotNil(Conv.bandRows(kdim: kdim, oh: oh, ow: ow))
            try forEachISA { isa in
                Conv.bandFloats = kdim * oh * ow / 3
                let banded = try relu.backward([x], [y], [g], needs: [true], cx)[0]!
                Conv.bandFloats = Int.max
                let whole = try relu.backward([x], [y], [g], needs: [true], cx)[0]!
                XCTAssertTrue(banded.data.elementsEqual(whole.data) { $0.bitPattern == $1.bitPattern },
                              "\(isa.name) c\(c) \(hw)x\(hw) k\(k)/\(s)")
            }
        }
    }

    /// The direct kernel's in-place adjoint (reading the forward panels) against the same kernel on
    /// the gathered adjoint panels, bit for bit, on every ISA path, split over channel blocks and rows.
    func testDirectAdjointInPlaceMatchesGatheredPanels() throws {
        for (cf, mf, h, w) in [(70, 75, 14, 13), (12, 6, 5, 7), (256, 256, 14, 14)] {
            let wt = randomTensor([mf, cf, 3, 3], seed: 95, scale: 0.2)
            let g = randomTensor([1, mf, h, w], seed: 96)
            let mask = randomTensor([1, mf, h, w], seed: 97)
            let sc = randomTensor([mf], seed: 98).data
            let packed = ConvWeights(weight: wt.data, outChannels: mf, inPerGroup: cf, kh: 3, kw: 3, group: 1).forward
            let blocks = (cf + 5) / 6
            var adj = [Float](repeating: 0, count: blocks * mf * 54)
            akn_conv3x3_adjoint_weights(packed, Int32(cf), Int32(mf), 0, Int32(blocks), &adj)
            try forEachISA { isa in
                var scratch = [Float](repeating: 0, count: akn_scratch_size(Int32(mf), Int32(h), Int32(w)))
                var tmp = [Float](repeating: 0, count: akn_tmp_size(Int32(h), Int32(w)))
                var a = [Float](repeating: 0, count: cf * h * w), b = a
                akn_conv3x3(g.data, mask.data, sc, Int32(mf), Int32(h), Int32(w), adj, 0, 0, Int32(cf), 0, Int32(h), nil,
                            nil, nil, 0, &a, &scratch, 1, &tmp)
                // in pieces: blocks of 6 channels x two bands of rows
                akn_conv3x3_pad(g.data, mask.data, sc, Int32(mf), Int32(h), Int32(w), 0, Int32(mf), &scratch)
                for m0 in stride(from: 0, to: cf, by: 6) {
                    for (y0, y1) in [(0, h / 2), (h / 2, h)] {
                        akn_conv3x3_adjoint(g.data, nil, nil, Int32(mf), Int32(h), Int32(w), packed, Int32(m0),
                                            Int32(min(cf, m0 + 6)), Int32(cf), Int32(y0), Int32(y1), &b, &scratch, 0, &tmp)
                    }
                }
                XCTAssertTrue(a == b, "\(isa.name) cf\(cf) mf\(mf) \(h)x\(w)")
            }
        }
    }

    /// A band's own padded rows (akn_conv3x3_pad_band, into a buffer of NaNs: nothing outside them
    /// may reach an output) give the same bits as the whole padded input, for both direct kernels
    /// and the in-place adjoint, with a backward pass's mask and scale, on every ISA path.
    func testBandPaddingMatchesWholePadding() throws {
        for (i, (c, m, h, w)) in [(16, 16, 32, 32), (16, 32, 16, 16), (64, 64, 8, 8), (5, 13, 7, 5), (12, 18, 9, 30)].enumerated() {
            let wt = randomTensor([m, c, 3, 3], seed: UInt64(130 + i), scale: 0.3).data
            var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(m), Int32(c * 9)) + 64)
            akn_gemm_pack_a(wt, c * 9, 0, Int32(m), Int32(c * 9), &packed)
            var c16 = [Float](repeating: 0, count: m * c * 9)
            if m % 16 == 0 { akn_conv3x3_c16_weights(packed, Int32(m), Int32(c), 0, 0, Int32(m / 16), &c16) }
            let x = randomTensor([c, h, w], seed: UInt64(140 + i)).data
            let g = randomTensor([m, h, w], seed: UInt64(145 + i)).data
            let mask = randomTensor([m, h, w], seed: UInt64(150 + i)).data
            let inScale = (0..<m).map { 1 + Float($0) / 64 }
            let bias = (0..<m).map { Float($0) / 16 - 1 }
            let size = akn_scratch_size(Int32(max(c, m)), Int32(h), Int32(w))
            var tmp = [Float](repeating: 0, count: akn_tmp_size(Int32(h), Int32(w)))
            try forEachISA { isa in
                for kernel in ["six", "c16", "adjoint"] where kernel != "c16" || m % 16 == 0 {
                    let (cin, cout) = kernel == "adjoint" ? (m, c) : (c, m)
                    let input = kernel == "adjoint" ? g : x
                    let run = { (xp: UnsafeMutablePointer<Float>, y0: Int, y1: Int, out: UnsafeMutablePointer<Float>) in
                        switch kernel {
                        case "six":
                            akn_conv3x3(input, nil, nil, Int32(cin), Int32(h), Int32(w), packed, 0, 0, Int32(cout), Int32(y0),
                                        Int32(y1), nil, bias, nil, 1, out, xp, 0, &tmp)
                        case "c16":
                            akn_conv3x3_c16(xp, Int32(cin), Int32(h), Int32(w), c16, 0, Int32(cout / 16), Int32(y0), Int32(y1),
                                            nil, bias, nil, 1, out)
                        default:
                            for m0 in stride(from: 0, to: cout, by: 6) {
                                akn_conv3x3_adjoint(input, nil, nil, Int32(cin), Int32(h), Int32(w), packed, Int32(m0),
                                                    Int32(min(cout, m0 + 6)), Int32(cout), Int32(y0), Int32(y1), out, xp, 0, &tmp)
                            }
                        }
                    }
                    let (ms, sc) = kernel == "adjoint" ? (Optional(mask), Optional(inScale)) : (nil, nil)
                    var whole = [Float](repeating: 0, count: size)
                    akn_conv3x3_pad(input, ms, sc, Int32(cin), Int32(h), Int32(w), 0, Int32(cin), &whole)
                    var a = [Float](repeating: 0, count: cout * h * w), b = a
                    run(&whole, 0, h, &a)
                    for bands in [2, 3] {
                        for band in 0..<bands {
                            let (y0, y1) = (h * band / bands, h * (band + 1) / bands)
                            var own = [Float](repeating: .nan, count: size)
                            akn_conv3x3_pad_band(input, ms, sc, Int32(cin), Int32(h), Int32(w), Int32(y0), Int32(y1), &own)
                            run(&own, y0, y1, &b)
                        }
                        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(isa.name) \(kernel) c\(cin) m\(cout) \(h)x\(w), \(bands) bands")
                    }
                }
            }
        }
    }

    /// A model's F(2x2, 3x3) layers run it only within the memory budget: all of them or none, and
    /// both ways give the same predictions (to Winograd's rounding).
    func testWinograd2Budget() throws {
        // Stage 3 at 14x14 with 128 channels: two F(2x2, 3x3) layers (its first block's 3x3 has stride 2).
        let spec = ResNetSpec(block: .bottleneck, stages: [1, 1, 3, 1], stageWidths: [8, 16, 128, 16], stemWidth: 8,
                              imagenetStem: false, inputSize: 56, classes: 5, seed: 4)
        let path = NSTemporaryDirectory() + "adamant_wino2_budget_\(getpid()).onnx"
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try spec.write(to: path)
        func winograd2Layers(_ m: Model) throws -> [Conv] {
            let shapes = try m.graph.inferShapes(batch: 1)
            return m.graph.nodes.compactMap { n in
                guard let c = n.op as? Conv, let s = shapes[n.inputs[0]], c.algorithm(s[2], s[3]) == .winograd2 else { return nil }
                return c
            }
        }
        let fast = try Model.load(path: path)
        let layers = try winograd2Layers(fast)
        XCTAssertEqual(layers.count, 2)
        // Their matrices are built at load and replace the GEMM panels.
        XCTAssertTrue(layers.allSatisfy { $0.weights.winograd2Only && $0.weights.forward.isEmpty })
        // What they add: their matrices less the GEMM panels they replace.
        let bytes = layers.reduce(0) { $0 + 4 * ($1.weights.winograd2Floats - $1.weights.panelFloats) }
        let budgetBefore = Model.winograd2Budget
        defer { Model.winograd2Budget = budgetBefore }
        Model.winograd2Budget = bytes
        XCTAssertEqual(try winograd2Layers(Model.load(path: path)).count, 2, "within the budget")
        // Over it by a byte: the layers that fit, largest images first, then in graph order (here the
        // first; both are 14x14 and the same size).
        Model.winograd2Budget = bytes - 1
        let partial = try Model.load(path: path)
        let granted = try winograd2Layers(partial)
        XCTAssertEqual(granted.count, 1, "over the budget by a byte: one layer")
        let firstCandidate = partial.graph.nodes.compactMap({ $0.op as? Conv })
            .first(where: { $0.kh == 3 && $0.strides == (1, 1) && $0.inPerGroup == 128 })
        XCTAssertTrue(granted[0].weights === firstCandidate?.weights, "the first in graph order")
        Model.winograd2Budget = bytes / 2 - 1
        let lean = try Model.load(path: path)
        XCTAssertEqual(try winograd2Layers(lean).count, 0, "below one layer's matrices: none")
        XCTAssertTrue(lean.graph.nodes.compactMap { $0.op as? Conv }.allSatisfy { !$0.weights.winograd2Only && !$0.weights.forward.isEmpty })
        let x = randomTensor([3, 3, 56, 56], seed: 5).data.map { abs($0).truncatingRemainder(dividingBy: 1) }
        let fastSession = try Session(model: fast)
        let a = try fastSession.predict(x, batch: 3, domain: 0)
        let b = try Session(model: lean).predict(x, batch: 3, domain: 0)
        let top = b.map { abs($0) }.max()!
        XCTAssertLessThan(zip(a, b).map { abs($0 - $1) }.max()! / top, 1e-4)
        XCTAssertEqual(try fastSession.predict(x, batch: 3, domain: 0), a)
        // The input gradient reads the same matrices, transposed.
        let labels: [Int64] = [0, 1, 2]
        let ga = try fastSession.gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0)
        let gb = try Session(model: lean).gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0)
        let gtop = gb.gradient.map { abs($0) }.max()!
        XCTAssertLessThan(zip(ga.gradient, gb.gradient).map { abs($0 - $1) }.max()! / gtop, 1e-3)
    }

    /// The input gradients of 1x1 layers on maps larger than 7x7 keep W^T's own panels only within
    /// the model's budget, the layers with the most positions first, counted in the weight bytes;
    /// with or without them, the same gradient bit for bit.
    func testTransposedPanelsBudget() throws {
        // Maps of 28x28, 14x14, 7x7 and 4x4: 1x1 layers with 784 and 196 output positions (and
        // smaller ones, which keep their panels whatever the budget).
        let spec = ResNetSpec(block: .bottleneck, stages: [1, 1, 1, 1], stageWidths: [8, 16, 32, 16], stemWidth: 8,
                              imagenetStem: false, inputSize: 28, classes: 5, seed: 6)
        let path = NSTemporaryDirectory() + "adamant_transposed_budget_\(getpid()).onnx"
        defer { try? FileManager.default.removeItem(atPath: path) }
        _ = try spec.write(to: path)
        /// The model's 1x1 layers on maps above 49 positions, with their output positions and input shape.
        func candidates(_ m: Model) throws -> [(conv: Conv, positions: Int, h: Int, w: Int)] {
            let shapes = try m.graph.inferShapes(batch: 1)
            return m.graph.nodes.compactMap { n in
                guard let c = n.op as? Conv, let s = shapes[n.inputs[0]],
                      [.pointwise, .strided1x1].contains(c.algorithm(s[2], s[3])) else { return nil }
                let p = c.pointwisePositions(h: s[2], w: s[3])
                return p > Conv.transposedPanelsMaxPositions ? (c, p, s[2], s[3]) : nil
            }
        }
        let budgetBefore = Model.transposedBudget
        defer { Model.transposedBudget = budgetBefore }
        Model.transposedBudget = 0
        let none = try Model.load(path: path)
        let layers = try candidates(none)
        XCTAssertEqual(Set(layers.map(\.positions)), [784, 196])
        XCTAssertTrue(layers.allSatisfy { !$0.conv.weights.transposedAllowed && !$0.conv.usesTransposedPanels(h: $0.h, w: $0.w) })
        let bytes = layers.reduce(0) { $0 + 4 * $1.conv.weights.transposedFloats }
        Model.transposedBudget = bytes
        let all = try Model.load(path: path)
        XCTAssertTrue(try candidates(all).allSatisfy { $0.conv.weights.transposedAllowed && $0.conv.usesTransposedPanels(h: $0.h, w: $0.w) })
        XCTAssertEqual(all.weightBytes - none.weightBytes, bytes, "counted in the weight bytes")
        // Over it by a byte: not all of them, but every layer on the 28x28 map (most positions first).
        Model.transposedBudget = bytes - 1
        let partial = try candidates(Model.load(path: path))
        XCTAssertLessThan(partial.filter { $0.conv.weights.transposedAllowed }.count, partial.count)
        XCTAssertTrue(partial.filter { $0.positions == 784 }.allSatisfy { $0.conv.weights.transposedAllowed })
        // The same gradient bits and losses with and without the panels.
        let x = randomTensor([3, 3, 28, 28], seed: 8).data.map { abs($0).truncatingRemainder(dividingBy: 1) }
        let labels: [Int64] = [0, 1, 4]
        let withPanels = try Session(model: all).gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0)
        let without = try Session(model: none).gradient(x, batch: 3, labels: labels, loss: .crossEntropy, domain: 0)
        XCTAssertGreaterThan(without.gradient.map { abs($0) }.max()!, 0)
        XCTAssertEqual(withPanels.gradient.map(\.bitPattern), without.gradient.map(\.bitPattern))
        XCTAssertEqual(withPanels.loss, without.loss)
    }

    /// A compact tape's masks: bit i is x[i] > 0 (NaN, -0 and negatives clear), the unused bits of
    /// the last word clear, and unpacking gives 1 and 0, on every ISA path and for lengths that end
    /// mid-word, from slices at multiples of 64 as the executor splits them.
    func testPositiveBitsOnEveryPath() throws {
        for n in [1, 63, 64, 65, 1000, 4099] {
            var x = randomTensor([n], seed: UInt64(n)).data
            for i in stride(from: 3, to: n, by: 17) { x[i] = .nan }
            for i in stride(from: 5, to: n, by: 23) { x[i] = -0.0 }
            for i in stride(from: 7, to: n, by: 29) { x[i] = 0 }
            let words = (n + 63) / 64
            var ref = [UInt64](repeating: 0, count: words)
            for i in 0..<n where x[i] > 0 { ref[i / 64] |= 1 << UInt64(i % 64) }
            try forEachISA { isa in
                var bits = [UInt64](repeating: .max, count: words)
                let split = n > 128 ? 128 : 0  // two slices, the second from word 2
                if split > 0 {
                    akn_pack_positive(x, split, &bits)
                    x.withUnsafeBufferPointer { xp in bits.withUnsafeMutableBufferPointer { bp in
                        akn_pack_positive(xp.baseAddress! + split, n - split, bp.baseAddress! + split / 64)
                    } }
                } else {
                    akn_pack_positive(x, n, &bits)
                }
                XCTAssertEqual(bits, ref, "\(isa.name), n \(n)")
                var out = [Float](repeating: -1, count: n)
                akn_unpack_positive(ref, n, &out)
                XCTAssertTrue(out == x.map { $0 > 0 ? 1 : 0 }, "\(isa.name), n \(n)")
            }
        }
    }

    /// The F(2x2, 3x3) matrices built from the GEMM panels are, bit for bit, those built from the
    /// weights as ONNX stores them, for row counts that leave a partial panel.
    func testWinograd2WeightsFromPanels() throws {
        for (m, c) in [(20, 7), (6, 1), (13, 32)] {
            let wt = randomTensor([m, c, 3, 3], seed: UInt64(300 + m))
            let conv = try Conv(rawNode("Conv", ["pads": .ints([1, 1, 1, 1])]), weight: raw(wt), bias: nil)
            var ref = [Float](repeating: 0, count: conv.weights.winograd2Floats)
            akn_wino2_weights(wt.data, Int32(m), Int32(c), 0, Int32(m), &ref)
            XCTAssertTrue(conv.weights.winograd2 == ref, "m \(m), c \(c)")
        }
    }

    /// Winograd's rounding, measured against direct summation on the shapes of real layers.
    func testWinogradErrorAgainstDirectConvolution() throws {
        // (30x30: tile rows and columns that end inside the image, the transform's zero columns)
        for (c, hw) in [(64, 28), (128, 28), (64, 30)] {
            let x = randomTensor([1, c, hw, hw], seed: 90)
            let wt = randomTensor([c, c, 3, 3], seed: 91, scale: Float(1 / (3 * Double(c).squareRoot())))
            let conv = try Conv(rawNode("Conv", ["pads": .ints([1, 1, 1, 1])]), weight: raw(wt), bias: nil)
            XCTAssertEqual(conv.algorithm(hw, hw), .winograd)
            let ref = naiveConv(x, wt, nil, stride: 1, pad: 1)
            let top = ref.data.map { abs($0) }.max()!
            try forEachISA { isa in
                let y = try conv.forward([x], ExecContext(bn: [], declaredBatch: nil, batch: 1, threads: 2))[0]
                let err = zip(y.data, ref.data).map { abs($0 - $1) }.max()!
                // F(4x4, 3x3) in float: about 1e-5 of the largest output at these widths (direct: ~1e-7).
                print("Winograd F(4x4,3x3) error, \(isa.name) c\(c) \(hw)x\(hw): \(err / top) of the largest output")
                XCTAssertLessThan(err / top, 3e-5, "\(isa.name) c\(c) \(hw)x\(hw): Winograd error \(err / top) of the largest output")
            }
        }
    }

    /// The fused L-infinity PGD step against the scalar loop it replaced (Swift's min/max), bit for
    /// bit: zero and NaN gradients (no step), both directions, points pushed past the eps-ball and
    /// past the pixel range.
    func testFusedPGDStepMatchesScalarLoop() {
        var rng = Xoshiro256(seed: 31)
        let n = 4099
        let x0 = (0..<n).map { _ in Float(rng.next() % 1001) / 1000 }
        var g = (0..<n).map { _ in Float(Int(rng.next() % 2001) - 1000) / 1000 }
        for i in stride(from: 0, to: n, by: 7) { g[i] = 0 }
        for i in stride(from: 3, to: n, by: 11) { g[i] = .nan }
        let start = (0..<n).map { i in min(max(x0[i] + Float(Int(rng.next() % 201) - 100) / 1000, 0), 1) }
        for (direction, alpha, eps) in [(Float(1), Float(2) / 255, Float(8) / 255), (-1, 0.05, 0.03), (1, 0.5, 1)] {
            var expected = start
            for j in 0..<n {
                let gv = g[j]
                let s: Float = gv > 0 ? 1 : (gv < 0 ? -1 : 0)
                var v = expected[j] + direction * alpha * s
                v = min(max(v, x0[j] - eps), x0[j] + eps)
                expected[j] = min(max(v, 0), 1)
            }
            var got = start
            akn_pgd_linf_step(&got, x0, g, n, direction * alpha, eps, 0, 1)
            XCTAssertEqual(got.map(\.bitPattern), expected.map(\.bitPattern), "direction \(direction), alpha \(alpha), eps \(eps)")
        }
    }

    /// The channel-blocked direct kernel against akn_conv3x3, bit for bit, on every ISA path: forward
    /// and adjoint weight layouts, the masked and scaled padding of a backward pass, the whole
    /// epilogue, row ranges and blocks, widths that split into every tile size.
    func testChannelBlockedDirectKernelMatchesDirectKernel() throws {
        // (pairs of blocks run together on AVX-512: 64 and 80 outputs at 8x8 and 16x16, and 48 with a
        // remainder of 5 positions per row)
        let cases: [(c: Int, m: Int, h: Int, w: Int)] = [(16, 16, 8, 8), (32, 32, 16, 16), (16, 48, 5, 13), (7, 32, 6, 31), (32, 16, 3, 1),
                                                         (64, 64, 8, 8), (16, 80, 16, 16)]
        try forEachISA { isa in
            for (i, t) in cases.enumerated() {
                for adjoint in [false, true] {
                    // As the adjoint: a convolution whose inputs (t.m) come in blocks of 16.
                    let (fm, fc) = adjoint ? (t.c, t.m) : (t.m, t.c)  // the forward layer's outputs, inputs
                    let (cin, cout) = adjoint ? (fm, fc) : (fc, fm)  // the kernel's inputs, outputs
                    let what = "\(isa.name) c\(cin) m\(cout) \(t.h)x\(t.w)\(adjoint ? " adjoint" : "")"
                    let wt = randomTensor([fm, fc, 3, 3], seed: UInt64(90 + i), scale: 0.3).data
                    var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(fm), Int32(fc * 9)) + 64)
                    akn_gemm_pack_a(wt, fc * 9, 0, Int32(fm), Int32(fc * 9), &packed)
                    var six = [Float](repeating: 0, count: (cout + 5) / 6 * cin * 54)
                    if adjoint { akn_conv3x3_adjoint_weights(packed, Int32(fc), Int32(fm), 0, Int32((fc + 5) / 6), &six) }
                    else { six = packed }
                    var c16 = [Float](repeating: .nan, count: cout * cin * 9)
                    akn_conv3x3_c16_weights(packed, Int32(fm), Int32(fc), adjoint ? 1 : 0, 0, Int32(cout / 16), &c16)
                    XCTAssertFalse(c16.contains { $0.isNaN }, "\(what): c16 weights not all written")
                    let x = randomTensor([cin, t.h, t.w], seed: UInt64(100 + i)).data
                    let mask = randomTensor([cin, t.h, t.w], seed: UInt64(110 + i)).data
                    let inScale = (0..<cin).map { 1 + Float($0) / 64 }
                    let scale = (0..<cout).map { 0.5 + Float($0) / 32 }, bias = (0..<cout).map { Float($0) / 16 - 1 }
                    // (NaNs in the residual: the ReLU must keep them, as the 6-channel kernel's does)
                    var res = randomTensor([cout, t.h, t.w], seed: UInt64(120 + i)).data
                    for j in stride(from: 5, to: res.count, by: 37) { res[j] = .nan }
                    var scratch = [Float](repeating: 0, count: akn_scratch_size(Int32(cin), Int32(t.h), Int32(t.w)))
                    var tmp = [Float](repeating: 0, count: akn_tmp_size(Int32(t.h), Int32(t.w)))
                    for withEpilogue in [false, true] {
                        var a = [Float](repeating: 0, count: cout * t.h * t.w), b = a
                        akn_conv3x3(x, adjoint ? mask : nil, adjoint ? inScale : nil, Int32(cin), Int32(t.h), Int32(t.w), six, 0,
                                    0, Int32(cout), 0, Int32(t.h), withEpilogue ? scale : nil, withEpilogue ? bias : nil,
                                    withEpilogue ? res : nil, withEpilogue ? 1 : 0, &a, &scratch, 1, &tmp)
                        // The padded input is in scratch now; two calls over row and block ranges.
                        let (y1, b1) = (t.h / 2, cout / 32)
                        for (c0, c1, r0, r1) in [(0, b1, 0, t.h), (b1, cout / 16, 0, y1), (b1, cout / 16, y1, t.h)] {
                            akn_conv3x3_c16(scratch, Int32(cin), Int32(t.h), Int32(t.w), c16, Int32(c0), Int32(c1), Int32(r0), Int32(r1),
                                            withEpilogue ? scale : nil, withEpilogue ? bias : nil, withEpilogue ? res : nil,
                                            withEpilogue ? 1 : 0, &b)
                        }
                        XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(what)\(withEpilogue ? " epilogue" : "")")
                    }
                }
            }
        }
    }

    /// The channel-blocked 3x3 kernel read from the unpadded input (akn_conv3x3_c16_unpadded) against
    /// the padded one, bit for bit, on every ISA path that has it (AVX-512 refuses it: -1): the whole
    /// epilogue (NaNs in the residual), row ranges and blocks, a partial last block (nothing stored
    /// past m), images of one and two rows (every row next to the padding), and an infinite weight
    /// on a tap that reads the padding, which must still give the padded kernel's NaN (0 * inf).
    func testUnpaddedChannelBlockedKernelMatchesPaddedKernel() throws {
        let cases: [(c: Int, m: Int, h: Int, w: Int)] = [(16, 16, 32, 32), (32, 32, 16, 16), (3, 16, 8, 8), (5, 24, 1, 12),
                                                         (7, 40, 2, 20), (64, 64, 8, 8), (1, 16, 5, 36)]
        try forEachISA { isa in
            for (i, t) in cases.enumerated() {
                let blocks = (t.m + 15) / 16
                let available = akn_conv3x3_c16_unpadded_available(Int32(t.w)) != 0
                XCTAssertEqual(available, isa != .avx512, "\(isa.name) \(t.w)")
                for infinite in [false, true] {
                    let what = "\(isa.name) c\(t.c) m\(t.m) \(t.h)x\(t.w)\(infinite ? " inf weight" : "")"
                    var wt = randomTensor([t.m, t.c, 3, 3], seed: UInt64(160 + i), scale: 0.3).data
                    // (output 1's tap (0, 0) of input channel 0: it reads the padding on row 0 and column 0)
                    if infinite { wt[t.c * 9] = .infinity }
                    var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(t.m), Int32(t.c * 9)) + 64)
                    akn_gemm_pack_a(wt, t.c * 9, 0, Int32(t.m), Int32(t.c * 9), &packed)
                    var c16 = [Float](repeating: .nan, count: blocks * 16 * t.c * 9)
                    akn_conv3x3_c16_weights(packed, Int32(t.m), Int32(t.c), 0, 0, Int32(blocks), &c16)
                    let x = randomTensor([t.c, t.h, t.w], seed: UInt64(170 + i)).data
                    var padded = [Float](repeating: .nan, count: akn_scratch_size(Int32(t.c), Int32(t.h), Int32(t.w)))
                    akn_conv3x3_pad(x, nil, nil, Int32(t.c), Int32(t.h), Int32(t.w), 0, Int32(t.c), &padded)
                    let scale = (0..<t.m).map { 0.5 + Float($0) / 32 }, bias = (0..<t.m).map { Float($0) / 16 - 1 }
                    var res = randomTensor([t.m, t.h, t.w], seed: UInt64(180 + i)).data
                    for j in stride(from: 3, to: res.count, by: 29) { res[j] = .nan }
                    for withEpilogue in [false, true] {
                        // (16 planes of NaN past the m outputs: a partial last block must leave them)
                        var a = [Float](repeating: .nan, count: (t.m + 16) * t.h * t.w), b = a
                        let (y1, b1) = (t.h / 2, blocks / 2)
                        for (c0, c1, r0, r1) in [(0, b1, 0, t.h), (b1, blocks, 0, y1), (b1, blocks, y1, t.h)] {
                            XCTAssertEqual(akn_conv_c16(padded, Int32(t.c), Int32(t.w + 2), (t.h + 2) * (t.w + 2), 3, 1, Int32(t.h),
                                                        Int32(t.w), c16, Int32(t.m), Int32(c0), Int32(c1), Int32(r0), Int32(r1),
                                                        withEpilogue ? scale : nil, withEpilogue ? bias : nil,
                                                        withEpilogue ? res : nil, withEpilogue ? 1 : 0, &a), 0, what)
                            XCTAssertEqual(akn_conv3x3_c16_unpadded(x, Int32(t.c), Int32(t.h), Int32(t.w), c16, Int32(t.m),
                                                                    Int32(c0), Int32(c1), Int32(r0), Int32(r1),
                                                                    withEpilogue ? scale : nil, withEpilogue ? bias : nil,
                                                                    withEpilogue ? res : nil, withEpilogue ? 1 : 0, &b),
                                           available ? 0 : -1, what)
                        }
                        guard available else { continue }
                        XCTAssertTrue(b[(t.m * t.h * t.w)...].allSatisfy { $0.isNaN }, "\(what): stored past channel \(t.m)")
                        XCTAssertFalse(b[..<(t.m * t.h * t.w)].allSatisfy { $0.isNaN }, what)
                        if infinite { XCTAssertTrue(a[t.h * t.w].isNaN, "\(what): the padding's 0 * inf") }
                        let differs = a.indices.first { a[$0].bitPattern != b[$0].bitPattern }
                        XCTAssertNil(differs, "\(what)\(withEpilogue ? " epilogue" : ""): output \(differs ?? 0) of [m][h][w] differs")
                    }
                }
            }
        }
    }

    /// The channel-blocked direct kernel with a stride of 2 (3x3 padded by 1, and 1x1 read in place)
    /// against direct loops, on every ISA path (each has the kernel, though only avx512 picks it):
    /// its weight layouts, the whole epilogue, row ranges and blocks (pairs on AVX-512), odd inputs and
    /// widths that split into every tile size, a partial last block of channels (nothing stored past
    /// m); other windows and strides are refused.
    func testStridedChannelBlockedKernelAgainstDirectLoops() throws {
        let cases: [(c: Int, m: Int, h: Int, w: Int, k: Int)] = [(16, 32, 32, 32, 3), (32, 64, 16, 16, 3), (7, 48, 13, 61, 3),
                                                                 (5, 16, 3, 1, 3), (16, 32, 32, 32, 1), (16, 16, 63, 63, 1),
                                                                 (3, 32, 9, 30, 1), (3, 8, 32, 32, 3), (8, 24, 17, 33, 3),
                                                                 (5, 40, 16, 16, 1), (4, 3, 9, 9, 3)]
        try forEachISA { isa in
            for (i, t) in cases.enumerated() {
                let what = "\(isa.name) c\(t.c) m\(t.m) \(t.h)x\(t.w) k\(t.k)/2"
                let pad = t.k / 2
                let (oh, ow) = ((t.h + 2 * pad - t.k) / 2 + 1, (t.w + 2 * pad - t.k) / 2 + 1)
                let kdim = t.c * t.k * t.k
                let wt = randomTensor([t.m, t.c, t.k, t.k], seed: UInt64(130 + i), scale: 0.3)
                var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(t.m), Int32(kdim)) + 64)
                akn_gemm_pack_a(wt.data, kdim, 0, Int32(t.m), Int32(kdim), &packed)
                let blocks = (t.m + 15) / 16
                var c16 = [Float](repeating: .nan, count: blocks * 16 * kdim)
                if t.k == 3 {
                    akn_conv3x3_c16_weights(packed, Int32(t.m), Int32(t.c), 0, 0, Int32(blocks), &c16)
                } else {
                    akn_conv_c16_weights(packed, Int32(t.m), Int32(t.c), 1, 0, Int32(blocks), &c16)
                }
                XCTAssertFalse(c16.contains { $0.isNaN }, "\(what): weights not all written")
                let x = randomTensor([1, t.c, t.h, t.w], seed: UInt64(140 + i))
                var input = x.data, (wp, plane) = (t.w, t.h * t.w)
                if t.k == 3 {
                    input = [Float](repeating: .nan, count: akn_scratch_size(Int32(t.c), Int32(t.h), Int32(t.w)))
                    akn_conv3x3_pad(x.data, nil, nil, Int32(t.c), Int32(t.h), Int32(t.w), 0, Int32(t.c), &input)
                    (wp, plane) = (t.w + 2, (t.h + 2) * (t.w + 2))
                }
                let scale = (0..<t.m).map { 0.5 + Float($0) / 32 }, bias = (0..<t.m).map { Float($0) / 16 - 1 }
                let res = randomTensor([t.m, oh, ow], seed: UInt64(150 + i)).data
                let conv = naiveConv(x, wt, nil, stride: 2, pad: pad).data
                for withEpilogue in [false, true] {
                    // (16 planes of NaN past the m outputs: a partial last block must leave them)
                    var y = [Float](repeating: .nan, count: (t.m + 16) * oh * ow)
                    let (y1, b1) = (oh / 2, t.m / 32)
                    for (c0, c1, r0, r1) in [(0, b1, 0, oh), (b1, blocks, 0, y1), (b1, blocks, y1, oh)] {
                        XCTAssertEqual(akn_conv_c16(input, Int32(t.c), Int32(wp), plane, Int32(t.k), 2, Int32(oh), Int32(ow), c16,
                                                    Int32(t.m), Int32(c0), Int32(c1), Int32(r0), Int32(r1),
                                                    withEpilogue ? scale : nil, withEpilogue ? bias : nil,
                                                    withEpilogue ? res : nil, withEpilogue ? 1 : 0, &y), 0)
                    }
                    XCTAssertTrue(y[(t.m * oh * ow)...].allSatisfy { $0.isNaN }, "\(what): stored past channel \(t.m)")
                    y.removeLast(16 * oh * ow)
                    let expected = conv.indices.map { at -> Float in
                        guard withEpilogue else { return conv[at] }
                        let o = at / (oh * ow)
                        return max(Float(Double(conv[at]) * Double(scale[o]) + Double(bias[o]) + Double(res[at])), 0)
                    }
                    let top = expected.map { abs($0) }.max()!
                    XCTAssertGreaterThan(top, 0, what)
                    XCTAssertFalse(y.contains { $0.isNaN }, "\(what): outputs not all written")
                    XCTAssertLessThan(zip(y, expected).map { abs($0 - $1) }.max()! / top, 2e-6,
                                      "\(what)\(withEpilogue ? " epilogue" : "")")
                }
            }
            var y = [Float](repeating: 0, count: 16)
            let x = [Float](repeating: 1, count: 64), w = [Float](repeating: 1, count: 16 * 25)
            for (k, s) in [(5, 1), (1, 1), (3, 3)] {
                XCTAssertEqual(akn_conv_c16(x, 1, 8, 64, Int32(k), Int32(s), 1, 1, w, 16, 0, 1, 0, 1, nil, nil, nil, 0, &y), -1,
                               "\(isa.name) k\(k)/\(s)")
            }
        }
    }

    /// The channel-blocked input gradient of a 3x3/2 convolution padded by 1 (akn_conv_c16_s2_adjoint)
    /// against the forward's transpose in double (each term scattered from its output position), on
    /// every ISA path: dz padded by bands with a ReLU mask and a BN scale, ranges of rows and blocks,
    /// even and odd heights, widths of one to eight 4-wide tiles, a partial last block of channels
    /// (nothing stored past c); geometries it lacks are refused.
    func testStridedAdjointKernelAgainstScatterLoops() throws {
        let cases: [(c: Int, m: Int, h: Int, w: Int)] = [(16, 32, 32, 32), (32, 64, 16, 16), (20, 24, 15, 12), (8, 16, 16, 16),
                                                         (64, 16, 8, 8), (3, 5, 1, 4), (16, 8, 7, 28)]
        try forEachISA { isa in
            for (i, t) in cases.enumerated() {
                let what = "\(isa.name) c\(t.c) m\(t.m) \(t.h)x\(t.w)"
                let (oh, ow) = ((t.h + 1) / 2, t.w / 2)
                let wt = randomTensor([t.m, t.c, 3, 3], seed: UInt64(190 + i), scale: 0.3).data
                var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(t.m), Int32(t.c * 9)) + 64)
                akn_gemm_pack_a(wt, t.c * 9, 0, Int32(t.m), Int32(t.c * 9), &packed)
                let blocks = (t.c + 15) / 16
                var c16 = [Float](repeating: .nan, count: blocks * 16 * t.m * 9)
                akn_conv3x3_c16_weights(packed, Int32(t.m), Int32(t.c), 1, 0, Int32(blocks), &c16)
                let (dz, mask, scale, expected) = stridedAdjointReference(wt, c: t.c, m: t.m, h: t.h, w: t.w, seed: UInt64(200 + i))
                // (16 planes of NaN past the c outputs: a partial last block must leave them)
                var dx = [Float](repeating: .nan, count: (t.c + 16) * t.h * t.w)
                let (yh, bh) = (t.h / 2, blocks / 2)
                for (c0, c1, r0, r1) in [(0, bh, 0, t.h), (bh, blocks, 0, yh), (bh, blocks, yh, t.h)] where r1 > r0 {
                    // each range from its own band of dz, padded as the layer pads it (the rest NaN)
                    var band = [Float](repeating: .nan, count: akn_scratch_size(Int32(t.m), Int32(oh), Int32(ow)))
                    akn_conv3x3_pad_band(dz, mask, scale, Int32(t.m), Int32(oh), Int32(ow), Int32(r0 / 2), Int32((r1 - 1) / 2 + 1),
                                         &band)
                    XCTAssertEqual(akn_conv_c16_s2_adjoint(band, Int32(t.m), Int32(oh), Int32(ow), c16, Int32(t.c), Int32(t.h),
                                                           Int32(t.w), Int32(c0), Int32(c1), Int32(r0), Int32(r1), &dx), 0, what)
                }
                XCTAssertTrue(dx[(t.c * t.h * t.w)...].allSatisfy { $0.isNaN }, "\(what): stored past channel \(t.c)")
                dx.removeLast(16 * t.h * t.w)
                XCTAssertFalse(dx.contains { $0.isNaN }, "\(what): outputs not all written (or a NaN read)")
                let top = expected.map { abs($0) }.max()!
                XCTAssertGreaterThan(top, 0, what)
                let err = zip(dx, expected).map { abs(Double($0) - $1) }.max()!
                XCTAssertLessThan(err / top, 2e-6, what)
            }
            // Geometries it lacks: a width not a multiple of 4, and an output not the forward's.
            var dx = [Float](repeating: 0, count: 64), any = [Float](repeating: 0, count: 1024)
            for (oh, ow, h, w) in [(3, 3, 6, 6), (4, 2, 8, 4 + 1), (3, 2, 8, 4), (4, 3, 8, 4)] {
                XCTAssertEqual(akn_conv_c16_s2_adjoint(any, 1, Int32(oh), Int32(ow), any, 1, Int32(h), Int32(w), 0, 1, 0, Int32(h), &dx),
                               -1, "\(isa.name) \(h)x\(w) from \(oh)x\(ow)")
            }
        }
    }

    /// A 3x3/2 layer's input gradient in double, scattered through the forward's taps from random
    /// dz, mask and BN scale (dz' = (mask > 0 ? dz : 0) * scale): (dz, mask, scale, dx).
    private func stridedAdjointReference(_ wt: [Float], c: Int, m: Int, h: Int, w: Int, seed: UInt64)
        -> ([Float], [Float], [Float], [Double]) {
        let (oh, ow) = ((h + 1) / 2, w / 2)
        let dz = randomTensor([m, oh, ow], seed: seed).data
        let mask = randomTensor([m, oh, ow], seed: seed + 10).data.map { $0 > 0 ? Float(1) : 0 }
        let scale = (0..<m).map { 0.5 + Float($0) / 16 }
        var expected = [Double](repeating: 0, count: c * h * w)
        for o in 0..<m {
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let d = mask[(o * oh + oy) * ow + ox] > 0 ? Double(dz[(o * oh + oy) * ow + ox]) * Double(scale[o]) : 0
                    for ci in 0..<c {
                        for ky in 0..<3 {
                            for kx in 0..<3 {
                                let (y, x) = (2 * oy - 1 + ky, 2 * ox - 1 + kx)
                                guard y >= 0, y < h, x >= 0, x < w else { continue }
                                expected[(ci * h + y) * w + x] += Double(wt[((o * c + ci) * 3 + ky) * 3 + kx]) * d
                            }
                        }
                    }
                }
            }
        }
        return (dz, mask, scale, expected)
    }

    /// akn_conv_s2_adjoint_few (a few-channel stem's 3x3/2 input gradient, positions in the lanes) on
    /// every ISA path against the scatter in double: 1 to 4 channels, odd and even heights, rows in
    /// two ranges each from its own padded band (NaN past it), and the geometries it refuses.
    func testFewChannelStridedAdjointKernel() throws {
        let cases: [(c: Int, m: Int, h: Int, w: Int)] = [(3, 16, 32, 32), (3, 8, 32, 32), (1, 5, 15, 16), (2, 16, 9, 48),
                                                         (4, 64, 16, 16), (3, 3, 2, 16)]
        try forEachISA { isa in
            for (i, t) in cases.enumerated() {
                let what = "\(isa.name) c\(t.c) m\(t.m) \(t.h)x\(t.w)"
                let (oh, ow) = ((t.h + 1) / 2, t.w / 2)
                let wt = randomTensor([t.m, t.c, 3, 3], seed: UInt64(230 + i), scale: 0.3).data
                let (dz, mask, scale, expected) = stridedAdjointReference(wt, c: t.c, m: t.m, h: t.h, w: t.w, seed: UInt64(240 + i))
                var dx = [Float](repeating: .nan, count: t.c * t.h * t.w)
                let half = t.h / 2 + 1
                for (r0, r1) in [(0, half), (half, t.h)] where r1 > r0 {
                    var band = [Float](repeating: .nan, count: akn_scratch_size(Int32(t.m), Int32(oh), Int32(ow)))
                    akn_conv3x3_pad_band(dz, mask, scale, Int32(t.m), Int32(oh), Int32(ow), Int32(r0 / 2), Int32((r1 - 1) / 2 + 1),
                                         &band)
                    XCTAssertEqual(akn_conv_s2_adjoint_few(band, Int32(t.m), Int32(oh), Int32(ow), wt, Int32(t.c), Int32(t.h),
                                                           Int32(t.w), Int32(r0), Int32(r1), &dx), 0, what)
                }
                XCTAssertFalse(dx.contains { $0.isNaN }, "\(what): outputs not all written (or a NaN read)")
                let top = expected.map { abs($0) }.max()!
                XCTAssertGreaterThan(top, 0, what)
                XCTAssertLessThan(zip(dx, expected).map { abs(Double($0) - $1) }.max()! / top, 2e-6, what)
            }
            // Geometries it lacks: 5 channels, a width not a multiple of 16, an output not the forward's.
            var dx = [Float](repeating: 0, count: 4096), any = [Float](repeating: 0, count: 4096)
            for (c, oh, ow, h, w) in [(5, 8, 8, 16, 16), (3, 4, 4, 8, 8), (3, 8, 8, 16, 17), (3, 7, 8, 16, 16), (0, 8, 8, 16, 16)] {
                XCTAssertEqual(akn_conv_s2_adjoint_few(any, 4, Int32(oh), Int32(ow), any, Int32(c), Int32(h), Int32(w), 0, Int32(h),
                                                       &dx), -1, "\(isa.name) c\(c) \(h)x\(w) from \(oh)x\(ow)")
            }
        }
    }
}
