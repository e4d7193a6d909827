import CBackend
import XCTest
@testable import Adamant

/// The segmented schedule (``Schedule``): where a plan is cut, which segments run on the whole
/// batch, and that running a batch segment by segment (predict and gradient) gives every sample
/// exactly what it gets alone, allocating nothing after warm-up.
final class ScheduleTests: XCTestCase {
    func images(_ n: Int, seed: UInt64) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    /// ResNet-50: the stem and stages 1-3 run in pieces, stage 4 (18 MB of weights a block), the
    /// pooling and the classifier on the whole batch.
    func testResNet50CutsAfterStageThree() throws {
        let m = try Model.load(bytes: try ResNetSpec.imagenet(depth: 50).serialized())
        let segments = m.schedules[0]
        XCTAssertEqual(segments.first?.piece, 1)
        XCTAssertEqual(segments.first?.nodes.lowerBound, 0)
        XCTAssertEqual(segments.last?.nodes.upperBound, m.plans[0].graph.nodes.count)
        XCTAssertEqual(segments.last?.output, m.plans[0].graph.output)
        for (a, b) in zip(segments, segments.dropFirst()) {
            XCTAssertEqual(a.nodes.upperBound, b.nodes.lowerBound)
            XCTAssertEqual(a.output, b.input)
        }
        let shapes = try m.plans[0].graph.inferShapes(batch: 1)
        XCTAssertEqual(shapes[segments[0].output], [1, 1024, 14, 14], "the cut is not stage 3's output")
        XCTAssertNil(segments[1].piece, "stage 4 runs in pieces")
        // At batch 8: stages 0-3 in pieces of one sample, the rest (stage 4, pooling, the classifier,
        // whose 8 MB piece segment would be one piece) as one whole-batch run.
        let runs = Session(model: m).runs(segments, batch: 8)
        XCTAssertEqual(runs.map(\.piece), [1, nil], "\(runs)")
        XCTAssertEqual(runs.last?.nodes.upperBound, m.plans[0].graph.nodes.count)
        // A CIFAR ResNet's weights stay in cache: one segment, the plain pass.
        let cifar = try Model.load(bytes: try ResNetSpec.cifar(depth: 20).serialized())
        XCTAssertEqual(cifar.schedules[0].count, 1)
    }

