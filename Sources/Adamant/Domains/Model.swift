import CBackend
#if canImport(Glibc)
import Glibc
#endif

/// The order of the color channels a model's input expects.
public enum ChannelOrder: String, Sendable, Equatable {
    /// Red, green, blue (PIL, torchvision): adamant's default.
    case rgb
    /// Blue, green, red (OpenCV's `imread`; the tensorpack ImageNet models).
    case bgr
}

/// Per-channel input normalization, the valid pixel range and the channel order: part of the model,
/// so callers and attacks work in the model's pixel space.
///
/// Pixel space is what the model's callers pass: images with channels in ``channelOrder`` and values
/// in [``pixelMin``, ``pixelMax``] (e.g. BGR in [0, 255] for the tensorpack models); the network sees
/// `(x - mean) / std`. Attack budgets (ε, step) are in the same units. Tools that read image files
/// (the CLI) map a file's RGB values in [0, 1] to pixel space linearly and reorder the channels.
public struct Preprocessing: Sendable, Equatable {
    /// Per-channel mean in pixel units (nil = no normalization).
    public var mean: [Float]?
    /// Per-channel standard deviation in pixel units.
    public var std: [Float]?
    /// Lowest valid pixel value.
    public var pixelMin: Float = 0
    /// Highest valid pixel value.
    public var pixelMax: Float = 1
    /// Channel order of the input.
    public var channelOrder: ChannelOrder = .rgb

    /// No normalization, RGB pixels in [0, 1].
    public init(mean: [Float]? = nil, std: [Float]? = nil, pixelMin: Float = 0, pixelMax: Float = 1,
                channelOrder: ChannelOrder = .rgb) {
        self.mean = mean
        self.std = std
        self.pixelMin = pixelMin
        self.pixelMax = pixelMax
        self.channelOrder = channelOrder
    }

    /// Maps image-file values (RGB, in [0, 1]) of `count` images of `channels` x `plane` pixels to
    /// this pixel space in place: scaled to [pixelMin, pixelMax], channels reversed for BGR.
    public func fromUnitRGB(_ x: inout [Float], channels: Int, plane: Int) {
        let scale = pixelMax - pixelMin, lo = pixelMin
        if scale != 1 || lo != 0 { for i in x.indices { x[i] = lo + x[i] * scale } }
        if channelOrder == .bgr { Preprocessing.reverseChannels(&x, channels: channels, plane: plane) }
    }

    /// The inverse of ``fromUnitRGB(_:channels:plane:)`` (for writing images).
    public func toUnitRGB(_ x: inout [Float], channels: Int, plane: Int) {
        if channelOrder == .bgr { Preprocessing.reverseChannels(&x, channels: channels, plane: plane) }
        let scale = pixelMax - pixelMin, lo = pixelMin
        if scale != 1 || lo != 0 { for i in x.indices { x[i] = (x[i] - lo) / scale } }
    }

    static func reverseChannels(_ x: inout [Float], channels: Int, plane: Int) {
        let per = channels * plane
        guard per > 0 else { return }
        for base in stride(from: 0, to: x.count - per + 1, by: per) {
            for c in 0..<(channels / 2) {
                let a = base + c * plane, b = base + (channels - 1 - c) * plane
                for i in 0..<plane { x.swapAt(a + i, b + i) }
            }
        }
    }
}

/// Overrides applied when loading a model.
public struct LoadOptions: Sendable {
    /// Replaces the stored per-channel mean.
    public var mean: [Float]?
    /// Replaces the stored per-channel std.
    public var std: [Float]?
    /// Replaces the stored pixel range.
    public var pixelRange: (Float, Float)?
    /// Names the default domain.
    public var defaultDomain: String?
    /// Caps the model's memory in bytes (nil = no cap): loading fails with ``ErrorKind/resource``
    /// when the weights alone exceed it, and each call on a ``Session`` does, before allocating, when
    /// the weights plus the activations the plan needs for that batch would
    /// (``Session/checkMemory(batch:kind:)``).
    public var memoryLimit: Int?

