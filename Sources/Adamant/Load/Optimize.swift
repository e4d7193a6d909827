/// Stage three of load -> optimize -> plan -> run: per-domain graph rewrites.
enum Optimizer {
    /// For each value, how many node inputs (or the graph output) read it; for each node output,
    /// the index of the node producing it.
    static func wiring(_ graph: Graph) -> (readers: [Int], producer: [Int: Int]) {
        var readers = [Int](repeating: 0, count: graph.valueNames.count)
        for n in graph.nodes { for i in n.inputs { readers[i] += 1 } }
        readers[graph.output] += 1
        var producer: [Int: Int] = [:]
        for (k, n) in graph.nodes.enumerated() { for o in n.outputs { producer[o] = k } }
        return (readers, producer)
    }

    /// Folds every BatchNormalization whose input is a Conv output read by nothing else into that
    /// Conv's weights and bias, with the given domain's parameters: one packed weight set per
    /// domain, built once at load, so switching domains costs nothing at call time.
    static func foldBatchNorm(_ graph: Graph, bn: [BNParams]) -> Graph {
        let (readers, producer) = wiring(graph)

        var nodes = graph.nodes.map { Optional($0) }
        for (k, n) in graph.nodes.enumerated() {
            guard let norm = n.op as? BatchNorm, let v = n.inputs.first, readers[v] == 1,
                  let pk = producer[v], let conv = nodes[pk]?.op as? Conv else { continue }
            let (a, b) = bn[norm.slot].affine(epsilon: norm.epsilon)
            guard a.count == conv.outChannels else { continue }
            let c = nodes[pk]!
            nodes[pk] = Node(op: conv.scaled(by: a, shift: b), inputs: c.inputs, outputs: n.outputs,
                             label: "\(c.label)+\(n.label)", onnxIndex: c.onnxIndex)
            nodes[k] = nil
        }
        var g = graph
        g.nodes = nodes.compactMap { $0 }
        return g
    }

    /// Fuses `Add(conv(x), r)` into the convolution's epilogue when the Add reads the only use of the
    /// Conv's output and both operands have the same shape (no broadcasting): the Conv takes `r` as a
    /// second input and runs where the Add was (every input is ready there). A ReLU after the Add then
    /// fuses too (``fuseRelu``), so a ResNet block's tail is one pass over memory.
    static func fuseResidual(_ graph: Graph) -> Graph {
        guard let shapes = try? graph.inferShapes(batch: graph.declaredBatch ?? 1) else { return graph }
        let (readers, producer) = wiring(graph)
        var nodes = graph.nodes.map { Optional($0) }
        for (k, n) in graph.nodes.enumerated() {
            guard n.op.type == "Add", n.inputs.count == 2, n.outputs.count == 1, n.inputs[0] != n.inputs[1],
                  graph.constants[n.inputs[0]] == nil, graph.constants[n.inputs[1]] == nil,
                  let s0 = shapes[n.inputs[0]], s0 == shapes[n.inputs[1]] else { continue }
            for side in 0..<2 {
                let v = n.inputs[side], other = n.inputs[1 - side]
                guard readers[v] == 1, let pk = producer[v], let c = nodes[pk], var conv = c.op as? Conv,
                      !conv.fusedRelu, !conv.fusedResidual, c.inputs.count == 1 else { continue }
                conv.fusedResidual = true
                nodes[k] = Node(op: conv, inputs: [c.inputs[0], other], outputs: n.outputs, label: "\(c.label)+\(n.label)",
                                onnxIndex: c.onnxIndex)
                nodes[pk] = nil
                break
            }
        }
        var g = graph
        g.nodes = nodes.compactMap { $0 }
        return g
    }

    /// Fuses a Relu that is the only reader of a Conv's output into the Conv's epilogue.
    static func fuseRelu(_ graph: Graph) -> Graph {
        let (readers, producer) = wiring(graph)
        var nodes = graph.nodes.map { Optional($0) }
        for (k, n) in graph.nodes.enumerated() {
            guard n.op is Relu, let v = n.inputs.first, readers[v] == 1, let pk = producer[v],
                  var conv = nodes[pk]?.op as? Conv, !conv.fusedRelu else { continue }
            conv.fusedRelu = true
            let c = nodes[pk]!
            nodes[pk] = Node(op: conv, inputs: c.inputs, outputs: n.outputs, label: "\(c.label)+\(n.label)",
                             onnxIndex: c.onnxIndex)
            nodes[k] = nil
        }
        var g = graph
        g.nodes = nodes.compactMap { $0 }
        return g
    }
}

extension Conv {
    /// This convolution followed by y = a[m] * x + b[m] per output channel (a BatchNorm): the same
    /// shared weights, with the scale and shift applied in the epilogue.
    func scaled(by a: [Float], shift b: [Float]) -> Conv {
        var c = self
        c.scale = (0..<outChannels).map { m in (scale?[m] ?? 1) * a[m] }
        c.bias = (0..<outChannels).map { m in (bias?[m] ?? 0) * a[m] + b[m] }
        return c
    }
}
