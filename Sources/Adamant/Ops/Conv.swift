import CBackend
import CKernels

/// 2-D convolution (ONNX `Conv`, NCHW): im2col + OpenBLAS GEMM, input gradient by GEMM + col2im.
struct Conv: Op {
    let type = "Conv"
    /// [M, C/group, kh, kw]
    var weight: [Float]
    var bias: [Float]?
    let outChannels, inPerGroup, kh, kw: Int
    let group: Int
    let strides: (Int, Int)
    let dilations: (Int, Int)
    /// top, left, bottom, right (resolved at shape time for SAME_* auto_pad)
    let pads: (Int, Int, Int, Int)
    let autoPad: String
    /// A ReLU fused into the epilogue by the optimizer.
    var fusedRelu = false
    /// Weights packed for the direct 3x3 kernel (forward, and transposed+flipped for the input
    /// gradient); nil when the convolution is not 3x3 / stride 1 / pad 1 / one group.
    private(set) var packed: [Float]?
    private(set) var packedAdjoint: [Float]?

    /// Whether the direct 3x3 kernel applies (checked again per call: auto_pad may resolve pads).
    var isDirect3x3: Bool {
        kh == 3 && kw == 3 && strides == (1, 1) && dilations == (1, 1) && group == 1 && autoPad != "VALID"
            && (autoPad != "NOTSET" || pads == (1, 1, 1, 1))
    }

    mutating func pack() {
        guard isDirect3x3 else { packed = nil; packedAdjoint = nil; return }
        var f = [Float](repeating: 0, count: akn_packed_size(Int32(outChannels), Int32(inPerGroup)))
        var t = [Float](repeating: 0, count: akn_packed_size(Int32(inPerGroup), Int32(outChannels)))
        akn_pack_conv3x3(weight, Int32(outChannels), Int32(inPerGroup), 0, &f)
        akn_pack_conv3x3(weight, Int32(inPerGroup), Int32(outChannels), 1, &t)
        packed = f
        packedAdjoint = t
    }

