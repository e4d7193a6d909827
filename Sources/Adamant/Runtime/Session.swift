import CKernels
/// Per-sample losses adamant differentiates.
public enum Loss: Int32, Sendable {
    /// Cross-entropy: -log softmax(z)[label].
    case crossEntropy = 0
    /// Carlini-Wagner margin: max_{j != label} z_j - z_label.
    case cwMargin = 1
    /// Difference of logits ratio (Croce & Hein 2020), untargeted:
    /// -(z_label - max_{j != label} z_j) / (z_pi1 - z_pi3 + 1e-12), z_pi sorted descending.
    /// Needs at least 3 classes.
    case dlr = 2
    /// Targeted DLR: -(z_label - z_target) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12). Needs the
    /// target of each sample (``Session/gradient(_:batch:labels:targets:loss:domain:)``) and at
    /// least 4 classes.
    case dlrTargeted = 3

    /// The fewest classes the loss is defined for.
    public var minimumClasses: Int {
        switch self { case .crossEntropy: return 1; case .cwMargin: return 2; case .dlr: return 3; case .dlrTargeted: return 4 }
    }
}

/// A per-thread execution context for one model: runs inference, gradients and attacks.
/// Not thread-safe; create one per thread (the model itself is shared).
public final class Session {
    /// The model this session runs.
    public let model: Model

    /// Creates a session for `model`.
    public init(model: Model) { self.model = model }

    /// Activation, gradient and scratch buffers recycled from call to call.
    let pool = BufferPool()

    /// Buffers this session has allocated so far: after the first call with a batch size, further
    /// calls with it (predict, gradient, attacks) reuse the pool's buffers and allocate none.
    public var bufferAllocations: Int { pool.allocations }

    /// Frees the buffers kept for the next call (they are allocated again when needed) and hands the
    /// freed pages back to the system.
    public func releaseMemory() {
        pool.removeAll()
        Model.returnFreedMemory()
    }

    /// Asked between ops of every forward and backward pass (so within one op of any predict,
    /// gradient or attack step); answering true ends the call with an ``ErrorKind/cancelled`` error.
    /// It may be called from the session's worker threads at once: it must be thread-safe (the C ABI
    /// reads an atomic flag set by adm_context_cancel).
    public var shouldCancel: (() -> Bool)?

    /// The most floats the session's pool has lent out at once since ``resetPeakMemory()`` (tests).
    var peakPooledFloats: Int { pool.peakLentFloats }
    /// The most floats the pool has held (free + lent) since ``resetPeakMemory()``: its footprint.
    var peakPoolFootprint: Int { pool.peakFootprintFloats }
    func resetPeakMemory() { pool.resetPeak() }

    /// Checks a pixel batch's length and returns its batch tensor after normalization.
    func normalizedInput(_ x: UnsafeBufferPointer<Float>, batch: Int) throws -> Tensor {
        try checkInput(x, batch: batch)
        return normalizedCopy(x, 0..<batch, threads: Parallel.threads)
    }

    /// Fails unless `x` holds exactly `batch` input images, all finite.
    func checkInput(_ x: UnsafeBufferPointer<Float>, batch: Int) throws {
        try checkInputLength(x.count, batch: batch)
        try checkFinite(x)
    }

    /// Samples `range` of a checked pixel batch as a batch tensor after normalization, in one pass
    /// where the model has a preprocessing (``normalizePlanes(_:into:count:threads:)`` from the
    /// caller's pixels into the new tensor).
    func normalizedCopy(_ x: UnsafeBufferPointer<Float>, _ range: Range<Int>, threads: Int) -> Tensor {
        let per = model.inputShape.product
        let src = UnsafeBufferPointer(rebasing: x[(range.lowerBound * per)..<(range.upperBound * per)])
        guard model.preprocessing.mean != nil, model.preprocessing.std != nil else {
            return Tensor(shape: [range.count] + model.inputShape, data: Array(src))
        }
        let data = [Float](unsafeUninitializedCapacity: src.count) { buf, n in
            if let s = src.baseAddress, let d = buf.baseAddress {
                normalizePlanes(s, into: d, count: src.count, threads: threads)
            }
            n = src.count
        }
        return Tensor(shape: [range.count] + model.inputShape, data: data)
    }

    /// Where a call's samples come from: the caller's pixels, normalized piece by piece, or a batch
    /// already normalized (an attack's gathered images).
    enum Samples {
        case pixels(UnsafeBufferPointer<Float>)
        case normalized(Tensor)
    }

