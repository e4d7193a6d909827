import XCTest
@testable import Adamant

/// The ResNet synthesizer (Sources/Adamant/Synth): family shapes, and small members that load,
/// count the ops, parameters and FLOPs of the closed-form architecture, and give finite logits.
final class SynthTests: XCTestCase {
    func testFamilyStages() throws {
        XCTAssertEqual(try ResNetSpec.imagenetStages(depth: 50), [3, 4, 6, 3])
        XCTAssertEqual(try ResNetSpec.imagenetStages(depth: 101), [3, 4, 23, 3])
        XCTAssertEqual(try ResNetSpec.imagenetStages(depth: 152), [3, 8, 36, 3])
        XCTAssertEqual(try ResNetSpec.imagenetStages(depth: 200), [3, 24, 36, 3])
        XCTAssertEqual(try ResNetSpec.imagenetStages(depth: 638), [3, 24, 182, 3])
        for d in [50, 101, 152, 200, 338, 638] { XCTAssertEqual(try ResNetSpec.imagenet(depth: d).depth, d) }
        XCTAssertEqual(try ResNetSpec.cifar(depth: 1202).stages, [200, 200, 200])
        for d in [8, 20, 56, 110, 1202] { XCTAssertEqual(try ResNetSpec.cifar(depth: d).depth, d) }
        XCTAssertEqual(try ResNetSpec.imagenet(depth: 101).name, "resnet101")
        XCTAssertEqual(try ResNetSpec.cifar(depth: 20).name, "cifar_resnet20")
        for bad in [18, 34, 100, 201] { XCTAssertThrowsError(try ResNetSpec.imagenet(depth: bad)) }
        for bad in [0, 7, 21] { XCTAssertThrowsError(try ResNetSpec.cifar(depth: bad)) }
    }

    /// Counts of the architecture, computed from the spec by formula (independently of the builder).
    struct Expected { var convs = 0, bns = 0, relus = 0, adds = 0, params = 0, flops = 0 }

    func expected(_ s: ResNetSpec) -> Expected {
        var e = Expected()
        var h = s.inputSize
        func conv(_ cin: Int, _ cout: Int, _ k: Int, _ stride: Int, _ hin: Int) -> Int {
            let hout = (hin + 2 * (k / 2) - k) / stride + 1
            e.convs += 1; e.bns += 1
            e.params += cout * cin * k * k + 2 * cout           // weights, BN gamma and beta
            e.flops += 2 * cout * hout * hout * cin * k * k + 2 * cout * hout * hout  // conv + BN
            return hout
        }
        h = conv(3, s.stemWidth, s.imagenetStem ? 7 : 3, s.imagenetStem ? 2 : 1, h)
        e.relus += 1
        if s.imagenetStem {
            h = (h + 2 - 3) / 2 + 1
            e.flops += s.stemWidth * h * h * 9  // max pool
        }
        var cin = s.stemWidth
        for (si, (n, w)) in zip(s.stages, s.stageWidths).enumerated() {
            for bi in 0..<n {
                let stride = bi == 0 && si > 0 ? 2 : 1
                let cout = w * s.expansion
                var ho: Int
                if s.block == .bottleneck {
                    _ = conv(cin, w, 1, 1, h); ho = conv(w, w, 3, stride, h); _ = conv(w, cout, 1, 1, ho)
                    e.relus += 3
                } else {
                    ho = conv(cin, w, 3, stride, h); _ = conv(w, w, 3, 1, ho)
                    e.relus += 2
                }
                if stride != 1 || cin != cout { _ = conv(cin, cout, 1, stride, h) }
                e.adds += 1
                e.flops += cout * ho * ho  // add
                h = ho; cin = cout
            }
        }
        e.flops += cin * h * h + 2 * s.classes * cin  // global average pool, fc
        e.params += s.classes * cin + s.classes
        return e
    }

    func check(_ s: ResNetSpec, file: StaticString = #filePath, line: UInt = #line) throws {
        let bytes = try s.serialized()
        let m = try Model.load(bytes: bytes)
        let info = try m.info()
        let e = expected(s)
        let ops = Dictionary(uniqueKeysWithValues: info.ops)
        XCTAssertEqual(ops["Conv"], e.convs, file: file, line: line)
        XCTAssertEqual(ops["BatchNormalization"], e.bns, file: file, line: line)
        XCTAssertEqual(ops["Relu"], e.relus, file: file, line: line)
        XCTAssertEqual(ops["Add"], e.adds, file: file, line: line)
        XCTAssertEqual(ops["MaxPool"], s.imagenetStem ? 1 : nil, file: file, line: line)
        XCTAssertEqual(ops["Gemm"], 1, file: file, line: line)
        XCTAssertEqual(info.parameters, e.params, file: file, line: line)
        XCTAssertEqual(info.flopsPerSample, e.flops, file: file, line: line)
        XCTAssertEqual(info.batchNormNodes, e.bns, file: file, line: line)
        XCTAssertEqual(m.inputShape, [3, s.inputSize, s.inputSize], file: file, line: line)
        XCTAssertEqual(m.numClasses, s.classes, file: file, line: line)
        XCTAssertNil(info.declaredBatch, "the batch dimension is symbolic", file: file, line: line)
        XCTAssertEqual(m.domains, ["default"], file: file, line: line)
        // Finite, input-dependent logits at batch 3.
        let b = 3
        var rng = Xoshiro256(seed: 5)
        let x = (0..<(b * 3 * s.inputSize * s.inputSize)).map { _ in rng.unitFloat() }
        let z = try Session(model: m).predict(x, batch: b, domain: 0)
        XCTAssertEqual(z.count, b * s.classes, file: file, line: line)
        XCTAssertTrue(z.allSatisfy { $0.isFinite }, "logits \(z)", file: file, line: line)
        XCTAssertGreaterThan(z.map(abs).max()!, 1e-3, file: file, line: line)
        XCTAssertNotEqual(Array(z[0..<s.classes]), Array(z[s.classes..<(2 * s.classes)]), file: file, line: line)
        // Reproducible: same seed, same bytes; another seed, other weights.
        XCTAssertEqual(try s.serialized(), bytes, file: file, line: line)
        var other = s
        other.seed += 1
        XCTAssertNotEqual(try other.serialized(), bytes, file: file, line: line)
    }

    func testCifarResNet8() throws {
        let s = try ResNetSpec.cifar(depth: 8)
        try check(s)
        XCTAssertEqual(expected(s).params, 78_042)  // by hand: 464 + 4,672 + 14,528 + 57,728 + 650
    }

    func testTinyBottleneck() throws {
        let s = ResNetSpec(block: .bottleneck, stages: [1, 2, 1, 1], stageWidths: [4, 8, 16, 32], stemWidth: 8,
                           imagenetStem: true, inputSize: 32, classes: 7, seed: 3)
        XCTAssertEqual(s.depth, 3 * 5 + 2)
        try check(s)
    }

    func testWriteToFile() throws {
        let s = try ResNetSpec.cifar(depth: 14, seed: 9)
        let path = NSTemporaryDirectory() + "adamant_synth_test_\(getpid()).onnx"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let summary = try s.write(to: path)
        let m = try Model.load(path: path)
        let bnFloats = try m.batchNormParameters(domain: 0).reduce(0) { $0 + 4 * $1.mean.count }
        // Every float in the file: parameters (BN affine included) + BN running mean and variance.
        XCTAssertEqual(summary.weightFloats, try m.info().parameters + bnFloats / 2)
        XCTAssertEqual(try Array(Data(contentsOf: URL(fileURLWithPath: path))), try s.serialized())
    }
}
