import CBackend
import XCTest
@testable import Adamant

/// Issue #8: the load-time memory cap (weights + one call's planned activations), allocation
/// failures as errors, and cancelling predict / gradient between ops.
final class MemoryTests: XCTestCase {
    let clean = examplesDir + "/mbn_resnet8.clean.onnx"
    lazy var model: Model = try! Model.load(path: clean)

    func images(_ n: Int, seed: UInt64) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    /// The estimate from the plan is an upper bound of what the pool really lends at once (for
    /// single pieces and for batches split over threads), and not wildly above it.
    func testActivationEstimateBoundsThePoolsPeak() throws {
        let before = abk_get_threads()
        defer { abk_set_threads(before) }
        for threads in [1, 2] {
            abk_set_threads(Int32(threads))
            for batch in [1, 4, 64, 300] {
                let x = images(batch, seed: UInt64(batch))
                for kind in [CallKind.predict, .gradient] {
                    let s = Session(model: model)
                    s.resetPeakMemory()
                    if kind == .predict {
                        _ = try s.predict(x, batch: batch, domain: 0)
                    } else {
                        _ = try s.gradient(x, batch: batch, labels: (0..<batch).map { Int64($0 % 10) }, loss: .crossEntropy, domain: 0)
                    }
                    let real = s.peakPoolFootprint * 4
                    let estimate = model.activationBytes(batch: batch, kind: kind, threads: threads)
                    XCTAssertGreaterThan(real, 0)
                    XCTAssertGreaterThanOrEqual(estimate, real, "\(kind) batch \(batch), \(threads) threads: estimate below the pool's footprint")
                    // Above it by the call's own copies of the input and per-thread scratch, and by what
                    // the simulation cannot see (in-place ops): within 4x + 32 MB.
                    XCTAssertLessThanOrEqual(estimate, 4 * real + (32 << 20), "\(kind) batch \(batch): estimate far above the real footprint")
                }
            }
        }
        // Per sample: a gradient keeps every activation, so it needs more than a predict.
        XCTAssertGreaterThan(model.memoryPlan.gradientFloats, model.memoryPlan.forwardFloats)
        XCTAssertEqual(model.activationBytes(batch: 0, kind: .predict), 0)
        XCTAssertEqual(model.activationBytes(batch: Int.max / 2, kind: .attack), Int.max, "overflow must saturate")
    }

    /// The estimate is cached per model (one entry, every call checks its memory first): it follows
    /// its arguments and the schedule's settable budget, never an earlier call's.
    func testActivationEstimateFollowsItsInputs() throws {
        let budget = Schedule.gradientBudgetBytes
        defer { Schedule.gradientBudgetBytes = budget }
        for (batch, kind, threads) in [(8, CallKind.gradient, 2), (8, .predict, 2), (8, .gradient, 1), (3, .gradient, 2)] {
            Schedule.gradientBudgetBytes = budget
            let before = model.activationBytes(batch: batch, kind: kind, threads: threads)
            Schedule.gradientBudgetBytes = 0  // every gradient keeps a compact tape
            let zero = model.activationBytes(batch: batch, kind: kind, threads: threads)
            let fresh = try Model.load(path: clean)  // (one cached entry: each call below computes anew)
            XCTAssertEqual(zero, fresh.activationBytes(batch: batch, kind: kind, threads: threads))
            if kind == .gradient { XCTAssertNotEqual(zero, before, "batch \(batch): a compact tape's estimate is another") }
            Schedule.gradientBudgetBytes = budget
            XCTAssertEqual(model.activationBytes(batch: batch, kind: kind, threads: threads), before)
            XCTAssertEqual(model.activationBytes(batch: batch + 1, kind: kind, threads: threads),
                           fresh.activationBytes(batch: batch + 1, kind: kind, threads: threads))
        }
    }