    /// Samples `range` of `samples` as a tensor of `ctx`'s batch, in a buffer of `ctx`'s pool (hand
    /// it back with `ctx.recycle` once the pass is done) — normalized straight from the caller's
    /// pixels, or copied from the normalized batch — or, when `range` is a normalized batch whole,
    /// that batch itself (`pooled` false). A fresh array per call and piece cost page faults every
    /// call (cifar10_resnet_2b's gradient at batch 128: 16 % of its time in the kernel's page faults).
    func piece(_ samples: Samples, _ range: Range<Int>, _ ctx: ExecContext) throws -> (tensor: Tensor, pooled: Bool) {
        let per = model.inputShape.product, shape = [range.count] + model.inputShape
        switch samples {
        case .normalized(let x):
            if range.count == x.shape[0] { return (x, false) }
            var t = try ctx.uninitialized(shape)
            t.data.withUnsafeMutableBufferPointer { d in
                x.data.withUnsafeBufferPointer { src in
                    d.baseAddress!.update(from: src.baseAddress! + range.lowerBound * per, count: range.count * per)
                }
            }
            return (t, true)
        case .pixels(let x):
            var t = try ctx.uninitialized(shape)
            t.data.withUnsafeMutableBufferPointer { d in
                let src = x.baseAddress! + range.lowerBound * per
                if model.preprocessing.mean != nil, model.preprocessing.std != nil {
                    normalizePlanes(src, into: d.baseAddress!, count: range.count * per, threads: ctx.threads)
                } else {
                    d.baseAddress!.update(from: src, count: range.count * per)
                }
            }
            return (t, true)
        }
    }

    /// Runs `body` with `count` floats (contents undefined) from the pool of batch size `batch`,
    /// handed back after: a call's staging buffer (the C ABI's gradient, written to the caller's
    /// buffer only once the call has succeeded) without a fresh allocation every call.
    package func withPooledFloats<R>(_ count: Int, batch: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) throws -> R {
        var a = try pool.take(max(1, count), batch: batch)
        defer { pool.give(a, batch: batch) }
        return try a.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
    }

    /// Fails unless `count` floats are exactly `batch` (>= 1) input images.
    package func checkInputLength(_ count: Int, batch: Int) throws {
        guard batch >= 1 else { throw fail(.shape, "batch must be at least 1") }
        let (need, o) = batch.multipliedReportingOverflow(by: model.inputShape.product)
        guard !o, count == need else {
            throw fail(.shape, "expected \(batch) x \(model.inputShape) = \(o ? "too many" : "\(need)") floats, got \(count)")
        }
    }

    /// Where pixel `index` of a batch lies: "sample 3, pixel index 17 (channel 0, row 0, column 17)".
    func pixelLocation(_ index: Int) -> String {
        let per = model.inputShape.product, hw = model.inputShape[1] * model.inputShape[2], w = model.inputShape[2]
        let j = index % per
        return "sample \(index / per), pixel index \(j) (channel \(j / hw), row \(j % hw / w), column \(j % w))"
    }

    /// Fails on the first NaN or infinite pixel, naming its sample and index (the same policy as PGD).
    func checkFinite(_ x: UnsafeBufferPointer<Float>) throws {
        guard let base = x.baseAddress else { return }
        let i = akn_first_nonfinite(base, x.count)
        if i >= 0 {
            throw fail(.invalidArgument, "input pixels must be finite: found \(x[i]) at \(pixelLocation(i))")
        }
    }

    /// x = (x - mean[c]) / std[c] in place (the model's preprocessing, when it has one): per plane,
    /// the subtraction then the division, vectorized (akn_scalar_op: the same two IEEE operations per
    /// element as a plain loop), planes over the threads for a large batch. (An element-by-element
    /// Swift loop before: cifar10_sri_resnet_a with its mean and std, batch 128, from Python,
    /// 2656-2711 -> 2578-2655 us a call.)
    func normalize(_ t: inout Tensor) {
        guard model.preprocessing.mean != nil, model.preprocessing.std != nil else { return }
        let count = t.count
        t.data.withUnsafeMutableBufferPointer { p in
            guard let base = p.baseAddress else { return }
            normalizePlanes(base, into: base, count: count, threads: Parallel.threads)
        }
    }

    /// dst = (src - mean[c]) / std[c] over `count` floats of whole samples (dst may be src): per
    /// plane, the subtraction written to dst, then the division in place; planes over `threads` from
    /// 64K floats. The model has a preprocessing.
    private func normalizePlanes(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, count: Int,
                                 threads: Int) {
        guard let mean = model.preprocessing.mean, let std = model.preprocessing.std else { return }
        let c = model.inputShape[0], hw = model.inputShape[1] * model.inputShape[2]
        // (whole samples of [batch] + inputShape, and the preprocessing has one mean and std per
        // channel: both checked before any call gets here)
        assert(c > 0 && hw > 0 && mean.count == c && std.count == c && count % (c * hw) == 0)
        let planes = count / hw
        Parallel.forRanges(planes, threads: count >= 1 << 16 ? threads : 1) { r in
            for q in r {
                akn_scalar_op(src + q * hw, mean[q % c], dst + q * hw, hw, 1)  // x - mean
                akn_scalar_op(dst + q * hw, std[q % c], dst + q * hw, hw, 3)   // x / std
            }
        }
    }

