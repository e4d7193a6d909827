import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// The weights of one convolution in the layouts adamant's kernels read. Built once at load and
/// shared by the graph and every BN domain's plan: a domain's BatchNorm is a per-channel scale and
/// shift in the epilogue, so a second domain costs two vectors per convolution, not a copy of the
/// weights. The forward GEMM panels are the only copy of the weights: the GEMM and direct kernels
/// read their transposes from them for input gradients. Only Winograd layers add their transformed
/// matrices, built the first time they run: 28x28 and up their 36 F(4x4, 3x3) matrices and 36 of the
/// adjoint, smaller images with many channels the 16 of F(2x2, 3x3), which serve the adjoint too and,
/// in a loaded model, replace the GEMM panels (``winograd2Only``).
final class ConvWeights: @unchecked Sendable {
    let outChannels, inPerGroup, kh, kw, group: Int
    /// Rows (output channels) per group and the GEMM depth (inPerGroup * kh * kw).
    let mg, kdim: Int
    /// Per group, the packed GEMM A of W_g [mg x kdim] (`gemm.h`), `groupStride` floats apart; empty
    /// once ``winograd2`` has replaced them (``winograd2Only``).
    private(set) var forward: [Float]
    let groupStride: Int
    private var mutex = pthread_mutex_t()
    /// The forms built on first use (``cached(_:_:)``), by ``Form``.
    private var forms = [[Float]?](repeating: nil, count: Form.allCases.count)
    /// Whether the layer may run Winograd F(2x2, 3x3) (``ConvAlgorithm/winograd2``): cleared at load
    /// for the layers whose F(2x2, 3x3) matrices no longer fit in the model's budget
    /// (``Model/limitWinograd2(graph:shapes:)``), before any plan runs; such layers keep their
    /// direct kernel.
    var winograd2Allowed = true
    /// Set at load (``Model``, before any plan runs) for a layer that runs F(2x2, 3x3) wherever the
    /// model uses it: building ``winograd2`` then drops the GEMM panels, so its 16 matrices are the
    /// layer's only copy (16/9 of its weights, not 25/9).
    var winograd2Only = false
    /// Whether the input gradient of this 1x1 layer keeps W^T's own panels (``transposed``) on maps
    /// larger than ``Conv/transposedPanelsMaxPositions`` as well: set at load for the layers that fit
    /// the model's budget (``Model/limitTransposedPanels(graph:shapes:)``), before any plan runs.
    var transposedAllowed = false

    init(weight: [Float], outChannels: Int, inPerGroup: Int, kh: Int, kw: Int, group: Int) {
        self.outChannels = outChannels; self.inPerGroup = inPerGroup; self.kh = kh; self.kw = kw; self.group = group
        let (mg, kdim) = (outChannels / group, inPerGroup * kh * kw)
        let groupStride = akn_gemm_packed_a_size(Int32(mg), Int32(kdim))
        self.mg = mg; self.kdim = kdim; self.groupStride = groupStride
        // + slack: the input gradient's GEMM reads W^T from these panels (gemm.h)
        // akn_gemm_pack_a writes every float of each group's panels (zeros past mg): only the slack
        // needs filling (no zero-fill pass over the whole weight, which loading ResNet-638 felt).
        let total = groupStride * group + AKN_GEMM_SLACK
        var f = [Float](unsafeUninitializedCapacity: total) { buf, count in
            (buf.baseAddress! + groupStride * group).initialize(repeating: 0, count: AKN_GEMM_SLACK)
            count = total
        }
        weight.withUnsafeBufferPointer { w in
            f.withUnsafeMutableBufferPointer { out in
                let (wb, ob) = (w.baseAddress!, out.baseAddress!)
                let panels = (mg + 5) / 6
                for g in 0..<group {
                    // Whole panels per thread (a big layer packs on every core while loading).
                    Parallel.forRanges(panels, threads: mg * kdim >= 1 << 18 ? Parallel.threads : 1) { r in
                        let rows = min(mg, r.upperBound * 6) - r.lowerBound * 6
                        akn_gemm_pack_a(wb + (g * mg + r.lowerBound * 6) * kdim, kdim, 0, Int32(rows), Int32(kdim),
                                        ob + g * groupStride + r.lowerBound * 6 * kdim)
                    }
                }
            }
        }
        forward = f
        pthread_mutex_init(&mutex, nil)
    }

    deinit { pthread_mutex_destroy(&mutex) }

    /// Floats of the GEMM panels (``forward`` until ``winograd2`` replaces them).
    var panelFloats: Int { groupStride * group + AKN_GEMM_SLACK }

    /// The weights as ONNX stores them, [M][C/group][kh][kw], read back from the packed panels.
    func unpacked() -> [Float] {
        var w = [Float](repeating: 0, count: outChannels * kdim)
        for o in 0..<outChannels {
            let g = o / mg, r = o % mg
            let base = g * groupStride + (r / 6) * kdim * 6 + r % 6
            for i in 0..<kdim { w[o * kdim + i] = forward[base + i * 6] }
        }
        return w
    }

    /// The weight layouts some kernels read besides the GEMM panels.
    private enum Form: Int, CaseIterable {
        case directAdjoint, c16Forward, c16Adjoint, winograd, winogradAdjoint, winograd2, flippedAdjoint, transposed,
             winograd2Adjoint, plain
    }

    /// Form `form`, built by `make` on first use and kept. (An array slot, not a key path: the
    /// key-path read cost a CIFAR network at batch 1 about 1 % of its forward, once per layer.)
    private func cached(_ form: Form, _ make: () -> [Float]) -> [Float] {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let v = forms[form.rawValue] { return v }
        let v = make()
        forms[form.rawValue] = v
        return v
    }

    /// Weights of at most this many floats keep their direct-kernel adjoint panels once built
    /// (`directAdjoint`): CIFAR-sized layers, whose per-call gather cost a fifth of their backward at
    /// batch 1. Larger layers gather per call (a resident copy would double their memory).
    static let cachedAdjointMaxFloats = 64 * 64 * 9

    /// ``unpacked()``, built on first use and kept (a few-channel stem's input gradient reads them:
    /// ``Conv/usesStridedFewAdjoint(h:w:)``).
    var plain: [Float] { cached(.plain) { unpacked() } }

    /// The direct 3x3 kernel's adjoint panels (akn_conv3x3_adjoint_weights), built on the first
    /// input gradient and kept: small 3x3 layers only (`cachedAdjointMaxFloats`).
    var directAdjoint: [Float] {
        cached(.directAdjoint) {
            let (cf, mf) = (inPerGroup, outChannels)
            let blocks = (cf + 5) / 6
            var out = [Float](repeating: 0, count: blocks * mf * 54)
            forward.withUnsafeBufferPointer { pp in
                out.withUnsafeMutableBufferPointer { op in
                    akn_conv3x3_adjoint_weights(pp.baseAddress!, Int32(cf), Int32(mf), 0, Int32(blocks), op.baseAddress!)
                }
            }
            return out
        }
    }

