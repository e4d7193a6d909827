import CBackend
import XCTest
@testable import Adamant

/// The session's recycled buffers: after the first call with a batch size, predict, gradient and
/// whole attacks draw every activation, gradient and scratch buffer from the pool, and reusing
/// stale buffers never changes a result.
final class RuntimeTests: XCTestCase {
    lazy var model: Model = try! Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                                      ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])

    func images(_ n: Int, seed: UInt64) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    func testNoBufferAllocationsAfterWarmUp() throws {
        let before = abk_get_threads()
        defer { abk_set_threads(before) }
        for threads in [1, 2] {
            abk_set_threads(Int32(threads))
            let s = Session(model: model)
            let x = images(4, seed: 1), y = images(4, seed: 2)
            let first = try s.predict(x, batch: 4, domain: 0)
            let warm = s.bufferAllocations
            XCTAssertGreaterThan(warm, 0)
            for _ in 0..<3 { _ = try s.predict(y, batch: 4, domain: 1) }
            XCTAssertEqual(try s.predict(x, batch: 4, domain: 0), first, "a recycled buffer changed a result")
            XCTAssertEqual(s.bufferAllocations, warm, "predict allocated after warm-up (threads \(threads))")
            // Nor does the pool grow: it takes back no more than it lent (ops that allocate their own
            // outputs, like the normalization's Sub/Div here, do not accumulate in it).
            let held = s.pool.heldFloats
            for _ in 0..<3 { _ = try s.predict(y, batch: 4, domain: 1) }
            XCTAssertEqual(s.pool.heldFloats, held, "the pool grew from call to call")

            let g1 = try s.gradient(x, batch: 4, labels: [0, 1, 2, 3], loss: .crossEntropy, domain: 1)
            let afterGradient = s.bufferAllocations
            _ = try s.gradient(y, batch: 4, labels: [3, 2, 1, 0], loss: .cwMargin, domain: 0)
            let g2 = try s.gradient(x, batch: 4, labels: [0, 1, 2, 3], loss: .crossEntropy, domain: 1)
            XCTAssertEqual(g1.gradient, g2.gradient)
            XCTAssertEqual(s.bufferAllocations, afterGradient, "gradient allocated after warm-up (threads \(threads))")

            var c = PGDConfig()
            c.steps = 5; c.seed = 3; c.targets = .random; c.restarts = 2
            let a1 = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
            let afterAttack = s.bufferAllocations
            let a2 = try s.pgd(x, batch: 4, labels: [0, 1, 2, 3], config: c)
            XCTAssertEqual(a1.adversarial, a2.adversarial)
            XCTAssertEqual(s.bufferAllocations, afterAttack, "a PGD run allocated after warm-up (threads \(threads))")

            // Batch sizes that keep changing (an attack's shrinking active set) keep the pool bounded:
            // only the buffers of the last few batch sizes stay.
            let fresh = Session(model: model)
            _ = try fresh.predict(images(12, seed: 12), batch: 12, domain: 0)
            let perCall12 = fresh.pool.heldFloats  // what one predict at batch 12 leaves in the pool
            XCTAssertGreaterThan(perCall12, 0)
            for b in 1...12 { _ = try s.predict(images(b, seed: UInt64(b)), batch: b, domain: 0) }
            // Kept: batch sizes 9-12, about (9+10+11+12)/12 = 3.5 calls at 12; all twelve would be 6.5.
            XCTAssertLessThanOrEqual(s.pool.heldFloats, 5 * perCall12, "the pool kept buffers for every batch size")
            // A fresh session (nothing recycled) agrees bit for bit.
            XCTAssertEqual(try Session(model: model).predict(x, batch: 4, domain: 0), first)
            s.releaseMemory()
            _ = try s.predict(x, batch: 4, domain: 0)
            XCTAssertGreaterThan(s.bufferAllocations, afterAttack, "releaseMemory kept the buffers")
        }
    }
}