    func context(domain: Int, batch: Int, calibration: CalibrationRecorder? = nil, threads: Int = 1, lane: Int = 0) throws
        -> ExecContext {
        try model.checkDomain(domain)
        return ExecContext(bn: model.bn[domain], declaredBatch: model.graph.declaredBatch, batch: batch,
                           calibration: calibration, threads: threads, pool: pool, lane: lane, shouldCancel: shouldCancel)
    }

    /// The sample ranges ``chunked(_:piece:_:)`` splits a batch into for pieces of at most `piece`
    /// samples (`cacheFriendlyBatch` by default): one range (the whole batch) when that is one piece,
    /// else enough pieces for every thread. They depend only on the batch, the piece and the threads.
    func pieceRanges(_ batch: Int, piece: Int? = nil) -> [Range<Int>] {
        let piece = max(1, piece ?? model.cacheFriendlyBatch)
        let pieces = (batch + piece - 1) / piece
        if pieces <= 1 { return [0..<batch] }
        let count = max(pieces, min(Parallel.threads, batch))
        return (0..<count).map { (batch * $0 / count)..<(batch * ($0 + 1) / count) }
    }

    /// Runs `body(i)` for pieces i in 0..<count on min(threads, count) workers (worker w takes
    /// w, w + workers, ...: ``pieceLane(_:of:)``), each single-threaded inside; rethrows the first
    /// piece's error.
    func forEachPiece(_ count: Int, _ body: (Int) throws -> Void) throws {
        var errors = [Error?](repeating: nil, count: count)
        let workers = pieceWorkers(count)
        errors.withUnsafeMutableBufferPointer { errs in
            let ep = errs.baseAddress!
            withoutActuallyEscaping(body) { body in
                Parallel.forRanges(workers, threads: workers) { r in
                    for w in r {
                        for i in stride(from: w, to: count, by: workers) {
                            do { try body(i) } catch { ep[i] = error }
                        }
                    }
                }
            }
        }
        if let e = errors.compactMap({ $0 }).first { throw e }
    }

    /// Workers ``forEachPiece(_:_:)`` runs `count` pieces on.
    func pieceWorkers(_ count: Int) -> Int { max(1, min(Parallel.threads, count)) }

    /// The worker of ``forEachPiece(_:_:)`` that runs piece `i` of `count`: the pool lane its
    /// context draws buffers from (and its buffers go back to).
    func pieceLane(_ i: Int, of count: Int) -> Int { i % pieceWorkers(count) }

    /// Samples `range` of a batch tensor (a copy).
    func slice(_ x: Tensor, _ range: Range<Int>) -> Tensor {
        let per = x.count / max(1, x.shape[0])
        return Tensor(shape: [range.count] + Array(x.shape.dropFirst()),
                      data: Array(x.data[(range.lowerBound * per)..<(range.upperBound * per)]))
    }

    /// Runs `body` over the batch in pieces of samples small enough that a piece's activations stay in
    /// cache, spread over the threads (each piece single-threaded inside). A batch that makes a
    /// single piece runs whole, with ops splitting their own work over the threads. Samples never
    /// interact (BN runs in inference mode), so the split changes no result.
    /// `body(piece, range, threads, lane)`: the pool lane its contexts use (``pieceLane(_:of:)``).
    func chunked<R>(_ x: Tensor, piece: Int? = nil, _ body: (Tensor, Range<Int>, Int, Int) throws -> R) throws -> [R] {
        try chunked(batch: x.shape[0], piece: piece, input: { r, _ in r.count == x.shape[0] ? x : slice(x, r) }, body)
    }

    /// The same for a batch of `batch` samples whose pieces `input` makes (from the samples' range and
    /// the threads the piece runs on; a piece's by the worker that runs it).
    func chunked<R>(batch: Int, piece: Int? = nil, input: (Range<Int>, Int) throws -> Tensor,
                    _ body: (Tensor, Range<Int>, Int, Int) throws -> R) throws -> [R] {
        try chunked(batch: batch, piece: piece) { range, threads, lane in try body(input(range, threads), range, threads, lane) }
    }

    /// The same, `body(range, threads, lane)` making its piece itself (``piece(_:_:_:)``).
    func chunked<R>(batch: Int, piece: Int? = nil, _ body: (Range<Int>, Int, Int) throws -> R) throws -> [R] {
        let ranges = pieceRanges(batch, piece: piece)
        if ranges.count == 1 { return [try body(ranges[0], Parallel.threads, 0)] }
        var results = [R?](repeating: nil, count: ranges.count)
        try results.withUnsafeMutableBufferPointer { res in
            let rp = res.baseAddress!
            try forEachPiece(ranges.count) { i in
                rp[i] = try body(ranges[i], 1, pieceLane(i, of: ranges.count))
            }
        }
        return results.map { $0! }
    }