    /// The GEMM panels of a 3x3 convolution's adjoint (its input gradient as a convolution of the
    /// padded output gradient): rows the forward's inputs ci, depth (co, ky, kx) holding
    /// W[co][ci][2 - ky][2 - kx]; built on the first input gradient and kept (layers of at most
    /// `flippedAdjointMaxFloats` weights).
    var flippedAdjoint: [Float] {
        cached(.flippedAdjoint) {
            let (c, m) = (inPerGroup, outChannels)
            let w = unpacked()
            var plain = [Float](repeating: 0, count: c * m * 9)
            for co in 0..<m {
                for ci in 0..<c {
                    for t in 0..<9 { plain[(ci * m + co) * 9 + t] = w[(co * c + ci) * 9 + 8 - t] }
                }
            }
            var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(c), Int32(m * 9)) + Int(AKN_GEMM_SLACK))
            akn_gemm_pack_a(plain, m * 9, 0, Int32(c), Int32(m * 9), &packed)
            return packed
        }
    }

    /// The GEMM panels of W^T [kdim x M] (one group), for the input gradient of a layer on a small
    /// map (``Conv/usesTransposedPanels(h:w:)``), built on the first input gradient and kept: read in
    /// place as W^T, W's panels are 6 floats per row of W^T at a stride of the layer's whole depth,
    /// which the hardware prefetcher does not follow, and a 7x7 map's 49 columns per sample leave
    /// the GEMM waiting on memory (1.2-1.3x the forward's time at batch 1).
    var transposed: [Float] {
        cached(.transposed) {
            var out = [Float](repeating: 0, count: akn_gemm_packed_a_size(Int32(kdim), Int32(mg)) + Int(AKN_GEMM_SLACK))
            forward.withUnsafeBufferPointer { wp in
                out.withUnsafeMutableBufferPointer { op in
                    let (wb, ob) = (wp.baseAddress!, op.baseAddress!)
                    // (whole panels of 6 rows per thread)
                    Parallel.forRanges((kdim + 5) / 6, threads: Parallel.threads) { r in
                        akn_gemm_gather_transposed(wb, Int32(kdim), Int32(mg), Int32(r.lowerBound * 6), Int32(r.upperBound * 6), ob)
                    }
                }
            }
            return out
        }
    }

    /// The 16 F(2x2, 3x3) matrices of the input gradient, packed [C x M] each: matrix xi is the
    /// forward's matrix `akn_wino2_adjoint_xi(xi)` transposed (what the input gradient otherwise
    /// reads in place from ``winograd2``), built on the first input gradient of a layer on a small
    /// map (``Conv/usesTransposedPanels(h:w:)``) and kept.
    var winograd2Adjoint: [Float] {
        let u = winograd2
        return cached(.winograd2Adjoint) {
            let perF = akn_gemm_packed_a_size(Int32(outChannels), Int32(inPerGroup))
            let perA = akn_gemm_packed_a_size(Int32(inPerGroup), Int32(outChannels))
            var out = [Float](repeating: 0, count: 16 * perA + Int(AKN_GEMM_SLACK))
            u.withUnsafeBufferPointer { up in
                out.withUnsafeMutableBufferPointer { op in
                    let (ub, ob) = (up.baseAddress!, op.baseAddress!)
                    Parallel.forRanges(16, threads: Parallel.threads) { r in
                        for xi in r {
                            akn_gemm_gather_transposed(ub + Int(akn_wino2_adjoint_xi(Int32(xi))) * perF, Int32(inPerGroup),
                                                       Int32(outChannels), 0, Int32(inPerGroup), ob + xi * perA)
                        }
                    }
                }
            }
            return out
        }
    }

    /// Floats of ``transposed`` (or of ``winograd2Adjoint`` for an F(2x2) layer).
    var transposedFloats: Int { akn_gemm_packed_a_size(Int32(kdim), Int32(mg)) + Int(AKN_GEMM_SLACK) }
    var winograd2AdjointFloats: Int { 16 * akn_gemm_packed_a_size(Int32(inPerGroup), Int32(outChannels)) + Int(AKN_GEMM_SLACK) }

    /// Weights up to which a 3x3/1 im2col layer keeps ``flippedAdjoint`` (a 128 -> 128 layer: 590 KB).
    static let flippedAdjointMaxFloats = 128 * 128 * 9

    private var phasedAdjointStore: [Float]?
    private var phasedAdjointGeometry: [Int32] = []

    /// A of the phased input gradient (akn_phased_adjoint: rows (ci, py, px) by depth (co, dy, dx)),
    /// packed, for the geometry `g`; built on the first input gradient and kept (a stem's: 12 x 1024).
    func phasedAdjoint(_ g: akn_conv_b) -> [Float] {
        var g = g
        let key = [g.h, g.w, g.ow, g.kh, g.kw, g.sh, g.sw, g.pt, g.pl]
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        if let a = phasedAdjointStore, phasedAdjointGeometry == key { return a }
        var (rows, depth) = (Int32(0), Int32(0))
        akn_phased_adjoint_dims(&g, Int32(inPerGroup), Int32(outChannels), &rows, &depth)
        var plain = [Float](repeating: 0, count: Int(rows) * Int(depth))
        unpacked().withUnsafeBufferPointer { wp in
            akn_phased_adjoint_weights(&g, Int32(inPerGroup), Int32(outChannels), wp.baseAddress!, &plain)
        }
        var packed = [Float](repeating: 0, count: akn_gemm_packed_a_size(rows, depth) + Int(AKN_GEMM_SLACK))
        akn_gemm_pack_a(plain, Int(depth), 0, rows, depth, &packed)
        phasedAdjointStore = packed
        phasedAdjointGeometry = key
        return packed
    }


    /// The channel-blocked kernel's weights (akn_conv3x3_c16_weights, akn_conv_c16_weights), forward
    /// or (3x3 only) adjoint, built on first use and kept: small 3x3 and 1x1 layers only
    /// (`cachedAdjointMaxFloats`).
    func c16(adjoint: Bool) -> [Float] {
        cached(adjoint ? .c16Adjoint : .c16Forward) {
            // (a last block of fewer than 16 rows is padded with zero rows)
            let rows = adjoint ? inPerGroup : outChannels, taps = kh * kw, blocks = (rows + 15) / 16
            var out = [Float](repeating: 0, count: blocks * 16 * (adjoint ? outChannels : inPerGroup) * taps)
            forward.withUnsafeBufferPointer { pp in
                out.withUnsafeMutableBufferPointer { op in
                    if taps == 9 {
                        akn_conv3x3_c16_weights(pp.baseAddress!, Int32(outChannels), Int32(inPerGroup), adjoint ? 1 : 0, 0,
                                                Int32(blocks), op.baseAddress!)
                    } else {
                        akn_conv_c16_weights(pp.baseAddress!, Int32(outChannels), Int32(inPerGroup), Int32(taps), 0,
                                             Int32(blocks), op.baseAddress!)
                    }
                }
            }
            return out
        }
    }

    /// The 36 Winograd-domain weight matrices U_xi [M x C], packed (3x3, one group only).
    var winograd: [Float] { winogradForm(adjoint: false) }
    /// The same for the input gradient: U'_xi [C x M] of the transposed, flipped kernel.
    var winogradAdjoint: [Float] { winogradForm(adjoint: true) }

    /// Floats of ``winograd2``.
    var winograd2Floats: Int { 16 * akn_gemm_packed_a_size(Int32(outChannels), Int32(inPerGroup)) + Int(AKN_GEMM_SLACK) }

    /// The 16 F(2x2, 3x3) weight matrices U_xi [M x C], packed, one after another (+ the slack a
    /// transposed read needs): the forward's, and transposed the input gradient's (winograd.h).
    var winograd2: [Float] {
        cached(.winograd2) {
            // Straight from the GEMM panels (one group), whole panels per thread; only the slack
            // needs zeros.
            let (count, body) = (winograd2Floats, winograd2Floats - Int(AKN_GEMM_SLACK))
            var u = [Float](unsafeUninitializedCapacity: count) { buf, k in
                (buf.baseAddress! + body).initialize(repeating: 0, count: count - body)
                k = count
            }
            forward.withUnsafeBufferPointer { wp in
                u.withUnsafeMutableBufferPointer { up in
                    let (wb, ub) = (wp.baseAddress!, up.baseAddress!)
                    Parallel.forRanges((outChannels + 5) / 6, threads: Parallel.threads) { r in
                        akn_wino2_weights_panels(wb, Int32(outChannels), Int32(inPerGroup), Int32(r.lowerBound),
                                                 Int32(r.upperBound), ub)
                    }
                }
            }
            if winograd2Only { forward = [] }  // (nothing reads them again: see winograd2Only)
            return u
        }
    }

    private func winogradForm(adjoint: Bool) -> [Float] {
        cached(adjoint ? .winogradAdjoint : .winograd) {
            let w = unpacked()
            let (rows, cols) = adjoint ? (inPerGroup, outChannels) : (outChannels, inPerGroup)
            let count = 36 * akn_gemm_packed_a_size(Int32(rows), Int32(cols))
            var u = [Float](unsafeUninitializedCapacity: count) { _, k in k = count }
            w.withUnsafeBufferPointer { wp in
                u.withUnsafeMutableBufferPointer { up in
                    let (wb, ub) = (wp.baseAddress!, up.baseAddress!)
                    Parallel.forRanges(rows, threads: Parallel.threads) { r in
                        akn_wino_weights(wb, Int32(outChannels), Int32(inPerGroup), adjoint ? 1 : 0, Int32(r.lowerBound),
                                         Int32(r.upperBound), ub)
                    }
                }
            }
            return u
        }
    }
}

/// How a convolution runs, chosen per layer from its shape alone (never from the batch), so a
/// sample's result does not depend on the batch it is in.
enum ConvAlgorithm: Equatable {
    /// Winograd F(4x4, 3x3) + 36 GEMMs: 3x3, stride 1, pad 1, one group, at least 49 tiles (28x28
    /// and up) and enough channels that the 36 GEMMs outweigh the transforms. Smaller images gain
    /// nothing measurable (the 36 weight matrices are streamed for few columns) and would hold 4x the
    /// layer's weights (14x14 runs ``winograd2``).
    case winograd
    /// Winograd F(2x2, 3x3) + 16 GEMMs: 3x3, stride 1, pad 1, one group, images too small for
    /// F(4x4, 3x3), from 7x7 up (ResNet stage 3's 14x14: 49 tiles exactly; stage 4's 7x7: 16 tiles
    /// over 8x8, still 1.7x fewer multiply-adds, and 5 % off a ResNet-18 at batch 1), with at least
    /// `winograd2MinChannels` input and output channels. 2.25x fewer multiply-adds than direct, for
    /// 16/9 of the layer's weights (its only extra copy: the input gradient reads them transposed).
    case winograd2
    /// The direct 3x3 kernel: 3x3, stride 1, pad 1, one group, with fewer channels.
    case direct3x3
    /// 1x1 stride-1 unpadded: the input is the GEMM's B as it is.
    case pointwise
    /// 1x1 with a stride, unpadded (a ResNet's downsampling shortcut): the input subsampled once
    /// (`akn_subsample`), then as ``pointwise``; the input gradient scattered back
    /// (`akn_subsample_adjoint`). The implicit im2col gathered it per panel, and a 28-wide output's
    /// panels straddle rows (ResNet-50 at batch 1: these layers at 1.26x ONNX Runtime's time, 1.12x
    /// this way).
    case strided1x1
    /// Few input channels (at most ``Conv/phasedMaxChannels``), a window of at least 3x3, a stride
    /// of 1 or 2, 16 output columns or more, one group, no dilation (a ResNet's 7x7/2 stem): the
    /// forward reads each tap's columns in place from the input rows split into stride phases
    /// (`akn_conv_phased`), the GEMM's tiles without its packing. Same bits as ``im2col``.
    /// ResNet-50's stem, one thread: 1.40 -> 1.18 ms. The input gradient is one GEMM per row of the
    /// input's phase grid (`akn_phased_adjoint`: rows (channel, phase), dz read in place from a
    /// band), not im2col's column buffer and col2im.
    case phased
    /// im2col + GEMM: everything else.
    case im2col
}

/// 2-D convolution (ONNX `Conv`, NCHW) on adamant's GEMM (`gemm.h`), with Winograd for 3x3 layers.
/// The epilogue applies, in order: a per-channel scale (a BN domain), the bias (or BN shift), a
/// fused residual (a following `Add`, the op's second input) and a fused ReLU.
struct Conv: Op {
    let type = "Conv"
    let weights: ConvWeights
    var bias: [Float]?
    /// Per-output-channel multiplier before the bias (a folded BatchNorm's scale); nil = 1.
    var scale: [Float]?
    let outChannels, inPerGroup, kh, kw: Int
    let group: Int
    let strides: (Int, Int)
    let dilations: (Int, Int)
    /// top, left, bottom, right (resolved at shape time for SAME_* auto_pad)
    let pads: (Int, Int, Int, Int)
    let autoPad: String
    /// A ReLU fused into the epilogue by the optimizer.
    var fusedRelu = false
    /// An `Add` fused into the epilogue: the op's second input is added before the ReLU.
    var fusedResidual = false

    init(_ a: Attrs, weight w: RawTensor, bias b: RawTensor?) throws {
        guard w.dims.count == 4 else { throw a.unsupported("a \(w.dims.count - 2)-D convolution (weight \(w.dims))") }
        outChannels = w.dims[0]; inPerGroup = w.dims[1]; kh = w.dims[2]; kw = w.dims[3]
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
        // Bounded so that no size arithmetic can overflow (no real network comes near).
        guard (s + d + p).allSatisfy({ $0 <= Conv.maxWindowAttribute }), kh <= Conv.maxWindowAttribute,
              kw <= Conv.maxWindowAttribute else {
            throw a.unsupported("strides \(s), dilations \(d), pads \(p) or a kernel of \(kh)x\(kw) above \(Conv.maxWindowAttribute)")
        }
        strides = (s[0], s[1]); dilations = (d[0], d[1]); pads = (p[0], p[1], p[2], p[3])
        autoPad = try a.string("auto_pad", "NOTSET")
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else { throw a.unsupported("auto_pad \(autoPad)") }
        if let b {
            guard b.floats.count == outChannels else { throw a.invalid("bias has \(b.floats.count) values for \(outChannels) channels") }
            bias = b.floats
        } else { bias = nil }
        weights = ConvWeights(weight: w.floats, outChannels: outChannels, inPerGroup: inPerGroup, kh: kh, kw: kw,
                              group: group)
    }

    /// Largest stride, dilation, pad or kernel size accepted.
    static let maxWindowAttribute = 1 << 20