    /// No overrides.
    public init(mean: [Float]? = nil, std: [Float]? = nil, pixelRange: (Float, Float)? = nil, defaultDomain: String? = nil,
                memoryLimit: Int? = nil) {
        self.mean = mean
        self.std = std
        self.pixelRange = pixelRange
        self.defaultDomain = defaultDomain
        self.memoryLimit = memoryLimit
    }
}

/// A loaded network with one or more named BatchNorm domains. Immutable; share it across threads.
public final class Model: @unchecked Sendable {
    let graph: Graph
    /// Runs the unfolded graph (calibration needs each BatchNorm's input statistics).
    let executor: Executor
    /// Per domain: the graph with that domain's BatchNorms folded into the convolutions.
    let plans: [Executor]
    /// BN parameters: `bn[domain][slot]`.
    let bn: [[BNParams]]
    /// Where the ONNX model the graph came from can be read again (written back by ``save(to:)``).
    let origin: ModelOrigin
    /// The names of the BN domains, in index order.
    public let domains: [String]
    /// Index of the domain used when none is named.
    public let defaultDomain: Int
    /// Input normalization and pixel range.
    public let preprocessing: Preprocessing
    /// Per-sample input shape [C, H, W].
    public var inputShape: [Int] { graph.inputShape }
    /// Logits per sample.
    public let numClasses: Int
    /// The ai.onnx opset of the source file.
    public var opset: Int { graph.opset }
    /// Samples per execution piece, chosen so a piece's activations stay in cache.
    let cacheFriendlyBatch: Int
    /// Per domain: how a forward pass over a batch runs, segment by segment (``Schedule``).
    let schedules: [[Schedule.Segment]]
    /// The last ``activationBytes(batch:kind:threads:)`` estimate, with what it was computed from
    /// (every call checks its memory first: a small model at batch 1 spent 4 % of its time
    /// re-simulating the same plan).
    let lastEstimate = EstimateCache()

    /// Whether a gradient on `batch` samples runs segment by segment (``Session/segmentedGradient``):
    /// when the schedule has segments and every sample's kept values fit in
    /// ``Schedule/gradientBudgetBytes`` (it keeps the whole batch's, where pieces keep one piece's
    /// per thread).
    func segmentsGradient(batch: Int) -> Bool {
        guard batch > 1, schedules[0].count > 1 else { return false }
        let per = compactsGradient(batch: batch) ? memoryPlan.compactGradientFloats : memoryPlan.gradientFloats
        let (floats, o) = batch.multipliedReportingOverflow(by: per)
        guard !o, floats <= Schedule.gradientBudgetBytes / MemoryLayout<Float>.size else { return false }
        // (nor when the kept values alone would pass the model's memory cap: pieces need less)
        if let cap = memoryLimit, weightBytes + floats * MemoryLayout<Float>.size > cap { return false }
        return true
    }
    /// Whether a gradient on `batch` samples keeps a compact tape (``Executor/Tape``: ReLU masks as
    /// bits, most values by their shape): when every sample's whole values would pass
    /// ``Schedule/gradientBudgetBytes`` (ResNet-200 and deeper at batch 8). Smaller tapes stay whole:
    /// the same bits, without packing and unpacking the masks.
    func compactsGradient(batch: Int) -> Bool {
        let (floats, o) = batch.multipliedReportingOverflow(by: memoryPlan.gradientFloats)
        return o || floats > (Schedule.compactTapeBytes ?? Schedule.gradientBudgetBytes) / MemoryLayout<Float>.size
    }
    /// Number of BatchNormalization nodes (0 for BN-folded exports).
    public var batchNormCount: Int { graph.bnNodes.count }
    /// The memory cap given at load (``LoadOptions/memoryLimit``), in bytes; nil = none.
    public let memoryLimit: Int?
    /// Bytes the loaded model holds, estimated from its plans (``weightBytes(graph:plans:bn:shapes:)``).
    public let weightBytes: Int
    /// Per-sample activation memory of the plans (the largest over the BN domains).
    let memoryPlan: MemoryPlan

