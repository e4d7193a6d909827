/// Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
/// diverse parameter-free attacks", ICML 2020): PGD with momentum and a step size that halves at
/// checkpoints where the loss stalls, restarting from the best point found. The semantics follow
/// the reference implementations (AutoAttack's autopgd_base, torchattacks' APGD/APGDT), per sample.

/// APGD settings. Defaults are AutoAttack's standard APGD-CE (100 steps, 1 restart).
public struct APGDConfig: Sendable {
    public var norm: Norm = .linf
    /// Radius of the ball, in pixel units. The first step size is 2 * eps.
    public var eps: Float = 8.0 / 255
    /// Iterations per run.
    public var steps: Int = 100
    /// Runs per target (random start each); a sample that succeeds is not attacked again.
    public var restarts: Int = 1
    /// `.crossEntropy`, `.cwMargin` or `.dlr` (targeted runs use the targeted form of DLR).
    public var loss: Loss = .crossEntropy
    /// `.untargeted`, `.targeted(t)` or `.random` (success: prediction == target). Must be
    /// `.untargeted` when ``topTargets`` > 0.
    public var targets: TargetMode = .untargeted
    /// APGD-T: when > 0, targeted runs towards each of the `topTargets` wrong classes with the
    /// largest clean logits in turn (capped at classes - 1), success meaning misclassification.
    public var topTargets: Int = 0
    /// Checkpoint threshold: the step size halves when the loss rose in at most rho of the steps
    /// since the last checkpoint.
    public var rho: Float = 0.75
    /// Start at a random point of the ball (else at the clean image).
    public var randomStart: Bool = true
    /// Stop a sample once it succeeds (its result is then the first adversarial point found).
    public var earlyStop: Bool = true
    /// BN domain whose gradients drive the attack.
    public var attackDomain: Int = 0
    /// BN domain that judges success.
    public var evalDomain: Int = 0
    /// Seed of the random starts and random targets.
    public var seed: UInt64 = 0
    /// Index of the first sample of this call in the caller's whole set (as for PGD).
    public var sampleOffset: UInt64 = 0

    public init() {}

    /// AutoAttack's APGD-CE.
    public static func apgdCE(eps: Float, steps: Int = 100, norm: Norm = .linf) -> APGDConfig {
        var c = APGDConfig()
        c.eps = eps; c.steps = steps; c.norm = norm
        return c
    }

    /// AutoAttack's APGD-T: targeted DLR over the 9 most likely wrong classes.
    public static func apgdT(eps: Float, steps: Int = 100, norm: Norm = .linf, topTargets: Int = 9) -> APGDConfig {
        var c = apgdCE(eps: eps, steps: steps, norm: norm)
        c.loss = .dlr; c.topTargets = topTargets
        return c
    }

    /// Runs per sample at most: restarts, times the targets of APGD-T.
    public func runs(classes: Int) -> Int { restarts * (topTargets > 0 ? max(1, min(topTargets, classes - 1)) : 1) }
}

/// Robust accuracy after each member of ``Session/autoAttackLite(_:batch:labels:config:progress:shouldCancel:)``.
public struct AutoAttackReport: Sendable {
    /// Images attacked.
    public var images: Int
    /// Correctly classified clean images (evaluation domain).
    public var cleanCorrect: Int
    /// Still correctly classified after APGD-CE.
    public var robustAfterCE: Int
    /// Still correctly classified after APGD-CE then APGD-T (the final robust count).
    public var robustAfterT: Int
    /// Per sample: robust after APGD-CE.
    public var robustCE: [Bool]
}

extension Session {
    /// APGD on a batch: per-sample results as ``pgd(_:batch:labels:config:progress:shouldCancel:)``
    /// returns them. A sample's random start comes from its own stream (seed, sampleOffset + index,
    /// run), so a sample's result does not depend on its batch-mates or the batch size. Samples the
    /// model already gets wrong (targeted: already predicts the target) are not attacked (success,
    /// 0 steps, the clean image). A sample that never succeeds returns its highest-loss point.
    /// `loss` holds the objective the attack ascends (CE untargeted, -CE(target) targeted, DLR).
    public func apgd(_ x: [Float], batch: Int, labels: [Int64], config c: APGDConfig,
                     progress: ((Int, Int) -> Void)? = nil, shouldCancel: (() -> Bool)? = nil) throws -> AttackResult {
        try checkAPGD(c)
        try checkInputLength(x.count, batch: batch)
        try checkMemory(batch: batch, kind: .attack)
        try checkLabels(labels, batch: batch)
        try checkPixels(x)
        let streams = (0..<batch).map { c.sampleOffset &+ UInt64($0) }
        var done = 0
        let total = c.runs(classes: model.numClasses) * c.steps
        return try apgdCore(x, labels: labels, streams: streams, config: c, salt: 0, done: &done, total: total,
                            progress: progress, shouldCancel: shouldCancel).result
    }