    var parameterCount: Int { outChannels * inPerGroup * kh * kw + (bias?.count ?? 0) }

    /// Effective pads (top, left, bottom, right) for an input of size h x w.
    func resolvedPads(_ h: Int, _ w: Int) -> (Int, Int, Int, Int) {
        windowPads(autoPad, explicit: pads, h: h, w: w, kernel: (kh, kw), strides: strides, dilations: dilations)
    }

    /// The algorithm for an h x w input (a function of the layer's shape only).
    func algorithm(_ h: Int, _ w: Int) -> ConvAlgorithm {
        let p = resolvedPads(h, w)
        if kh == 3 && kw == 3 && strides == (1, 1) && dilations == (1, 1) && group == 1 && p == (1, 1, 1, 1) {
            if inPerGroup >= winogradMinChannels && outChannels >= winogradMinChannels
                && akn_wino_tiles(Int32(h), Int32(w)) >= 49 && !winogradDisabled {
                return .winograd
            }
            if inPerGroup >= winograd2MinChannels && outChannels >= winograd2MinChannels && h * w > 36
                && !winogradDisabled && weights.winograd2Allowed {
                return .winograd2
            }
            // A small image: one GEMM per layer over the batch's positions beats both (4x4 and under,
            // as in a CIFAR network's last stage, 30 % faster on a 64-channel layer; 8x8 and 7x7 with
            // many channels, when F(2x2, 3x3) is not allowed).
            if h * w <= 16 || (h * w <= 64 && inPerGroup >= 128) { return .im2col }
            return .direct3x3
        }
        if kh == 1 && kw == 1 && p == (0, 0, 0, 0) { return strides == (1, 1) ? .pointwise : .strided1x1 }
        if Conv.phasedEnabled && group == 1 && inPerGroup <= Conv.phasedMaxChannels && kh * kw >= 9 && kh <= 16 && kw <= 16
            && dilations == (1, 1) && strides.0 <= 2 && strides.1 <= 2 && w <= 1 << 16
            && (w + p.1 + p.3 - kw) / strides.1 + 1 >= 16 {
            return .phased
        }
        return .im2col
    }