    /// Logits [batch, classes] for pixel-space images through BN `domain`.
    public func predict(_ x: UnsafeBufferPointer<Float>, batch: Int, domain: Int) throws -> [Float] {
        try checkMemory(batch: batch, kind: .predict)
        try checkInput(x, batch: batch)
        try model.checkDomain(domain)
        if model.schedules[domain].count > 1, batch > 1 {
            return try logits(normalizedCopy(x, 0..<batch, threads: Parallel.threads), domain: domain)
        }
        // Each piece normalized straight from the caller's pixels by the worker that runs it: no copy
        // of the whole batch to slice from (two passes over the input before: cifar10_resnet_2b at
        // batch 128, 2 threads, spent 6 % of a call copying).
        return try chunked(batch: batch) { r, threads, lane in
            try pieceLogits(.pixels(x), r, domain: domain, threads: threads, lane: lane)
        }.flatMap { $0 }
    }

    /// Convenience overload for arrays.
    public func predict(_ x: [Float], batch: Int, domain: Int) throws -> [Float] {
        try x.withUnsafeBufferPointer { try predict($0, batch: batch, domain: domain) }
    }

    func logits(_ normalized: Tensor, domain: Int) throws -> [Float] {
        try model.checkDomain(domain)
        let segments = model.schedules[domain]
        if segments.count > 1, normalized.shape[0] > 1 {
            let y = try segmentedForward(normalized, domain: domain, segments)
            try checkOutput(y, batch: normalized.shape[0])
            return y.data
        }
        return try chunked(batch: normalized.shape[0]) { r, threads, lane in
            try pieceLogits(.normalized(normalized), r, domain: domain, threads: threads, lane: lane)
        }.flatMap { $0 }
    }

    /// The logits of samples `range` (one piece of a batch: ``chunked(batch:piece:_:)``), their
    /// input in a pooled buffer (``piece(_:_:_:)``).
    private func pieceLogits(_ samples: Samples, _ range: Range<Int>, domain: Int, threads: Int, lane: Int) throws -> [Float] {
        let ctx = try context(domain: domain, batch: range.count, threads: threads, lane: lane)
        let (t, pooled) = try piece(samples, range, ctx)
        let y = try model.plans[domain].forward(t, ctx, keep: false).output
        if pooled { ctx.recycle(t) }
        try checkOutput(y, batch: range.count)
        return y.data
    }

    /// The segments as a batch of `batch` runs them: a segment whose pieces would be one runs on the
    /// whole batch (piece nil), and consecutive whole-batch segments run as one.
    func runs(_ segments: [Schedule.Segment], batch: Int) -> [Schedule.Segment] {
        var out: [Schedule.Segment] = []
        for s in segments {
            let piece = s.piece.flatMap { $0 < batch ? $0 : nil }
            if piece == nil, let last = out.last, last.piece == nil {
                out[out.count - 1] = Schedule.Segment(nodes: last.nodes.lowerBound..<s.nodes.upperBound, input: last.input,
                                                      output: s.output, piece: nil)
            } else {
                out.append(Schedule.Segment(nodes: s.nodes, input: s.input, output: s.output, piece: piece))
            }
        }
        return out
    }

    /// A forward pass segment by segment (``Schedule``): a segment with a piece size runs as
    /// ``chunked(_:piece:_:)`` does, its pieces' outputs joined into one batch for the next; the
    /// others run on the whole batch with every thread.
    func segmentedForward(_ x: Tensor, domain: Int, _ segments: [Schedule.Segment]) throws -> Tensor {
        let batch = x.shape[0], threads = Parallel.threads
        let plan = model.plans[domain]
        var cur = x
        var owned = false  // cur came from the pool (not the caller's input): hand it back when read
        for seg in runs(segments, batch: batch) {
            let ctx = try context(domain: domain, batch: batch, threads: threads)
            let out: Tensor
            if seg.piece == nil {
                out = try plan.forward(seg, cur, ctx)
            } else {
                let parts = try chunked(cur, piece: seg.piece) { t, _, th, lane in
                    try plan.forward(seg, t, try context(domain: domain, batch: t.shape[0], threads: th, lane: lane))
                }
                out = try join(parts, ctx, handBack: true)
            }
            if owned && !sameStorage(out.data, cur.data) { ctx.recycle(cur) }
            cur = out
            owned = true
        }
        return cur
    }

