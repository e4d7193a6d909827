import CKernels

/// Runs a ``Graph``: stage four of load -> optimize -> plan -> run.
///
/// `forward` evaluates the nodes in order; with `keep` it keeps every value for `backward` (a
/// ``Tape``), which walks the nodes in reverse and returns the gradient with respect to the graph
/// input. A compact tape keeps of each value only what the backward pass reads (``keptAs``): a
/// ReLU's mask as bits, a convolution's input by its shape; a ResNet's 32x fewer bytes.
struct Executor {
    let graph: Graph
    /// For each value, the index of the last node that reads it (to free memory early).
    let lastUse: [Int]
    let dependsOnInput: [Bool]
    /// For each value, the most any backward pass reads of it (``Op/backwardRead(input:)``, of its
    /// readers and its producer): what a compact tape keeps. The graph's input and output: values.
    let keptAs: [BackwardRead]
    /// Per node, its op as an ``InPlaceOp`` (nil if it is none), cast once here: a cast to a protocol
    /// existential looks the conformance up at run time (a failed cast per node cost a small model at
    /// batch 1 several percent; a successful one, a fifth of the time of a chain of ReLUs).
    let inPlaceOps: [(any InPlaceOp)?]

    init(graph: Graph) {
        self.graph = graph
        inPlaceOps = graph.nodes.map { $0.op as? InPlaceOp }
        var last = [Int](repeating: -1, count: graph.valueNames.count)
        for (k, n) in graph.nodes.enumerated() { for i in n.inputs { last[i] = k } }
        last[graph.output] = Int.max
        lastUse = last
        dependsOnInput = graph.dependsOnInput()
        var kept = [BackwardRead](repeating: .shape, count: graph.valueNames.count)
        for n in graph.nodes {
            for (j, i) in n.inputs.enumerated() { kept[i] = max(kept[i], n.op.backwardRead(input: j)) }
            for (j, o) in n.outputs.enumerated() { kept[o] = max(kept[o], n.op.backwardRead(output: j)) }
        }
        kept[graph.input] = .values
        kept[graph.output] = .values
        keptAs = kept
    }

    /// What a forward pass kept for ``backward(_:_:gradOutput:_:)``: every value, whole or (a compact
    /// pass, for the values the backward pass reads less of) by its shape and positive elements.
    struct Tape {
        /// The values kept whole (nil where compact or not computed).
        var values: [Tensor?]
        /// The values kept compactly: their shapes, and their positive elements as bits
        /// (akn_pack_positive) where some backward reads them (``BackwardRead/positive``).
        var compact: [Int: (shape: [Int], bits: [UInt64]?)] = [:]
    }

    /// The whole graph as one segment, from its input to its output.
    var wholeGraph: Schedule.Segment {
        Schedule.Segment(nodes: graph.nodes.indices, input: graph.input, output: graph.output, piece: nil)
    }

    /// Evaluates the graph on a normalized NCHW batch.
    func forward(_ x: Tensor, _ ctx: ExecContext, keep: Bool, compact: Bool = false) throws -> (output: Tensor, tape: Tape) {
        try forward(wholeGraph, x, ctx, keep: keep, compact: compact)
    }

    /// Evaluates one segment of the graph (``Schedule``) on `x`, the batch's value `segment.input`:
    /// its output value, the only one later nodes read.
    func forward(_ segment: Schedule.Segment, _ x: Tensor, _ ctx: ExecContext) throws -> Tensor {
        try forward(segment, x, ctx, keep: false).output
    }

    /// The same, with `keep`: every value of the segment kept for ``backward(_:_:gradOutput:_:)``,
    /// with `compact` as little of each as the backward pass reads (``keptAs``). The segment's
    /// input and output are kept whole.
    func forward(_ segment: Schedule.Segment, _ x: Tensor, _ ctx: ExecContext, keep: Bool, compact: Bool = false) throws
        -> (output: Tensor, tape: Tape) {
        var tape = try run(segment.nodes, input: segment.input, x, ctx, keep: keep, compact: keep && compact)
        guard let y = tape.values[segment.output] else { throw fail(.internal, "output was not computed") }
        if !keep { tape.values = [] }
        return (y, tape)
    }

