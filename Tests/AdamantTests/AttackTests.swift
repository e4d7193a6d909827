import XCTest
@testable import Adamant

/// PGD invariants, determinism and calibration on the shipped example model.
final class AttackTests: XCTestCase {
    lazy var model: Model = try! Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                                      ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])

    func images(_ n: Int, seed: UInt64 = 5) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    func testLinfAndL2StayInTheBallAndRange() throws {
        let s = Session(model: model)
        let x = images(4)
        for norm in [Norm.linf, .l2] {
            var c = PGDConfig()
            c.norm = norm; c.eps = norm == .linf ? 8.0 / 255 : 0.5; c.alpha = norm == .linf ? 2.0 / 255 : 0.1; c.steps = 5
            let r = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
            for i in 0..<4 {
                var l2: Float = 0
                for j in 0..<3072 {
                    let a = r.adversarial[i * 3072 + j], d = a - x[i * 3072 + j]
                    XCTAssertTrue(a >= 0 && a <= 1)
                    if norm == .linf { XCTAssertLessThanOrEqual(abs(d), c.eps + 1e-6) }
                    l2 += d * d
                }
                if norm == .l2 { XCTAssertLessThanOrEqual(l2.squareRoot(), c.eps * 1.0001) }
            }
        }
    }

    func testDeterministicAndSeedDependent() throws {
        let s = Session(model: model)
        let x = images(3)
        var c = PGDConfig()
        c.steps = 3; c.seed = 7; c.targets = .random
        let a = try s.pgd(x, batch: 3, labels: [1, 2, 3], config: c)
        let b = try s.pgd(x, batch: 3, labels: [1, 2, 3], config: c)
        XCTAssertEqual(a.adversarial, b.adversarial)
        XCTAssertEqual(a.targets, b.targets)
        c.seed = 8
        XCTAssertNotEqual(try s.pgd(x, batch: 3, labels: [1, 2, 3], config: c).adversarial, a.adversarial)
        for i in 0..<3 {
            XCTAssertNotEqual(a.targets[i], [1, 2, 3][i])
            XCTAssertEqual(a.success[i], a.predictions[i] == a.targets[i])
        }
    }

    func testSampleOffsetMakesBatchingIrrelevant() throws {
        let s = Session(model: model)
        let x = images(4, seed: 13)
        var c = PGDConfig()
        c.steps = 2; c.seed = 5; c.targets = .random
        let whole = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
        c.sampleOffset = 2
        let tail = try s.pgd(Array(x[(2 * 3072)...]), batch: 2, labels: [2, 3], config: c)
        XCTAssertEqual(Array(whole.adversarial[(2 * 3072)...]), tail.adversarial)
        XCTAssertEqual(Array(whole.targets[2...]), tail.targets)
    }

    func testPGDMatchesManualSignGradientSteps() throws {
        // One un-randomized step equals x + alpha * sign(grad), clipped.
        let s = Session(model: model)
        let x = images(2)
        var c = PGDConfig()
        c.steps = 1; c.randomStart = false; c.alpha = 1.0 / 255; c.attackDomain = 1; c.evalDomain = 0
        let r = try s.pgd(x, batch: 2, labels: [3, 4], config: c)
        let g = try s.gradient(x, batch: 2, labels: [3, 4], loss: .crossEntropy, domain: 1).gradient
        for j in 0..<x.count {
            let expected = min(max(x[j] + c.alpha * (g[j] > 0 ? 1 : g[j] < 0 ? -1 : 0), 0), 1)
            XCTAssertEqual(r.adversarial[j], expected, accuracy: 1e-7)
        }
    }

    func testRestartsAndEarlyStop() throws {
        let s = Session(model: model)
        let x = images(4, seed: 9)
        var c = PGDConfig()
        c.steps = 6; c.earlyStop = true
        let r = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
        XCTAssertTrue(r.stepsUsed.allSatisfy { $0 >= 1 && $0 <= 6 })
        c.earlyStop = false; c.restarts = 3; c.steps = 2
        let many = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
        c.restarts = 1
        let one = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
        for i in 0..<4 where !one.success[i] && !many.success[i] {
            XCTAssertGreaterThanOrEqual(many.loss[i], one.loss[i] - 1e-5)  // restart 0 is the single run
        }
    }

    func testBadArguments() {
        let s = Session(model: model)
        let x = images(1)
        var c = PGDConfig()
        c.eps = -1
        XCTAssertThrowsError(try s.pgd(x, batch: 1, labels: [0], config: c))
        c = PGDConfig(); c.steps = 0
        XCTAssertThrowsError(try s.pgd(x, batch: 1, labels: [0], config: c))
        c = PGDConfig(); c.attackDomain = 5
        XCTAssertThrowsError(try s.pgd(x, batch: 1, labels: [0], config: c)) { XCTAssertEqual(($0 as? AdamantError)?.kind, .domain) }
        c = PGDConfig()
        XCTAssertThrowsError(try s.pgd(x, batch: 1, labels: [10], config: c))
        c.targets = .targeted([0])
        XCTAssertThrowsError(try s.pgd(x, batch: 1, labels: [0], config: c))
    }

    func testCalibrationBuildsANewDomain() throws {
        let cal = try Calibrator(model: model, baseDomain: 0)
        XCTAssertThrowsError(try cal.finish(name: "x"))
        try cal.add(images(16, seed: 11), batch: 16)
        try cal.add(images(16, seed: 12), batch: 16)
        let m = try cal.finish(name: "synthetic")
        XCTAssertEqual(m.domains, ["clean", "adv", "synthetic"])
        let base = try m.batchNormParameters(domain: 0), new = try m.batchNormParameters(domain: 2)
        XCTAssertEqual(base[0].scale, new[0].scale)
        XCTAssertNotEqual(base[0].mean, new[0].mean)
        XCTAssertTrue(new.allSatisfy { $0.variance.allSatisfy { $0 > 0 } })
        let back = try Model.load(bytes: try m.serialized())
        XCTAssertEqual(try back.batchNormParameters(domain: 2), new)
        XCTAssertThrowsError(try cal.finish(name: "clean")) { XCTAssertEqual(($0 as? AdamantError)?.kind, .domain) }
        XCTAssertThrowsError(try cal.add(images(1), batch: 1))
    }
}
