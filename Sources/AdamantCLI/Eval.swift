import ArgumentParser
import Adamant
import Foundation

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Accuracy under attack per BN domain, as in the paper's tables.",
        discussion: """
        For each evaluated domain: clean accuracy, accuracy under attack, and attack success rate
        (untargeted: prediction != label; targeted: prediction == target, over all images). The attack
        runs through the evaluated domain unless --attack-domain is given.

        --ray[=ADDRESS] splits the images over Ray workers (pgd, fgsm or none): the images are decoded \
        here as without --ray, then handed to the Python package (python3 -m adamant.distributed; the \
        interpreter is $ADAMANT_PYTHON, else python3 on PATH, and needs `pip install 'adamant[ray]'`). \
        Without ADDRESS a local Ray cluster is started on the loopback interface (and stopped); \
        ADDRESS joins a running one ("auto", "host:6379", "ray://host:10001"). Each worker loads the \
        model once and attacks a contiguous shard with the images' global indices as their random \
        streams' keys, so the numbers equal those without --ray for the same --seed. A row's time \
        covers its clean pass and its attack. Python or Ray missing: exit 1 with a message.
        """)
    @OptionGroup var model: ModelOptions
    @Option(help: "A .tar/.tar.gz/directory of <class>/<image> (e.g. ../shared/data/cifar10/test.tar.gz).") var data: String
    @Option(parsing: .unconditional, help: "Use at most this many images, spread evenly over the sorted set (0 = all).") var limit: Int = 1000
    @Option(help: "pgd, fgsm, apgd-ce, apgd-t, autoattack-lite (APGD-CE then APGD-T on the images still robust; one row per attack) or none.") var attack: String = "pgd"
    @Option(parsing: .unconditional, help: "apgd-t, autoattack-lite: APGD-T's target classes per image (the most likely wrong ones), >= 1.") var nTargetClasses: Int = 9
    @OptionGroup var attackOptions: AttackOptions
    @Option(help: "Domains to evaluate (comma-separated, or 'all').") var domains: String = "all"
    @Option(parsing: .unconditional, help: "Images per call (>= 1).") var batchSize: Int = 100
    @Option(help: "Write the results as JSON to this file.") var json: String?
    @Flag(help: "Evaluate on Ray workers (pgd, fgsm or none; details above); --ray=ADDRESS joins a running cluster.") var ray = false
    @Option(help: ArgumentHelp("The Ray cluster for --ray (as --ray=ADDRESS); default: start a local one.", valueName: "address")) var rayAddress: String?
    @Option(parsing: .unconditional, help: "With --ray: Ray workers (default: one per CPU of the cluster); each runs --threads compute threads (default: the cluster's CPUs / workers).") var workers: Int?

    func validate() throws {
        try require(limit, atLeast: 0, "--limit", " (0 = all images)")
        try require(batchSize, atLeast: 1, "--batch-size")
        guard (["pgd", "fgsm", "none"] + apgdKinds).contains(attack.lowercased()) else {
            throw ValidationError("--attack must be pgd, fgsm, apgd-ce, apgd-t, autoattack-lite or none, got '\(attack)'")
        }
        if domains.isEmpty { throw ValidationError("--domains must name at least one domain (or 'all')") }
        try attackOptions.check(fgsm: attack.lowercased() == "fgsm", stepList: true)
        if apgdKinds.contains(attack.lowercased()) { try attackOptions.checkAPGD(kind: attack.lowercased(), targetClasses: nTargetClasses) }
        if ray || rayAddress != nil || workers != nil {
            guard ray || rayAddress != nil else { throw ValidationError("--workers goes with --ray") }
            guard ["pgd", "fgsm", "none"].contains(attack.lowercased()) else {
                throw ValidationError("--ray evaluates --attack pgd, fgsm or none, got '\(attack)'")
            }
            if let w = workers { try require(w, in: 1...4096, "--workers") }
            if let a = rayAddress, a.isEmpty { throw ValidationError("--ray=ADDRESS needs an address (or plain --ray for a local cluster)") }
            if attackOptions.preset != nil, try attackOptions.stepList().count > 1 {
                throw ValidationError("--preset with --ray takes one --steps count (its step size depends on it)")
            }
        }
    }

    func run() throws {
        if let json { try checkOutputFile(json, "--json") }
        let m = try model.load()
        var set = try readDataset(data, limit: limit)
        guard set.shape == m.inputShape else { throw CLIError(.data, "--data: images are \(set.shape), the model expects \(m.inputShape)") }
        toPixelSpace(&set, m)
        let labels = set.labels!
        let session = Session(model: m)
        let doms = try resolveDomains(domains, m, option: "--domains")
        let kind = attack.lowercased()
        let per = m.inputShape.reduce(1, *), k = m.numClasses
        let isAPGD = apgdKinds.contains(kind)
        let stepCounts = kind == "pgd" || isAPGD ? try attackOptions.stepList() : [1]
        let apgdBase = isAPGD ? try attackOptions.apgdConfig(kind: kind, model: m, targetClasses: nTargetClasses) : nil
        let base = try attackOptions.config(model: m, batchLabels: labels, fgsm: kind == "fgsm", stepList: true)
        let attackD = try attackOptions.attackDomain.map { try resolveDomains($0, m, option: "--attack-domain")[0] }
        var rows: [[String]] = []
        var results: [[String: Any]] = []
        let started = Date()
        var rayInfo: [String: Any]?
        if ray || rayAddress != nil {
            let out = try runOnRay(set: set, model: m, domains: doms.map { m.domains[$0] }, kind: kind, steps: stepCounts,
                                   config: base, attackDomain: attackD.map { m.domains[$0] })
            for r in out.results {
                let domain = r["domain"] as? String ?? "?"
                let images = (r["images"] as? NSNumber)?.intValue ?? 0
                let clean = (r["clean_acc"] as? NSNumber)?.doubleValue ?? .nan
                let secs = (r["seconds"] as? NSNumber)?.doubleValue ?? .nan
                if kind == "none" {
                    rows.append([domain, "\(images)", percent(clean), String(format: "%.1f s", secs)])
                    results.append(["domain": domain, "images": images, "clean_acc": clean, "seconds": secs])
                    continue
                }
                let label = r["attack"] as? String ?? "?", via = r["attack_domain"] as? String ?? domain
                let robust = (r["robust_acc"] as? NSNumber)?.doubleValue ?? .nan
                let success = (r["attack_success_rate"] as? NSNumber)?.doubleValue ?? .nan
                rows.append([domain, "\(images)", percent(clean), label, via, percent(robust), percent(success),
                             String(format: "%.1f s", secs)])
                results.append(["domain": domain, "images": images, "clean_acc": clean, "attack": label,
                                "steps": (r["steps"] as? NSNumber)?.intValue ?? 1, "alpha": Double(base.alpha),
                                "attack_domain": via, "robust_acc": robust,
                                "attack_success_rate": success, "seconds": secs])
            }
            rayInfo = ["workers": out.workers, "threads_per_worker": out.threads, "address": rayAddress ?? "local"]
        }
        let nn = Double(set.count)
        func batches(_ body: (Int, Int) throws -> Void) rethrows {
            var start = 0
            while start < set.count { let n = min(batchSize, set.count - start); try body(start, n); start += n }
        }
        for d in doms where rayInfo == nil {
            var clean = 0
            let t0 = Date()
            try batches { start, n in
                let z = try session.predict(Array(set.pixels[(start * per)..<((start + n) * per)]), batch: n, domain: d)
                for (i, p) in predictedClasses(logits: z, classes: k).enumerated() where p == labels[start + i] { clean += 1 }
            }
            let cleanSecs = Date().timeIntervalSince(t0)
            if kind == "none" {
                rows.append([m.domains[d], "\(set.count)", percent(Double(clean) / nn), String(format: "%.1f s", cleanSecs)])
                results.append(["domain": m.domains[d], "images": set.count, "clean_acc": Double(clean) / nn, "seconds": cleanSecs])
                continue
            }
            for steps in stepCounts where isAPGD {
                var c = apgdBase!
                c.steps = steps
                c.attackDomain = attackD ?? d
                c.evalDomain = d
                let names = kind == "autoattack-lite" ? ["APGD-CE-\(steps)", "+ APGD-T-\(steps)"]
                    : [kind == "apgd-ce" ? "APGD-CE-\(steps)" : "APGD-T-\(steps)"]
                var robust = [Int](repeating: 0, count: names.count)
                let bar = ProgressBar(total: set.count, label: "\(m.domains[d]) \(kind)-\(steps)")
                let t1 = Date()
                try batches { start, n in
                    var cc = c
                    cc.sampleOffset = UInt64(start)
                    let y = Array(labels[start..<(start + n)])
                    let x = Array(set.pixels[(start * per)..<((start + n) * per)])
                    if kind == "autoattack-lite" {
                        let (_, rep) = try session.autoAttackLite(x, batch: n, labels: y, config: cc)
                        robust[0] += rep.robustAfterCE; robust[1] += rep.robustAfterT
                    } else {
                        let r = try session.apgd(x, batch: n, labels: y, config: cc)
                        robust[0] += (0..<n).filter { r.predictions[$0] == y[$0] }.count
                    }
                    bar.update(start + n)
                }
                let secs = Date().timeIntervalSince(t1)
                for (j, label) in names.enumerated() {
                    let acc = Double(robust[j]) / nn
                    rows.append([m.domains[d], "\(set.count)", percent(Double(clean) / nn), label, m.domains[attackD ?? d],
                                 percent(acc), percent(1 - acc), j == names.count - 1 ? String(format: "%.1f s", secs) : ""])
                    results.append(["domain": m.domains[d], "images": set.count, "clean_acc": Double(clean) / nn,
                                    "attack": label, "steps": steps, "attack_domain": m.domains[attackD ?? d],
                                    "robust_acc": acc, "attack_success_rate": 1 - acc, "seconds": secs])
                }
            }
            for steps in stepCounts where !isAPGD {
                var c = base
                c.steps = steps
                if attackOptions.preset != nil { c.alpha = attackOptions.xie2020(model: m, steps: steps).alpha }
                c.attackDomain = attackD ?? d
                c.evalDomain = d
                let label = kind == "fgsm" ? "FGSM" : "PGD-\(steps)"
                var robust = 0, success = 0
                let bar = ProgressBar(total: set.count, label: "\(m.domains[d]) \(label)")
                let t1 = Date()
                try batches { start, n in
                    var cc = c
                    if case .targeted(let t) = base.targets { cc.targets = .targeted(Array(t[start..<(start + n)])) }
                    cc.sampleOffset = UInt64(start)
                    let y = Array(labels[start..<(start + n)])
                    let r = try session.pgd(Array(set.pixels[(start * per)..<((start + n) * per)]), batch: n, labels: y, config: cc)
                    for i in 0..<n {
                        if r.predictions[i] == y[i] { robust += 1 }
                        if r.success[i] { success += 1 }
                    }
                    bar.update(start + n)
                }
                let secs = Date().timeIntervalSince(t1)
                rows.append([m.domains[d], "\(set.count)", percent(Double(clean) / nn), label, m.domains[attackD ?? d],
                             percent(Double(robust) / nn), percent(Double(success) / nn), String(format: "%.1f s", secs)])
                results.append(["domain": m.domains[d], "images": set.count, "clean_acc": Double(clean) / nn,
                                "attack": label, "steps": c.steps, "alpha": Double(c.alpha), "attack_domain": m.domains[attackD ?? d],
                                "robust_acc": Double(robust) / nn, "attack_success_rate": Double(success) / nn, "seconds": secs])
            }
        }
        let name = isAPGD ? ["apgd-ce": "APGD-CE untargeted", "apgd-t": "APGD-T (targeted DLR, top-\(nTargetClasses) classes)",
                             "autoattack-lite": "AutoAttack-lite (APGD-CE, then APGD-T top-\(nTargetClasses) on the images still robust)"][kind]! +
            " \(attackOptions.norm) eps=\(base.eps)"
            : kind == "none" ? "none" : (kind == "fgsm" ? "FGSM" : "PGD") +
            (attackOptions.isTargeted ? " targeted(\(attackOptions.targetedValue!))" : " untargeted") +
            " \(attackOptions.norm) eps=\(base.eps)"
        let alphaText = attackOptions.preset != nil
            ? "max(\((m.preprocessing.pixelMax - m.preprocessing.pixelMin) / 255), eps/steps) (preset xie2020)" : "\(base.alpha)"
        let extra = kind == "pgd" ? ", alpha=\(alphaText), restarts=\(base.restarts), random start=\(base.randomStart)"
            : isAPGD ? ", restarts=\(base.restarts), rho=0.75, momentum=0.75, first step 2 x eps, random start=\(base.randomStart)" : ""
        if let r = rayInfo {
            let w = r["workers"] as! Int, t = r["threads_per_worker"] as! Int
            print("\nRay (\(r["address"]!)): \(w) worker\(w == 1 ? "" : "s") x \(t) thread\(t == 1 ? "" : "s")", terminator: "")
        }
        print("\nattack: \(name)\(extra)")
        var header = ["domain", "images", "clean acc"]
        if kind != "none" { header += ["attack", "attacked via", "acc under attack", "attack success"] }
        header.append("time")
        printTable(header, rows)
        if let json {
            try writeJSON(["model": model.model ?? model.domainFiles.joined(separator: ","), "data": data, "attack": name,
                           "eps": Double(base.eps), "alpha": isAPGD ? 2 * Double(base.eps) : Double(base.alpha), "steps": stepCounts,
                           "targeted": attackOptions.targetedValue ?? "no", "seed": base.seed,
                           "seconds": Date().timeIntervalSince(started), "results": results].merging(rayInfo.map { ["ray": $0] } ?? [:]) { a, _ in a },
                          to: json, option: "--json")
        }
    }
}