    /// Runs `nodes` (every value they read is `input`, a constant or computed among them) with `x` as
    /// the value `input`, which is never moved or overwritten (it is the caller's). Every value, kept
    /// or not (with `keep` false those last read are handed back to the pool as the pass goes).
    private func run(_ nodes: Range<Int>, input: Int, _ x: Tensor, _ ctx: ExecContext, keep: Bool, compact: Bool) throws -> Tape {
        var values = [Tensor?](repeating: nil, count: graph.valueNames.count)
        var compacted: [Int: (shape: [Int], bits: [UInt64]?)] = [:]
        // (compact: how many live values hold each buffer, an op's output may be its input's)
        var holders: [UnsafePointer<Float>: Int] = [:]
        func address(_ t: Tensor) -> UnsafePointer<Float>? { t.data.withUnsafeBufferPointer { $0.baseAddress } }
        for (id, t) in graph.constants { values[id] = t }
        values[input] = x
        if compact {
            for t in graph.constants.values { if let a = address(t) { holders[a, default: 0] += 1 } }
            if let a = address(x) { holders[a, default: 0] += 1 }
        }
        for k in nodes {
            let n = graph.nodes[k]
            try ctx.checkCancelled(before: n, of: graph.nodes.count, at: k)
            var ins: [Tensor] = []
            ins.reserveCapacity(n.inputs.count)
            var moved: [Tensor] = []
            var movedFirst = false
            for (j, i) in n.inputs.enumerated() {
                // A value read for the last time is moved into the op (its storage goes back to the
                // pool as soon as the op is done), and an elementwise op may then overwrite it.
                if !keep && lastUse[i] == k && graph.constants[i] == nil && i != input
                    && !n.inputs[(j + 1)...].contains(i) {
                    let t = values[i].take()!
                    ins.append(t)
                    moved.append(t)
                    if j == 0 { movedFirst = true }
                } else {
                    ins.append(values[i]!)
                }
            }
            var outs: [Tensor]? = nil
            let t0 = Profiler.enabled ? Profiler.now() : 0
            defer { if Profiler.enabled { Profiler.record(profileKey(n.op, ins, backward: false), since: t0) } }
            do {
                if movedFirst, n.outputs.count == 1, let inPlace = inPlaceOps[k] {
                    var x = ins.removeFirst()
                    moved.removeFirst()  // now the only reference: no copy on write
                    if try inPlace.forwardInPlace(&x, ins, ctx) { outs = [x] } else { ins.insert(x, at: 0); moved.insert(x, at: 0) }
                }
                if outs == nil { outs = try n.op.forward(ins, ctx) }
            } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(n.label): \(e.message)")
            }
            for t in moved where !outs!.contains(where: { sameStorage($0.data, t.data) }) { ctx.recycle(t) }
            for (i, o) in n.outputs.enumerated() { values[o] = outs![i] }
            guard compact else { continue }
            for t in outs! { if let a = address(t) { holders[a, default: 0] += 1 } }
            // Values no later node of the pass reads, kept as the backward pass reads them.
            for v in Set(n.inputs + n.outputs) where keptAs[v] != .values && v != input && graph.constants[v] == nil
                && (lastUse[v] == k || (lastUse[v] < 0 && n.outputs.contains(v))) {
                guard let t = values[v].take() else { continue }
                compacted[v] = (t.shape, keptAs[v] == .positive ? packPositive(t, ctx) : nil)
                // (its buffer goes back to the pool unless another live value holds it)
                guard let a = address(t) else { continue }
                holders[a]! -= 1
                if holders[a] == 0 { ctx.recycle(t) }
            }
        }
        return Tape(values: values, compact: compacted)
    }

    /// The positive elements of `t` as bits (akn_pack_positive), in 64-element slices over the threads.
    private func packPositive(_ t: Tensor, _ ctx: ExecContext) -> [UInt64] {
        let n = t.count, words = (n + 63) / 64
        guard n > 0 else { return [] }
        var bits = [UInt64](unsafeUninitializedCapacity: words) { _, k in k = words }
        t.data.withUnsafeBufferPointer { xp in
            bits.withUnsafeMutableBufferPointer { bp in
                let (xb, bb) = (xp.baseAddress!, bp.baseAddress!)
                Parallel.forRanges(words, threads: n >= 1 << 18 ? ctx.threads : 1) { r in
                    akn_pack_positive(xb + r.lowerBound * 64, min(n, r.upperBound * 64) - r.lowerBound * 64, bb + r.lowerBound)
                }
            }
        }
        return bits
    }

    /// A compactly kept value as a node's backward reads it (`read`): by its shape, or as 1 where it
    /// was positive and 0 elsewhere (a buffer of `ctx`'s pool, which the caller hands back after the
    /// node).
    private func restore(_ c: (shape: [Int], bits: [UInt64]?), as read: BackwardRead, _ ctx: ExecContext) throws -> Tensor {
        guard read == .positive, let bits = c.bits else { return Tensor(shapeOnly: c.shape) }
        var t = try ctx.uninitialized(c.shape)
        let n = t.count
        guard n > 0 else { return t }
        bits.withUnsafeBufferPointer { bp in
            t.data.withUnsafeMutableBufferPointer { tp in
                let (bb, tb) = (bp.baseAddress!, tp.baseAddress!)
                Parallel.forRanges((n + 63) / 64, threads: n >= 1 << 18 ? ctx.threads : 1) { r in
                    akn_unpack_positive(bb + r.lowerBound, min(n, r.upperBound * 64) - r.lowerBound * 64, tb + r.lowerBound * 64)
                }
            }
        }
        return t
    }

    /// Gradient of sum(output * gradOutput) with respect to the graph input.
    func backward(_ tape: Tape, gradOutput: Tensor, _ ctx: ExecContext) throws -> Tensor {
        try backward(wholeGraph, tape, gradOutput: gradOutput, ctx)
    }

    /// The same through one segment: gradient of sum(segment output * gradOutput) with respect to
    /// the segment's input, from the tape ``forward(_:_:_:keep:compact:)`` kept.
    func backward(_ segment: Schedule.Segment, _ tape: Tape, gradOutput: Tensor, _ ctx: ExecContext) throws -> Tensor {
        let input = segment.input
        let values = tape.values
        var grads = [Tensor?](repeating: nil, count: graph.valueNames.count)
        grads[segment.output] = gradOutput
        func shape(_ v: Int) -> [Int] { values[v]?.shape ?? tape.compact[v]!.shape }
        for k in segment.nodes.reversed() {
            let n = graph.nodes[k]
            guard n.outputs.contains(where: { grads[$0] != nil }) else { continue }
            try ctx.checkCancelled(before: n, of: graph.nodes.count, at: k, backward: true)
            let needs = n.inputs.map { dependsOnInput[$0] }
            guard needs.contains(true) else { continue }
            // Compactly kept values as this node reads them (masks from the pool, handed back after).
            var restored: [Tensor] = []
            func value(_ v: Int, _ read: BackwardRead) throws -> Tensor {
                if let t = values[v] { return t }
                let t = try restore(tape.compact[v]!, as: read, ctx)
                if t.count > 0 { restored.append(t) }
                return t
            }
            let ins = try n.inputs.enumerated().map { try value($1, n.op.backwardRead(input: $0)) }
            let outs = try n.outputs.enumerated().map { try value($1, n.op.backwardRead(output: $0)) }
            defer { restored.forEach(ctx.recycle) }
            // The output gradients are moved out (each is read by this node only), so the op holds
            // their only references and may reuse their storage.
            var gOut = try n.outputs.map { try grads[$0].take() ?? ctx.zeros(shape($0)) }
            let gIn: [Tensor?]
            let t0 = Profiler.enabled ? Profiler.now() : 0
            do { gIn = try n.op.backward(ins, outs, consuming: &gOut, needs: needs, ctx) } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(n.label) (backward): \(e.message)")
            }
            if Profiler.enabled { Profiler.record(profileKey(n.op, ins, backward: true), since: t0) }
            // Buffers this node is done with: its output gradients and every gradient added into an
            // existing one go back to the pool, unless still held as some value's gradient.
            var spent = gOut.map(\.data)
            var kept: [[Float]] = []
            for (i, vid) in n.inputs.enumerated() where needs[i] {
                guard let g = gIn[i] else { continue }
                if grads[vid] != nil {
                    grads[vid]!.data.withUnsafeMutableBufferPointer { acc in
                        g.data.withUnsafeBufferPointer { gp in
                            let (ab, gb) = (acc.baseAddress!, gp.baseAddress!)
                            Parallel.forSlices(acc.count, threads: ctx.threads) { r in
                                akn_add_inplace(ab + r.lowerBound, gb + r.lowerBound, r.count)
                            }
                        }
                    }
                    spent.append(g.data)
                } else {
                    grads[vid] = g
                    kept.append(g.data)
                }
            }
            gOut = []
            var recycled: [[Float]] = []
            for a in spent where !kept.contains(where: { sameStorage($0, a) }) && !recycled.contains(where: { sameStorage($0, a) }) {
                recycled.append(a)
            }
            recycled.forEach(ctx.recycle)
        }
        return try grads[input] ?? ctx.zeros(shape(input))
    }

    /// Hands the values a forward pass kept (for ``backward(_:gradOutput:_:)``) back to the pool,
    /// except constants and the values `except` (by default the graph's input and output).
    func release(_ tape: inout Tape, _ ctx: ExecContext, except: [Int]? = nil) {
        tape.compact = [:]
        release(&tape.values, ctx, except: except)
    }

    private func release(_ values: inout [Tensor?], _ ctx: ExecContext, except: [Int]?) {
        guard ctx.pool != nil else { return }
        func address(_ a: [Float]) -> Int { a.withUnsafeBufferPointer { Int(bitPattern: $0.baseAddress) } }
        var seen = Set<Int>()
        let except = except ?? [graph.input, graph.output]
        for i in except { if let t = values[i], t.count > 0 { seen.insert(address(t.data)) } }
        for i in values.indices where graph.constants[i] == nil && !except.contains(i) {
            guard let t = values[i].take(), t.count > 0 else { continue }
            if seen.insert(address(t.data)).inserted { ctx.recycle(t) }
        }
    }
}