    /// Input channels up to which a layer may run ``ConvAlgorithm/phased``.
    static let phasedMaxChannels = 4
    /// Cleared by tests to run such layers as ``ConvAlgorithm/im2col`` (the same bits).
    nonisolated(unsafe) static var phasedEnabled = true

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        [try outputShape(inputs[0], residual: inputs.count == 2 ? inputs[1] : nil)]
    }

    /// The output shape for input shape `x` (and, with a fused residual, its shape `residual`),
    /// validating both: ``shapes(_:_:)`` without its arrays of shapes (once per layer per call).
    private func outputShape(_ x: [Int], residual: [Int]?) throws -> [Int] {
        guard x.count == 4 else { throw fail(.shape, "Conv expects a 4-D NCHW input, got \(x)") }
        guard x[1] == inPerGroup * group else {
            throw fail(.shape, "Conv expects \(inPerGroup * group) input channels, got \(x[1])")
        }
        let p = resolvedPads(x[2], x[3])
        let oh = (x[2] + p.0 + p.2 - dilations.0 * (kh - 1) - 1) / strides.0 + 1
        let ow = (x[3] + p.1 + p.3 - dilations.1 * (kw - 1) - 1) / strides.1 + 1
        guard oh >= 1, ow >= 1 else { throw fail(.shape, "Conv kernel \(kh)x\(kw) does not fit input \(x)") }
        let y = [x[0], outChannels, oh, ow]
        if fusedResidual {
            guard let residual, residual == y else {
                throw fail(.shape, "Conv's fused residual has shape \(residual ?? []), expected \(y)")
            }
        }
        return y
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int {
        2 &* outputs[0].product &* inPerGroup &* kh &* kw
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let outShape = try outputShape(x.shape, residual: inputs.count == 2 ? inputs[1].shape : nil)
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = try ctx.uninitialized(outShape)
        let residual: Tensor? = fusedResidual ? inputs[1] : nil
        let algo = algorithm(h, w)
        try x.data.withUnsafeBufferPointer { xp in
            try y.data.withUnsafeMutableBufferPointer { yp in
                try withOptionalBuffer(residual?.data) { rp in
                    try withOptionalBuffer(scale) { sp in
                        try withOptionalBuffer(bias) { bp in
                            let ep = Epilogue(scale: sp, bias: bp, residual: rp, relu: fusedRelu)
                            if algo == .winograd {
                                try winograd(weights.winograd, rows: outChannels, cols: c, x: xp.baseAddress!, inMask: nil, n: n,
                                         h: h, w: w, inScale: nil, ep: ep, y: yp.baseAddress!, threads: ctx.threads, ctx)
                            } else if algo == .winograd2 {
                                try winograd(weights.winograd2, form: .f2, rows: outChannels, cols: c, x: xp.baseAddress!,
                                             inMask: nil, n: n, h: h, w: w, inScale: nil, ep: ep, y: yp.baseAddress!,
                                             threads: ctx.threads, ctx)
                            } else if algo == .direct3x3 {
                                try direct3x3(weights.forward, adjoint: false, channelsIn: c, channelsOut: outChannels, x: xp.baseAddress!, inMask: nil,
                                          inScale: nil, n: n, h: h, w: w, ep: ep, y: yp.baseAddress!, threads: ctx.threads, ctx)
                            } else if usesStridedC16(h: h, w: w) {
                                try stridedC16(x: xp.baseAddress!, n: n, c: c, h: h, w: w, oh: outShape[2], ow: outShape[3], ep: ep,
                                               y: yp.baseAddress!, threads: ctx.threads, ctx)
                            } else if algo == .strided1x1 {
                                let (oh, ow) = (outShape[2], outShape[3])
                                var sub = try ctx.scratch(n * c * oh * ow)
                                defer { ctx.recycle(sub) }
                                try sub.withUnsafeMutableBufferPointer { sp in
                                    subsample(xp.baseAddress!, planes: n * c, h: h, w: w, oh: oh, ow: ow, into: sp.baseAddress!,
                                              threads: ctx.threads)
                                    try gemmForward(x: sp.baseAddress!, n: n, c: c, h: oh, w: ow, oh: oh, ow: ow, pointwise: true,
                                                    ep: ep, y: yp.baseAddress!, threads: ctx.threads, ctx)
                                }
                            } else if algo == .phased {
                                phasedForward(x: xp.baseAddress!, n: n, c: c, h: h, w: w, oh: outShape[2], ow: outShape[3],
                                              ep: ep, y: yp.baseAddress!, threads: ctx.threads)
                            } else {
                                try gemmForward(x: xp.baseAddress!, n: n, c: c, h: h, w: w, oh: outShape[2], ow: outShape[3],
                                            pointwise: algo == .pointwise, ep: ep, y: yp.baseAddress!, threads: ctx.threads, ctx)
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
        var g = gradOutputs
        return try backward(inputs, outputs, consuming: &g, needs: needs, ctx)
    }

    /// The input gradient reads the input's shape (and the weights); a fused residual is only added.
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    /// A fused ReLU's mask: where the output is positive.
    func backwardRead(output i: Int) -> BackwardRead { fusedRelu ? .positive : .shape }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], consuming gradOutputs: inout [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let x = inputs[0]
        // ReLU'(z) = [z > 0] = [relu(z) > 0]: the stored output is the mask. The kernels apply it
        // (and the BN scale) while reading g; when a fused residual needs the masked gradient too,
        // g is masked once, in place, and serves both.
        var mask: Tensor? = fusedRelu ? outputs[0] : nil
        var grads: [Tensor?] = [nil]
        if fusedResidual {
            if needs[1], let m = mask {
                reluMaskInPlace(m, &gradOutputs[0], threads: ctx.threads)
                mask = nil
            }
            grads.append(needs[1] ? gradOutputs[0] : nil)
        }
        let g = gradOutputs[0]
        guard needs[0] else { return grads }
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (oh, ow) = (g.shape[2], g.shape[3])
        let algo = algorithm(h, w)
        let stridedAdjoint = usesStridedC16Adjoint(h: h, w: w), flipped = usesFlippedAdjoint(h: h, w: w)
        let fewAdjoint = usesStridedFewAdjoint(h: h, w: w)
        let accumulates = !stridedAdjoint && !flipped && !fewAdjoint
            && (algo == .im2col || (algo == .phased && !usesPhasedAdjoint(h: h, w: w, ow: ow)))
        var dx = accumulates ? try ctx.zeros(x.shape) : try ctx.uninitialized(x.shape)
        try g.data.withUnsafeBufferPointer { gp in
            try dx.data.withUnsafeMutableBufferPointer { xp in
                try withOptionalBuffer(mask?.data) { mp in
                    try withOptionalBuffer(scale) { sp in
                        let none = Epilogue(scale: nil, bias: nil, residual: nil, relu: false)
                        if fewAdjoint {
                            stridedFewBackward(dz: gp.baseAddress!, mask: mp, scale: sp, n: n, c: c, h: h, w: w, oh: oh, ow: ow,
                                               dx: xp.baseAddress!, threads: ctx.threads)
                            return
                        }
                        if stridedAdjoint {
                            stridedC16Backward(dz: gp.baseAddress!, mask: mp, scale: sp, n: n, c: c, h: h, w: w, oh: oh, ow: ow,
                                               dx: xp.baseAddress!, threads: ctx.threads)
                            return
                        }
                        if flipped {
                            try flippedBackward(dz: gp.baseAddress!, mask: mp, scale: sp, n: n, c: c, h: h, w: w,
                                                dx: xp.baseAddress!, threads: ctx.threads, ctx)
                            return
                        }
                        switch algo {
                        case .direct3x3:
                            // The adjoint of a 3x3/s1/p1 convolution is the same convolution with transposed,
                            // flipped weights.
                            try direct3x3(weights.forward, adjoint: true, channelsIn: outChannels, channelsOut: c, x: gp.baseAddress!,
                                      inMask: mp, inScale: sp, n: n, h: h, w: w, ep: none, y: xp.baseAddress!, threads: ctx.threads, ctx)
                        case .winograd:
                            try winograd(weights.winogradAdjoint, rows: c, cols: outChannels, x: gp.baseAddress!, inMask: mp,
                                     n: n, h: h, w: w, inScale: sp, ep: none, y: xp.baseAddress!, threads: ctx.threads, ctx)
                        case .winograd2 where usesTransposedPanels(h: h, w: w):
                            try winograd(weights.winograd2Adjoint, form: .f2, rows: c, cols: outChannels, x: gp.baseAddress!,
                                         inMask: mp, n: n, h: h, w: w, inScale: sp, ep: none, y: xp.baseAddress!,
                                         threads: ctx.threads, ctx)
                        case .winograd2:
                            // The forward's matrices, transposed (and permuted: winograd.h).
                            try winograd(weights.winograd2, form: .f2Adjoint, rows: c, cols: outChannels, x: gp.baseAddress!,
                                         inMask: mp, n: n, h: h, w: w, inScale: sp, ep: none, y: xp.baseAddress!,
                                         threads: ctx.threads, ctx)
                        case .phased where usesPhasedAdjoint(h: h, w: w, ow: ow):
                            phasedBackward(dz: gp.baseAddress!, mask: mp, scale: sp, n: n, c: c, h: h, w: w, oh: oh, ow: ow,
                                           dx: xp.baseAddress!, threads: ctx.threads)
                        case .pointwise, .im2col, .phased:
                            try gemmBackward(dz: gp.baseAddress!, mask: mp, n: n, c: c, h: h, w: w, oh: oh, ow: ow,
                                         pointwise: algo == .pointwise, ownPanels: usesTransposedPanels(h: h, w: w), scale: sp,
                                         dx: xp.baseAddress!, threads: ctx.threads, ctx)
                        case .strided1x1:
                            // The pointwise input gradient at the subsampled positions, then scattered.
                            var sub = try ctx.scratch(n * c * oh * ow)
                            defer { ctx.recycle(sub) }
                            try sub.withUnsafeMutableBufferPointer { sb in
                                try gemmBackward(dz: gp.baseAddress!, mask: mp, n: n, c: c, h: oh, w: ow, oh: oh, ow: ow,
                                                 pointwise: true, ownPanels: usesTransposedPanels(h: h, w: w), scale: sp,
                                                 dx: sb.baseAddress!, threads: ctx.threads, ctx)
                                subsampleAdjoint(UnsafePointer(sb.baseAddress!), planes: n * c, h: h, w: w, oh: oh, ow: ow,
                                                 into: xp.baseAddress!, threads: ctx.threads)
                            }
                        }
                    }
                }
            }
        }
        grads[0] = dx
        return grads
    }

    /// The pooled scratch buffers (their float counts) one forward, or with `backward` also one
    /// input-gradient, pass on `n` samples of per-sample input [C, H, W] takes: for the memory
    /// estimate (``MemoryPlan``), mirroring the kernels below.
    func scratchCounts(input s: [Int], n: Int, backward: Bool) -> [Int] {
        guard s.count == 3, n >= 1 else { return [] }
        let (c, h, w) = (s[0], s[1], s[2])
        let p = resolvedPads(h, w)
        let oh = (h + p.0 + p.2 - dilations.0 * (kh - 1) - 1) / strides.0 + 1
        let ow = (w + p.1 + p.3 - dilations.1 * (kw - 1) - 1) / strides.1 + 1
        switch algorithm(h, w) {
        case .winograd:
            let tiles = Int(akn_wino_tiles(Int32(h), Int32(w)))
            let piece = samplesPerPiece(n, floatsPerSample: 36 * (outChannels + c) * tiles)
            let cap = 36 * piece * tiles
            return [cap * c, cap * outChannels]  // v and mb; the adjoint swaps them
        case .winograd2:
            let tiles = Int(akn_wino2_tiles(Int32(h), Int32(w)))
            let piece = samplesPerPiece(n, floatsPerSample: 16 * (outChannels + c) * tiles)
            let cap = 16 * piece * tiles
            return [cap * c, cap * outChannels]
        case .direct3x3:
            var counts = [akn_scratch_size(Int32(c), Int32(h), Int32(w))]
            if backward {
                // (the adjoint of a layer above cachedAdjointMaxFloats reads the forward panels in place)
                counts += [akn_scratch_size(Int32(outChannels), Int32(h), Int32(w))]
            }
            return counts
        case .pointwise:
            return []
        case .strided1x1:
            return [n * c * oh * ow]  // the subsampled input (forward), or its gradient (backward)
        case .phased where usesPhasedAdjoint(h: h, w: w, ow: ow):
            return []  // (both directions read their input in place, from a band in the thread's scratch)
        case .im2col where usesStridedC16Adjoint(h: h, w: w), .phased where usesStridedC16Adjoint(h: h, w: w):
            return []  // (the input gradient pads its bands of dz in the thread's scratch)
        case .im2col where usesFlippedAdjoint(h: h, w: w):
            // the input gradient's padded output gradient, a piece of samples at a time
            guard backward else { return [] }
            let per = outChannels * (h + 2) * (w + 2)
            return [samplesPerPiece(n, floatsPerSample: per) * per + akn_scratch_size(0, Int32(h), Int32(w))]
        case .im2col, .phased:
            // The forward packs its implicit im2col (or reads it in place); only the input gradient
            // has a column buffer.
            let columns = weights.kdim * oh * ow
            guard backward else { return [] }
            if let rows = Conv.bandRows(kdim: weights.kdim, oh: oh, ow: ow) { return [weights.kdim * rows * ow] }
            return [samplesPerPiece(n, floatsPerSample: columns) * columns]
        }
    }

    // MARK: Kernels

    /// Per-output-channel epilogue pointers (nil = absent).
    struct Epilogue {
        var scale: UnsafePointer<Float>?
        var bias: UnsafePointer<Float>?
        var residual: UnsafePointer<Float>?
        var relu: Bool
    }

    /// Samples whose im2col columns or Winograd buffers are built at once: bounded scratch (a
    /// function of the layer only; the arithmetic of a sample never depends on it).
    func samplesPerPiece(_ n: Int, floatsPerSample: Int) -> Int {
        max(1, min(n, (4 << 20) / max(1, floatsPerSample)))
    }

    /// Runs `body(weights, col, s0, ns)` over pieces of `ns` samples starting at `s0`, with the
    /// forward GEMM panels and an im2col buffer of `columnFloats` per sample (none when 0).
    private func forEachPiece(n: Int, columnFloats: Int, _ ctx: ExecContext,
                              _ body: (UnsafeBufferPointer<Float>, UnsafeMutableBufferPointer<Float>, Int, Int) -> Void) throws {
        let piece = columnFloats == 0 ? n : samplesPerPiece(n, floatsPerSample: columnFloats)
        let size = columnFloats == 0 ? 0 : piece * columnFloats
        var col = size == 0 ? [] : try ctx.scratch(size)
        defer { if size > 0 { ctx.recycle(col) } }
        weights.forward.withUnsafeBufferPointer { wp in
            col.withUnsafeMutableBufferPointer { cp in
                var s0 = 0
                while s0 < n {
                    let ns = min(piece, n - s0)
                    body(wp, cp, s0, ns)
                    s0 += ns
                }
            }
        }
    }

    /// `planes` planes of x (h x w) subsampled by the strides into `out` (oh x ow each).
    private func subsample(_ x: UnsafePointer<Float>, planes: Int, h: Int, w: Int, oh: Int, ow: Int,
                           into out: UnsafeMutablePointer<Float>, threads: Int) {
        let t = planes * oh * ow > 50_000 ? threads : 1
        Parallel.forRanges(planes, threads: t) { r in
            akn_subsample(x, Int32(h), Int32(w), Int32(strides.0), Int32(strides.1), Int32(oh), Int32(ow), r.lowerBound,
                          r.upperBound, out)
        }
    }

    /// Its adjoint: every element of dx's planes written (zero off the subsampled positions).
    private func subsampleAdjoint(_ g: UnsafePointer<Float>, planes: Int, h: Int, w: Int, oh: Int, ow: Int,
                                  into dx: UnsafeMutablePointer<Float>, threads: Int) {
        let t = planes * h * w > 50_000 ? threads : 1
        Parallel.forRanges(planes, threads: t) { r in
            akn_subsample_adjoint(g, Int32(h), Int32(w), Int32(strides.0), Int32(strides.1), Int32(oh), Int32(ow),
                                  r.lowerBound, r.upperBound, dx)
        }
    }

    /// The layer's window on an h x w input with output width ow: the implicit im2col of `gemm.h`.
    private func geometry(h: Int, w: Int, ow: Int, pads p: (Int, Int, Int, Int)) -> akn_conv_b {
        akn_conv_b(h: Int32(h), w: Int32(w), ow: Int32(ow), kh: Int32(kh), kw: Int32(kw), sh: Int32(strides.0),
                   sw: Int32(strides.1), dh: Int32(dilations.0), dw: Int32(dilations.1), pt: Int32(p.0), pl: Int32(p.1))
    }

    private func gemmForward(x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, pointwise: Bool,
                             ep: Epilogue, y: UnsafeMutablePointer<Float>, threads: Int, _ ctx: ExecContext) throws {
        let (mg, kdim, ohw) = (weights.mg, weights.kdim, oh * ow)
        var geom = geometry(h: h, w: w, ow: ow, pads: resolvedPads(h, w))
        try forEachPiece(n: n, columnFloats: 0, ctx) { wp, _, s0, ns in
            for g in 0..<group {
                // B is the input itself: 1x1 stride 1 as it is, anything else as its implicit im2col
                // (gathered by the GEMM's packing: no column buffer).
                var io = akn_gemm_cols()
                io.per = Int32(ohw)
                io.b = x + (s0 * c + g * inPerGroup) * h * w
                io.ldb = h * w; io.b_sample = c * h * w
                io.c = y + (s0 * outChannels + g * mg) * ohw
                io.ldc = ohw; io.c_sample = outChannels * ohw
                if let r = ep.residual {
                    io.r = r + (s0 * outChannels + g * mg) * ohw
                    io.ldr = ohw; io.r_sample = outChannels * ohw
                }
                io.scale = ep.scale.map { $0 + g * mg }
                io.bias = ep.bias.map { $0 + g * mg }
                io.relu = ep.relu ? 1 : 0
                withUnsafePointer(to: &geom) { gp in
                    if !pointwise { io.conv = gp }
                    gemm(m: mg, n: ns * ohw, k: kdim, a: wp.baseAddress! + g * weights.groupStride, io: io, threads: threads)
                }
            }
        }
    }

    /// ``ConvAlgorithm/phased``: units of (sample, `phasedRows` output rows) over the threads, each
    /// with its own phase-split rows (the thread's scratch).
    private func phasedForward(x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, ep: Epilogue,
                               y: UnsafeMutablePointer<Float>, threads: Int) {
        var geom = geometry(h: h, w: w, ow: ow, pads: resolvedPads(h, w))
        let rows = Conv.phasedRows, bands = (oh + rows - 1) / rows
        var io = akn_gemm_cols()
        io.per = Int32(oh * ow)
        io.b = x; io.ldb = h * w; io.b_sample = c * h * w
        io.c = y; io.ldc = oh * ow; io.c_sample = outChannels * oh * ow
        io.scale = ep.scale; io.bias = ep.bias; io.relu = ep.relu ? 1 : 0
        if let r = ep.residual { io.r = r; io.ldr = oh * ow; io.r_sample = outChannels * oh * ow }
        let flops = 2 * n * oh * ow * weights.kdim * outChannels
        let t = flops < Parallel.minFLOPs ? 1 : threads
        weights.forward.withUnsafeBufferPointer { wp in
            withUnsafePointer(to: &geom) { gp in
                io.conv = gp
                let size = akn_conv_phased_scratch_size(gp, Int32(c), Int32(rows))
                withUnsafePointer(to: &io) { iop in
                    Parallel.forRanges(n * bands, threads: t, split: Parallel.split(flops: flops)) { r in
                        withThreadScratch(slot: 1, size) { sp in
                            for u in r {
                                let (s, b) = (u / bands, u % bands)
                                akn_conv_phased(iop, Int32(c), Int32(outChannels), wp.baseAddress!, Int32(s), Int32(b * rows),
                                                Int32(min(oh, b * rows + rows)), sp)
                            }
                        }
                    }
                }
            }
        }
    }

    /// The input gradient of a ``ConvAlgorithm/phased`` layer (`akn_phased_adjoint`): units of
    /// (sample, `phasedRows` rows of the input's phase grid) over the threads, each writing its own
    /// elements of dx with its band of dz in the thread's scratch.
    private func phasedBackward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, scale: UnsafePointer<Float>?, n: Int,
                                c: Int, h: Int, w: Int, oh: Int, ow: Int, dx: UnsafeMutablePointer<Float>, threads: Int) {
        var geom = geometry(h: h, w: w, ow: ow, pads: resolvedPads(h, w))
        let a = weights.phasedAdjoint(geom)
        let rows = Conv.phasedRows, qh = (h + strides.0 - 1) / strides.0, bands = (qh + rows - 1) / rows
        let (m, dzSample, dxSample) = (outChannels, outChannels * oh * ow, c * h * w)
        let flops = 2 * n * oh * ow * weights.kdim * outChannels
        let t = flops < Parallel.minFLOPs ? 1 : threads
        a.withUnsafeBufferPointer { ap in
            withUnsafePointer(to: &geom) { gp in
                let size = akn_phased_adjoint_scratch_size(gp, Int32(c), Int32(m), Int32(rows))
                Parallel.forRanges(n * bands, threads: t, split: Parallel.split(flops: flops)) { r in
                    withThreadScratch(slot: 1, size) { sp in
                        for u in r {
                            let (s, b) = (u / bands, u % bands)
                            akn_phased_adjoint(gp, Int32(c), Int32(m), Int32(oh), ap.baseAddress!, dz + s * dzSample,
                                               mask.map { $0 + s * dzSample }, scale, Int32(b * rows),
                                               Int32(min(qh, b * rows + rows)), dx + s * dxSample, sp)
                        }
                    }
                }
            }
        }
    }

    /// Cleared by tests to run a ``ConvAlgorithm/phased`` layer's input gradient as im2col's.
    nonisolated(unsafe) static var phasedAdjointEnabled = true

    /// Whether a ``ConvAlgorithm/phased`` layer's input gradient runs `akn_phased_adjoint`: its band
    /// of the output gradient (every output channel) in at most 16M floats of thread scratch, which
    /// also keeps its offsets in 32 bits; a wider layer keeps im2col's banded columns.
    func usesPhasedAdjoint(h: Int, w: Int, ow: Int) -> Bool {
        guard Conv.phasedAdjointEnabled else { return false }
        var g = geometry(h: h, w: w, ow: ow, pads: resolvedPads(h, w))
        return akn_phased_adjoint_scratch_size(&g, Int32(inPerGroup), Int32(outChannels), Int32(Conv.phasedRows)) <= 1 << 24
    }

    /// Output rows per unit of ``ConvAlgorithm/phased``.
    static let phasedRows = 8

    private func gemmBackward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, pointwise: Bool,
                              ownPanels: Bool = false, scale: UnsafePointer<Float>?, dx: UnsafeMutablePointer<Float>, threads: Int, _ ctx: ExecContext) throws {
        let (mg, kdim, ohw) = (weights.mg, weights.kdim, oh * ow)
        let geom = geometry(h: h, w: w, ow: ow, pads: resolvedPads(h, w))
        if !pointwise, let rows = Conv.bandRows(kdim: kdim, oh: oh, ow: ow) {
            return try bandedBackward(dz: dz, mask: mask, n: n, c: c, h: h, w: w, oh: oh, ow: ow, rows: rows, geom: geom,
                                      scale: scale, dx: dx, threads: threads, ctx)
        }
        // (W^T's own panels where the layer keeps them, else W's read transposed)
        let kept = ownPanels ? weights.transposed : nil
        try forEachPiece(n: n, columnFloats: pointwise ? 0 : kdim * ohw, ctx) { wp, cp, s0, ns in
            for g in 0..<group {
                // columns of W_g^T (scale . dz): one sample's oh*ow positions per sample
                var io = akn_gemm_cols()
                io.per = Int32(ohw)
                io.b = dz + (s0 * outChannels + g * mg) * ohw
                io.ldb = ohw; io.b_sample = outChannels * ohw
                io.bscale = scale.map { $0 + g * mg }
                io.bmask = mask.map { $0 + (s0 * outChannels + g * mg) * ohw }
                if pointwise {
                    io.c = dx + (s0 * c + g * inPerGroup) * h * w
                    io.ldc = h * w; io.c_sample = c * h * w
                } else {
                    io.c = cp.baseAddress!
                    io.ldc = ohw; io.c_sample = kdim * ohw
                }
                if let kept {
                    kept.withUnsafeBufferPointer { kp in
                        gemm(m: kdim, n: ns * ohw, k: mg, a: kp.baseAddress!, io: io, threads: threads)
                    }
                } else {
                    gemm(m: kdim, n: ns * ohw, k: mg, a: wp.baseAddress! + g * weights.groupStride, transposed: true,
                         io: io, threads: threads)
                }
                if !pointwise {
                    addColumns(UnsafePointer(cp.baseAddress!), ldc: ohw, geom: geom, oh: oh, samples: ns, rows: 0, h,
                               into: dx + (s0 * c + g * inPerGroup) * h * w, xSample: c * h * w, threads: threads)
                }
            }
        }
    }

    /// Adds `samples` samples' im2col columns (`ldc` floats per row, `kdim * ldc` per sample, the
    /// columns of `oh` output rows of `geom`) back into dx with `akn_col2im`: units of (sample,
    /// channel, band of the input rows [r0, r1)) over the threads, bands only when there are few
    /// channels (the stem's 3); every element receives its terms in the same order whatever the units.
    private func addColumns(_ col: UnsafePointer<Float>, ldc: Int, geom: akn_conv_b, oh: Int, samples ns: Int,
                            rows r0: Int, _ r1: Int, into xg: UnsafeMutablePointer<Float>, xSample: Int, threads: Int) {
        let kdim = weights.kdim
        let t = ns * kdim * ldc > 16_384 ? threads : 1
        let units = ns * inPerGroup
        let bands = Parallel.bands(units: units, rows: r1 - r0, threads: t)
        var g = geom
        withUnsafePointer(to: &g) { gp in
            Parallel.forRanges(units * bands, threads: t, split: Parallel.split(flops: 8 * ns * kdim * ldc)) { r in
                akn_col2im(col, ldc, kdim * ldc, gp, Int32(oh), Int32(inPerGroup), Int32(bands), Int32(r0), Int32(r1),
                           r.lowerBound, r.upperBound, xg, xSample)
            }
        }
    }

    /// Column floats above which (and up to which per band) ``bandRows`` bands an input gradient;
    /// tests raise it to compare against one col2im over all the columns.
    nonisolated(unsafe) static var bandFloats = 1 << 18

    /// Output rows per band of an im2col layer's input gradient whose column buffer would exceed
    /// 1 MB per sample (the ResNet stem's is 7.4 MB), or nil: the bands' columns stay in L2 between
    /// the GEMM that writes them and the col2im that reads them.
    static func bandRows(kdim: Int, oh: Int, ow: Int) -> Int? {
        let cap = bandFloats
        guard kdim * oh * ow > cap, oh > 1 else { return nil }
        let rows = max(1, cap / max(1, kdim * ow))
        return rows < oh ? rows : nil
    }

    /// The input gradient of an im2col layer band by band (`bandRows` output rows), each band's
    /// columns computed and added back into dx (zeroed) before the next. The bands go from the last
    /// to the first, so every element of dx receives its terms in the order one col2im over all
    /// the columns gives (gemm.h, akn_col2im): the same bits.
    private func bandedBackward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, n: Int, c: Int, h: Int, w: Int,
                                oh: Int, ow: Int, rows: Int, geom: akn_conv_b, scale: UnsafePointer<Float>?,
                                dx: UnsafeMutablePointer<Float>, threads: Int, _ ctx: ExecContext) throws {
        let (mg, kdim, ohw) = (weights.mg, weights.kdim, oh * ow)
        let p = resolvedPads(h, w)
        var col = try ctx.scratch(kdim * rows * ow)
        defer { ctx.recycle(col) }
        weights.forward.withUnsafeBufferPointer { ap in
            col.withUnsafeMutableBufferPointer { cp in
                let colBase = cp.baseAddress!
                for s in 0..<n {
                    for g in 0..<group {
                        var oy0 = ((oh - 1) / rows) * rows
                        while oy0 >= 0 {
                            let oy1 = min(oh, oy0 + rows), cols = (oy1 - oy0) * ow
                            var io = akn_gemm_cols()
                            io.per = Int32(cols)
                            io.b = dz + (s * outChannels + g * mg) * ohw + oy0 * ow
                            io.ldb = ohw; io.b_sample = outChannels * ohw
                            io.bscale = scale.map { $0 + g * mg }
                            io.bmask = mask.map { $0 + (s * outChannels + g * mg) * ohw + oy0 * ow }
                            io.c = colBase
                            io.ldc = cols; io.c_sample = kdim * cols
                            gemm(m: kdim, n: cols, k: mg, a: ap.baseAddress! + g * weights.groupStride, transposed: true,
                                 io: io, threads: threads)
                            // The input rows these output rows reach.
                            let r0 = max(0, oy0 * strides.0 - p.0)
                            let r1 = min(h, (oy1 - 1) * strides.0 - p.0 + (kh - 1) * dilations.0 + 1)
                            if r1 > r0 {
                                var bg = geom
                                bg.pt = geom.pt - Int32(oy0 * strides.0)
                                addColumns(UnsafePointer(colBase), ldc: cols, geom: bg, oh: oy1 - oy0, samples: 1, rows: r0, r1,
                                           into: dx + (s * c + g * inPerGroup) * h * w, xSample: c * h * w, threads: threads)
                            }
                            oy0 -= rows
                        }
                    }
                }
            }
        }
    }

    /// y[n][channelsOut] = conv3x3(x[n][channelsIn]) with the direct kernel: one sample at a time,
    /// its blocks of 6 output channels spread over the threads (a channel's arithmetic never changes).
    /// With `adjoint`, `packed` holds the forward panels of the convolution being differentiated
    /// (channelsIn = its outputs, channelsOut = its inputs); the kernel runs on their transposed,
    /// flipped form, gathered once per call into pooled scratch.
    private func direct3x3(_ packed: [Float], adjoint: Bool, channelsIn: Int, channelsOut: Int, x: UnsafePointer<Float>,
                           inMask: UnsafePointer<Float>?, inScale: UnsafePointer<Float>?, n: Int, h: Int, w: Int,
                           ep: Epilogue, y: UnsafeMutablePointer<Float>, threads: Int, _ ctx: ExecContext) throws {
        if Conv.usesC16(channelsIn: channelsIn, channelsOut: channelsOut, h: h, w: w) {
            return try weights.c16(adjoint: adjoint).withUnsafeBufferPointer { wp in
                try direct3x3(wp.baseAddress!, channelBlocked: true, channelsIn: channelsIn, channelsOut: channelsOut, x: x,
                              inMask: inMask, inScale: inScale, n: n, h: h, w: w, ep: ep, y: y, threads: threads, ctx)
            }
        }
        guard adjoint else {
            return try packed.withUnsafeBufferPointer { pp in
                try direct3x3(pp.baseAddress!, channelsIn: channelsIn, channelsOut: channelsOut, x: x, inMask: inMask,
                          inScale: inScale, n: n, h: h, w: w, ep: ep, y: y, threads: threads, ctx)
            }
        }
        if channelsIn * channelsOut * 9 <= ConvWeights.cachedAdjointMaxFloats {
            return try weights.directAdjoint.withUnsafeBufferPointer { ap in
                try direct3x3(ap.baseAddress!, channelsIn: channelsIn, channelsOut: channelsOut, x: x, inMask: inMask,
                          inScale: inScale, n: n, h: h, w: w, ep: ep, y: y, threads: threads, ctx)
            }
        }
        // Larger layers read the forward panels in place (akn_conv3x3_adjoint): no per-call gather.
        try packed.withUnsafeBufferPointer { pp in
            try direct3x3(pp.baseAddress!, adjointInPlace: true, channelsIn: channelsIn, channelsOut: channelsOut, x: x,
                          inMask: inMask, inScale: inScale, n: n, h: h, w: w, ep: ep, y: y, threads: threads, ctx)
        }
    }

    /// Whether a direct 3x3 layer (or its input gradient) runs the channel-blocked kernel: where it
    /// is faster (akn_conv3x3_c16_preferred) and the layer small enough to keep its weights in that
    /// layout too. Same results either way (the kernels agree bit for bit).
    static func usesC16(channelsIn: Int, channelsOut: Int, h: Int, w: Int) -> Bool {
        channelsIn * channelsOut * 9 <= ConvWeights.cachedAdjointMaxFloats
            && akn_conv3x3_c16_preferred(Int32(channelsIn), Int32(channelsOut), Int32(h), Int32(w)) != 0
    }

    /// One sample at a time: pad once (with the mask and scale), then blocks of output channels (6,
    /// or 16 for the channel-blocked kernel, `pb` in its layout) x bands of rows over the threads.
    /// A forward pass of the channel-blocked kernel skips the padding where it can read the input
    /// itself (`akn_conv3x3_c16_unpadded`).
    private func direct3x3(_ pb: UnsafePointer<Float>, channelBlocked: Bool = false, adjointInPlace: Bool = false,
                           channelsIn: Int, channelsOut: Int,
                           x: UnsafePointer<Float>, inMask: UnsafePointer<Float>?, inScale: UnsafePointer<Float>?, n: Int,
                           h: Int, w: Int, ep: Epilogue, y: UnsafeMutablePointer<Float>, threads: Int,
                           _ ctx: ExecContext) throws {
        let scratchSize = akn_scratch_size(Int32(channelsIn), Int32(h), Int32(w))
        let tmpSize = akn_tmp_size(Int32(h), Int32(w))
        // Units of output channels: 6 (the 6-channel kernel), or 32 (the channel-blocked kernel's
        // pairs of 16-channel blocks, which it runs together: akn_conv3x3_c16).
        let blockSize = channelBlocked ? 32 : 6
        let blocks = (channelsOut + blockSize - 1) / blockSize
        // (Threads from 360K multiply-adds: a CIFAR stem, 3 -> 16 channels at 32x32, and its input
        // gradient gain from two; waking them costs well under a microsecond.)
        let t = (threads > 1 && channelsIn * channelsOut * h * w > 40_000) ? threads : 1
        // Work units: blocks of output channels x bands of rows (bands only when there are too few
        // blocks to keep every thread busy).
        let bands = Parallel.bands(units: blocks, rows: h, threads: t)
        // With bands, each thread pads the rows its bands read into its own buffer, in the same
        // parallel region: no second barrier, and a band's input rows are mostly those the same
        // thread wrote as the previous layer's band (channels padded over the threads put half of
        // every plane on the other core). Units then go band-major, so a thread pads few bands.
        // A forward pass of the channel-blocked kernel reads the input itself where it can (no mask or
        // scale to apply): no padded copy at all.
        let unpadded = channelBlocked && !adjointInPlace && inMask == nil && inScale == nil
            && akn_conv3x3_c16_unpadded_available(Int32(w)) != 0
        let ownPad = !unpadded && bands > 1 && t > 1
        // (the shared padded input: not taken from the pool when each thread pads its own bands)
        let sharedPad = !unpadded && !ownPad
        var scratch = sharedPad ? try ctx.scratch(scratchSize) : []
        defer { if sharedPad { ctx.recycle(scratch) } }
        scratch.withUnsafeMutableBufferPointer { sp in
            let shared = sp.baseAddress
            for s in 0..<n {
                let xs = x + s * channelsIn * h * w, off = s * channelsOut * h * w
                let ms = inMask.map { $0 + s * channelsIn * h * w }
                if sharedPad {
                    // Pad once (with the mask and scale; channels over the threads), then split the
                    // units over the threads.
                    guard let sb = shared else { return }
                    Parallel.forRanges(channelsIn, threads: t) { r in
                        akn_conv3x3_pad(xs, ms, inScale, Int32(channelsIn), Int32(h), Int32(w), Int32(r.lowerBound),
                                        Int32(r.upperBound), sb)
                    }
                }
                Parallel.forRanges(blocks * bands, threads: t) { r in
                    withThreadScratch(slot: 1, tmpSize) { tp in
                        withThreadScratch(slot: 4, ownPad ? scratchSize : 0) { own in
                            var padded = -1
                            for u in r {
                                let (b, band) = ownPad ? (u % blocks, u / blocks) : (u / bands, u % bands)
                                let (y0, y1) = (Int32(h * band / bands), Int32(h * (band + 1) / bands))
                                if unpadded {
                                    _ = akn_conv3x3_c16_unpadded(xs, Int32(channelsIn), Int32(h), Int32(w), pb,
                                                                 Int32(channelsOut), Int32(2 * b),
                                                                 Int32(min((channelsOut + 15) / 16, 2 * b + 2)), y0, y1,
                                                                 ep.scale, ep.bias, ep.residual.map { $0 + off },
                                                                 ep.relu ? 1 : 0, y + off)
                                    continue
                                }
                                guard let xp = ownPad ? own : shared else { return }
                                if ownPad && band != padded {
                                    akn_conv3x3_pad_band(xs, ms, inScale, Int32(channelsIn), Int32(h), Int32(w), y0, y1, own)
                                    padded = band
                                }
                                if adjointInPlace {
                                    akn_conv3x3_adjoint(xs, nil, nil, Int32(channelsIn), Int32(h), Int32(w), pb, Int32(b * 6),
                                                        Int32(min(channelsOut, b * 6 + 6)), Int32(channelsOut), y0, y1, y + off,
                                                        xp, 0, tp)
                                } else if channelBlocked {
                                    akn_conv3x3_c16(xp, Int32(channelsIn), Int32(h), Int32(w), pb, Int32(2 * b),
                                                    Int32(min((channelsOut + 15) / 16, 2 * b + 2)), y0, y1,
                                                    ep.scale, ep.bias, ep.residual.map { $0 + off }, ep.relu ? 1 : 0, y + off)
                                } else {
                                    akn_conv3x3(xs, nil, nil, Int32(channelsIn), Int32(h), Int32(w), pb, 0, Int32(b * 6),
                                                Int32(min(channelsOut, b * 6 + 6)), y0, y1, ep.scale, ep.bias,
                                                ep.residual.map { $0 + off }, ep.relu ? 1 : 0, y + off, xp, 0, tp)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether the forward of a stride-2 layer (3x3 padded by 1, or 1x1 unpadded: ``ConvAlgorithm/im2col``,
    /// ``ConvAlgorithm/phased`` and ``ConvAlgorithm/strided1x1``) runs the channel-blocked direct kernel
    /// (`akn_conv_c16`) instead of a GEMM: where it is faster (akn_conv_c16_strided_preferred: a CIFAR
    /// ResNet's downsampling layers; on avx2 also a stem of at most 4 input channels that would run
    /// phased, and 8 output channels in a block of 16) and the weights small enough to keep in its
    /// layout too. Its input gradient stays the
    /// algorithm's. A function of the layer's shape only, like ``algorithm(_:_:)``.
    func usesStridedC16(h: Int, w: Int) -> Bool {
        guard group == 1, strides == (2, 2), dilations == (1, 1),
              inPerGroup * outChannels * kh * kw <= ConvWeights.cachedAdjointMaxFloats else { return false }
        let p = resolvedPads(h, w)
        // (A phased stem, on avx2 only, where it was measured: cifar10_sri_resnet_a's 3 -> 16 channels at
        // batch 128, one thread, 226 -> 134 us a call.)
        let algo = algorithm(h, w)
        guard (kh == 3 && kw == 3 && p == (1, 1, 1, 1) && (algo == .im2col || (algo == .phased && Backend.isa == .avx2)))
                || (kh == 1 && kw == 1 && p == (0, 0, 0, 0)) else { return false }
        let (oh, ow) = ((h + p.0 + p.2 - kh) / 2 + 1, (w + p.1 + p.3 - kw) / 2 + 1)
        return akn_conv_c16_strided_preferred(Int32(inPerGroup), Int32(outChannels), Int32(oh), Int32(ow)) != 0
    }

    /// The forward of a ``usesStridedC16(h:w:)`` layer, one sample at a time: units of 32 output
    /// channels x bands of output rows over the threads, each thread padding the input rows its bands
    /// read (3x3) into its own buffer; a 1x1 layer reads its input in place.
    private func stridedC16(x: UnsafePointer<Float>, n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, ep: Epilogue,
                            y: UnsafeMutablePointer<Float>, threads: Int, _ ctx: ExecContext) throws {
        let k = kh, padded = k == 3
        let scratchSize = padded ? akn_scratch_size(Int32(c), Int32(h), Int32(w)) : 0
        let blocks = (outChannels + 31) / 32
        let t = (threads > 1 && c * outChannels * k * k * oh * ow >= 100_000) ? threads : 1
        let bands = Parallel.bands(units: blocks, rows: oh, threads: t)
        let (wp, plane) = padded ? (w + 2, (h + 2) * (w + 2)) : (w, h * w)
        try weights.c16(adjoint: false).withUnsafeBufferPointer { wbp in
            let wb = wbp.baseAddress!
            for s in 0..<n {
                let xs = x + s * c * h * w, off = s * outChannels * oh * ow
                Parallel.forRanges(blocks * bands, threads: t) { r in
                    withThreadScratch(slot: 4, scratchSize) { own in
                        var padBand = -1
                        for u in r {
                            let (b, band) = (u % blocks, u / blocks)
                            let (y0, y1) = (oh * band / bands, oh * (band + 1) / bands)
                            if padded && band != padBand {
                                // output rows [y0, y1) read padded rows [2 y0, 2 y1 + 1): input rows [2 y0, 2 y1 - 1)
                                akn_conv3x3_pad_band(xs, nil, nil, Int32(c), Int32(h), Int32(w), Int32(2 * y0), Int32(2 * y1 - 1),
                                                     own)
                                padBand = band
                            }
                            let rc = akn_conv_c16(padded ? UnsafePointer(own) : xs, Int32(c), Int32(wp), plane, Int32(k), 2,
                                                  Int32(oh), Int32(ow), wb, Int32(outChannels), Int32(2 * b),
                                                  Int32(min((outChannels + 15) / 16, 2 * b + 2)), Int32(y0), Int32(y1),
                                                  ep.scale, ep.bias, ep.residual.map { $0 + off }, ep.relu ? 1 : 0, y + off)
                            assert(rc == 0, "akn_conv_c16: no \(k)x\(k)/2 kernel")
                        }
                    }
                }
            }
        }
    }

    /// Cleared by tests to run a 3x3/2 layer's input gradient as im2col's (or phased's).
    nonisolated(unsafe) static var stridedAdjointEnabled = true

    /// Whether the input gradient of a 3x3, stride-2 layer padded by 1 runs `akn_conv_c16_s2_adjoint`
    /// (channel-blocked, the forward's multiply-adds and no more) instead of im2col's columns and
    /// col2im: input channels in blocks of 16 (on AVX2 also 8 past them), a width in multiples of 4
    /// from 8 and weights small enough to keep in its layout (the CIFAR ResNets' 3x3/2 layers).
    /// AMD EPYC family 25 model 1 (Zen 3), avx2: one thread, one sample, 16 -> 32 channels on 32x32
    /// 28.9 us (82 GFLOP/s), 32 -> 64 on 16x16 29.0 us, about the forward's time (im2col's gradient:
    /// 2.1x it in the profile of a batch-128 gradient); whole gradients, 2 threads, ab_builds pairs:
    /// mbn_resnet8 0.927x, mbn_resnet14 0.959x, mbn_resnet20 0.977-0.985x at batch 128,
    /// cifar10_resnet_2b (8 -> 16 channels) 0.966-0.990x at 128 and 0.95-0.99x at 1.
    func usesStridedC16Adjoint(h: Int, w: Int) -> Bool {
        guard Conv.stridedAdjointEnabled, isPadded3x3Stride2(h: h, w: w),
              inPerGroup * outChannels * 9 <= ConvWeights.cachedAdjointMaxFloats
        else { return false }
        return akn_conv_c16_s2_adjoint_preferred(Int32(inPerGroup), Int32(outChannels), Int32(h), Int32(w)) != 0
    }

    /// One group, a 3x3 window, stride 2, no dilation, padded by 1 on every side: the layers the
    /// 3x3/2 adjoint kernels take.
    private func isPadded3x3Stride2(h: Int, w: Int) -> Bool {
        group == 1 && kh == 3 && kw == 3 && strides == (2, 2) && dilations == (1, 1) && resolvedPads(h, w) == (1, 1, 1, 1)
    }

    /// The input gradient of a ``usesStridedC16Adjoint(h:w:)`` layer, 16 input channels a unit
    /// (``stridedAdjointBands(dz:mask:scale:n:c:h:w:oh:ow:dx:blocks:threads:weights:_:)``).
    private func stridedC16Backward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, scale: UnsafePointer<Float>?,
                                    n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, dx: UnsafeMutablePointer<Float>,
                                    threads: Int) {
        stridedAdjointBands(dz: dz, mask: mask, scale: scale, n: n, c: c, h: h, w: w, oh: oh, ow: ow, dx: dx,
                            blocks: (c + 15) / 16, threads: threads, weights: weights.c16(adjoint: true)) { own, wb, b, y0, y1, dxs in
            akn_conv_c16_s2_adjoint(own, Int32(outChannels), Int32(oh), Int32(ow), wb, Int32(c), Int32(h), Int32(w),
                                    Int32(b), Int32(b + 1), Int32(y0), Int32(y1), dxs)
        }
    }

    /// The driver of the 3x3/2 adjoint kernels: units of (sample, block of input channels, band of
    /// input rows) over the threads, each thread padding the rows of dz its band reads (with the
    /// mask and the BN scale) into its own buffer, once per (sample, band), then running `kernel`
    /// (padded dz, `weights`, block, rows [y0, y1), the sample's dx). Every element of dx is written
    /// by one unit, its chain fixed by the kernel: the split never changes it.
    private func stridedAdjointBands(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, scale: UnsafePointer<Float>?,
                                     n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, dx: UnsafeMutablePointer<Float>,
                                     blocks: Int, threads: Int, weights wts: [Float],
                                     _ kernel: (UnsafePointer<Float>, UnsafePointer<Float>, Int, Int, Int,
                                                UnsafeMutablePointer<Float>) -> Int32) {
        let m = outChannels
        let scratchSize = akn_scratch_size(Int32(m), Int32(oh), Int32(ow))
        let t = (threads > 1 && n * c * m * 9 * oh * ow >= 100_000) ? threads : 1
        let bands = Parallel.bands(units: n * blocks, rows: h, threads: t)
        let (dzSample, dxSample) = (m * oh * ow, c * h * w)
        wts.withUnsafeBufferPointer { wbp in
            let wb = wbp.baseAddress!
            Parallel.forRanges(n * bands * blocks, threads: t) { r in
                withThreadScratch(slot: 4, scratchSize) { own in
                    var padded = -1
                    for u in r {
                        let (b, sb) = (u % blocks, u / blocks)
                        let (s, band) = (sb / bands, sb % bands)
                        let (y0, y1) = (h * band / bands, h * (band + 1) / bands)
                        if sb != padded {
                            // dx rows [y0, y1) read dz's padded rows [y0 / 2, (y1 - 1) / 2 + 3): its rows
                            // [y0 / 2, (y1 - 1) / 2 + 1) as akn_conv3x3_pad_band counts them
                            akn_conv3x3_pad_band(dz + s * dzSample, mask.map { $0 + s * dzSample }, scale, Int32(m),
                                                 Int32(oh), Int32(ow), Int32(y0 / 2), Int32((y1 - 1) / 2 + 1), own)
                            padded = sb
                        }
                        let rc = kernel(UnsafePointer(own), wb, b, y0, y1, dx + s * dxSample)
                        assert(rc == 0, "3x3/2 adjoint: geometry \(c)x\(h)x\(w) -> \(m)x\(oh)x\(ow)")
                    }
                }
            }
        }
    }

    /// Cleared by tests to read W^T in place from the forward's panels in every layer.
    nonisolated(unsafe) static var transposedPanelsEnabled = true

    /// Output positions per sample up to which a layer's input gradient reads W^T from panels of
    /// its own (``ConvWeights/transposed``, ``ConvWeights/winograd2Adjoint``) instead of in place
    /// from the forward's: maps of 7x7 and under (a ResNet's last stage), whose few columns per
    /// weight make reading the weights the cost. AMD EPYC family 25 model 1 (Zen 3), avx2, 2 threads,
    /// ResNet-50 at batch 1: the input gradients of its 7x7 layers took 1.2-1.8x their forward's
    /// time. The copy costs these layers' weights once more (ResNet-50: 84 MB; the same at any depth).
    /// 1x1 layers on larger maps keep them too where the model's budget allows
    /// (``ConvWeights/transposedAllowed``).
    static let transposedPanelsMaxPositions = 49
    static let transposedPanelsMaxTiles = 16

    /// Output positions per sample of a 1x1 layer on an h x w input (``ConvAlgorithm/pointwise`` or
    /// ``ConvAlgorithm/strided1x1``).
    func pointwisePositions(h: Int, w: Int) -> Int { ((h - 1) / strides.0 + 1) * ((w - 1) / strides.1 + 1) }

    /// Whether this layer's input gradient runs on kept transposed panels: one group, a 1x1 layer
    /// (``ConvAlgorithm/pointwise`` or ``ConvAlgorithm/strided1x1``) with at most
    /// ``transposedPanelsMaxPositions`` output positions or within the model's budget
    /// (``ConvWeights/transposedAllowed``), or an F(2x2, 3x3) layer (``ConvAlgorithm/winograd2``)
    /// of at most ``transposedPanelsMaxTiles`` tiles (7x7 and 8x8 maps).
    func usesTransposedPanels(h: Int, w: Int) -> Bool {
        guard Conv.transposedPanelsEnabled, group == 1 else { return false }
        switch algorithm(h, w) {
        case .pointwise, .strided1x1:
            return pointwisePositions(h: h, w: w) <= Conv.transposedPanelsMaxPositions || weights.transposedAllowed
        case .winograd2:
            return Int(akn_wino2_tiles(Int32(h), Int32(w))) <= Conv.transposedPanelsMaxTiles
        default:
            return false
        }
    }

    /// Cleared by tests to run a few-channel 3x3/2 layer's input gradient as before (phased or im2col's).
    nonisolated(unsafe) static var stridedFewAdjointEnabled = true

    /// Whether the input gradient of a 3x3, stride-2 layer padded by 1 with at most 4 input channels
    /// (a CIFAR ResNet's stem) runs `akn_conv_s2_adjoint_few` (positions in the lanes, the forward's
    /// multiply-adds) instead of the phased one, whose GEMM has only c x 4 rows (12 for RGB: most of
    /// its row tiles empty; 1.8-2.1x the forward's time in the profile of a batch-128 gradient): widths
    /// in multiples of 16, on AVX2 and AVX-512.
    func usesStridedFewAdjoint(h: Int, w: Int) -> Bool {
        guard Conv.stridedFewAdjointEnabled, isPadded3x3Stride2(h: h, w: w) else { return false }
        return akn_conv_s2_adjoint_few_preferred(Int32(inPerGroup), Int32(outChannels), Int32(h), Int32(w)) != 0
    }

    /// The input gradient of a ``usesStridedFewAdjoint(h:w:)`` layer, every input channel in one
    /// unit (``stridedAdjointBands(dz:mask:scale:n:c:h:w:oh:ow:dx:blocks:threads:weights:_:)``).
    private func stridedFewBackward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, scale: UnsafePointer<Float>?,
                                    n: Int, c: Int, h: Int, w: Int, oh: Int, ow: Int, dx: UnsafeMutablePointer<Float>,
                                    threads: Int) {
        stridedAdjointBands(dz: dz, mask: mask, scale: scale, n: n, c: c, h: h, w: w, oh: oh, ow: ow, dx: dx,
                            blocks: 1, threads: threads, weights: weights.plain) { own, wt, _, y0, y1, dxs in
            akn_conv_s2_adjoint_few(own, Int32(outChannels), Int32(oh), Int32(ow), wt, Int32(c), Int32(h), Int32(w),
                                    Int32(y0), Int32(y1), dxs)
        }
    }

    /// Cleared by tests to run a 3x3/1 im2col layer's input gradient as im2col's (columns, col2im).
    nonisolated(unsafe) static var flippedAdjointEnabled = true

    /// Whether the input gradient of a 3x3, stride-1 im2col layer padded by 1 (maps of 4x4 and under,
    /// e.g. cifar10_sri_resnet_a's 128-channel layers) runs as that layer's forward does, an implicit
    /// im2col GEMM, on the output gradient padded by 1 (with the mask and the BN scale) and the
    /// transposed, flipped weights (``ConvWeights/flippedAdjoint``): the forward's multiply-adds, no
    /// column buffer, no col2im (which took 1.5-1.9x the forward's time on 4x4 and 2x2 maps).
    func usesFlippedAdjoint(h: Int, w: Int) -> Bool {
        Conv.flippedAdjointEnabled && group == 1 && kh == 3 && kw == 3 && strides == (1, 1) && dilations == (1, 1)
            && inPerGroup * outChannels * 9 <= ConvWeights.flippedAdjointMaxFloats && algorithm(h, w) == .im2col
            && resolvedPads(h, w) == (1, 1, 1, 1)
    }

    /// The input gradient of a ``usesFlippedAdjoint(h:w:)`` layer: per piece of samples, dz padded
    /// by 1 (akn_conv3x3_pad: mask and scale applied; channels over the threads), then one GEMM of
    /// the flipped weights on its implicit im2col (3x3, stride 1, no padding), written into dx.
    private func flippedBackward(dz: UnsafePointer<Float>, mask: UnsafePointer<Float>?, scale: UnsafePointer<Float>?, n: Int,
                                 c: Int, h: Int, w: Int, dx: UnsafeMutablePointer<Float>, threads: Int,
                                 _ ctx: ExecContext) throws {
        let m = outChannels, (ph, pw) = (h + 2, w + 2), per = m * ph * pw
        let piece = samplesPerPiece(n, floatsPerSample: per)
        var padded = try ctx.scratch(piece * per + akn_scratch_size(0, Int32(h), Int32(w)))
        defer { ctx.recycle(padded) }
        var geom = akn_conv_b(h: Int32(ph), w: Int32(pw), ow: Int32(w), kh: 3, kw: 3, sh: 1, sw: 1, dh: 1, dw: 1, pt: 0, pl: 0)
        let a = weights.flippedAdjoint
        try a.withUnsafeBufferPointer { ap in
            try padded.withUnsafeMutableBufferPointer { pp in
                let pb = pp.baseAddress!
                var s0 = 0
                while s0 < n {
                    let ns = min(piece, n - s0)
                    // (samples in order: each one's padding zeroes the slack after it, which the next overwrites)
                    for s in 0..<ns {
                        let at = (s0 + s) * m * h * w
                        Parallel.forRanges(m, threads: m * h * w >= 1 << 14 ? threads : 1) { r in
                            akn_conv3x3_pad(dz + at, mask.map { $0 + at }, scale, Int32(m), Int32(h), Int32(w),
                                            Int32(r.lowerBound), Int32(r.upperBound), pb + s * per)
                        }
                    }
                    var io = akn_gemm_cols()
                    io.per = Int32(h * w)
                    io.b = UnsafePointer(pb); io.ldb = ph * pw; io.b_sample = per
                    io.c = dx + s0 * c * h * w; io.ldc = h * w; io.c_sample = c * h * w
                    try withUnsafePointer(to: &geom) { gp in
                        io.conv = gp
                        guard let base = ap.baseAddress else { throw fail(.internal, "no adjoint weights") }
                        gemm(m: c, n: ns * h * w, k: m * 9, a: base, io: io, threads: threads)
                    }
                    s0 += ns
                }
            }
        }
    }

    /// Which Winograd algorithm `winograd(...)` runs, and how it reads its weights.
    enum WinogradForm {
        /// F(4x4, 3x3): 36 matrices, each packed [rows x cols].
        case f4
        /// F(2x2, 3x3): 16 matrices, each packed [rows x cols].
        case f2
        /// F(2x2, 3x3) of the input gradient: the forward's 16 matrices [cols x rows], read
        /// transposed, matrix xi from the forward's akn_wino2_adjoint_xi(xi).
        case f2Adjoint

        var xis: Int { self == .f4 ? 36 : 16 }
        /// The input transform (`winograd.h`).
        var input: @convention(c) (UnsafePointer<Float>?, UnsafePointer<Float>?, Int32, Int32, UnsafePointer<Float>?, Int32,
                                   Int32, UnsafeMutablePointer<Float>?, Int, Int, Int) -> Void {
            self == .f4 ? akn_wino_input : akn_wino2_input
        }
        /// The output transform and epilogue (`winograd.h`).
        var output: @convention(c) (UnsafePointer<Float>?, Int, Int, Int, Int32, Int32, Int32, Int32, UnsafePointer<Float>?,
                                    UnsafePointer<Float>?, UnsafePointer<Float>?, Int32, UnsafeMutablePointer<Float>?) -> Void {
            self == .f4 ? akn_wino_output : akn_wino2_output
        }
        func tiles(_ h: Int, _ w: Int) -> Int {
            Int(self == .f4 ? akn_wino_tiles(Int32(h), Int32(w)) : akn_wino2_tiles(Int32(h), Int32(w)))
        }
    }

    /// y[n][rows][h][w] = conv3x3(x[n][cols][h][w]) by Winograd (`form`) with packed weights `u`
    /// (`form.xis` GEMM A matrices), x's channels first multiplied by `inScale` when given.
    private func winograd(_ u: [Float], form: WinogradForm = .f4, rows: Int, cols: Int, x: UnsafePointer<Float>,
                          inMask: UnsafePointer<Float>?, n: Int, h: Int, w: Int,
                          inScale: UnsafePointer<Float>?, ep: Epilogue, y: UnsafeMutablePointer<Float>, threads: Int,
                          _ ctx: ExecContext) throws {
        let (xis, inputTransform, outputTransform) = (form.xis, form.input, form.output)
        let tiles = form.tiles(h, w)
        let piece = samplesPerPiece(n, floatsPerSample: xis * (rows + cols) * tiles)
        let perA = form == .f2Adjoint ? akn_gemm_packed_a_size(Int32(cols), Int32(rows))
            : akn_gemm_packed_a_size(Int32(rows), Int32(cols))
        let cap = xis * piece * tiles
        var v = try ctx.scratch(cap * cols), mb = try ctx.scratch(cap * rows)
        defer { ctx.recycle(v); ctx.recycle(mb) }
        u.withUnsafeBufferPointer { up in
            v.withUnsafeMutableBufferPointer { vp in
                mb.withUnsafeMutableBufferPointer { mp in
                    let (vb, mbase, ub) = (vp.baseAddress!, mp.baseAddress!, up.baseAddress!)
                    var s0 = 0
                    while s0 < n {
                        let ns = min(piece, n - s0)
                        let cols_ = ns * tiles
                        let split = Parallel.split(flops: 2 * xis * rows * cols * cols_)
                        // 1. input transform, over (sample, channel)
                        Parallel.forRanges(ns * cols, threads: threads, split: split) { r in
                            var u = r.lowerBound
                            while u < r.upperBound {
                                let s = u / cols, c0 = u % cols, c1 = min(cols, c0 + (r.upperBound - u))
                                let off = (s0 + s) * cols * h * w
                                inputTransform(x + off, inMask.map { $0 + off }, Int32(h), Int32(w), inScale, Int32(c0),
                                               Int32(c1), vb, cols_, cols * cols_, s * tiles)
                                u += c1 - c0
                            }
                        }
                        // 2. the GEMMs, one per xi
                        let gemmThreads = 2 * rows * cols * cols_ < 1_000_000 ? 1 : threads
                        Parallel.forRanges(xis, threads: gemmThreads, split: split) { r in
                            withThreadScratch(slot: 0, akn_gemm_scratch_size(Int32(cols), Int32(cols_))) { sp in
                                for xi in r {
                                    var io = akn_gemm_cols()
                                    io.per = Int32(cols_)
                                    io.b = UnsafePointer(vb + xi * cols * cols_); io.ldb = cols_
                                    io.c = mbase + xi * rows * cols_; io.ldc = cols_
                                    withUnsafePointer(to: &io) { iop in
                                        if form == .f2Adjoint {
                                            akn_gemm_transposed(Int32(rows), Int32(cols_), Int32(cols),
                                                                ub + Int(akn_wino2_adjoint_xi(Int32(xi))) * perA, iop, 0,
                                                                Int32(rows), 0, Int32(cols_), sp)
                                        } else {
                                            akn_gemm(Int32(rows), Int32(cols_), Int32(cols), ub + xi * perA, iop, 0, Int32(rows), 0,
                                                     Int32(cols_), sp)
                                        }
                                    }
                                }
                            }
                        }
                        // 3. output transform + epilogue, over (sample, channel)
                        Parallel.forRanges(ns * rows, threads: threads, split: split) { r in
                            var u = r.lowerBound
                            while u < r.upperBound {
                                let s = u / rows, m0 = u % rows, m1 = min(rows, m0 + (r.upperBound - u))
                                let off = (s0 + s) * rows * h * w
                                outputTransform(UnsafePointer(mbase), cols_, rows * cols_, s * tiles, Int32(h), Int32(w),
                                                Int32(m0), Int32(m1), ep.scale, ep.bias, ep.residual.map { $0 + off },
                                                ep.relu ? 1 : 0, y + off)
                                u += m1 - m0
                            }
                        }
                        s0 += ns
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
    case "NOTSET": return explicit  // (first: the common case, compared by its raw bits)
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