    /// A forward pass that keeps every value, segment by segment as ``segmentedForward(_:domain:_:)``
    /// runs it, then the backward pass segment by segment in reverse (a piece segment's pieces on the
    /// threads again, each from the values it kept): the logits, the per-sample values `seed` gives
    /// with the logit gradient, and the gradient with respect to the normalized input (from the pool
    /// of a batch-sized context). Holds every sample's kept values at once (``Model/segmentsGradient(batch:)``).
    func segmentedGradient(_ x: Tensor, domain: Int, _ segments: [Schedule.Segment], compact: Bool,
                           _ seed: ([Float], Range<Int>) -> ([Float], [Float])) throws -> (loss: [Float], gradient: Tensor, logits: [Float]) {
        let batch = x.shape[0], threads = Parallel.threads
        let plan = model.plans[domain]
        let ctx = try context(domain: domain, batch: batch, threads: threads)
        struct Tape { var tape: Executor.Tape; let ctx: ExecContext; let range: Range<Int> }
        var taped: [(seg: Schedule.Segment, tapes: [Tape])] = []
        // A segment's input is the caller's, a piece's own copy, or a joined output (in `joined`):
        // never handed back with the segment's values.
        func release(_ seg: Schedule.Segment, _ tapes: [Tape]) {
            for var t in tapes { plan.release(&t.tape, t.ctx, except: [plan.graph.input, plan.graph.output, seg.input]) }
        }
        var joined: [Tensor] = []  // piece segments' outputs joined into a batch (a later segment's input)
        defer {
            for (seg, tapes) in taped { release(seg, tapes) }
            joined.forEach(ctx.recycle)
        }
        var cur = x
        for seg in runs(segments, batch: batch) {
            if seg.piece == nil {
                let pass = try plan.forward(seg, cur, ctx, keep: true, compact: compact)
                taped.append((seg, [Tape(tape: pass.tape, ctx: ctx, range: 0..<batch)]))
                cur = pass.output
            } else {
                let ranges = pieceRanges(batch, piece: seg.piece)
                var tapes = [Tape?](repeating: nil, count: ranges.count)
                let input = cur
                try tapes.withUnsafeMutableBufferPointer { tp in
                    let t = tp.baseAddress!
                    try forEachPiece(ranges.count) { i in
                        let pctx = try context(domain: domain, batch: ranges[i].count, threads: 1,
                                               lane: pieceLane(i, of: ranges.count))
                        let pass = try plan.forward(seg, slice(input, ranges[i]), pctx, keep: true, compact: compact)
                        t[i] = Tape(tape: pass.tape, ctx: pctx, range: ranges[i])
                    }
                }
                taped.append((seg, tapes.map { $0! }))
                cur = try join(tapes.map { $0!.tape.values[seg.output]! }, ctx, handBack: false)  // (kept by the tapes)
                if seg.output != plan.graph.output { joined.append(cur) }
            }
        }
        let y = cur
        try checkOutput(y, batch: batch)
        let (loss, dz) = seed(y.data, 0..<batch)
        var g = Tensor(shape: y.shape, data: dz)
        var gOwned = false
        while let (seg, tapes) = taped.popLast() {
            defer { release(seg, tapes) }
            let gIn: Tensor
            if seg.piece == nil {
                gIn = try plan.backward(seg, tapes[0].tape, gradOutput: g, ctx)  // which hands g back
            } else {
                var parts = [Tensor?](repeating: nil, count: tapes.count)
                let gOut = g
                try parts.withUnsafeMutableBufferPointer { pp in
                    let p = pp.baseAddress!
                    try forEachPiece(tapes.count) { i in
                        p[i] = try plan.backward(seg, tapes[i].tape, gradOutput: slice(gOut, tapes[i].range), tapes[i].ctx)
                    }
                }
                gIn = try join(parts.map { $0! }, ctx, handBack: true)
                if gOwned { ctx.recycle(g) }
            }
            g = gIn
            gOwned = true
        }
        return (loss, g, y.data)
    }

    /// The pieces' outputs (consecutive samples, in order) as one batch, from the pool of `ctx`; with
    /// `handBack`, each piece's buffer then goes back to the pool of its piece size, in its lane.
    private func join(_ parts: [Tensor], _ ctx: ExecContext, handBack: Bool) throws -> Tensor {
        guard let first = parts.first else { throw fail(.internal, "no pieces to join") }
        let n = parts.reduce(0) { $0 + $1.shape[0] }
        var joined = try ctx.uninitialized([n] + first.shape.dropFirst())
        joined.data.withUnsafeMutableBufferPointer { dst in
            var at = 0
            for p in parts {
                p.data.withUnsafeBufferPointer { src in
                    dst.baseAddress!.advanced(by: at).update(from: src.baseAddress!, count: src.count)
                }
                at += p.count
            }
        }
        if handBack {
            for (i, p) in parts.enumerated() { pool.give(p.data, batch: p.shape[0], lane: pieceLane(i, of: parts.count)) }
        }
        return joined
    }

