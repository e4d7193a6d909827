import ArgumentParser
import Adamant
import Foundation

/// PGD settings shared by attack, eval and calibrate.
struct AttackOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: "Radius in pixel units (e.g. 8/255), > 0 (default 8/255).") var eps: String?
    @Option(help: ArgumentHelp("A reference threat model: xie2020 = the evaluation of Xie et al. (Feature Denoising, CVPR 2019; ImageNet-Adversarial-Training's adv_model.py): targeted L-inf PGD towards a random wrong class, cross-entropy, random start, eps = 16/255 of the model's pixel range (16 for pixels in [0, 255]), step max(1/255 of the range, eps/steps). Sets --eps, --alpha and --targeted (which must then be left out).", valueName: "name"))
    var preset: String?
    @Option(parsing: .unconditional, help: "Step size in pixel units, > 0 (default: eps/4 for PGD, eps for FGSM).") var alpha: String?
    @Option(parsing: .unconditional, help: "PGD iterations, 1 to \(AttackOptions.maxStepsTotal) (eval also takes a list, e.g. 10,50,200, for one row per count).") var steps: String = "10"
    @Option(help: "linf or l2.") var norm: String = "linf"
    @Option(parsing: .unconditional, help: "'random' (uniform among wrong classes) or a class index; omit for untargeted.") var targeted: String?
    @Option(parsing: .unconditional, help: "Independent restarts (>= 1); per sample the strongest is kept.") var restarts: Int = 1
    @Option(help: "ce or cw.") var loss: String = "ce"
    @Flag(inversion: .prefixedNo, help: "Start uniformly inside the ball.") var randomStart = true
    @Flag(help: "Stop a sample once it succeeds.") var earlyStop = false
    @Option(help: "Domain whose gradients drive the attack (default: the evaluated domain).") var attackDomain: String?
    @Option(parsing: .unconditional, help: "Random seed, 0 to 2^64-1.") var seed: UInt64 = 0

    /// The bound on steps x restarts (the C ABI's default max_attack_steps_total).
    static let maxStepsTotal = 100_000

    /// Checks every value (for validate()): each bad one names its option.
    func check(fgsm: Bool, stepList allowList: Bool) throws {
        if let preset {
            guard preset.lowercased() == "xie2020" else { throw ValidationError("--preset must be xie2020, got '\(preset)'") }
            if fgsm { throw ValidationError("--preset xie2020 is a PGD attack; it does not go with FGSM") }
            for (given, name) in [(eps != nil, "--eps"), (alpha != nil, "--alpha"), (targeted != nil, "--targeted")] where given {
                throw ValidationError("\(name) does not go with --preset xie2020, which sets it")
            }
            guard ["linf", "inf"].contains(norm.lowercased()) else { throw ValidationError("--preset xie2020 is an L-inf attack; --norm \(norm) does not go with it") }
            guard loss.lowercased() == "ce" else { throw ValidationError("--preset xie2020 uses cross-entropy; --loss \(loss) does not go with it") }
            guard randomStart else { throw ValidationError("--preset xie2020 starts at a random point; --no-random-start does not go with it") }
        }
        let e = try positiveNumber(epsText, "--eps")
        if let alpha { _ = try positiveNumber(alpha, "--alpha") } else if !fgsm && !(e / 4 > 0) {
            throw ValidationError("--eps = '\(eps)' is too small: the default --alpha = eps/4 underflows to 0")
        }
        let list = try stepList()
        guard list.count == 1 || fgsm || allowList else { throw ValidationError("--steps takes one count here, got '\(steps)'") }
        try require(restarts, in: 1...AttackOptions.maxStepsTotal, "--restarts")
        for s in list where !fgsm && s * restarts > AttackOptions.maxStepsTotal {
            throw ValidationError("--steps x --restarts = \(s) x \(restarts) exceeds \(AttackOptions.maxStepsTotal)")
        }
        guard ["linf", "inf", "l2"].contains(norm.lowercased()) else { throw ValidationError("--norm must be linf or l2, got '\(norm)'") }
        guard ["ce", "cw"].contains(loss.lowercased()) else { throw ValidationError("--loss must be ce or cw, got '\(loss)'") }
        if let t = targeted, t != "random" {
            guard let cls = Int64(t) else { throw ValidationError("--targeted must be 'random' or a class index, got '\(t)'") }
            try require(cls, atLeast: 0, "--targeted", " (a class index)")
        }
        if let a = attackDomain, a.isEmpty { throw ValidationError("--attack-domain must name a domain") }
    }

    func config(model: Model, batchLabels: [Int64]? = nil, fgsm: Bool = false, stepList allowList: Bool = false) throws -> PGDConfig {
        try check(fgsm: fgsm, stepList: allowList)
        var c = PGDConfig()
        c.eps = try positiveNumber(epsText, "--eps")
        c.alpha = try alpha.map { try positiveNumber($0, "--alpha") } ?? (fgsm ? c.eps : c.eps / 4)
        let list = try stepList()
        c.steps = fgsm ? 1 : list[0]
        if preset != nil {
            let p = xie2020(model: model, steps: c.steps)
            c.eps = p.eps
            c.alpha = p.alpha
        }
        c.randomStart = fgsm ? false : randomStart
        c.restarts = restarts
        c.earlyStop = earlyStop
        c.seed = seed
        switch norm.lowercased() {
        case "linf", "inf": c.norm = .linf
        case "l2": c.norm = .l2
        default: throw ValidationError("--norm must be linf or l2")
        }
        switch loss.lowercased() {
        case "ce": c.loss = .crossEntropy
        case "cw": c.loss = .cwMargin
        default: throw ValidationError("--loss must be ce or cw")
        }
        if let t = targetedValue {
            if t == "random" { c.targets = .random }
            else if let cls = Int64(t) {
                guard cls >= 0 && cls < Int64(model.numClasses) else {
                    throw ValidationError("--targeted class \(cls) is out of range: the model has \(model.numClasses) classes (0 to \(model.numClasses - 1))")
                }
                if let labels = batchLabels { c.targets = .targeted([Int64](repeating: cls, count: labels.count)) }
            }
        }
        return c
    }

    var isTargeted: Bool { targetedValue != nil }

    /// --eps as given, else the default 8/255 (with --preset: unused).
    var epsText: String { eps ?? "8/255" }

    /// --targeted, or "random" under --preset xie2020.
    var targetedValue: String? { preset != nil ? "random" : targeted }

    /// The reference threat model of Xie et al. (adv_model.py's PGDAttacker) in the model's pixel
    /// units: eps = 16/255 of the pixel range, step = max(1/255 of it, eps / steps).
    func xie2020(model: Model, steps: Int) -> (eps: Float, alpha: Float) {
        let range = model.preprocessing.pixelMax - model.preprocessing.pixelMin
        let eps = 16 / 255 * range
        return (eps, max(range / 255, eps / Float(max(1, steps))))
    }

    /// The step counts of --steps.
    func stepList() throws -> [Int] {
        let parts = steps.split(separator: ",", omittingEmptySubsequences: false)
        let v = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !v.isEmpty, v.count == parts.count, v.allSatisfy({ $0 >= 1 && $0 <= AttackOptions.maxStepsTotal }) else {
            throw ValidationError("--steps must be counts from 1 to \(AttackOptions.maxStepsTotal), e.g. 10 or 10,50,200; got '\(steps)'")
        }
        return v
    }
}