    /// AutoAttack without FAB-T and Square: APGD-CE on every image, then APGD-T (targeted DLR over
    /// `config.topTargets` classes, 9 if 0) on the images still robust; per sample the first success
    /// is kept. Each attack draws the random starts ``apgd`` would (as AutoAttack seeds each attack
    /// alike), so a sample is robust here exactly when it survives ``apgd`` with both configurations. `config` gives norm, eps, steps, restarts, rho, domains, seed and sample offset; its
    /// loss and targets must be left at CE and untargeted.
    public func autoAttackLite(_ x: [Float], batch: Int, labels: [Int64], config: APGDConfig,
                               progress: ((Int, Int) -> Void)? = nil, shouldCancel: (() -> Bool)? = nil) throws
        -> (result: AttackResult, report: AutoAttackReport) {
        guard config.loss == .crossEntropy, config.targets == .untargeted else {
            throw fail(.invalidArgument, "autoattack-lite chooses the losses and targets itself: leave loss = CE and targets untargeted")
        }
        var ce = config
        ce.topTargets = 0
        var t = config
        t.loss = .dlr
        t.topTargets = config.topTargets > 0 ? config.topTargets : 9
        try checkAPGD(ce)
        try checkAPGD(t)
        try checkInputLength(x.count, batch: batch)
        try checkMemory(batch: batch, kind: .attack)
        try checkLabels(labels, batch: batch)
        try checkPixels(x)
        let k = model.numClasses, per = model.inputShape.product
        let streams = (0..<batch).map { config.sampleOffset &+ UInt64($0) }
        var done = 0
        let total = (ce.runs(classes: k) + t.runs(classes: k)) * config.steps
        let first = try apgdCore(x, labels: labels, streams: streams, config: ce, salt: 0, done: &done, total: total,
                                 progress: progress, shouldCancel: shouldCancel)
        var r = first.result
        let cleanCorrect = first.cleanCorrect
        let robustCE = r.success.map { !$0 }
        let left = (0..<batch).filter { robustCE[$0] }
        if !left.isEmpty {
            var sub = [Float](); sub.reserveCapacity(left.count * per)
            for i in left { sub.append(contentsOf: x[(i * per)..<((i + 1) * per)]) }
            let second = try apgdCore(sub, labels: left.map { labels[$0] }, streams: left.map { streams[$0] }, config: t,
                                      salt: 0, done: &done, total: total, progress: progress, shouldCancel: shouldCancel).result
            for (m, i) in left.enumerated() {
                r.success[i] = second.success[m]; r.loss[i] = second.loss[m]; r.stepsUsed[i] = second.stepsUsed[m]
                r.targets[i] = second.targets[m]; r.predictions[i] = second.predictions[m]
                for j in 0..<per { r.adversarial[i * per + j] = second.adversarial[m * per + j] }
            }
        }
        let report = AutoAttackReport(images: batch, cleanCorrect: cleanCorrect,
                                      robustAfterCE: robustCE.filter { $0 }.count,
                                      robustAfterT: r.success.filter { !$0 }.count, robustCE: robustCE)
        return (r, report)
    }