    func checkOutput(_ y: Tensor, batch: Int) throws {
        guard y.shape == [batch, model.numClasses] else {
            throw fail(.shape, "the model produced \(y.shape) for a batch of \(batch); expected \([batch, model.numClasses]) (is the graph per-sample?)")
        }
    }

    /// Per-sample losses and their gradients with respect to the pixel-space input.
    public func gradient(_ x: UnsafeBufferPointer<Float>, batch: Int, labels: [Int64], loss: Loss, domain: Int) throws
        -> (loss: [Float], gradient: [Float], logits: [Float]) {
        try gradient(pixels: x, batch: batch, labels: labels, targets: nil, loss: loss, domain: domain)
    }

    /// ``gradient(_:batch:labels:targets:loss:domain:)`` on the caller's pixels, the gradient in a new array.
    func gradient(pixels x: UnsafeBufferPointer<Float>, batch: Int, labels: [Int64], targets: [Int64]?, loss: Loss,
                  domain: Int) throws -> (loss: [Float], gradient: [Float], logits: [Float]) {
        try checkInputLength(x.count, batch: batch)
        var g = [Float](unsafeUninitializedCapacity: x.count) { _, k in k = x.count }
        let r = try g.withUnsafeMutableBufferPointer { gp in
            try gradient(pixels: x, batch: batch, labels: labels, targets: targets, loss: loss, domain: domain, into: gp.baseAddress)
        }
        return (r.loss, g, r.logits)
    }

    /// Per-sample losses (and logits), the gradient with respect to the pixels written to `grad`
    /// (x.count floats; nil: not wanted), every argument checked first. On an error (cancellation
    /// included) `grad` may hold part of the result.
    package func gradient(pixels x: UnsafeBufferPointer<Float>, batch: Int, labels: [Int64], targets: [Int64]?, loss: Loss,
                          domain: Int, into grad: UnsafeMutablePointer<Float>?) throws -> (loss: [Float], logits: [Float]) {
        try checkLossTargets(loss, targets, batch: batch)
        try checkMemory(batch: batch, kind: .gradient)
        try checkInput(x, batch: batch)
        try checkLabels(labels, batch: batch)
        try model.checkDomain(domain)
        return try differentiate(.pixels(x), batch: batch, domain: domain, into: grad) { y, range in
            Losses.evaluate(logits: y, classes: model.numClasses, labels: Array(labels[range]), loss: loss,
                            targets: targets.map { Array($0[range]) })
        }
    }

    /// Convenience overload for arrays.
    public func gradient(_ x: [Float], batch: Int, labels: [Int64], loss: Loss, domain: Int) throws
        -> (loss: [Float], gradient: [Float], logits: [Float]) {
        try x.withUnsafeBufferPointer { try gradient($0, batch: batch, labels: labels, loss: loss, domain: domain) }
    }

    /// Per-sample losses that also take a target per sample (``Loss/dlrTargeted``) and their
    /// gradients with respect to the pixel-space input. `targets` must be given exactly for
    /// `.dlrTargeted` (one per sample, in [0, classes)).
    public func gradient(_ x: [Float], batch: Int, labels: [Int64], targets: [Int64]?, loss: Loss, domain: Int) throws
        -> (loss: [Float], gradient: [Float], logits: [Float]) {
        try x.withUnsafeBufferPointer { p in
            try gradient(pixels: p, batch: batch, labels: labels, targets: targets, loss: loss, domain: domain)
        }
    }

    /// Fails unless `loss` suits the model's class count and gets targets exactly when it needs them.
    func checkLossTargets(_ loss: Loss, _ targets: [Int64]?, batch: Int) throws {
        guard model.numClasses >= loss.minimumClasses else {
            throw fail(.invalidArgument, "loss \(loss) needs at least \(loss.minimumClasses) classes; the model has \(model.numClasses)")
        }
        if loss == .dlrTargeted {
            guard let targets else { throw fail(.invalidArgument, "the targeted DLR loss needs a target per sample") }
            try checkLabels(targets, batch: batch, what: "target")
        } else if targets != nil {
            throw fail(.invalidArgument, "targets are only used by the targeted DLR loss, not by \(loss)")
        }
    }

    func checkLabels(_ labels: [Int64], batch: Int, what: String = "label") throws {
        guard labels.count == batch else { throw fail(.shape, "expected \(batch) \(what)s, got \(labels.count)") }
        for (i, l) in labels.enumerated() where l < 0 || l >= Int64(model.numClasses) {
            throw fail(.invalidArgument, "\(what) \(l) of sample \(i) is out of range [0, \(model.numClasses))")
        }
    }