    init(graph: Graph, bn: [[BNParams]], domains: [String], defaultDomain: Int, preprocessing: Preprocessing,
         origin: ModelOrigin, memoryLimit: Int? = nil) throws {
        try Backend.checkEnvironment()
        self.graph = graph
        self.executor = Executor(graph: graph)
        self.plans = bn.map { Executor(graph: Optimizer.fuseRelu(Optimizer.fuseResidual(Optimizer.foldBatchNorm(graph, bn: $0)))) }
        self.bn = bn
        self.domains = domains
        self.defaultDomain = defaultDomain
        self.preprocessing = preprocessing
        self.origin = origin
        let shapes = try graph.inferShapes(batch: graph.declaredBatch ?? 1)
        Model.limitWinograd2(graph: graph, shapes: shapes)
        Model.limitTransposedPanels(graph: graph, shapes: shapes)
        Model.buildWinograd2(graph: graph)
        numClasses = shapes[graph.output]![1]
        // Samples per execution piece: keep the largest activation of a piece around 512 KiB.
        let perSample = shapes.compactMap { $0 }.map { $0.dropFirst().reduce(1, *) }.max() ?? 1
        cacheFriendlyBatch = max(1, 131_072 / max(1, perSample))
        self.memoryLimit = memoryLimit
        let plans = self.plans
        let planShapes = try plans.map { try $0.graph.inferShapes(batch: graph.declaredBatch ?? 1) }
        schedules = zip(plans, planShapes).map { Schedule.segments($0, shapes: $1) }
        let memory = zip(zip(plans, planShapes), schedules).map { MemoryPlan($0.0, shapes: $0.1, segments: $1) }
        memoryPlan = memory.max { ($0.gradientFloats, $0.forwardFloats) < ($1.gradientFloats, $1.forwardFloats) }!
        weightBytes = Model.weightBytes(graph: graph, plans: plans, bn: bn, shapes: planShapes.first ?? shapes)
        if let cap = memoryLimit, weightBytes > cap {
            throw fail(.resource, "the model's weights take about \(exactBytes(weightBytes)) as adamant stores them, above the memory limit of \(exactBytes(cap)) (memory_limit at load)")
        }
        if let m = preprocessing.mean, m.count != graph.inputShape[0] {
            throw fail(.invalidArgument, "mean has \(m.count) values for \(graph.inputShape[0]) input channels")
        }
        if let s = preprocessing.std {
            guard s.count == graph.inputShape[0] else {
                throw fail(.invalidArgument, "std has \(s.count) values for \(graph.inputShape[0]) input channels")
            }
            guard s.allSatisfy({ $0 > 0 && $0.isFinite }) else { throw fail(.invalidArgument, "std values must be positive") }
        }
        guard preprocessing.pixelMin < preprocessing.pixelMax, preprocessing.pixelMin.isFinite, preprocessing.pixelMax.isFinite else {
            throw fail(.invalidArgument, "pixel range [\(preprocessing.pixelMin), \(preprocessing.pixelMax)] is empty")
        }
    }

