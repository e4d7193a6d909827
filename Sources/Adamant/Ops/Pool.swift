import CKernels

/// ONNX `MaxPool` and `AveragePool` over NCHW.
struct Pool: Op {
    enum Kind { case max, average }
    let kind: Kind
    var type: String { kind == .max ? "MaxPool" : "AveragePool" }
    let kh, kw: Int
    let strides: (Int, Int)
    let dilations: (Int, Int)
    let pads: (Int, Int, Int, Int)
    let ceilMode: Bool
    let countIncludePad: Bool
    let autoPad: String

    init(_ a: Attrs, kind: Kind) throws {
        self.kind = kind
        guard let k = try a.ints("kernel_shape"), k.count == 2, k.allSatisfy({ $0 >= 1 }) else {
            throw a.invalid("kernel_shape must list two positive sizes (only 2-D pooling is supported)")
        }
        kh = k[0]; kw = k[1]
        let s = try a.ints("strides") ?? [1, 1]
        let d = try a.ints("dilations") ?? [1, 1]
        let p = try a.ints("pads") ?? [0, 0, 0, 0]
        guard s.count == 2, d.count == 2, p.count == 4, s.allSatisfy({ $0 >= 1 }), d.allSatisfy({ $0 >= 1 }),
              p.allSatisfy({ $0 >= 0 }) else { throw a.invalid("invalid strides \(s), dilations \(d) or pads \(p)") }
        strides = (s[0], s[1]); dilations = (d[0], d[1]); pads = (p[0], p[1], p[2], p[3])
        guard p[0] < kh * d[0] && p[2] < kh * d[0] && p[1] < kw * d[1] && p[3] < kw * d[1] else {
            throw a.invalid("pads \(p) must be smaller than the kernel \([kh, kw])")
        }
        ceilMode = try a.int("ceil_mode", 0) != 0
        countIncludePad = try a.int("count_include_pad", 0) != 0
        autoPad = try a.string("auto_pad", "NOTSET")
        guard ["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"].contains(autoPad) else { throw a.unsupported("auto_pad \(autoPad)") }
        if kind == .max, try a.int("storage_order", 0) != 0 { throw a.unsupported("storage_order 1") }
    }

    private func resolved(_ h: Int, _ w: Int) -> (Int, Int, Int, Int) {
        windowPads(autoPad, explicit: pads, h: h, w: w, kernel: (kh, kw), strides: strides, dilations: dilations)
    }