    func checkAPGD(_ c: APGDConfig) throws {
        guard c.eps.isFinite, c.eps > 0 else { throw fail(.invalidArgument, "eps must be positive, got \(c.eps)") }
        guard c.steps >= 1 else { throw fail(.invalidArgument, "steps must be at least 1, got \(c.steps)") }
        guard c.restarts >= 1 else { throw fail(.invalidArgument, "restarts must be at least 1, got \(c.restarts)") }
        guard c.rho.isFinite, c.rho >= 0, c.rho <= 1 else { throw fail(.invalidArgument, "rho must be in [0, 1], got \(c.rho)") }
        guard c.topTargets >= 0 else { throw fail(.invalidArgument, "the number of APGD-T target classes must be at least 0, got \(c.topTargets)") }
        guard [.crossEntropy, .cwMargin, .dlr].contains(c.loss) else {
            throw fail(.invalidArgument, "APGD takes the CE, CW or DLR loss (targeted runs use targeted DLR), got \(c.loss)")
        }
        try model.checkDomain(c.attackDomain)
        try model.checkDomain(c.evalDomain)
        let k = model.numClasses
        let targeted = c.targets != .untargeted || c.topTargets > 0
        if c.topTargets > 0 && c.targets != .untargeted {
            throw fail(.invalidArgument, "APGD-T (top-k targets) chooses its targets: targets must be untargeted")
        }
        if targeted && k < 2 { throw fail(.invalidArgument, "a targeted attack needs at least 2 classes") }
        let need = c.loss == .dlr && targeted ? Loss.dlrTargeted.minimumClasses : c.loss.minimumClasses
        guard k >= need else {
            throw fail(.invalidArgument, "the \(targeted && c.loss == .dlr ? "targeted " : "")\(c.loss) loss needs at least \(need) classes; the model has \(k)")
        }
    }

    /// Fails on a non-finite pixel or one outside the model's pixel range (attacks work in pixel space).
    func checkPixels(_ x: [Float]) throws {
        try x.withUnsafeBufferPointer { try checkFinite($0) }
        let lo = model.preprocessing.pixelMin, hi = model.preprocessing.pixelMax
        for (i, v) in x.enumerated() where !(v >= lo && v <= hi) {
            throw fail(.invalidArgument, "input pixels must lie in [\(lo), \(hi)]: found \(v) at \(pixelLocation(i)); attacks work in pixel space")
        }
    }

