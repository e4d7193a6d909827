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
    /// This convolution followed by y = a[m] * x + b[m] per output channel.
    func scaled(by a: [Float], shift b: [Float]) -> Conv {
        var c = self
        let per = inPerGroup * kh * kw
        var w = weight
        for m in 0..<outChannels { for i in 0..<per { w[m * per + i] *= a[m] } }
        c.weight = w
        c.bias = (0..<outChannels).map { m in (bias?[m] ?? 0) * a[m] + b[m] }
        c.pack()
        return c
    }
}