    private func outSize(_ size: Int, _ k: Int, _ s: Int, _ d: Int, _ p0: Int, _ p1: Int) -> Int {
        let span = size + p0 + p1 - ((k - 1) * d + 1)
        guard span >= 0 else { return 0 }
        var o = (ceilMode ? (span + s - 1) / s : span / s) + 1
        // A window must start inside the input or the left padding.
        if ceilMode && (o - 1) * s >= size + p0 { o -= 1 }
        return o
    }

    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        guard x.count == 4 else { throw fail(.shape, "\(type) expects a 4-D NCHW input, got \(x)") }
        let p = resolved(x[2], x[3])
        let oh = outSize(x[2], kh, strides.0, dilations.0, p.0, p.2)
        let ow = outSize(x[3], kw, strides.1, dilations.1, p.1, p.3)
        guard oh >= 1, ow >= 1 else { throw fail(.shape, "\(type) window \(kh)x\(kw) does not fit input \(x)") }
        return [[x[0], x[1], oh, ow]]
    }

    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { outputs[0].product * kh * kw }

    /// Visits each output position with its valid input taps.
    private func run(_ shape: [Int], _ out: [Int], _ body: (_ plane: Int, _ o: Int, _ taps: [Int], _ divisor: Int) -> Void) {
        let (h, w) = (shape[2], shape[3])
        let p = resolved(h, w)
        let (oh, ow) = (out[2], out[3])
        var taps: [Int] = []
        taps.reserveCapacity(kh * kw)
        for plane in 0..<(shape[0] * shape[1]) {
            for i in 0..<oh {
                for j in 0..<ow {
                    taps.removeAll(keepingCapacity: true)
                    let h0 = i * strides.0 - p.0, w0 = j * strides.1 - p.1
                    var padded = 0
                    for ki in 0..<kh {
                        let ih = h0 + ki * dilations.0
                        for kj in 0..<kw {
                            let iw = w0 + kj * dilations.1
                            if ih >= -p.0 && ih < h + p.2 && iw >= -p.1 && iw < w + p.3 { padded += 1 }
                            if ih >= 0 && ih < h && iw >= 0 && iw < w { taps.append(plane * h * w + ih * w + iw) }
                        }
                    }
                    body(plane, (plane * oh + i) * ow + j, taps, countIncludePad ? padded : taps.count)
                }
            }
        }
    }

    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let outShape = try shapes([x.shape], ShapeEnv(declaredBatch: nil, batch: x.shape[0]))[0]
        if kind == .max && dilations == (1, 1) {
            var y = try ctx.uninitialized(outShape)
            let (h, w, oh, ow) = (x.shape[2], x.shape[3], outShape[2], outShape[3])
            let p = resolved(h, w)
            x.data.withUnsafeBufferPointer { xp in
                y.data.withUnsafeMutableBufferPointer { yp in
                    let (xb, yb) = (xp.baseAddress!, yp.baseAddress!)
                    Parallel.forRanges(x.shape[0] * x.shape[1], threads: ctx.threads) { r in
                        for plane in r {
                            akn_maxpool_plane(xb + plane * h * w, Int32(h), Int32(w), Int32(kh), Int32(kw), Int32(strides.0),
                                              Int32(strides.1), Int32(p.0), Int32(p.1), Int32(oh), Int32(ow), yb + plane * oh * ow)
                        }
                    }
                }
            }
            return [y]
        }
        var y = try ctx.zeros(outShape)
        run(x.shape, outShape) { _, o, taps, divisor in
            if kind == .max {
                var m = -Float.infinity
                for t in taps where x.data[t] > m || m.isNaN { m = x.data[t] }
                y.data[o] = m
            } else {
                var s: Float = 0
                for t in taps { s += x.data[t] }
                y.data[o] = divisor > 0 ? s / Float(divisor) : 0
            }
        }
        return [y]
    }

    /// Max pooling finds each window's largest input again; average pooling reads shapes alone.
    func backwardRead(input i: Int) -> BackwardRead { kind == .max ? .values : .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }

    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let x = inputs[0], g = gradOutputs[0]
        if kind == .max && dilations == (1, 1) {
            // Each plane zeroed by the thread that adds into it, just before: one pass over dx, not a
            // zeroing pass and then the scatter (ResNet-50's pool at batch 1: 4x its forward's time).
            var dx = try ctx.uninitialized(x.shape)
            let (h, w, oh, ow) = (x.shape[2], x.shape[3], g.shape[2], g.shape[3])
            let p = resolved(h, w)
            x.data.withUnsafeBufferPointer { xp in
                g.data.withUnsafeBufferPointer { gp in
                    dx.data.withUnsafeMutableBufferPointer { dp in
                        let (xb, gb, db) = (xp.baseAddress!, gp.baseAddress!, dp.baseAddress!)
                        Parallel.forRanges(x.shape[0] * x.shape[1], threads: ctx.threads) { r in
                            for plane in r {
                                (db + plane * h * w).update(repeating: 0, count: h * w)
                                akn_maxpool_plane_backward(xb + plane * h * w, gb + plane * oh * ow, Int32(h), Int32(w), Int32(kh),
                                                           Int32(kw), Int32(strides.0), Int32(strides.1), Int32(p.0), Int32(p.1),
                                                           Int32(oh), Int32(ow), db + plane * h * w)
                            }
                        }
                    }
                }
            }
            return [dx]
        }
        var dx = try ctx.zeros(x.shape)
        run(x.shape, g.shape) { _, o, taps, divisor in
            if kind == .max {
                var best = -1
                for t in taps where best < 0 || x.data[t] > x.data[best] { best = t }
                if best >= 0 { dx.data[best] += g.data[o] }
            } else if divisor > 0 {
                let v = g.data[o] / Float(divisor)
                for t in taps { dx.data[t] += v }
            }
        }
        return [dx]
    }
}

/// ONNX `GlobalAveragePool`: mean over all spatial positions.
struct GlobalAveragePool: Op {
    let type = "GlobalAveragePool"
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]] {
        let x = inputs[0]
        guard x.count >= 3 else { throw fail(.shape, "GlobalAveragePool expects rank >= 3, got \(x)") }
        return [[x[0], x[1]] + [Int](repeating: 1, count: x.count - 2)]
    }
    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { inputs[0].product }
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor] {
        let x = inputs[0]
        let planes = x.shape[0] * x.shape[1]
        let inner = Array(x.shape[2...]).product
        let shape = try shapes([x.shape], ShapeEnv(declaredBatch: nil, batch: 0))[0]
        var y = Tensor(shape: shape, data: [Float](unsafeUninitializedCapacity: planes) { _, k in k = planes })
        x.data.withUnsafeBufferPointer { xp in
            y.data.withUnsafeMutableBufferPointer { yp in
                // Planes over the threads (each plane's sum in a fixed order: akn_mean_planes).
                Parallel.forRanges(planes, threads: planes * inner >= 1 << 18 ? ctx.threads : 1) { r in
                    akn_mean_planes(xp.baseAddress! + r.lowerBound * inner, r.count, inner, yp.baseAddress! + r.lowerBound)
                }
            }
        }
        return [y]
    }
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        let x = inputs[0], g = gradOutputs[0]
        let inner = Array(x.shape[2...]).product, count = x.shape.product
        var dx = Tensor(shape: x.shape, data: [Float](unsafeUninitializedCapacity: count) { _, k in k = count })
        g.data.withUnsafeBufferPointer { gp in
            dx.data.withUnsafeMutableBufferPointer { dp in
                for p in 0..<(x.shape[0] * x.shape[1]) {
                    (dp.baseAddress! + p * inner).update(repeating: gp[p] / Float(inner), count: inner)
                }
            }
        }
        return [dx]
    }
    /// Shapes alone: each input's gradient is its plane's output gradient over the plane.
    func backwardRead(input i: Int) -> BackwardRead { .shape }
    func backwardRead(output i: Int) -> BackwardRead { .shape }
}