    func gradient(normalized x: Tensor, labels: [Int64], loss: Loss, domain: Int, targets: [Int64]? = nil) throws
        -> (loss: [Float], gradient: [Float], logits: [Float]) {
        var g = [Float](unsafeUninitializedCapacity: x.count) { _, k in k = x.count }
        let r = try g.withUnsafeMutableBufferPointer { gp in
            try gradient(normalized: x, labels: labels, loss: loss, domain: domain, targets: targets, into: gp.baseAddress!)
        }
        return (r.loss, g, r.logits)
    }

    /// The same, the gradient with respect to the pixels written to `grad` (x.count floats).
    func gradient(normalized x: Tensor, labels: [Int64], loss: Loss, domain: Int, targets: [Int64]? = nil,
                  into grad: UnsafeMutablePointer<Float>) throws -> (loss: [Float], logits: [Float]) {
        let batch = x.shape[0]
        try checkLabels(labels, batch: batch)
        try checkLossTargets(loss, targets, batch: batch)
        return try differentiate(.normalized(x), batch: batch, domain: domain, into: grad) { y, range in
            Losses.evaluate(logits: y, classes: model.numClasses, labels: Array(labels[range]), loss: loss,
                            targets: targets.map { Array($0[range]) })
        }
    }

    /// Vector-Jacobian product of the logits: for each sample i, the gradient of
    /// sum_j gradLogits[i, j] * logits[i, j] with respect to its pixel-space input (what a
    /// reverse-mode framework's backward needs), and the logits themselves.
    /// `gradLogits` holds batch x classes finite floats.
    public func vjp(_ x: UnsafeBufferPointer<Float>, batch: Int, gradLogits: UnsafeBufferPointer<Float>, domain: Int) throws
        -> (gradient: [Float], logits: [Float]) {
        try checkMemory(batch: batch, kind: .gradient)
        try checkInput(x, batch: batch)
        let k = model.numClasses
        guard gradLogits.count == batch * k else {
            throw fail(.shape, "expected \(batch) x \(k) = \(batch * k) upstream logit gradients, got \(gradLogits.count)")
        }
        for (i, v) in gradLogits.enumerated() where !v.isFinite {
            throw fail(.invalidArgument, "upstream logit gradients must be finite: found \(v) at sample \(i / k), class \(i % k)")
        }
        let dz = Array(gradLogits)
        var gradient = [Float](unsafeUninitializedCapacity: x.count) { _, n in n = x.count }
        let r = try gradient.withUnsafeMutableBufferPointer { g in
            try differentiate(.pixels(x), batch: batch, domain: domain, into: g.baseAddress) { _, range in
                ([Float](repeating: 0, count: range.count), Array(dz[(range.lowerBound * k)..<(range.upperBound * k)]))
            }
        }
        return (gradient, r.logits)
    }

    /// Convenience overload for arrays.
    public func vjp(_ x: [Float], batch: Int, gradLogits: [Float], domain: Int) throws -> (gradient: [Float], logits: [Float]) {
        try x.withUnsafeBufferPointer { xp in
            try gradLogits.withUnsafeBufferPointer { try vjp(xp, batch: batch, gradLogits: $0, domain: domain) }
        }
    }

    /// Forward with kept activations for `batch` samples from `samples`, then backward from the logit
    /// gradient that `seed` returns for a piece's logits and sample range (with a per-sample value
    /// passed through), back through the input normalization, the gradient with respect to the
    /// pixels written to `out` (batch x C x H x W floats; nil: not wanted): (per-sample values,
    /// logits). Each piece takes its input from the pool (normalized straight from the caller's
    /// pixels) and writes its samples' gradient straight into `out`, taken back through the
    /// normalization on the way (d pixel = d normalized / std): no per-call array, no per-piece
    /// copy, no concatenation.
    func differentiate(_ samples: Samples, batch: Int, domain: Int, into out: UnsafeMutablePointer<Float>?,
                       _ seed: ([Float], Range<Int>) -> ([Float], [Float])) throws -> (loss: [Float], logits: [Float]) {
        try model.checkDomain(domain)
        let per = model.inputShape.product
        let c = model.inputShape[0], hw = model.inputShape[1] * model.inputShape[2]
        // (a compact tape where whole values would pass the budget: the same bits, far less memory)
        let compact = model.compactsGradient(batch: batch)
        let parts = try withOptionalBuffer(model.preprocessing.std) { std in
            if model.segmentsGradient(batch: batch) {
                let x: Tensor
                switch samples {
                case .normalized(let t): x = t
                case .pixels(let p): x = normalizedCopy(p, 0..<batch, threads: Parallel.threads)
                }
                let r = try segmentedGradient(x, domain: domain, model.schedules[domain], compact: compact, seed)
                if let out {
                    r.gradient.data.withUnsafeBufferPointer { src in
                        akn_copy_scaled_planes(src.baseAddress!, out, batch * c, hw, std, c)
                    }
                }
                pool.give(r.gradient.data, batch: batch)
                return [(r.loss, r.logits)]
            }
            return try chunked(batch: batch) { range, threads, lane -> ([Float], [Float]) in
                let n = range.count
                let ctx = try context(domain: domain, batch: n, threads: threads, lane: lane)
                let (t, pooled) = try piece(samples, range, ctx)
                defer { if pooled { ctx.recycle(t) } }  // (after the tape's values, below)
                let pass = try model.plans[domain].forward(t, ctx, keep: true, compact: compact)
                var tape = pass.tape
                defer { model.plans[domain].release(&tape, ctx) }
                let y = pass.output
                try checkOutput(y, batch: n)
                let (l, dz) = seed(y.data, range)
                let g = try model.plans[domain].backward(tape, gradOutput: Tensor(shape: y.shape, data: dz), ctx)
                if let out {
                    g.data.withUnsafeBufferPointer { src in
                        akn_copy_scaled_planes(src.baseAddress!, out + range.lowerBound * per, n * c, hw, std, c)
                    }
                }
                ctx.recycle(g)  // the pooled buffer is reused
                return (l, y.data)
            }
        }
        return (parts.flatMap { $0.0 }, parts.flatMap { $0.1 })
    }
}

