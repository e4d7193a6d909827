/// Everything an op needs at run time beyond its inputs.
final class ExecContext {
    /// BN parameters of the selected domain, indexed by ``BatchNorm/slot``.
    let bn: [BNParams]
    /// The graph's declared (fixed) batch, if any, and the batch being run.
    let declaredBatch: Int?
    let batch: Int
    /// Set while calibrating: BatchNorm normalizes with batch statistics and records them here.
    var calibration: CalibrationRecorder?
    /// Threads an op may split its own work over (1 inside an already parallel batch chunk).
    let threads: Int

    /// The session's recycled buffers (nil: plain allocation), and the lane this context draws them
    /// from (its piece's worker; 0 for a whole batch).
    let pool: BufferPool?
    let lane: Int
    /// Asked between ops (forward and backward); true ends the pass with ``ErrorKind/cancelled``.
    /// May be called from the batch's worker threads at once: it must be thread-safe.
    let shouldCancel: (() -> Bool)?

    init(bn: [BNParams], declaredBatch: Int?, batch: Int, calibration: CalibrationRecorder? = nil, threads: Int = 1,
         pool: BufferPool? = nil, lane: Int = 0, shouldCancel: (() -> Bool)? = nil) {
        self.pool = pool
        self.lane = lane
        self.shouldCancel = shouldCancel
        self.bn = bn
        self.declaredBatch = declaredBatch
        self.batch = batch
        self.calibration = calibration
        self.threads = max(1, threads)
    }
}

extension ExecContext {
    /// Throws ``ErrorKind/cancelled`` when ``shouldCancel`` says so (checked before each node).
    @inline(__always)
    func checkCancelled(before node: Node, of count: Int, at k: Int, backward: Bool = false) throws {
        guard let shouldCancel, shouldCancel() else { return }
        throw fail(.cancelled, "cancelled (adm_context_cancel) before \(node.label)\(backward ? " (backward)" : ""), node \(k + 1) of \(count)")
    }
}

/// Facts shape inference needs beyond the input shapes.
struct ShapeEnv {
    var declaredBatch: Int?
    var batch: Int
}

/// An operator of adamant's internal graph. Forward, backward and shape logic live side by side,
/// one file per op family, in `Sources/Adamant/Ops/`.
protocol Op {
    /// The ONNX op type, e.g. "Conv".
    var type: String { get }
    /// Output shapes for the given input shapes (also validates attributes against the inputs).
    func shapes(_ inputs: [[Int]], _ env: ShapeEnv) throws -> [[Int]]
    /// Computes the outputs.
    func forward(_ inputs: [Tensor], _ ctx: ExecContext) throws -> [Tensor]
    /// Given the forward inputs/outputs and the gradient of each output, returns the gradient of
    /// each input for which `needs[i]` is true (nil otherwise).
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], _ gradOutputs: [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?]
    /// The same, given the only references to the output gradients, which the op may overwrite
    /// (e.g. mask in place and hand on as an input's gradient). Defaults to ``backward(_:_:_:needs:_:)``.
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], consuming gradOutputs: inout [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?]
    /// What ``backward(_:_:_:needs:_:)`` reads of forward input `i`: a gradient pass may keep no
    /// more of it (``Executor/keptAs``). Default: its values.
    func backwardRead(input i: Int) -> BackwardRead
    /// The same for forward output `i`.
    func backwardRead(output i: Int) -> BackwardRead
    /// Multiply-adds times two, per whole batch, for the given shapes.
    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int
    /// Learned parameters held by the op (weights and biases).
    var parameterCount: Int { get }
    /// The pooled scratch buffers (their float counts) one forward pass, or with `backward` one
    /// forward and one backward pass, takes for these input shapes on `threads` threads, beyond the
    /// op's outputs and gradients: for the memory estimate (``MemoryPlan``). Default: none.
    func scratchCounts(_ inputs: [[Int]], backward: Bool, threads: Int) -> [Int]
}

/// What an op's backward pass reads of one of its forward inputs or outputs, from least to most.
enum BackwardRead: Int, Comparable {
    /// Its shape only: the op gets a tensor of that shape without elements (``Tensor/init(shapeOnly:)``).
    case shape
    /// Which of its elements are positive (a ReLU's mask): the op may get a tensor of 1 where the value
    /// was positive and 0 elsewhere (NaN included) in place of the value.
    case positive
    /// Its values.
    case values

    static func < (a: BackwardRead, b: BackwardRead) -> Bool { a.rawValue < b.rawValue }
}

/// An op that can overwrite its first input with its output (elementwise, same shape), used when the
/// executor owns the only reference to that input.
protocol InPlaceOp: Op {
    /// Computes the output into `x` (the first input); `others` are the remaining inputs.
    /// Returns false (leaving `x` untouched) when it cannot work in place for these inputs.
    func forwardInPlace(_ x: inout Tensor, _ others: [Tensor], _ ctx: ExecContext) throws -> Bool
}

extension Op {
    func backward(_ inputs: [Tensor], _ outputs: [Tensor], consuming gradOutputs: inout [Tensor], needs: [Bool],
                  _ ctx: ExecContext) throws -> [Tensor?] {
        try backward(inputs, outputs, gradOutputs, needs: needs, ctx)
    }
    func backwardRead(input i: Int) -> BackwardRead { .values }
    func backwardRead(output i: Int) -> BackwardRead { .values }
    func flops(_ inputs: [[Int]], _ outputs: [[Int]]) -> Int { 0 }
    var parameterCount: Int { 0 }
    func scratchCounts(_ inputs: [[Int]], backward: Bool, threads: Int) -> [Int] { [] }
}

/// Reads typed attributes of a raw node, with clear errors naming the node.
struct Attrs {
    let node: RawNode
    let opset: Int

    func int(_ name: String, _ def: Int) throws -> Int {
        guard let a = node.attributes[name] else { return def }
        if case .int(let v) = a { return v }
        throw bad(name, "an integer")
    }
    func float(_ name: String, _ def: Float) throws -> Float {
        guard let a = node.attributes[name] else { return def }
        if case .float(let v) = a { return v }
        throw bad(name, "a float")
    }
    func ints(_ name: String) throws -> [Int]? {
        guard let a = node.attributes[name] else { return nil }
        if case .ints(let v) = a { return v }
        throw bad(name, "a list of integers")
    }
    func string(_ name: String, _ def: String) throws -> String {
        guard let a = node.attributes[name] else { return def }
        if case .string(let v) = a { return v }
        throw bad(name, "a string")
    }
    func bad(_ name: String, _ what: String) -> AdamantError {
        fail(.parse, "\(node.label): attribute '\(name)' must be \(what)")
    }
    func unsupported(_ what: String) -> AdamantError {
        fail(.unsupported, "\(node.label) (opset \(opset)): \(what) is not supported")
    }
    func invalid(_ what: String) -> AdamantError {
        fail(.parse, "\(node.label): \(what)")
    }
}