    /// APGD over samples whose random streams are `streams`; `salt` separates the streams of
    /// different attacks run on the same samples.
    func apgdCore(_ x0: [Float], labels: [Int64], streams: [UInt64], config c: APGDConfig, salt: UInt64,
                  done: inout Int, total: Int, progress: ((Int, Int) -> Void)?, shouldCancel: (() -> Bool)?) throws
        -> (result: AttackResult, cleanCorrect: Int) {
        let batch = labels.count, k = model.numClasses, per = model.inputShape.product
        let topK = c.topTargets > 0 ? min(c.topTargets, k - 1) : 0

        // Clean predictions: samples already wrong (or on target) are not attacked.
        var t0 = Tensor(shape: [batch] + model.inputShape, data: x0)
        normalize(&t0)
        let cleanAttack = try logits(t0, domain: c.attackDomain)
        let cleanEval = c.evalDomain == c.attackDomain ? cleanAttack : try logits(t0, domain: c.evalDomain)
        let cleanPred = predictedClasses(logits: cleanEval, classes: k)
        let cleanCorrect = (0..<batch).filter { cleanPred[$0] == labels[$0] }.count

        // Targets of the targeted modes.
        var fixedTargets: [Int64]? = nil
        switch c.targets {
        case .untargeted: break
        case .targeted(let t):
            try checkLabels(t, batch: batch, what: "target")
            for i in 0..<batch where t[i] == labels[i] {
                throw fail(.invalidArgument, "target of sample \(i) equals its label \(labels[i])")
            }
            fixedTargets = t
        case .random:
            fixedTargets = (0..<batch).map { i in
                var rng = Xoshiro256(seed: c.seed, stream: streams[i] &* 1_000_003 &+ 0xA9D7)
                var t = Int64(rng.next() % UInt64(k - 1))
                if t >= labels[i] { t += 1 }
                return t
            }
        }
        // APGD-T: the wrong classes by clean logit (attack domain), largest first.
        var ranked: [[Int64]] = []
        if topK > 0 {
            ranked = (0..<batch).map { i in
                let z = cleanAttack[(i * k)..<((i + 1) * k)]
                let order = (0..<k).filter { Int64($0) != labels[i] }
                    .sorted { z[z.startIndex + $0] > z[z.startIndex + $1] || (z[z.startIndex + $0] == z[z.startIndex + $1] && $0 < $1) }
                return order.prefix(topK).map { Int64($0) }
            }
        }

        var out = AttackResult(adversarial: x0, success: [Bool](repeating: false, count: batch),
                               loss: [Float](repeating: 0, count: batch), stepsUsed: [Int32](repeating: 0, count: batch),
                               targets: fixedTargets ?? [Int64](repeating: -1, count: batch),
                               predictions: cleanPred)
        var bestObjective = [Float](repeating: -.infinity, count: batch)
        for i in 0..<batch {
            if let t = fixedTargets { out.success[i] = cleanPred[i] == t[i] } else { out.success[i] = cleanPred[i] != labels[i] }
        }

        let rounds = max(topK, 1)
        for round in 0..<rounds {
            for r in 0..<c.restarts {
                let ids = (0..<batch).filter { !out.success[$0] }
                if ids.isEmpty { done += c.steps; progress?(done, total); continue }
                let targets: [Int64]? = topK > 0 ? ids.map { ranked[$0][round] } : fixedTargets.map { t in ids.map { t[$0] } }
                let run = try apgdRun(x0, ids: ids, labels: ids.map { labels[$0] }, targets: targets,
                                      successOnTarget: fixedTargets != nil,
                                      streams: ids.map { streams[$0] }, runKey: (salt << 40) | UInt64(round * c.restarts + r),
                                      config: c, done: &done, total: total, progress: progress, shouldCancel: shouldCancel)
                for (m, i) in ids.enumerated() where run.success[m] || run.objective[m] > bestObjective[i] {
                    out.success[i] = run.success[m]
                    bestObjective[i] = run.objective[m]
                    out.loss[i] = run.objective[m]
                    out.stepsUsed[i] = run.steps[m]
                    if topK > 0 { out.targets[i] = targets![m] }
                    for j in 0..<per { out.adversarial[i * per + j] = run.x[m * per + j] }
                }
            }
        }

        // Judge the kept examples in the evaluation domain.
        let pred = predictedClasses(logits: try predict(out.adversarial, batch: batch, domain: c.evalDomain), classes: k)
        for i in 0..<batch {
            out.predictions[i] = pred[i]
            out.success[i] = fixedTargets.map { pred[i] == $0[i] } ?? (pred[i] != labels[i])
        }
        return (out, cleanCorrect)
    }