    /// Lets the model's F(2x2, 3x3) layers keep Winograd while their matrices add at most `budget`
    /// bytes to the weights, the layers with the largest images first (the most multiply-adds saved
    /// per byte: the same weights serve more tiles), then in graph order, skipping any that would pass
    /// it (a function of the model only); the others run their direct kernel. A layer that runs it
    /// wherever the model uses it drops its GEMM panels once its matrices are built
    /// (``ConvWeights/winograd2Only``): it grows by 7/9, not 16/9. The budget is ``winograd2Budget``
    /// when set, else half the model's weight bytes: ResNets from 50 to 638 layers (their F(2x2)
    /// layers add 0.39 x the weights at most) run them all; ResNet-18 (0.59 x) its 14x14 layers and
    /// two of its three 7x7 ones.
    static func limitWinograd2(graph: Graph, shapes: [[Int]?]) {
        // (every call made before any layer dropped its panels: ``buildWinograd2(graph:)``)
        var layers: [ObjectIdentifier: (w: ConvWeights, pixels: Int, order: Int)] = [:]
        var elsewhere = Set<ObjectIdentifier>()  // weights some other node uses another way
        for n in graph.nodes {
            guard let c = n.op as? Conv else { continue }
            let id = ObjectIdentifier(c.weights)
            if let s = shapes[n.inputs[0]], s.count == 4, c.algorithm(s[2], s[3]) == .winograd2 {
                let pixels = max(layers[id]?.pixels ?? 0, s[2] * s[3])
                layers[id] = (c.weights, pixels, layers[id]?.order ?? layers.count)
            } else {
                elsewhere.insert(id)
            }
        }
        let limit = winograd2Budget ?? parameterCount(graph) / 2 * MemoryLayout<Float>.size
        let ranked = layers.sorted(by: { ($0.value.pixels, -$0.value.order) > ($1.value.pixels, -$1.value.order) })
        let added = ranked.map { max(0, $0.value.w.winograd2Floats - (elsewhere.contains($0.key) ? 0 : $0.value.w.panelFloats)) }
        for ((id, l), fits) in zip(ranked, fitting(added, limit: limit)) {
            l.w.winograd2Allowed = fits
            l.w.winograd2Only = fits && !elsewhere.contains(id)
        }
    }

    /// The graph's parameters (``Op/parameterCount``), at most Int.max.
    static func parameterCount(_ graph: Graph) -> Int {
        graph.nodes.reduce(0) { total, n in
            let (sum, o) = total.addingReportingOverflow(n.op.parameterCount)
            return o ? Int.max : sum
        }
    }

    /// Which of the candidates, in order of preference, fit `limit` bytes, given the floats each
    /// adds: granted in turn while the running total stays within it, any that would pass it skipped.
    static func fitting(_ floats: [Int], limit: Int) -> [Bool] {
        var extra = 0
        return floats.map { f in
            let (bytes, o1) = f.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
            let (total, o2) = extra.addingReportingOverflow(bytes)
            let fits = !o1 && !o2 && total <= limit
            if fits { extra = total }
            return fits
        }
    }

    /// Lets the input gradients of the model's 1x1 layers on maps larger than
    /// ``Conv/transposedPanelsMaxPositions`` keep W^T's own panels (``ConvWeights/transposedAllowed``)
    /// while those add at most the budget's bytes: the layers with the most output positions first
    /// (the most multiply-adds per byte of panels), then in graph order, skipping any that would pass
    /// it (a function of the model only). Read in place from W's panels, W^T's rows are 6 floats at
    /// a stride of the layer's depth, and the blocks of a deep layer all fall in a few L1 sets: with
    /// its own panels ResNet-50's gradient took 0.96-0.97x the time (AMD EPYC family 25 model 1,
    /// avx2, 2 threads, batch 1 and 8) for 18 MB. The budget is ``transposedBudget`` when set, else
    /// half the model's weight bytes and at most 96 MiB: ResNet-50, -101 and -152 keep them all (18,
    /// 53 and 81 MB), ResNet-638 (382 MB of them) those on 56x56 and 28x28 maps and 82 MB of its
    /// 14x14 ones, within its PGD memory target. They are built on a layer's first input gradient.
    static func limitTransposedPanels(graph: Graph, shapes: [[Int]?]) {
        var layers: [ObjectIdentifier: (w: ConvWeights, positions: Int, order: Int)] = [:]
        for n in graph.nodes {
            guard let c = n.op as? Conv, c.group == 1, let s = shapes[n.inputs[0]], s.count == 4,
                  [.pointwise, .strided1x1].contains(c.algorithm(s[2], s[3])) else { continue }
            let positions = c.pointwisePositions(h: s[2], w: s[3])
            guard positions > Conv.transposedPanelsMaxPositions else { continue }
            let id = ObjectIdentifier(c.weights)
            layers[id] = (c.weights, max(layers[id]?.positions ?? 0, positions), layers[id]?.order ?? layers.count)
        }
        let limit = transposedBudget ?? min(parameterCount(graph) / 2 * MemoryLayout<Float>.size, 96 << 20)
        let ranked = layers.values.sorted(by: { ($0.positions, -$0.order) > ($1.positions, -$1.order) })
        for (l, fits) in zip(ranked, fitting(ranked.map(\.w.transposedFloats), limit: limit)) { l.w.transposedAllowed = fits }
    }

