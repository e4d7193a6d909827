import Foundation
import XCTest
@testable import Adamant

/// Replays the fuzzer's kept crashers (Tests/Fuzz/regressions, which include the five reproducers of
/// issue #8 from ../shared/regressions/models) the way the fuzz target runs a model: load, then one
/// predict and one gradient on a single image when the input has at most 64 x 64 pixels. Each must
/// be refused with an AdamantError or run; a trap or sanitizer report would end the test process.
final class FuzzRegressionTests: XCTestCase {
    func cases() throws -> [String] {
        var paths: [String] = []
        for dir in [repoRoot + "/Tests/Fuzz/regressions", sharedDir + "/regressions/models"] {
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { continue }
            paths += names.filter { !$0.hasSuffix(".md") }.sorted().map { dir + "/" + $0 }
        }
        return paths
    }

    func testEveryKeptCrasherIsRefusedOrRuns() throws {
        let paths = try cases()
        XCTAssertGreaterThanOrEqual(paths.count, 5)
        for path in paths {
            let bytes = try XCTUnwrap(FileManager.default.contents(atPath: path), path)
            let model: Model
            do {
                model = try Model.load(bytes: [UInt8](bytes))
            } catch let e as AdamantError {
                XCTAssertFalse(e.message.isEmpty, path)
                continue
            }
            let shape = model.inputShape
            guard shape.count == 3, shape[1] * shape[2] <= 64 * 64, shape[0] <= 16 else { continue }
            let s = Session(model: model)
            let x = [Float](repeating: 0.5, count: shape.product)
            do {
                _ = try s.predict(x, batch: 1, domain: model.defaultDomain)
                _ = try s.gradient(x, batch: 1, labels: [0], loss: .crossEntropy, domain: model.defaultDomain)
            } catch is AdamantError {
                // a clear error is an acceptable outcome
            }
        }
    }

    /// The five reproducers of issue #8 are kept here, so the replay needs no ../shared.
    func testSharedReproducersAreKept() {
        for name in ["attr_tensor_type_without_tensor", "conv_dilation_2e62", "conv_pad_int64max",
                     "conv_stride_int64max", "input_batch_dim_2e62"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: repoRoot + "/Tests/Fuzz/regressions/\(name).onnx"), name)
        }
    }
}