/// The APGD attacks of `attack --attack` and `eval --attack`.
let apgdKinds = ["apgd-ce", "apgd-t", "autoattack-lite"]

extension AttackOptions {
    /// Checks that the PGD-only options are left alone for an APGD attack (`kind`).
    func checkAPGD(kind: String, targetClasses: Int) throws {
        if preset != nil { throw ValidationError("--preset xie2020 is a PGD attack; it does not go with --attack \(kind)") }
        if alpha != nil { throw ValidationError("--alpha does not apply to --attack \(kind): APGD's step size starts at 2 x eps and adapts") }
        if targeted != nil { throw ValidationError("--targeted does not apply to --attack \(kind): apgd-t targets the --n-target-classes most likely wrong classes") }
        if loss.lowercased() != "ce" { throw ValidationError("--loss does not apply to --attack \(kind): apgd-ce uses cross-entropy, apgd-t targeted DLR") }
        if earlyStop { throw ValidationError("--early-stop does not apply to --attack \(kind): APGD always stops a sample at its first success") }
        try require(targetClasses, in: 1...100_000, "--n-target-classes")
        for s in try stepList() where s * restarts * (kind == "apgd-ce" ? 1 : targetClasses + (kind == "autoattack-lite" ? 1 : 0)) > AttackOptions.maxStepsTotal {
            throw ValidationError("--steps x --restarts x targets = \(s) x \(restarts) x \(kind == "apgd-ce" ? 1 : targetClasses + (kind == "autoattack-lite" ? 1 : 0)) exceeds \(AttackOptions.maxStepsTotal)")
        }
    }

