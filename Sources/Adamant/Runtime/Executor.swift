import CKernels

/// Runs a ``Graph``: stage four of load -> optimize -> plan -> run.
///
/// `forward` evaluates the nodes in order; with `keep` it keeps every value for `backward`, which
/// walks the nodes in reverse and returns the gradient with respect to the graph input.
struct Executor {
    let graph: Graph
    /// For each value, the index of the last node that reads it (to free memory early).
    let lastUse: [Int]
    let dependsOnInput: [Bool]

    init(graph: Graph) {
        self.graph = graph
        var last = [Int](repeating: -1, count: graph.valueNames.count)
        for (k, n) in graph.nodes.enumerated() { for i in n.inputs { last[i] = k } }
        last[graph.output] = Int.max
        lastUse = last
        dependsOnInput = graph.dependsOnInput()
    }

    /// The whole graph as one segment, from its input to its output.
    var wholeGraph: Schedule.Segment {
        Schedule.Segment(nodes: graph.nodes.indices, input: graph.input, output: graph.output, piece: nil)
    }

    /// Evaluates the graph on a normalized NCHW batch.
    func forward(_ x: Tensor, _ ctx: ExecContext, keep: Bool) throws -> (output: Tensor, values: [Tensor?]) {
        try forward(wholeGraph, x, ctx, keep: keep)
    }

    /// Evaluates one segment of the graph (``Schedule``) on `x`, the batch's value `segment.input`:
    /// its output value, the only one later nodes read.
    func forward(_ segment: Schedule.Segment, _ x: Tensor, _ ctx: ExecContext) throws -> Tensor {
        try forward(segment, x, ctx, keep: false).output
    }

    /// The same, with `keep`: every value of the segment kept for ``backward(_:_:gradOutput:_:)``.
    func forward(_ segment: Schedule.Segment, _ x: Tensor, _ ctx: ExecContext, keep: Bool) throws
        -> (output: Tensor, values: [Tensor?]) {
        var values = try run(segment.nodes, input: segment.input, x, ctx, keep: keep)
        guard let y = values[segment.output] else { throw fail(.internal, "output was not computed") }
        if !keep { values = [] }
        return (y, values)
    }

    /// Runs `nodes` (every value they read is `input`, a constant or computed among them) with `x` as
    /// the value `input`, which is never moved or overwritten (it is the caller's). Every value, kept
    /// or not (with `keep` false those last read are handed back to the pool as the pass goes).
    private func run(_ nodes: Range<Int>, input: Int, _ x: Tensor, _ ctx: ExecContext, keep: Bool) throws -> [Tensor?] {
        var values = [Tensor?](repeating: nil, count: graph.valueNames.count)
        for (id, t) in graph.constants { values[id] = t }
        values[input] = x
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
                if movedFirst, n.outputs.count == 1, let inPlace = n.op as? InPlaceOp {
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
        }
        return values
    }

    /// Gradient of sum(output * gradOutput) with respect to the graph input.
    func backward(_ values: [Tensor?], gradOutput: Tensor, _ ctx: ExecContext) throws -> Tensor {
        try backward(wholeGraph, values, gradOutput: gradOutput, ctx)
    }

    /// The same through one segment: gradient of sum(segment output * gradOutput) with respect to
    /// the segment's input, from the values ``forward(_:_:keep:)-(Segment,_,_,_)`` kept.
    func backward(_ segment: Schedule.Segment, _ values: [Tensor?], gradOutput: Tensor, _ ctx: ExecContext) throws -> Tensor {
        let input = segment.input
        var grads = [Tensor?](repeating: nil, count: graph.valueNames.count)
        grads[segment.output] = gradOutput
        for k in segment.nodes.reversed() {
            let n = graph.nodes[k]
            guard n.outputs.contains(where: { grads[$0] != nil }) else { continue }
            try ctx.checkCancelled(before: n, of: graph.nodes.count, at: k, backward: true)
            let needs = n.inputs.map { dependsOnInput[$0] }
            guard needs.contains(true) else { continue }
            let ins = n.inputs.map { values[$0]! }
            let outs = n.outputs.map { values[$0]! }
            // The output gradients are moved out (each is read by this node only), so the op holds
            // their only references and may reuse their storage.
            var gOut = try n.outputs.map { try grads[$0].take() ?? ctx.zeros(values[$0]!.shape) }
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
        return try grads[input] ?? ctx.zeros(values[input]!.shape)
    }

    /// Hands the values a forward pass kept (for ``backward(_:gradOutput:_:)``) back to the pool,
    /// except constants and the values `except` (by default the graph's input and output).
    func release(_ values: inout [Tensor?], _ ctx: ExecContext, except: [Int]? = nil) {
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