    /// With the threshold lowered, mbn_resnet8 gets light and heavy segments: predict and gradient on
    /// batches run segment by segment (pieces joined, whole-batch segments with every thread) and
    /// agree bit for bit with each sample run alone, at 1 and 2 threads, and allocate nothing once
    /// warm. Above the gradient budget, the gradient falls back to pieces with the same bits.
    func testSegmentedPassesMatchEachSampleAlone() throws {
        let (heavy, budget) = (Schedule.heavyWeightFloats, Schedule.gradientBudgetBytes)
        let threadsBefore = abk_get_threads()
        defer {
            Schedule.heavyWeightFloats = heavy
            Schedule.gradientBudgetBytes = budget
            abk_set_threads(threadsBefore)
        }
        Schedule.heavyWeightFloats = 8192
        let model = try Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                             ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])
        let segments = model.schedules[1]
        XCTAssertGreaterThanOrEqual(segments.count, 2, "\(segments)")
        XCTAssertTrue(segments.contains { $0.piece == nil } && segments.contains { $0.piece != nil }, "\(segments)")
        // Consecutive segments tile the plan.
        for (a, b) in zip(segments, segments.dropFirst()) {
            XCTAssertEqual(a.nodes.upperBound, b.nodes.lowerBound)
            XCTAssertEqual(a.output, b.input)
        }
        let n = 21  // pieces of 8 (light segments) and one of 5
        let x = images(n, seed: 5)
        let labels = (0..<n).map { Int64($0 % 10) }
        let per = 3 * 32 * 32
        for threads in [1, 2] {
            abk_set_threads(Int32(threads))
            Schedule.gradientBudgetBytes = budget
            XCTAssertTrue(model.segmentsGradient(batch: n))
            let s = Session(model: model)
            let y = try s.predict(x, batch: n, domain: 1)
            let g = try s.gradient(x, batch: n, labels: labels, loss: .crossEntropy, domain: 1)
            let alone = Session(model: model)
            for i in 0..<n {
                let xi = Array(x[(i * per)..<((i + 1) * per)])
                XCTAssertEqual(try alone.predict(xi, batch: 1, domain: 1), Array(y[(i * 10)..<((i + 1) * 10)]),
                               "sample \(i), \(threads) threads: logits")
                let gi = try alone.gradient(xi, batch: 1, labels: [labels[i]], loss: .crossEntropy, domain: 1)
                XCTAssertEqual(gi.gradient, Array(g.gradient[(i * per)..<((i + 1) * per)]), "sample \(i), \(threads) threads: gradient")
                XCTAssertEqual(gi.loss, [g.loss[i]])
                XCTAssertEqual(gi.logits, Array(g.logits[(i * 10)..<((i + 1) * 10)]))
            }
            // Warm: no buffer allocated by the same calls again, and the same bits. (Pieces running
            // on two threads at once draw from their worker's lane of the pool: whatever the
            // interleaving, each lane needs no more buffers than the first call showed.)
            var counts: [Int] = []
            for _ in 0..<6 {
                XCTAssertEqual(try s.predict(x, batch: n, domain: 1), y)
                XCTAssertEqual(try s.gradient(x, batch: n, labels: labels, loss: .crossEntropy, domain: 1).gradient, g.gradient)
                counts.append(s.bufferAllocations)
            }
            XCTAssertEqual(counts[5], counts[0], "a segmented pass allocated after warm-up (\(threads) threads)")
            // The memory estimate covers what the pool really held.
            for kind in [CallKind.predict, .gradient] {
                let fresh = Session(model: model)
                if kind == .predict { _ = try fresh.predict(x, batch: n, domain: 1) } else {
                    _ = try fresh.gradient(x, batch: n, labels: labels, loss: .crossEntropy, domain: 1)
                }
                XCTAssertGreaterThanOrEqual(model.activationBytes(batch: n, kind: kind), fresh.peakPoolFootprint * 4, "\(kind)")
            }
            // Over the budget: pieces over the whole graph, the same gradient.
            Schedule.gradientBudgetBytes = 0
            XCTAssertFalse(model.segmentsGradient(batch: n))
            XCTAssertEqual(try Session(model: model).gradient(x, batch: n, labels: labels, loss: .crossEntropy, domain: 1).gradient,
                           g.gradient)
        }
    }

    /// A compact tape (``Executor/Tape``) keeps ReLU masks as bits and most other values by their
    /// shape, a fraction of the bytes, and gives the gradient of the whole tape bit for bit: on the
    /// fused plans and on the unfused graph (standalone BatchNorm, ReLU and Add), directly and
    /// through a session's pieces and segments; the memory estimate covers what its pool held.
    func testCompactTapeGivesTheSameGradient() throws {
        let (compactBefore, heavy) = (Schedule.compactTapeBytes, Schedule.heavyWeightFloats)
        defer { Schedule.compactTapeBytes = compactBefore; Schedule.heavyWeightFloats = heavy }
        Schedule.heavyWeightFloats = 8192
        let tiny = try Model.load(bytes: try ResNetSpec(block: .bottleneck, stages: [1, 2, 1, 1], stageWidths: [4, 8, 16, 32],
                                                        stemWidth: 8, imagenetStem: true, inputSize: 32, classes: 7,
                                                        seed: 3).serialized())
        let mbn = try Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                           ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])
        for (label, model, domain) in [("tiny bottleneck", tiny, 0), ("mbn_resnet8", mbn, 1)] {
            let n = 3
            let x = randomTensor([n] + model.inputShape, seed: 41)
            for (name, exec, bn) in [("plan", model.plans[domain], [BNParams]()), ("graph", model.executor, model.bn[domain])] {
                let what = "\(label), \(name)"
                let ctx = ExecContext(bn: bn, declaredBatch: nil, batch: n, threads: 1)
                let whole = try exec.forward(x, ctx, keep: true)
                let compact = try exec.forward(x, ctx, keep: true, compact: true)
                XCTAssertTrue(whole.output.data == compact.output.data, what)
                // Kept whole: only what some backward reads the values of; masks as bits.
                let computed = Array(Set(exec.graph.nodes.flatMap(\.outputs)))
                let kept = computed.filter { compact.tape.values[$0] != nil }
                XCTAssertTrue(kept.allSatisfy { exec.keptAs[$0] == .values }, what)
                XCTAssertTrue(compact.tape.compact.values.contains { $0.bits != nil }, what)
                XCTAssertEqual(kept.count + compact.tape.compact.count, computed.count, what)
                let wholeBytes = computed.reduce(0) { $0 + 4 * (whole.tape.values[$1]?.count ?? 0) }
                let compactBytes = kept.reduce(0) { $0 + 4 * compact.tape.values[$1]!.count }
                    + compact.tape.compact.values.reduce(0) { $0 + 8 * ($1.bits?.count ?? 0) }
                XCTAssertLessThan(compactBytes * 4, wholeBytes, what)
                let gy = randomTensor(whole.output.shape, seed: 42)
                let g1 = try exec.backward(whole.tape, gradOutput: gy, ctx)
                let g2 = try exec.backward(compact.tape, gradOutput: gy, ctx)
                XCTAssertTrue(g1.data == g2.data, what)
            }
            // Through a session (pieces, and segments where mbn_resnet8 has them): always compact
            // against never, the same gradient.
            let xs = images(n, seed: 43).prefix(n * model.inputShape.product).map { $0 }
            let labels = (0..<n).map { Int64($0 % 7) }
            Schedule.compactTapeBytes = Int.max
            let plain = try Session(model: model).gradient(xs, batch: n, labels: labels, loss: .crossEntropy, domain: domain)
            Schedule.compactTapeBytes = 0
            XCTAssertTrue(model.compactsGradient(batch: n))
            let fresh = Session(model: model)
            let small = try fresh.gradient(xs, batch: n, labels: labels, loss: .crossEntropy, domain: domain)
            XCTAssertTrue(plain.gradient == small.gradient && plain.logits == small.logits, label)
            XCTAssertGreaterThanOrEqual(model.activationBytes(batch: n, kind: .gradient), fresh.peakPoolFootprint * 4, label)
        }
    }
}