struct Calibrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build a new BN domain from data and write the multi-domain model.",
        discussion: """
        Images (clean, or adversarial ones adamant generates with --source pgd) run through the network
        with every BatchNorm normalizing by its batch statistics; the new domain's running mean/var are
        their averages, its affine parameters are copied from --base.
        """)
    @OptionGroup var model: ModelOptions
    @Option(help: "A .tar/.tar.gz/directory of <class>/<image>.") var data: String
    @Option(help: "Name of the new domain.") var name: String
    @Option(help: "Domain to copy affine parameters from (and to attack through with --source pgd).") var base: String?
    @Option(help: "clean or pgd.") var source: String = "clean"
    @OptionGroup var attackOptions: AttackOptions
    @Option(parsing: .unconditional, help: "Use at most this many images (0 = all).") var limit: Int = 1000
    @Option(parsing: .unconditional, help: "Images per batch, >= 2 (batch statistics are taken per batch).") var batchSize: Int = 100
    @Option(name: [.customShort("o"), .long], help: "Output ONNX file.") var output: String

    func validate() throws {
        try require(limit, atLeast: 0, "--limit", " (0 = all images)")
        try require(batchSize, atLeast: 2, "--batch-size", " (batch statistics need two images)")
        guard ["clean", "pgd"].contains(source) else { throw ValidationError("--source must be clean or pgd, got '\(source)'") }
        guard !name.isEmpty else { throw ValidationError("--name must not be empty") }
        if let b = base, b.isEmpty { throw ValidationError("--base must name a domain") }
        try attackOptions.check(fgsm: false, stepList: false)
    }

    func run() throws {
        try checkOutputFile(output, "--output")
        let m = try model.load()
        var set = try readDataset(data, limit: limit)
        guard set.shape == m.inputShape else { throw CLIError(.data, "--data: images are \(set.shape), the model expects \(m.inputShape)") }
        toPixelSpace(&set, m)
        let baseD = try base.map { try resolveDomains($0, m, option: "--base")[0] } ?? m.defaultDomain
        let cal = try Calibrator(model: m, baseDomain: baseD)
        let session = Session(model: m)
        var c = try attackOptions.config(model: m, batchLabels: set.labels)
        c.attackDomain = try attackOptions.attackDomain.map { try resolveDomains($0, m, option: "--attack-domain")[0] } ?? baseD
        c.evalDomain = c.attackDomain
        let per = m.inputShape.reduce(1, *)
        let bar = ProgressBar(total: set.count, label: "calibrate")
        var start = 0
        while start < set.count {
            let n = min(batchSize, set.count - start)
            guard n >= 2 else { break }
            var x = Array(set.pixels[(start * per)..<((start + n) * per)])
            if source == "pgd" {
                var cc = c
                if case .targeted(let t) = c.targets { cc.targets = .targeted(Array(t[start..<(start + n)])) }
            cc.sampleOffset = UInt64(start)
                x = try session.pgd(x, batch: n, labels: Array(set.labels![start..<(start + n)]), config: cc).adversarial
            }
            try cal.add(x, batch: n)
            start += n
            bar.update(start)
        }
        let out: Model
        do { out = try cal.finish(name: name) } catch let e as AdamantError where e.kind == .domain {
            throw CLIError.usage("--name: \(e.message)")
        }
        try writingOutput(output, "--output") { try out.save(to: output) }
        print("wrote \(output): domains \(out.domains.joined(separator: ", ")); '\(name)' calibrated on \(cal.images) \(source) images from '\(m.domains[baseD])'")
    }
}
