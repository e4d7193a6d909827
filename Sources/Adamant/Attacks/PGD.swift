import CKernels

/// The threat-model norm.
public enum Norm: Int32, Sendable {
    /// L-infinity ball, sign-gradient steps.
    case linf = 0
    /// L2 ball, normalized-gradient steps.
    case l2 = 1
}

/// How attack targets are chosen.
public enum TargetMode: Sendable, Equatable {
    /// Ascend the loss on the true label.
    case untargeted
    /// Descend the loss on these targets (one per sample, each != its label).
    case targeted([Int64])
    /// Targets drawn uniformly among the wrong classes (the paper's threat model).
    case random
}

/// PGD settings. Names and defaults follow torchattacks' PGD.
public struct PGDConfig: Sendable {
    public var norm: Norm = .linf
    /// Radius of the ball, in pixel units.
    public var eps: Float = 8.0 / 255
    /// Step size, in pixel units.
    public var alpha: Float = 2.0 / 255
    /// Iterations.
    public var steps: Int = 10
    /// Start uniformly inside the ball.
    public var randomStart: Bool = true
    /// Independent runs; per sample the strongest is kept.
    public var restarts: Int = 1
    public var loss: Loss = .crossEntropy
    public var targets: TargetMode = .untargeted
    /// Stop a sample once it succeeds.
    public var earlyStop: Bool = false
    /// BN domain whose gradients drive the attack.
    public var attackDomain: Int = 0
    /// BN domain that judges success.
    public var evalDomain: Int = 0
    /// Seed for the random start and random targets.
    public var seed: UInt64 = 0
    /// Index of the first sample of this call in the caller's whole set: sample i uses random stream
    /// (seed, sampleOffset + i), so splitting a set into batches changes nothing.
    public var sampleOffset: UInt64 = 0

    /// torchattacks defaults.
    public init() {}

    /// FGSM: one step of size eps, no random start.
    public static func fgsm(eps: Float) -> PGDConfig {
        var c = PGDConfig()
        c.eps = eps; c.alpha = eps; c.steps = 1; c.randomStart = false
        return c
    }
}

/// Per-sample outcome of an attack.
public struct AttackResult: Sendable {
    /// Adversarial images, same layout as the input.
    public var adversarial: [Float]
    /// Success under the evaluation domain.
    public var success: [Bool]
    /// Final loss (attack domain) of the kept example.
    public var loss: [Float]
    /// Steps run for the kept example.
    public var stepsUsed: [Int32]
    /// Target per sample (-1 when untargeted).
    public var targets: [Int64]
    /// Evaluation-domain prediction on the adversarial example.
    public var predictions: [Int64]
}