    /// One APGD run on the samples `ids` of x0 (their labels, and targets for targeted runs).
    /// Returns per run sample: success, the kept point (first adversarial point when early
    /// stopping, else the last; the highest-loss point without success), its objective and steps.
    private func apgdRun(_ x0all: [Float], ids: [Int], labels: [Int64], targets: [Int64]?, successOnTarget: Bool,
                         streams: [UInt64], runKey: UInt64, config c: APGDConfig,
                         done: inout Int, total: Int, progress: ((Int, Int) -> Void)?, shouldCancel: (() -> Bool)?) throws
        -> (success: [Bool], x: [Float], objective: [Float], steps: [Int32]) {
        let n = ids.count, k = model.numClasses, per = model.inputShape.product
        let lo = model.preprocessing.pixelMin, hi = model.preprocessing.pixelMax
        let eps = c.eps
        let targeted = targets != nil
        // The attack ascends `sign * loss`; targeted DLR is already the quantity to ascend.
        let loss: Loss = targeted && c.loss == .dlr ? .dlrTargeted : c.loss
        let sign: Float = targeted && loss != .dlrTargeted ? -1 : 1
        let lossLabels = targeted && loss != .dlrTargeted ? targets! : labels
        let lossTargets = loss == .dlrTargeted ? targets : nil

        var x0 = [Float](repeating: 0, count: n * per)
        for (m, i) in ids.enumerated() { for j in 0..<per { x0[m * per + j] = x0all[i * per + j] } }

        // Random start: L-inf, uniform noise scaled so its largest entry is eps; L2, a Gaussian
        // direction of length eps. Then clipped to the pixel range.
        var adv = x0
        if c.randomStart {
            for m in 0..<n {
                var rng = Xoshiro256(seed: c.seed, stream: (streams[m] << 20) ^ (runKey &* 0x2545_F491_4F6C_DD1D) ^ 0x4150_4744)
                let base = m * per
                var t = [Float](repeating: 0, count: per)
                switch c.norm {
                case .linf:
                    var mx: Float = 0
                    for j in 0..<per { t[j] = 2 * rng.unitFloat() - 1; mx = max(mx, abs(t[j])) }
                    for j in 0..<per { adv[base + j] = x0[base + j] + eps * t[j] / max(mx, 1e-12) }
                case .l2:
                    var s: Float = 0
                    for j in 0..<per { t[j] = rng.normal(); s += t[j] * t[j] }
                    let nrm = s.squareRoot() + 1e-12
                    for j in 0..<per { adv[base + j] = x0[base + j] + eps * t[j] / nrm }
                }
                for j in 0..<per { adv[base + j] = min(max(adv[base + j], lo), hi) }
            }
        }

        // Objective, gradient and (attack-domain) logits at the active samples' current points.
        func evaluate(_ active: [Int]) throws -> (l: [Float], g: [Float], pred: [Int64]) {
            var sub: [Float]
            if active.count == n { sub = adv } else {
                sub = [Float](); sub.reserveCapacity(active.count * per)
                for m in active { sub.append(contentsOf: adv[(m * per)..<((m + 1) * per)]) }
            }
            var t = Tensor(shape: [active.count] + model.inputShape, data: sub)
            normalize(&t)
            var r = try gradient(normalized: t, labels: active.map { lossLabels[$0] }, loss: loss, domain: c.attackDomain,
                                 targets: lossTargets.map { lt in active.map { lt[$0] } })
            if sign < 0 {
                for j in 0..<r.loss.count { r.loss[j] = -r.loss[j] }
                for j in 0..<r.gradient.count { r.gradient[j] = -r.gradient[j] }
            }
            let pred = c.evalDomain == c.attackDomain ? predictedClasses(logits: r.logits, classes: k)
                : predictedClasses(logits: try predict(sub, batch: active.count, domain: c.evalDomain), classes: k)
            return (r.loss, r.gradient, pred)
        }
        func succeeded(_ m: Int, _ p: Int64) -> Bool { successOnTarget ? p == targets![m] : p != labels[m] }

        var success = [Bool](repeating: false, count: n)
        var successX = [Float](repeating: 0, count: n * per)
        var successLoss = [Float](repeating: 0, count: n)
        var successSteps = [Int32](repeating: 0, count: n)
        var active = Array(0..<n)

        let first = try evaluate(active)
        var grad = first.g
        var gradBest = grad
        var lossBest = first.l
        var xBest = adv
        for m in 0..<n where succeeded(m, first.pred[m]) {
            success[m] = true; successLoss[m] = first.l[m]
            for j in 0..<per { successX[m * per + j] = adv[m * per + j] }
        }
        if c.earlyStop { active = active.filter { !success[$0] } }

        let steps = c.steps
        let steps2 = max(Int(0.22 * Double(steps)), 1), stepsMin = max(Int(0.06 * Double(steps)), 1)
        let sizeDecr = max(Int(0.03 * Double(steps)), 1)
        var stepSize = [Float](repeating: 2 * eps, count: n)
        var xOld = adv
        var checkpoint = steps2, sinceCheck = 0
        // Per sample: the loss of the previous step and how often the loss rose since the last
        // checkpoint. (Before the first step the reference compares with an unwritten, zero slot.)
        var lastLoss = [Float](repeating: 0, count: n)
        var rises = [Int](repeating: 0, count: n)
        var lossBestLastCheck = lossBest
        var reducedLastCheck = [Bool](repeating: true, count: n)
        var ran = [Int32](repeating: 0, count: n)

        for i in 0..<steps {
            if let shouldCancel, shouldCancel() {
                throw fail(.cancelled, "the attack was cancelled after \(done) of \(total) steps")
            }
            if active.isEmpty { done += steps - i; progress?(done, total); break }
            // The step: a gradient step, projected, then momentum (none at the first step), projected.
            let a: Float = i > 0 ? 0.75 : 1.0
            adv.withUnsafeMutableBufferPointer { xa in
                xOld.withUnsafeMutableBufferPointer { xo in
                    x0.withUnsafeBufferPointer { xz in
                        grad.withUnsafeBufferPointer { g in
                            for m in active {
                                let b = m * per, ss = stepSize[m]
                                switch c.norm {
                                case .linf:
                                    for j in b..<(b + per) {
                                        let v = xa[j], lower = xz[j] - eps, upper = xz[j] + eps
                                        let gv = g[j]
                                        let s: Float = gv > 0 ? 1 : (gv < 0 ? -1 : 0)
                                        let x1 = min(max(min(max(v + ss * s, lower), upper), lo), hi)
                                        let z = v + (x1 - v) * a + (v - xo[j]) * (1 - a)
                                        xo[j] = v
                                        xa[j] = min(max(min(max(z, lower), upper), lo), hi)
                                    }
                                case .l2:
                                    var gn: Float = 0
                                    for j in b..<(b + per) { gn += g[j] * g[j] }
                                    let scale = ss / (gn.squareRoot() + 1e-12)
                                    var dn: Float = 0
                                    var x1 = [Float](repeating: 0, count: per)
                                    for j in 0..<per { x1[j] = xa[b + j] + scale * g[b + j]; let d = x1[j] - xz[b + j]; dn += d * d }
                                    var nd = dn.squareRoot(), f = min(eps, nd) / (nd + 1e-12)
                                    dn = 0
                                    for j in 0..<per {
                                        let p = min(max(xz[b + j] + (x1[j] - xz[b + j]) * f, lo), hi)
                                        let v = xa[b + j]
                                        x1[j] = v + (p - v) * a + (v - xo[b + j]) * (1 - a)
                                        let d = x1[j] - xz[b + j]; dn += d * d
                                    }
                                    nd = dn.squareRoot(); f = min(eps, nd) / (nd + 1e-12)
                                    for j in 0..<per {
                                        xo[b + j] = xa[b + j]
                                        xa[b + j] = min(max(xz[b + j] + (x1[j] - xz[b + j]) * f, lo), hi)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            let e = try evaluate(active)
            for (q, m) in active.enumerated() {
                let l = e.l[q], b = m * per
                ran[m] += 1
                let prev = i > 0 ? lastLoss[m] : (steps == 1 ? l : 0)
                if l > prev { rises[m] += 1 }
                lastLoss[m] = l
                if !success[m] || !c.earlyStop, succeeded(m, e.pred[q]) {
                    success[m] = true; successLoss[m] = l; successSteps[m] = Int32(i + 1)
                    for j in 0..<per { successX[b + j] = adv[b + j] }
                }
                let gb = q * per
                grad.withUnsafeMutableBufferPointer { g in
                    e.g.withUnsafeBufferPointer { eg in for j in 0..<per { g[b + j] = eg[gb + j] } }
                }
                if l > lossBest[m] {
                    lossBest[m] = l
                    for j in 0..<per { xBest[b + j] = adv[b + j]; gradBest[b + j] = grad[b + j] }
                }
            }
            // Checkpoint: halve the step (and go back to the best point) where the loss rose in at
            // most rho of the steps since the last checkpoint (condition 1), or where the step was
            // not halved last time and the best loss has not improved since (condition 2).
            sinceCheck += 1
            if sinceCheck == checkpoint {
                for m in active {
                    var halve = Double(rises[m]) <= Double(checkpoint) * Double(c.rho)
                    rises[m] = 0
                    if !reducedLastCheck[m] && lossBestLastCheck[m] >= lossBest[m] { halve = true }
                    reducedLastCheck[m] = halve
                    lossBestLastCheck[m] = lossBest[m]
                    if halve {
                        stepSize[m] /= 2
                        let b = m * per
                        for j in 0..<per { adv[b + j] = xBest[b + j]; grad[b + j] = gradBest[b + j] }
                    }
                }
                sinceCheck = 0
                checkpoint = max(checkpoint - sizeDecr, stepsMin)
            }
            if c.earlyStop { active = active.filter { !success[$0] } }
            done += 1
            progress?(done, total)
        }

        var xs = xBest, obj = lossBest, st = ran
        for m in 0..<n where success[m] {
            for j in 0..<per { xs[m * per + j] = successX[m * per + j] }
            obj[m] = successLoss[m]; st[m] = successSteps[m]
        }
        return (success, xs, obj, st)
    }
}