    /// The same bound on other layer mixes: an ImageNet ResNet-50 (Winograd, im2col stem, pointwise
    /// bottlenecks, 224 x 224) and the external CIFAR exports of ../shared (when present).
    func testActivationEstimateOnOtherArchitectures() throws {
        var models = [("resnet50", try Model.load(bytes: try ResNetSpec.imagenet(depth: 50).serialized()), [1, 3])]
        for name in ["cifar10_resnet_2b", "cifar10_sri_resnet_a"] {
            let path = externalDir + "/\(name).onnx"
            if FileManager.default.fileExists(atPath: path) { models.append((name, try Model.load(path: path), [1, 37])) }
        }
        for (name, m, batches) in models {
            let per = m.inputShape.product
            for batch in batches {
                let x = randomTensor([batch] + m.inputShape, seed: 3).data.map { ($0 + 1) / 2 }
                XCTAssertEqual(x.count, batch * per)
                for kind in [CallKind.predict, .gradient] {
                    let s = Session(model: m)
                    if kind == .predict {
                        _ = try s.predict(x, batch: batch, domain: 0)
                    } else {
                        _ = try s.gradient(x, batch: batch, labels: [Int64](repeating: 1, count: batch), loss: .crossEntropy, domain: 0)
                    }
                    let real = s.peakPoolFootprint * 4, estimate = m.activationBytes(batch: batch, kind: kind)
                    XCTAssertGreaterThanOrEqual(estimate, real, "\(name) \(kind) batch \(batch): estimate below the pool's footprint")
                    XCTAssertLessThanOrEqual(estimate, 4 * real + (32 << 20), "\(name) \(kind) batch \(batch)")
                }
            }
        }
    }

    func testLoadFailsWhenWeightsExceedTheLimit() throws {
        XCTAssertGreaterThan(model.weightBytes, 300_000)  // mbn_resnet8: ~78k parameters, packed
        XCTAssertThrowsError(try Model.load(path: clean, options: LoadOptions(memoryLimit: model.weightBytes - 1))) { e in
            let e = e as! AdamantError
            XCTAssertEqual(e.kind, .resource)
            XCTAssertTrue(e.message.contains("above the memory limit"), e.message)
        }
        XCTAssertThrowsError(try Model.load(path: clean, options: LoadOptions(memoryLimit: -1))) { e in
            XCTAssertEqual((e as! AdamantError).kind, .invalidArgument)
        }
        let m = try Model.load(path: clean, options: LoadOptions(memoryLimit: model.weightBytes))
        XCTAssertEqual(m.memoryLimit, model.weightBytes)
        XCTAssertNil(model.memoryLimit)
        // Calibration's new model keeps the cap.
        let cal = try Calibrator(model: try Model.load(path: clean, options: LoadOptions(memoryLimit: 1 << 30)), baseDomain: 0)
        try cal.add(images(4, seed: 1), batch: 4)
        XCTAssertEqual(try cal.finish(name: "cal").memoryLimit, 1 << 30)
    }

    /// A call whose planned activations would pass the cap fails before allocating anything; one
    /// that fits runs; the pool's buffers kept from a larger batch are dropped when they would
    /// push the next call past the cap.
    func testCallsOverTheCapFailBeforeAllocating() throws {
        let small = model.weightBytes + model.activationBytes(batch: 8, kind: .attack)
        let m = try Model.load(path: clean, options: LoadOptions(memoryLimit: small))
        let s = Session(model: m)
        let big = 2000
        let x = images(big, seed: 5)
        let labels = (0..<big).map { Int64($0 % 10) }
        func expectResource(_ body: () throws -> Void) {
            XCTAssertThrowsError(try body()) { e in
                let e = e as! AdamantError
                XCTAssertEqual(e.kind, .resource, e.message)
                XCTAssertTrue(e.message.contains("memory limit"), e.message)
            }
        }
        expectResource { _ = try s.predict(x, batch: big, domain: 0) }
        expectResource { _ = try s.gradient(x, batch: big, labels: labels, loss: .crossEntropy, domain: 0) }
        var c = PGDConfig(); c.steps = 1
        expectResource { _ = try s.pgd(x, batch: big, labels: labels, config: c) }
        expectResource { _ = try s.apgd(x, batch: big, labels: labels, config: APGDConfig()) }
        XCTAssertEqual(s.bufferAllocations, 0, "a refused call allocated buffers")
        // Within the cap: runs.
        let x8 = Array(x[0..<(8 * 3072)])
        _ = try s.predict(x8, batch: 8, domain: 0)
        _ = try s.gradient(x8, batch: 8, labels: Array(labels[0..<8]), loss: .crossEntropy, domain: 0)
        _ = try s.pgd(x8, batch: 8, labels: Array(labels[0..<8]), config: c)
        XCTAssertGreaterThan(s.bufferAllocations, 0)

        // A session that holds buffers of a large batch drops them when they would push a call past
        // the cap: find a batch whose predict fits alone but not on top of what the pool holds.
        let roomy = model.weightBytes + model.activationBytes(batch: 64, kind: .gradient)
        let m2 = try Model.load(path: clean, options: LoadOptions(memoryLimit: roomy))
        let s2 = Session(model: m2)
        _ = try s2.gradient(Array(x[0..<(64 * 3072)]), batch: 64, labels: Array(labels[0..<64]), loss: .crossEntropy, domain: 0)
        let held = s2.pool.heldBytes
        XCTAssertGreaterThan(held, 0)
        let room = roomy - m2.weightBytes
        // The pool keys buffers by piece size: the gradient's pieces have cacheFriendlyBatch samples.
        let cf = m2.cacheFriendlyBatch
        func pieceSizes(_ n: Int) -> Set<Int> {
            let pieces = (n + cf - 1) / cf
            guard pieces > 1 else { return [n] }
            let count = max(pieces, min(Parallel.threads, n))
            return Set([n / count, n / count + (n % count > 0 ? 1 : 0)])
        }
        let b = try XCTUnwrap((1...64).first { n in
            let need = m2.activationBytes(batch: n, kind: .predict)
            return need <= room && need + held > room && !pieceSizes(n).contains(cf)
        }, "no batch between 1 and 64 fits alone but not with the pool's buffers")
        XCTAssertGreaterThan(s2.pool.heldFloats(batch: cf), 0)
        _ = try s2.predict(Array(x[0..<(b * 3072)]), batch: b, domain: 0)
        XCTAssertEqual(s2.pool.heldFloats(batch: cf), 0, "the batch-64 buffers were kept past the cap")
        XCTAssertLessThanOrEqual(s2.pool.heldBytes, m2.activationBytes(batch: b, kind: .predict))
        // Without the cap the same session keeps them (they speed up the next batch-64 call).
        let s3 = Session(model: model)
        _ = try s3.gradient(Array(x[0..<(64 * 3072)]), batch: 64, labels: Array(labels[0..<64]), loss: .crossEntropy, domain: 0)
        _ = try s3.predict(Array(x[0..<(b * 3072)]), batch: b, domain: 0)
        XCTAssertGreaterThan(s3.pool.heldFloats(batch: cf), 0)
    }