extension Session {
    /// Projected gradient descent (Madry et al.) with torchattacks semantics, per sample throughout:
    /// each sample's step depends on its own gradient only, and its random numbers come from its own
    /// stream (seed, sampleOffset + index, restart).
    /// `shouldCancel`, when given, is asked once per step; answering true ends the attack with an
    /// ``ErrorKind/cancelled`` error.
    public func pgd(_ x: UnsafeBufferPointer<Float>, batch: Int, labels: [Int64], config c: PGDConfig,
                    progress: ((Int, Int) -> Void)? = nil, shouldCancel: (() -> Bool)? = nil) throws -> AttackResult {
        guard c.eps.isFinite, c.eps > 0 else { throw fail(.invalidArgument, "eps must be positive, got \(c.eps)") }
        guard c.alpha.isFinite, c.alpha > 0 else { throw fail(.invalidArgument, "alpha must be positive, got \(c.alpha)") }
        guard c.steps >= 1 else { throw fail(.invalidArgument, "steps must be at least 1, got \(c.steps)") }
        guard c.restarts >= 1 else { throw fail(.invalidArgument, "restarts must be at least 1, got \(c.restarts)") }
        guard c.loss == .crossEntropy || c.loss == .cwMargin || (c.loss == .dlr && c.targets == .untargeted) else {
            throw fail(.invalidArgument, "PGD takes the CE or CW loss, or DLR untargeted; got \(c.loss)\(c.targets == .untargeted ? "" : " with targets") (targeted DLR is APGD-T's)")
        }
        try model.checkDomain(c.attackDomain)
        try model.checkDomain(c.evalDomain)
        let k = model.numClasses
        guard k >= c.loss.minimumClasses else {
            throw fail(.invalidArgument, "loss \(c.loss) needs at least \(c.loss.minimumClasses) classes; the model has \(k)")
        }
        let per = model.inputShape.product
        try checkInputLength(x.count, batch: batch)
        try checkMemory(batch: batch, kind: .attack)
        try checkLabels(labels, batch: batch)
        let lo = model.preprocessing.pixelMin, hi = model.preprocessing.pixelMax
        try checkFinite(x)
        let x0 = Array(x)
        for (i, v) in x0.enumerated() where !(v >= lo && v <= hi) {
            throw fail(.invalidArgument, "input pixels must lie in [\(lo), \(hi)]: found \(v) at \(pixelLocation(i)); attacks work in pixel space")
        }

        // Targets.
        var targets = [Int64](repeating: -1, count: batch)
        switch c.targets {
        case .untargeted: break
        case .targeted(let t):
            try checkLabels(t, batch: batch, what: "target")
            for i in 0..<batch where t[i] == labels[i] {
                throw fail(.invalidArgument, "target of sample \(i) equals its label \(labels[i])")
            }
            targets = t
        case .random:
            guard k >= 2 else { throw fail(.invalidArgument, "random targets need at least 2 classes") }
            for i in 0..<batch {
                var rng = Xoshiro256(seed: c.seed, stream: (c.sampleOffset &+ UInt64(i)) &* 1_000_003 &+ 0xA11CE)
                var t = Int64(rng.next() % UInt64(k - 1))
                if t >= labels[i] { t += 1 }
                targets[i] = t
            }
        }
        let targeted = c.targets != .untargeted
        let lossLabels = targeted ? targets : labels
        // The attacker ascends `sign * loss`.
        let sign: Float = targeted ? -1 : 1

        var best = x0
        var bestSuccess = [Bool](repeating: false, count: batch)
        var bestObjective = [Float](repeating: -.infinity, count: batch)
        var bestLoss = [Float](repeating: 0, count: batch)
        var bestSteps = [Int32](repeating: 0, count: batch)
        var bestPred = [Int64](repeating: 0, count: batch)
        let totalWork = c.restarts * c.steps
        var done = 0

        for r in 0..<c.restarts {
            var adv = x0
            if c.randomStart {
                for i in 0..<batch {
                    var rng = Xoshiro256(seed: c.seed, stream: ((c.sampleOffset &+ UInt64(i)) << 20) | UInt64(r))
                    let base = i * per
                    switch c.norm {
                    case .linf:
                        for j in 0..<per { adv[base + j] += (2 * rng.unitFloat() - 1) * c.eps }
                    case .l2:
                        var d = (0..<per).map { _ in rng.normal() }
                        let nrm = d.reduce(0) { $0 + $1 * $1 }.squareRoot()
                        let radius = c.eps * Float(Double(rng.unitFloat()).power(1.0 / Double(per)))
                        for j in 0..<per { d[j] *= radius / max(nrm, 1e-12) }
                        for j in 0..<per { adv[base + j] += d[j] }
                    }
                    for j in 0..<per { adv[base + j] = min(max(adv[base + j], lo), hi) }
                }
            }
            var active = [Bool](repeating: true, count: batch)
            var steps = [Int32](repeating: 0, count: batch)
            for _ in 0..<c.steps {
                if let shouldCancel, shouldCancel() {
                    throw fail(.cancelled, "the attack was cancelled after \(done) of \(totalWork) steps")
                }
                let idx = (0..<batch).filter { active[$0] }
                if idx.isEmpty { break }
                // The active samples' images and their gradient in pooled buffers (a fresh batch-sized
                // array or two every step cost page faults every step).
                let n = idx.count
                var t = Tensor(shape: [n] + model.inputShape, data: try pool.take(n * per, batch: n))
                t.data.withUnsafeMutableBufferPointer { d in
                    adv.withUnsafeBufferPointer { a in
                        for (m, i) in idx.enumerated() { (d.baseAddress! + m * per).update(from: a.baseAddress! + i * per, count: per) }
                    }
                }
                normalize(&t)
                defer { pool.give(t.data, batch: n) }
                try withPooledFloats(n * per, batch: n) { g in
                    _ = try gradient(normalized: t, labels: idx.map { lossLabels[$0] }, loss: c.loss, domain: c.attackDomain, into: g)
                    for (m, i) in idx.enumerated() {
                        let base = i * per, gb = m * per
                        switch c.norm {
                        case .linf:
                            // Sign step, projection onto the eps-ball and clipping to the pixel range in
                            // one pass (akn_pgd_linf_step).
                            adv.withUnsafeMutableBufferPointer { ap in
                                x0.withUnsafeBufferPointer { xp in
                                    akn_pgd_linf_step(ap.baseAddress! + base, xp.baseAddress! + base, g + gb, per,
                                                      sign * c.alpha, c.eps, lo, hi)
                                }
                            }
                        case .l2:
                            var gn: Float = 0
                            for j in 0..<per { gn += g[gb + j] * g[gb + j] }
                            let scale = sign * c.alpha / (gn.squareRoot() + 1e-10)
                            var dn: Float = 0
                            for j in 0..<per {
                                adv[base + j] += scale * g[gb + j]
                                let d = adv[base + j] - x0[base + j]
                                dn += d * d
                            }
                            let f = min(1, c.eps / max(dn.squareRoot(), 1e-12))
                            for j in 0..<per {
                                let v = x0[base + j] + (adv[base + j] - x0[base + j]) * f
                                adv[base + j] = min(max(v, lo), hi)
                            }
                        }
                        steps[i] += 1
                    }
                }
                if c.earlyStop {
                    let sub = gather(adv, idx, per)
                    let pred = predictedClasses(logits: try predict(sub, batch: idx.count, domain: c.evalDomain), classes: k)
                    for (m, i) in idx.enumerated() {
                        if targeted ? pred[m] == targets[i] : pred[m] != labels[i] { active[i] = false }
                    }
                }
                done += 1
                progress?(done, totalWork)
            }
            done = (r + 1) * c.steps
            // Judge this restart and keep, per sample, the strongest example.
            let evalPred = predictedClasses(logits: try predict(adv, batch: batch, domain: c.evalDomain), classes: k)
            var t = Tensor(shape: [batch] + model.inputShape, data: adv)
            normalize(&t)
            let z = try logits(t, domain: c.attackDomain)
            let (l, _) = Losses.evaluate(logits: z, classes: k, labels: lossLabels, loss: c.loss)
            for i in 0..<batch {
                let ok = targeted ? evalPred[i] == targets[i] : evalPred[i] != labels[i]
                let obj = sign * l[i]
                let better = r == 0 || (ok && !bestSuccess[i]) || (ok == bestSuccess[i] && obj > bestObjective[i])
                if better {
                    bestSuccess[i] = ok; bestObjective[i] = obj; bestLoss[i] = l[i]
                    bestSteps[i] = steps[i]; bestPred[i] = evalPred[i]
                    for j in 0..<per { best[i * per + j] = adv[i * per + j] }
                }
            }
        }
        return AttackResult(adversarial: best, success: bestSuccess, loss: bestLoss, stepsUsed: bestSteps,
                            targets: targets, predictions: bestPred)
    }

    /// Convenience overload for arrays.
    public func pgd(_ x: [Float], batch: Int, labels: [Int64], config: PGDConfig,
                    progress: ((Int, Int) -> Void)? = nil, shouldCancel: (() -> Bool)? = nil) throws -> AttackResult {
        try x.withUnsafeBufferPointer {
            try pgd($0, batch: batch, labels: labels, config: config, progress: progress, shouldCancel: shouldCancel)
        }
    }

    private func gather(_ a: [Float], _ idx: [Int], _ per: Int) -> [Float] {
        if idx.count * per == a.count { return a }
        var out = [Float](); out.reserveCapacity(idx.count * per)
        for i in idx { out.append(contentsOf: a[(i * per)..<((i + 1) * per)]) }
        return out
    }
}

#if canImport(Glibc)
import Glibc
extension Double {
    func power(_ e: Double) -> Double { Glibc.pow(self, e) }
}
#endif