/// Per-sample losses and their gradients with respect to the logits.
enum Losses {
    /// `targets` (one per sample) is read by `.dlrTargeted` only. The DLR losses need 3 (untargeted)
    /// or 4 (targeted) classes; with fewer their value and gradient are 0.
    static func evaluate(logits: [Float], classes k: Int, labels: [Int64], loss: Loss, targets: [Int64]? = nil) -> ([Float], [Float]) {
        let n = labels.count
        var l = [Float](repeating: 0, count: n)
        var dz = [Float](repeating: 0, count: n * k)
        for i in 0..<n {
            let z = logits[(i * k)..<((i + 1) * k)].map { Double($0) }
            let y = Int(labels[i])
            switch loss {
            case .crossEntropy:
                let m = z.max()!
                let e = z.map { ($0 - m).exponential }
                let s = e.reduce(0, +)
                l[i] = Float(m + s.logarithm - z[y])
                for j in 0..<k { dz[i * k + j] = Float(e[j] / s) - (j == y ? 1 : 0) }
            case .cwMargin:
                var best = -1
                for j in 0..<k where j != y && (best < 0 || z[j] > z[best]) { best = j }
                if best < 0 { continue }
                l[i] = Float(z[best] - z[y])
                dz[i * k + best] = 1
                dz[i * k + y] = -1
            case .dlr, .dlrTargeted:
                // Classes by logit, largest first (the first index on ties).
                guard k >= loss.minimumClasses else { continue }
                let order = (0..<k).sorted { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }
                let (p1, p3) = (order[0], order[2])
                // value = num / den; d value = d num / den - value * d den / den.
                var num: Double, den: Double
                var dNum: [(Int, Double)], dDen: [(Int, Double)]
                if loss == .dlr {
                    let other = order[0] == y ? order[1] : order[0]  // max_{j != y} z_j
                    num = z[other] - z[y]; dNum = [(other, 1), (y, -1)]
                    den = z[p1] - z[p3] + 1e-12; dDen = [(p1, 1), (p3, -1)]
                } else {
                    let t = Int(targets![i]), p4 = order[3]
                    num = z[t] - z[y]; dNum = [(t, 1), (y, -1)]
                    den = z[p1] - 0.5 * z[p3] - 0.5 * z[p4] + 1e-12; dDen = [(p1, 1), (p3, -0.5), (p4, -0.5)]
                }
                let v = num / den
                l[i] = Float(v)
                var g = [Double](repeating: 0, count: k)
                for (j, d) in dNum { g[j] += d / den }
                for (j, d) in dDen { g[j] -= v * d / den }
                for j in 0..<k { dz[i * k + j] = Float(g[j]) }
            }
        }
        return (l, dz)
    }
}

/// The predicted class (index of the largest logit, the first on ties) of each sample of a
/// [batch, classes] logit array.
public func predictedClasses(logits: [Float], classes k: Int) -> [Int64] {
    (0..<(logits.count / k)).map { i in
        var b = 0
        for j in 1..<k where logits[i * k + j] > logits[i * k + b] { b = j }
        return Int64(b)
    }
}

#if canImport(Glibc)
import Glibc
extension Double {
    var exponential: Double { Glibc.exp(self) }
    var logarithm: Double { Glibc.log(self) }
}
#endif