    /// The most bytes W^T's panels of the 1x1 layers on larger maps of the models loaded from now on
    /// may add to their weights (``limitTransposedPanels(graph:shapes:)``):
    /// `ADAMANT_TRANSPOSED_BUDGET_MB` (0: none), or nil, half the model's weight bytes and at most
    /// 96 MiB. Tests set it around a load.
    nonisolated(unsafe) static var transposedBudget: Int? = {
        guard let v = getenv("ADAMANT_TRANSPOSED_BUDGET_MB"), let n = Int(String(cString: v)), n >= 0, n <= 1 << 30 else { return nil }
        return n << 20
    }()

    /// The most bytes the F(2x2, 3x3) matrices of the models loaded from now on may add to their
    /// weights (``limitWinograd2(graph:shapes:)``): `ADAMANT_WINOGRAD2_BUDGET_MB` (0: never), or nil,
    /// half the model's weight bytes. Tests set it around a load.
    nonisolated(unsafe) static var winograd2Budget: Int? = {
        guard let v = getenv("ADAMANT_WINOGRAD2_BUDGET_MB"), let n = Int(String(cString: v)), n >= 0, n <= 1 << 30 else { return nil }
        return n << 20
    }()

    /// Builds the F(2x2, 3x3) matrices of the layers that replace their GEMM panels with them
    /// (``ConvWeights/winograd2Only``), at load rather than in the first call. Layers go a few at a
    /// time, one per thread (each transform single-threaded inside: most of the time is the new
    /// pages' faults, which the cores then take side by side), each group's panels handed back to the
    /// system as its matrices come (`abk_trim_heap`: glibc keeps a block freed in the middle of the
    /// heap mapped), so the model never holds both forms.
    static func buildWinograd2(graph: Graph) {
        var seen = Set<ObjectIdentifier>()
        let layers = graph.nodes.compactMap { n -> ConvWeights? in
            guard let c = n.op as? Conv, c.weights.winograd2Only, seen.insert(ObjectIdentifier(c.weights)).inserted,
                  !c.weights.forward.isEmpty else { return nil }
            return c.weights
        }
        let group = 2 * Parallel.threads
        for start in stride(from: 0, to: layers.count, by: group) {
            let end = min(layers.count, start + group)
            Parallel.forRanges(end - start, threads: Parallel.threads) { r in
                for i in r { _ = layers[start + i].winograd2 }
            }
            abk_trim_heap()
        }
    }

    /// Index of the domain called `name`.
    public func domainIndex(_ name: String) throws -> Int {
        guard let i = domains.firstIndex(of: name) else {
            throw fail(.domain, "unknown BN domain '\(name)'; the model has \(domains.joined(separator: ", "))")
        }
        return i
    }

    /// Validates a domain index.
    func checkDomain(_ d: Int) throws {
        guard d >= 0 && d < domains.count else {
            throw fail(.domain, "BN domain index \(d) out of range; the model has \(domains.count) domain(s): \(domains.joined(separator: ", "))")
        }
    }

    /// BN parameters of one domain, by slot (for inspection and tests).
    public func batchNormParameters(domain: Int) throws -> [BNParams] {
        try checkDomain(domain)
        return bn[domain]
    }
}

/// Valid domain names: letters, digits, '_' and '-'.
func validateDomainName(_ name: String) throws {
    guard !name.isEmpty, name.count <= 64,
          name.unicodeScalars.allSatisfy({ ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "-" }) else {
        throw fail(.invalidArgument, "invalid domain name '\(name)': use 1-64 letters, digits, '_' or '-'")
    }
}
