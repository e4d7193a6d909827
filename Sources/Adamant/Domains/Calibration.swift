/// Accumulates batch statistics of every BatchNormalization node (used while calibrating).
final class CalibrationRecorder {
    var meanSum: [[Double]]
    var varSum: [[Double]]
    var images = 0
    private var pendingImages = 0

    init(channels: [Int]) {
        meanSum = channels.map { [Double](repeating: 0, count: $0) }
        varSum = meanSum
    }

    func record(slot: Int, mean: [Float], biasedVariance: [Float], count: Int, images: Int) {
        // Unbiased variance, as PyTorch keeps in running_var; weights: images in the batch.
        let unbias = count > 1 ? Double(count) / Double(count - 1) : 1
        for c in 0..<mean.count {
            meanSum[slot][c] += Double(mean[c]) * Double(images)
            varSum[slot][c] += Double(biasedVariance[c]) * unbias * Double(images)
        }
    }
}

/// Builds a new BN domain from data: affine parameters from a base domain, running statistics
/// re-estimated from the images added (each BN normalizes with its batch's statistics, as in training
/// mode; per-batch means and unbiased variances are averaged with equal weight per image).
public final class Calibrator {
    /// The model being extended.
    public let model: Model
    /// The domain whose affine parameters the new one copies.
    public let baseDomain: Int
    let recorder: CalibrationRecorder
    let session: Session
    /// Images added so far.
    public private(set) var images = 0

    /// Starts a calibration; fails for models without BatchNormalization nodes.
    public init(model: Model, baseDomain: Int) throws {
        try model.checkDomain(baseDomain)
        guard !model.graph.bnNodes.isEmpty else {
            throw fail(.unsupported, "the model has no BatchNormalization nodes (BN folded into Conv at export?), so no BN domain can be calibrated")
        }
        self.model = model
        self.baseDomain = baseDomain
        recorder = CalibrationRecorder(channels: model.graph.bnNodes.map(\.channels))
        session = Session(model: model)
    }

    /// Adds a batch (at least 2 images) of pixel-space images.
    public func add(_ x: UnsafeBufferPointer<Float>, batch: Int) throws {
        guard batch >= 2 else { throw fail(.invalidArgument, "calibration batches need at least 2 images (batch statistics), got \(batch)") }
        let t = try session.normalizedInput(x, batch: batch)
        let ctx = try session.context(domain: baseDomain, batch: batch, calibration: recorder, threads: Parallel.threads)
        _ = try model.executor.forward(t, ctx, keep: false)
        images += batch
    }

    /// Convenience overload for arrays.
    public func add(_ x: [Float], batch: Int) throws {
        try x.withUnsafeBufferPointer { try add($0, batch: batch) }
    }

    /// A new model with the calibrated domain `name` appended.
    public func finish(name: String) throws -> Model {
        guard images > 0 else { throw fail(.invalidArgument, "no images were added to the calibration") }
        let base = model.bn[baseDomain]
        let params = base.enumerated().map { slot, p in
            BNParams(scale: p.scale, bias: p.bias,
                     mean: recorder.meanSum[slot].map { Float($0 / Double(images)) },
                     variance: recorder.varSum[slot].map { Float($0 / Double(images)) })
        }
        return try model.adding(domain: name, parameters: params)
    }
}
