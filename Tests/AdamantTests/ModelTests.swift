import XCTest
@testable import Adamant

/// Loading, BN domains, the single-file format, hostile inputs.
final class ModelTests: XCTestCase {
    var clean: String { examplesDir + "/mbn_resnet8.clean.onnx" }
    var adv: String { examplesDir + "/mbn_resnet8.adv.onnx" }

    func testPerDomainSetMatchesSingleFiles() throws {
        let set = try Model.load(domains: [("clean", clean), ("adv", adv)])
        XCTAssertEqual(set.domains, ["clean", "adv"])
        XCTAssertEqual(set.defaultDomain, 0)
        let x = randomTensor([4, 3, 32, 32], seed: 1).data.map { ($0 + 1) / 2 }
        let s = Session(model: set)
        let a = try s.predict(x, batch: 4, domain: 0)
        let b = try s.predict(x, batch: 4, domain: 1)
        XCTAssertEqual(a, try Session(model: try Model.load(path: clean)).predict(x, batch: 4, domain: 0))
        XCTAssertEqual(b, try Session(model: try Model.load(path: adv)).predict(x, batch: 4, domain: 0))
        XCTAssertNotEqual(a, b)
        XCTAssertThrowsError(try s.predict(x, batch: 4, domain: 2)) { XCTAssertEqual(($0 as? AdamantError)?.kind, .domain) }
        XCTAssertThrowsError(try set.domainIndex("nope")) { XCTAssertEqual(($0 as? AdamantError)?.kind, .domain) }
    }

    func testSingleFileRoundTrip() throws {
        let set = try Model.load(domains: [("clean", clean), ("adv", adv)], options: LoadOptions(defaultDomain: "adv"))
        let bytes = try set.serialized()
        let back = try Model.load(bytes: bytes)
        XCTAssertEqual(back.domains, ["clean", "adv"])
        XCTAssertEqual(back.domains[back.defaultDomain], "adv")
        let x = randomTensor([3, 3, 32, 32], seed: 2).data.map { ($0 + 1) / 2 }
        for d in 0..<2 {
            XCTAssertEqual(try Session(model: back).predict(x, batch: 3, domain: d), try Session(model: set).predict(x, batch: 3, domain: d))
        }
        // Saving again is stable.
        XCTAssertEqual(try Model.load(bytes: try back.serialized()).domains, ["clean", "adv"])
    }

    func testBatchIndependence() throws {
        let m = try Model.load(domains: [("clean", clean), ("adv", adv)])
        let s = Session(model: m)
        let x = randomTensor([5, 3, 32, 32], seed: 3).data.map { ($0 + 1) / 2 }
        let per = 3 * 32 * 32
        let all = try s.gradient(x, batch: 5, labels: [0, 1, 2, 3, 4], loss: .crossEntropy, domain: 1)
        let one = try s.gradient(Array(x[(2 * per)..<(3 * per)]), batch: 1, labels: [2], loss: .crossEntropy, domain: 1)
        XCTAssertEqual(all.loss[2], one.loss[0], accuracy: 1e-5)
        let diff = zip(all.gradient[(2 * per)..<(3 * per)], one.gradient).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(diff, 1e-6)
    }