    /// out[n] = conv3x3(in[n]) for every sample, with the given packed weights (direct kernel).
    private func direct3x3(_ input: Tensor, channelsIn: Int, channelsOut: Int, packed: [Float], bias: [Float]?,
                           relu: Bool, threads: Int) -> Tensor {
        let (n, h, w) = (input.shape[0], input.shape[2], input.shape[3])
        var out = Tensor(uninitialized: [n, channelsOut, h, w])
        var scratch = [Float](repeating: 0, count: akn_scratch_size(Int32(channelsIn), Int32(h), Int32(w)))
        let tmpSize = akn_tmp_size(Int32(h), Int32(w))
        var tmp = [Float](repeating: 0, count: tmpSize)
        let blocks = (channelsOut + 7) / 8
        input.data.withUnsafeBufferPointer { xp in
            out.data.withUnsafeMutableBufferPointer { yp in
                scratch.withUnsafeMutableBufferPointer { sp in
                    packed.withUnsafeBufferPointer { pp in
                        tmp.withUnsafeMutableBufferPointer { tp in
                            for s in 0..<n {
                                let x = xp.baseAddress! + s * channelsIn * h * w
                                let y = yp.baseAddress! + s * channelsOut * h * w
                                let t = (threads > 1 && channelsIn * channelsOut * h * w > 200_000) ? min(threads, blocks) : 1
                                if t == 1 {
                                    akn_conv3x3(x, Int32(channelsIn), Int32(h), Int32(w), pp.baseAddress!, Int32(channelsOut), 0,
                                                Int32(channelsOut), bias, relu ? 1 : 0, y, sp.baseAddress!, 1, tp.baseAddress!)
                                    continue
                                }
                                // Pad once, then split the blocks of 8 output channels over the threads.
                                akn_conv3x3(x, Int32(channelsIn), Int32(h), Int32(w), pp.baseAddress!, Int32(channelsOut), 0, 0,
                                            nil, 0, y, sp.baseAddress!, 1, tp.baseAddress!)
                                let scratchBase = sp.baseAddress!, packedBase = pp.baseAddress!
                                Parallel.forRanges(blocks, threads: t) { r in
                                    var own = [Float](repeating: 0, count: tmpSize)
                                    own.withUnsafeMutableBufferPointer { op in
                                        akn_conv3x3(x, Int32(channelsIn), Int32(h), Int32(w), packedBase, Int32(channelsOut),
                                                    Int32(r.lowerBound * 8), Int32(min(channelsOut, r.upperBound * 8)), bias,
                                                    relu ? 1 : 0, y, scratchBase, 0, op.baseAddress!)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return out
    }

    init(_ a: Attrs, weight w: RawTensor, bias b: RawTensor?) throws {
        guard w.dims.count == 4 else { throw a.unsupported("a \(w.dims.count - 2)-D convolution (weight \(w.dims))") }
        outChannels = w.dims[0]; inPerGroup = w.dims[1]; kh = w.dims[2]; kw = w.dims[3]
        weight = w.floats
        group = try a.int("group", 1)
        guard group >= 1, outChannels % group == 0 else { throw a.invalid("group \(group) does not divide \(outChannels) output channels") }
        if let ks = try a.ints("kernel_shape"), ks != [kh, kw] {
            throw a.invalid("kernel_shape \(ks) does not match the weight's \([kh, kw])")
        }
        let s = try a.ints("strides") ?? [1, 1]
        let d = try a.ints("dilations") ?? [1, 1]
        let p = try a.ints("pads") ?? [0, 0, 0, 0]
        guard s.count == 2, d.count == 2, p.count == 4, s.allSatisfy({ $0 >= 1 }), d.allSatisfy({ $0 >= 1 }),
              p.allSatisfy({ $0 >= 0 }) else {
            throw a.invalid("strides \(s), dilations \(d) or pads \(p) are invalid for a 2-D convolution")
        }
        strides = (s[0], s[1]); dilations = (d[0], d[1]); pads = (p[0], p[1], p[2], p[3])
        autoPad = try a.string("auto_pad", "NOTSET")
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else { throw a.unsupported("auto_pad \(autoPad)") }
        if let b {
            guard b.floats.count == outChannels else { throw a.invalid("bias has \(b.floats.count) values for \(outChannels) channels") }
            bias = b.floats
        } else { bias = nil }
        pack()
    }

    var parameterCount: Int { weight.count + (bias?.count ?? 0) }

    /// Effective pads (top, left, bottom, right) for an input of size h x w.
    func resolvedPads(_ h: Int, _ w: Int) -> (Int, Int, Int, Int) {
        windowPads(autoPad, explicit: pads, h: h, w: w, kernel: (kh, kw), strides: strides, dilations: dilations)
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        guard x.count == 4 else { throw fail(.shape, "Conv expects a 4-D NCHW input, got \(x)") }
        guard x[1] == inPerGroup * group else {
            throw fail(.shape, "Conv expects \(inPerGroup * group) input channels, got \(x[1])")
        }
        let p = resolvedPads(x[2], x[3])
        let oh = (x[2] + p.0 + p.2 - dilations.0 * (kh - 1) - 1) / strides.0 + 1
        let ow = (x[3] + p.1 + p.3 - dilations.1 * (kw - 1) - 1) / strides.1 + 1
        guard oh >= 1, ow >= 1 else { throw fail(.shape, "Conv kernel \(kh)x\(kw) does not fit input \(x)") }
        return [[x[0], outChannels, oh, ow]]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int {
        2 &* outputs[0].product &* inPerGroup &* kh &* kw
    }

    private func isPointwise(_ p: (Int, Int, Int, Int)) -> Bool {
        kh == 1 && kw == 1 && strides == (1, 1) && p == (0, 0, 0, 0)
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let outShape = try shapes([x.shape], ShapeEnv(declaredBatch: nil, batch: x.shape[0]))[0]
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (outShape[2], outShape[3])
        let p = resolvedPads(h, w)
        if let packed, p == (1, 1, 1, 1) {
            return [direct3x3(x, channelsIn: c, channelsOut: outChannels, packed: packed, bias: bias, relu: fusedRelu,
                              threads: ctx.threads)]
        }
        let mg = outChannels / group
        let kdim = inPerGroup * kh * kw
        let ohw = oh * ow
        var y = Tensor(uninitialized: outShape)  // every element is written by a GEMM (beta = 0)
        let pointwise = isPointwise(p)
        // One sample per GEMM (in fixed column blocks): a sample's result never depends on its
        // batch-mates, the batch size or the thread count.
        var col = [Float](repeating: 0, count: pointwise ? 0 : kdim * ohw)
        x.data.withUnsafeBufferPointer { xp in
            weight.withUnsafeBufferPointer { wp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    col.withUnsafeMutableBufferPointer { cp in
                        for s in 0..<n {
                            for g in 0..<group {
                                let wg = wp.baseAddress! + g * mg * kdim
                                let yOut = yp.baseAddress! + (s * outChannels + g * mg) * ohw
                                let xs = xp.baseAddress! + (s * c + g * inPerGroup) * h * w
                                let src: UnsafePointer<Float>
                                if pointwise {
                                    src = xs
                                } else {
                                    let colBase = cp.baseAddress!
                                    Parallel.forRanges(inPerGroup, threads: ohw * kdim > 100_000 ? ctx.threads : 1) { r in
                                        im2col(xs, h, w, oh, ow, p, colBase, ldc: ohw, channels: r)
                                    }
                                    src = UnsafePointer(colBase)
                                }
                                gemmColumns(transA: false, m: mg, n: ohw, k: kdim, a: wg, lda: kdim, b: src,
                                            ldb: ohw, c: yOut, ldc: ohw, threads: ctx.threads)
                            }
                        }
                        // Epilogue: bias, then the fused ReLU.
                        if bias != nil || fusedRelu {
                            let bias = self.bias ?? [Float](repeating: 0, count: outChannels)
                            for s in 0..<n {
                                for m in 0..<outChannels {
                                    let b = bias[m]
                                    let dst = yp.baseAddress! + (s * outChannels + m) * ohw
                                    if fusedRelu {
                                        for i in 0..<ohw { dst[i] = Swift.max(dst[i] + b, 0) }
                                    } else {
                                        for i in 0..<ohw { dst[i] += b }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return [y]
    }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        guard needs[0] else { return [nil] }
        let x = inputs[0]
        var dy = gradOutputs[0]
        if fusedRelu {
            // ReLU'(z) = [z > 0] = [relu(z) > 0]: mask with the stored output.
            dy = reluMask(outputs[0], gradOutputs[0])
        }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (dy.shape[2], dy.shape[3])
        let p = resolvedPads(h, w)
        if let packedAdjoint, p == (1, 1, 1, 1) {
            // The adjoint of a 3x3/s1/p1 convolution is the same convolution with weights transposed and flipped.
            return [direct3x3(dy, channelsIn: outChannels, channelsOut: c, packed: packedAdjoint, bias: nil, relu: false,
                              threads: ctx.threads)]
        }
        let mg = outChannels / group
        let kdim = inPerGroup * kh * kw
        let ohw = oh * ow
        var dx = Tensor(zeros: x.shape)
        let pointwise = isPointwise(p)
        var col = [Float](repeating: 0, count: pointwise ? 0 : kdim * ohw)
        dy.data.withUnsafeBufferPointer { dyp in
            weight.withUnsafeBufferPointer { wp in
                dx.data.withUnsafeMutableBufferPointer { dxp in
                    col.withUnsafeMutableBufferPointer { cp in
                        for s in 0..<n {
                            for g in 0..<group {
                                let wg = wp.baseAddress! + g * mg * kdim
                                let dyg = dyp.baseAddress! + (s * outChannels + g * mg) * ohw
                                let dxg = dxp.baseAddress! + (s * c + g * inPerGroup) * h * w
                                if pointwise {
                                    gemmColumns(transA: true, m: kdim, n: ohw, k: mg, a: wg, lda: kdim, b: dyg,
                                                ldb: ohw, c: dxg, ldc: ohw, threads: ctx.threads)
                                } else {
                                    gemmColumns(transA: true, m: kdim, n: ohw, k: mg, a: wg, lda: kdim, b: dyg,
                                                ldb: ohw, c: cp.baseAddress!, ldc: ohw, threads: ctx.threads)
                                    let colBase = UnsafePointer(cp.baseAddress!)
                                    Parallel.forRanges(inPerGroup, threads: ohw * kdim > 100_000 ? ctx.threads : 1) { r in
                                        col2im(colBase, ldc: ohw, h, w, oh, ow, p, dxg, channels: r)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        return [dx]
    }

    /// Unfolds one sample's group channels into rows (c, ki, kj) x columns (oh, ow) with row stride ldc.
    private func im2col(_ x: UnsafePointer<Float>, _ h: Int, _ w: Int, _ oh: Int, _ ow: Int,
                        _ p: (Int, Int, Int, Int), _ col: UnsafeMutablePointer<Float>, ldc: Int,
                        channels: Range<Int>? = nil) {
        let (sh, sw) = strides
        let (dh, dw) = dilations
        let channels = channels ?? 0..<inPerGroup
        var row = channels.lowerBound * kh * kw
        for ci in channels {
            let xc = x + ci * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let dst = col + row * ldc
                    row += 1
                    let jOff = kj * dw - p.1
                    // Range of ow whose input column lies inside [0, w).
                    let owLo = jOff < 0 ? min(ow, (-jOff + sw - 1) / sw) : 0
                    let owHi = w - 1 - jOff < 0 ? owLo : max(owLo, min(ow, (w - 1 - jOff) / sw + 1))
                    for o in 0..<oh {
                        let ih = o * sh + ki * dh - p.0
                        let d = dst + o * ow
                        if ih < 0 || ih >= h {
                            d.update(repeating: 0, count: ow)
                            continue
                        }
                        let src = xc + ih * w
                        if owLo > 0 { d.update(repeating: 0, count: owLo) }
                        if sw == 1 {
                            if owHi > owLo { (d + owLo).update(from: src + owLo + jOff, count: owHi - owLo) }
                        } else {
                            var iw = owLo * sw + jOff
                            for q in owLo..<owHi { d[q] = src[iw]; iw += sw }
                        }
                        if owHi < ow { (d + owHi).update(repeating: 0, count: ow - owHi) }
                    }
                }
            }
        }
    }

    /// Adds the columns back into one sample's group channels (the adjoint of im2col).
    private func col2im(_ col: UnsafePointer<Float>, ldc: Int, _ h: Int, _ w: Int, _ oh: Int, _ ow: Int,
                        _ p: (Int, Int, Int, Int), _ x: UnsafeMutablePointer<Float>, channels: Range<Int>) {
        let (sh, sw) = strides
        let (dh, dw) = dilations
        var row = channels.lowerBound * kh * kw
        for ci in channels {
            let xc = x + ci * h * w
            for ki in 0..<kh {
                for kj in 0..<kw {
                    let src = col + row * ldc
                    row += 1
                    let jOff = kj * dw - p.1
                    let owLo = jOff < 0 ? min(ow, (-jOff + sw - 1) / sw) : 0
                    let owHi = w - 1 - jOff < 0 ? owLo : max(owLo, min(ow, (w - 1 - jOff) / sw + 1))
                    for o in 0..<oh {
                        let ih = o * sh + ki * dh - p.0
                        if ih < 0 || ih >= h { continue }
                        let dst = xc + ih * w
                        let s = src + o * ow
                        if sw == 1 {
                            let d = dst + jOff
                            for q in owLo..<owHi { d[q] += s[q] }
                        } else {
                            var iw = owLo * sw + jOff
                            for q in owLo..<owHi { dst[iw] += s[q]; iw += sw }
                        }
                    }
                }
            }
        }
    }
}

/// Pads (top, left, bottom, right) of a sliding window (Conv, pooling) under ONNX `auto_pad`.
func windowPads(_ autoPad: String, explicit: (Int, Int, Int, Int), h: Int, w: Int, kernel: (Int, Int),
                strides: (Int, Int), dilations: (Int, Int)) -> (Int, Int, Int, Int) {
    switch autoPad {
    case "VALID": return (0, 0, 0, 0)
    case "SAME_UPPER", "SAME_LOWER":
        func split(_ size: Int, _ k: Int, _ s: Int, _ d: Int) -> (Int, Int) {
            let out = (size + s - 1) / s
            let total = max(0, (out - 1) * s + (k - 1) * d + 1 - size)
            return autoPad == "SAME_UPPER" ? (total / 2, total - total / 2) : (total - total / 2, total / 2)
        }
        let (t, b) = split(h, kernel.0, strides.0, dilations.0)
        let (l, r) = split(w, kernel.1, strides.1, dilations.1)
        return (t, l, b, r)
    default: return explicit
    }
}