    /// A buffer the system cannot give is a resource error, never an abort (Swift's allocator traps).
    func testAllocationFailureIsAnError() throws {
        XCTAssertThrowsError(try BufferPool.allocate(Int.max / 8)) { e in
            XCTAssertEqual((e as! AdamantError).kind, .resource)
        }
        XCTAssertThrowsError(try BufferPool.allocate(1 << 50)) { e in  // 4 PiB: refused by the kernel
            let e = e as! AdamantError
            XCTAssertEqual(e.kind, .resource)
            XCTAssertTrue(e.message.contains("out of memory"), e.message)
        }
        let pool = BufferPool()
        XCTAssertThrowsError(try pool.take(1 << 50, batch: 1))
        XCTAssertEqual(pool.allocations, 0)
        XCTAssertEqual(try pool.take(100, batch: 1).count, 100)
        // A batch whose activations the machine cannot hold fails before allocating (no cap set).
        let s = Session(model: model)
        let huge = 50_000_000  // ~600 GB of activations for a predict
        XCTAssertThrowsError(try s.checkMemory(batch: huge, kind: .predict)) { e in
            let e = e as! AdamantError
            XCTAssertEqual(e.kind, .resource)
            XCTAssertTrue(e.message.contains("available") || e.message.contains("cannot allocate"), e.message)
        }
        XCTAssertEqual(s.bufferAllocations, 0)
    }

    /// adm_context_cancel's mechanism: predict and gradient stop between two ops.
    func testPredictAndGradientStopBetweenOps() throws {
        let s = Session(model: model)
        let x = images(16, seed: 9)
        let labels = (0..<16).map { Int64($0 % 10) }
        final class Counter: @unchecked Sendable {
            let lock = NSLock()
            var n = 0
            func next() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
        }
        for kind in ["predict", "gradient"] {
            // Cancel after the third check: mid-pass, not before the first op.
            let calls = Counter()
            s.shouldCancel = { calls.next() > 3 }
            XCTAssertThrowsError(try {
                if kind == "predict" {
                    _ = try s.predict(x, batch: 16, domain: 0)
                } else {
                    _ = try s.gradient(x, batch: 16, labels: labels, loss: .crossEntropy, domain: 0)
                }
            }()) { e in
                let e = e as! AdamantError
                XCTAssertEqual(e.kind, .cancelled, e.message)
                XCTAssertTrue(e.message.contains("cancelled"), e.message)
            }
            XCTAssertGreaterThan(calls.n, 3)
        }
        s.shouldCancel = { false }
        let a = try s.predict(x, batch: 16, domain: 0)
        s.shouldCancel = nil
        XCTAssertEqual(try s.predict(x, batch: 16, domain: 0), a, "a cancelled call left a bad buffer behind")
        XCTAssertEqual(try Session(model: model).predict(x, batch: 16, domain: 0), a)
    }
}