    func testDifferentNetworksAreRejectedAsDomains() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: mbnDir), "needs ../shared")
        XCTAssertThrowsError(try Model.load(domains: [("a", clean), ("b", mbnDir + "/mbn_resnet14.clean.onnx")])) {
            XCTAssertEqual(($0 as? AdamantError)?.kind, .domain)
        }
        XCTAssertThrowsError(try Model.load(domains: [("a", externalDir + "/cifar10_resnet_2b.onnx"),
                                                       ("b", externalDir + "/cifar10_resnet_2b.onnx")])) {
            XCTAssertTrue(String(describing: $0).contains("BatchNormalization"), "\($0)")
        }
    }

    /// Per-domain files are compared by digest as they are read (none is kept whole): a weight that
    /// differs is still found and named down to its element, and identical files load as domains.
    func testPerDomainFilesCompareTheirWeights() throws {
        let dir = NSTemporaryDirectory() + "adamant_domains_\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (a, b) = (dir + "/a.onnx", dir + "/b.onnx")
        _ = try ResNetSpec.cifar(depth: 8, seed: 1).write(to: a)
        _ = try ResNetSpec.cifar(depth: 8, seed: 2).write(to: b)
        XCTAssertThrowsError(try Model.load(domains: [("clean", a), ("adv", b)])) {
            let e = $0 as? AdamantError
            XCTAssertEqual(e?.kind, .domain)
            XCTAssertTrue(e?.message.contains("constant input 1 differs at element 0 (") ?? false, "\($0)")
            XCTAssertTrue(e?.message.contains("only BatchNormalization parameters may differ") ?? false, "\($0)")
        }
        let m = try Model.load(domains: [("clean", a), ("adv", a)])
        XCTAssertEqual(m.domains, ["clean", "adv"])
        let x = randomTensor([2, 3, 32, 32], seed: 5).data.map { ($0 + 1) / 2 }
        let s = Session(model: m)
        XCTAssertEqual(try s.predict(x, batch: 2, domain: 0), try s.predict(x, batch: 2, domain: 1))
        XCTAssertEqual(try s.predict(x, batch: 2, domain: 0), try Session(model: try Model.load(path: a)).predict(x, batch: 2, domain: 0))
    }

    func testFixedBatchExportRunsBatched() throws {
        try XCTSkipUnless(FileManager.default.fileExists(atPath: externalDir), "needs ../shared")
        for f in ["cifar10_resnet_2b.onnx", "cifar10_sri_resnet_a.onnx"] {
            let m = try Model.load(path: externalDir + "/" + f, options: LoadOptions(mean: [0.4914, 0.4822, 0.4465], std: [0.2471, 0.2435, 0.2616]))
            let s = Session(model: m)
            let x = randomTensor([4, 3, 32, 32], seed: 4).data.map { ($0 + 1) / 2 }
            let batched = try s.predict(x, batch: 4, domain: 0)
            for i in 0..<4 {
                let single = try s.predict(Array(x[(i * 3072)..<((i + 1) * 3072)]), batch: 1, domain: 0)
                for j in 0..<10 { XCTAssertEqual(batched[i * 10 + j], single[j], accuracy: 1e-4) }
            }
        }
    }

    func testHostileInputsGiveErrors() throws {
        let good = try readFile(clean)
        let cases: [(String, [UInt8])] = [
            ("empty", []), ("garbage", (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 2654435761 >> 7) }),
            ("truncated", Array(good[0..<(good.count / 2)])),
        ]
        for (name, bytes) in cases {
            XCTAssertThrowsError(try Model.load(bytes: bytes), name) {
                XCTAssertEqual(($0 as? AdamantError)?.kind, .parse, "\(name): \($0)")
            }
        }
        XCTAssertThrowsError(try Model.load(path: "/nonexistent/model.onnx")) { XCTAssertEqual(($0 as? AdamantError)?.kind, .io) }
        let m = try Model.load(path: clean)
        XCTAssertThrowsError(try Session(model: m).predict([Float](repeating: 0, count: 100), batch: 1, domain: 0)) {
            XCTAssertEqual(($0 as? AdamantError)?.kind, .shape)
        }
        XCTAssertThrowsError(try Session(model: m).gradient([Float](repeating: 0, count: 3072), batch: 1, labels: [10], loss: .crossEntropy, domain: 0)) {
            XCTAssertEqual(($0 as? AdamantError)?.kind, .invalidArgument)
        }
        XCTAssertThrowsError(try Model.load(path: clean, options: LoadOptions(mean: [0.5, 0.5]))) {
            XCTAssertEqual(($0 as? AdamantError)?.kind, .invalidArgument)
        }
    }
}
