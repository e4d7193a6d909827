import XCTest
@testable import Adamant

/// APGD (issue #12): the DLR losses' gradients, ball invariants, determinism and batch
/// independence on the shipped example model.
final class APGDTests: XCTestCase {
    lazy var model: Model = try! Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                                      ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])

    func images(_ n: Int, seed: UInt64 = 5) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    func testDLRGradientsMatchFiniteDifferences() {
        let z = randomTensor([3, 6], seed: 9, scale: 3).data
        let labels: [Int64] = [0, 4, 2], targets: [Int64] = [5, 1, 3]
        for loss in [Loss.dlr, .dlrTargeted] {
            let t = loss == .dlrTargeted ? targets : nil
            let (l, dz) = Losses.evaluate(logits: z, classes: 6, labels: labels, loss: loss, targets: t)
            for i in 0..<z.count {
                var p = z, m = z
                p[i] += 1e-3; m[i] -= 1e-3
                let lp = Losses.evaluate(logits: p, classes: 6, labels: labels, loss: loss, targets: t).0
                let lm = Losses.evaluate(logits: m, classes: 6, labels: labels, loss: loss, targets: t).0
                XCTAssertEqual(dz[i], (lp[i / 6] - lm[i / 6]) / 2e-3, accuracy: 2e-2, "\(loss) logit \(i)")
            }
            // The value by its definition.
            for n in 0..<3 {
                let zz = Array(z[(n * 6)..<((n + 1) * 6)]).map(Double.init)
                let s = zz.sorted(by: >), y = Int(labels[n])
                let ref: Double
                if loss == .dlr {
                    let other = zz.enumerated().filter { $0.offset != y }.map { $0.element }.max()!
                    ref = -(zz[y] - other) / (s[0] - s[2] + 1e-12)
                } else {
                    ref = -(zz[y] - zz[Int(targets[n])]) / (s[0] - 0.5 * (s[2] + s[3]) + 1e-12)
                }
                XCTAssertEqual(Double(l[n]), ref, accuracy: 1e-5)
            }
        }
    }

    func testStaysInTheBallAndIsDeterministic() throws {
        let s = Session(model: model)
        let x = images(4)
        for norm in [Norm.linf, .l2] {
            var c = APGDConfig()
            c.norm = norm; c.eps = norm == .linf ? 8.0 / 255 : 0.5; c.steps = 6; c.seed = 3
            let r = try s.apgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
            for i in 0..<4 {
                var l2: Float = 0
                for j in 0..<3072 {
                    let a = r.adversarial[i * 3072 + j], d = a - x[i * 3072 + j]
                    XCTAssertTrue(a >= 0 && a <= 1)
                    if norm == .linf { XCTAssertLessThanOrEqual(abs(d), c.eps + 1e-6) }
                    l2 += d * d
                }
                if norm == .l2 { XCTAssertLessThanOrEqual(l2.squareRoot(), c.eps * 1.0001) }
                XCTAssertEqual(r.success[i], r.predictions[i] != [0, 1, 2, 3][i])
            }
            XCTAssertEqual(try s.apgd(x, batch: 4, labels: [0, 1, 2, 3], config: c).adversarial, r.adversarial)
        }
    }

    func testSampleOffsetMakesBatchingIrrelevant() throws {
        let s = Session(model: model)
        let x = images(4, seed: 13)
        var c = APGDConfig.apgdT(eps: 8.0 / 255, steps: 4, topTargets: 3)
        c.seed = 5
        let whole = try s.apgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
        c.sampleOffset = 2
        let tail = try s.apgd(Array(x[(2 * 3072)...]), batch: 2, labels: [2, 3], config: c)
        XCTAssertEqual(Array(whole.adversarial[(2 * 3072)...]), tail.adversarial)
        XCTAssertEqual(Array(whole.targets[2...]), tail.targets)
        XCTAssertEqual(Array(whole.loss[2...]), tail.loss)
    }

    func testBadConfigurationsAreErrors() throws {
        let s = Session(model: model)
        let x = images(1)
        var bad: [APGDConfig] = []
        var c = APGDConfig(); c.eps = 0; bad.append(c)
        c = APGDConfig(); c.steps = 0; bad.append(c)
        c = APGDConfig(); c.rho = -1; bad.append(c)
        c = APGDConfig(); c.loss = .dlrTargeted; bad.append(c)
        c = APGDConfig(); c.topTargets = 2; c.targets = .random; bad.append(c)
        c = APGDConfig(); c.attackDomain = 7; bad.append(c)
        for c in bad { XCTAssertThrowsError(try s.apgd(x, batch: 1, labels: [0], config: c)) }
        var lite = APGDConfig(); lite.loss = .dlr
        XCTAssertThrowsError(try s.autoAttackLite(x, batch: 1, labels: [0], config: lite))
    }
}
