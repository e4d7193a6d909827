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

    /// Evaluates the graph on a normalized NCHW batch.
    func forward(_ x: Tensor, _ ctx: ExecContext, keep: Bool) throws -> (output: Tensor, values: [Tensor?]) {
        var values = [Tensor?](repeating: nil, count: graph.valueNames.count)
        for (id, t) in graph.constants { values[id] = t }
        values[graph.input] = x
        for (k, n) in graph.nodes.enumerated() {
            var ins: [Tensor] = []
            ins.reserveCapacity(n.inputs.count)
            var movedFirst = false
            for (j, i) in n.inputs.enumerated() {
                // A value read for the last time is moved into the op (freeing it as soon as the op is
                // done), and an elementwise op may then overwrite its storage.
                if !keep && lastUse[i] == k && graph.constants[i] == nil && i != graph.input
                    && !n.inputs[(j + 1)...].contains(i) {
                    ins.append(values[i].take()!)
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
                    var x = ins.removeFirst()  // now the only reference: no copy on write
                    if try inPlace.forwardInPlace(&x, ins, ctx) { outs = [x] } else { ins.insert(x, at: 0) }
                }
                if outs == nil { outs = try n.op.forward(ins, ctx) }
            } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(n.label): \(e.message)")
            }
            for (i, o) in n.outputs.enumerated() { values[o] = outs![i] }
        }
        guard let y = values[graph.output] else { throw fail(.internal, "output was not computed") }
        return (y, values)
    }

    /// Gradient of sum(output * gradOutput) with respect to the graph input.
    func backward(_ values: [Tensor?], gradOutput: Tensor, _ ctx: ExecContext) throws -> Tensor {
        var grads = [Tensor?](repeating: nil, count: graph.valueNames.count)
        grads[graph.output] = gradOutput
        for n in graph.nodes.reversed() {
            guard n.outputs.contains(where: { grads[$0] != nil }) else { continue }
            let needs = n.inputs.map { dependsOnInput[$0] }
            guard needs.contains(true) else { continue }
            let ins = n.inputs.map { values[$0]! }
            let outs = n.outputs.map { values[$0]! }
            // The output gradients are moved out (each is read by this node only), so the op holds
            // their only references and may reuse their storage.
            var gOut = n.outputs.map { grads[$0].take() ?? Tensor(zeros: values[$0]!.shape) }
            let gIn: [Tensor?]
            let t0 = Profiler.enabled ? Profiler.now() : 0
            do { gIn = try n.op.backward(ins, outs, consuming: &gOut, needs: needs, ctx) } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(n.label) (backward): \(e.message)")
            }
            if Profiler.enabled { Profiler.record(profileKey(n.op, ins, backward: true), since: t0) }
            for (i, vid) in n.inputs.enumerated() where needs[i] {
                guard let g = gIn[i] else { continue }
                if grads[vid] != nil {
                    grads[vid]!.data.withUnsafeMutableBufferPointer { acc in
                        g.data.withUnsafeBufferPointer { gp in
                            akn_add_inplace(acc.baseAddress!, gp.baseAddress!, acc.count)
                        }
                    }
                } else {
                    grads[vid] = g
                }
            }
        }
        return grads[graph.input] ?? Tensor(zeros: values[graph.input]!.shape)
    }
}
