/// One node of adamant's internal graph: an op over value ids.
struct Node {
    let op: any Op
    /// Value ids of the op's inputs (constants are values too).
    let inputs: [Int]
    let outputs: [Int]
    /// `Conv 'name'` for messages.
    let label: String
    /// Position of the node in the ONNX file.
    let onnxIndex: Int
}

/// The internal graph: stage two of load -> optimize -> plan -> run. Topologically ordered,
/// dead nodes removed, constant inputs bound into the ops that own them.
struct Graph {
    var valueNames: [String]
    /// Constant values (initializers a node reads as an ordinary input).
    var constants: [Int: Tensor]
    var input: Int
    var output: Int
    var nodes: [Node]
    /// The image input's per-sample shape [C, H, W].
    var inputShape: [Int]
    /// The batch the file declares, when fixed (e.g. 1 for per-sample exports).
    var declaredBatch: Int?
    var inputName: String
    var outputName: String
    /// BatchNormalization nodes in slot order: ONNX node index and output name.
    var bnNodes: [(onnxIndex: Int, outputName: String, channels: Int)]
    var opset: Int

    /// Largest activation (values per sample) adamant accepts: 2^28 floats, 1 GiB.
    static let maxActivation = 1 << 28

    /// Which values depend on the graph input (the only ones that need gradients).
    func dependsOnInput() -> [Bool] {
        var dep = [Bool](repeating: false, count: valueNames.count)
        dep[input] = true
        for n in nodes where n.inputs.contains(where: { dep[$0] }) {
            for o in n.outputs { dep[o] = true }
        }
        return dep
    }

    /// Shapes of every value for a batch (validates the whole graph).
    func inferShapes(batch: Int) throws -> [[Int]?] {
        var shapes = [[Int]?](repeating: nil, count: valueNames.count)
        for (id, t) in constants { shapes[id] = t.shape }
        shapes[input] = [batch] + inputShape
        let env = ShapeEnv(declaredBatch: declaredBatch, batch: batch)
        for n in nodes {
            let ins = n.inputs.map { shapes[$0]! }
            let outs: [[Int]]
            do { outs = try n.op.shapes(ins, env) } catch let e as AdamantError {
                throw AdamantError(e.kind, "\(n.label): \(e.message)")
            }
            for (i, o) in n.outputs.enumerated() where i < outs.count {
                // Bound every activation so an absurd graph fails here instead of at allocation.
                let perSample = try checkedProduct(Array(outs[i].dropFirst()), what: "\(n.label): output")
                guard perSample <= Graph.maxActivation else {
                    throw fail(.shape, "\(n.label): output \(outs[i]) holds \(perSample) values per sample; adamant's limit is \(Graph.maxActivation)")
                }
                shapes[o] = outs[i]
            }
        }
        return shapes
    }
}