    /// APGD settings for `kind` (apgd-ce; apgd-t, autoattack-lite: with `targetClasses` targets).
    func apgdConfig(kind: String, model: Model, targetClasses: Int) throws -> APGDConfig {
        try checkAPGD(kind: kind, targetClasses: targetClasses)
        var c = APGDConfig()
        c.eps = try positiveNumber(epsText, "--eps")
        c.steps = try stepList()[0]
        c.restarts = restarts
        c.randomStart = randomStart
        c.seed = seed
        c.norm = ["l2"].contains(norm.lowercased()) ? .l2 : .linf
        if kind == "apgd-t" {
            c.loss = .dlr
            c.topTargets = targetClasses
            guard model.numClasses >= 4 else {
                throw ValidationError("--attack apgd-t needs at least 4 classes (targeted DLR); the model has \(model.numClasses)")
            }
        } else if kind == "autoattack-lite" {
            c.topTargets = targetClasses
            guard model.numClasses >= 4 else {
                throw ValidationError("--attack autoattack-lite needs at least 4 classes (APGD-T's targeted DLR); the model has \(model.numClasses)")
            }
        }
        return c
    }
}

struct Attack: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate adversarial images (PNG) and a JSON report.",
        discussion: "Labels come from the dataset folders, or --label for image files (default: the model's own prediction).")
    @OptionGroup var model: ModelOptions
    @Argument(help: "Image files (JPEG/PNG), or one .tar/.tar.gz/directory of <class>/<image>.") var images: [String] = []
    @OptionGroup var attack: AttackOptions
    @Option(help: "Domain that judges success (default: the default domain).") var evalDomain: String?
    @Option(parsing: .unconditional, help: "True label for image files (default: the model's prediction on the clean image).") var label: Int64?
    @Option(parsing: .unconditional, help: "Read at most this many images (0 = all).") var limit: Int = 0
    @Option(parsing: .unconditional, help: "Images per attack call (>= 1).") var batchSize: Int = 100
    @Option(name: [.customShort("o"), .long], help: "Output directory for PNGs and report.json.") var output: String = "adamant-attack"
    @Flag(help: "Use FGSM (one step of size eps).") var fgsm = false
    @Flag(help: "Scale image files whose size differs from the model's input to it (bilinear); without this such a file is an error (exit 65).") var resize = false
    @Option(name: .customLong("attack"), help: "pgd, apgd-ce (Auto-PGD, cross-entropy) or apgd-t (Auto-PGD, targeted DLR over the most likely wrong classes; success = misclassified).") var method: String = "pgd"
    @Option(parsing: .unconditional, help: "apgd-t: target classes per image (the most likely wrong ones by clean logits), >= 1.") var nTargetClasses: Int = 9

    var kind: String { method.lowercased() }

    func validate() throws {
        guard ["pgd", "apgd-ce", "apgd-t"].contains(kind) else { throw ValidationError("--attack must be pgd, apgd-ce or apgd-t, got '\(method)'") }
        if kind != "pgd" {
            if fgsm { throw ValidationError("--fgsm does not go with --attack \(kind)") }
            try attack.checkAPGD(kind: kind, targetClasses: nTargetClasses)
        }
        if let label { try require(label, atLeast: 0, "--label", " (a class index)") }
        try require(limit, atLeast: 0, "--limit", " (0 = all images)")
        try require(batchSize, atLeast: 1, "--batch-size")
        if let e = evalDomain, e.isEmpty { throw ValidationError("--eval-domain must name a domain") }
        try attack.check(fgsm: fgsm, stepList: false)
    }

    func run() throws {
        try makeOutputDirectory(output, "--output")
        let (m, inputs) = try model.loadWithImages(images)
        if let label, label >= Int64(m.numClasses) {
            throw ValidationError("--label \(label) is out of range: the model has \(m.numClasses) classes (0 to \(m.numClasses - 1))")
        }
        let set = try loadInputs(inputs, model: m, limit: limit, resize: resize)
        let session = Session(model: m)
        let evalD = try evalDomain.map { try resolveDomains($0, m, option: "--eval-domain")[0] } ?? m.defaultDomain
        let attackD = try attack.attackDomain.map { try resolveDomains($0, m, option: "--attack-domain")[0] } ?? evalD
        let per = m.inputShape.reduce(1, *)
        var labels = set.labels ?? []
        if labels.isEmpty {
            if let l = label { labels = [Int64](repeating: l, count: set.count) } else {
                labels = predictedClasses(logits: try session.predict(set.pixels, batch: set.count, domain: evalD),
                                          classes: m.numClasses)
            }
        }
        var c = try attack.config(model: m, batchLabels: labels, fgsm: fgsm)
        c.attackDomain = attackD; c.evalDomain = evalD
        var ac: APGDConfig? = nil
        if kind != "pgd" {
            ac = try attack.apgdConfig(kind: kind, model: m, targetClasses: nTargetClasses)
            ac!.attackDomain = attackD; ac!.evalDomain = evalD
        }
        let bar = ProgressBar(total: set.count, label: "attack")
        var records: [[String: Any]] = []
        var start = 0
        while start < set.count {
            let n = min(batchSize, set.count - start)
            var cc = c
            if case .targeted(let t) = c.targets { cc.targets = .targeted(Array(t[start..<(start + n)])) }
            cc.sampleOffset = UInt64(start)
            let x = Array(set.pixels[(start * per)..<((start + n) * per)])
            let r: AttackResult
            if var a = ac {
                a.sampleOffset = UInt64(start)
                r = try session.apgd(x, batch: n, labels: Array(labels[start..<(start + n)]), config: a)
            } else {
                r = try session.pgd(x, batch: n, labels: Array(labels[start..<(start + n)]), config: cc)
            }
            for i in 0..<n {
                let file = String(format: "%05d.png", start + i)
                try writePNG(output + "/" + file, r.adversarial[(i * per)..<((i + 1) * per)], shape: m.inputShape, pre: m.preprocessing)
                var linf: Float = 0, l2: Float = 0
                for j in 0..<per { let d = r.adversarial[i * per + j] - x[i * per + j]; linf = max(linf, abs(d)); l2 += d * d }
                records.append(["source": set.names[start + i], "png": file, "label": Int(labels[start + i]),
                                "target": Int(r.targets[i]), "prediction": Int(r.predictions[i]), "success": r.success[i],
                                "loss": Double(r.loss[i]), "steps_used": Int(r.stepsUsed[i]),
                                "linf": Double(linf), "l2": Double(l2.squareRoot())])
            }
            start += n
            bar.update(start)
        }
        let rate = Double(records.filter { $0["success"] as! Bool }.count) / Double(max(1, records.count))
        let report: [String: Any] = [
            "model": model.model ?? model.domainFiles.joined(separator: ","), "attack_domain": m.domains[attackD],
            "eval_domain": m.domains[evalD], "attack": kind == "pgd" ? (fgsm ? "fgsm" : "pgd") : kind,
            "eps": Double(c.eps), "alpha": kind == "pgd" ? Double(c.alpha) : 2 * Double(c.eps), "steps": c.steps,
            "norm": attack.norm, "targeted": kind == "apgd-t" ? "top-\(nTargetClasses)" : (attack.targetedValue ?? "no"), "restarts": c.restarts, "seed": c.seed,
            "success_rate": rate, "images": records]
        try writeJSON(report, to: output + "/report.json", option: "--output")
        print("attack success rate \(percent(rate)) on \(records.count) images (\(m.domains[attackD]) -> \(m.domains[evalD])); wrote \(output)/report.json and \(records.count) PNGs")
    }
}
