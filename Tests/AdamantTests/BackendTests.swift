import XCTest
import CBackend
@testable import Adamant

/// The compute backend picks its OpenBLAS kernel itself and owns the threads.
final class BackendTests: XCTestCase {
    func testFastKernelIsChosenFromCPUIDAndXCR0() throws {
        XCTAssertEqual(abk_init(), 1, "OpenBLAS (libopenblas0) must be installed")
        var cpu = abk_cpu()
        abk_cpu_features(&cpu)
        let kernel = String(cString: abk_kernel()).lowercased()
        XCTAssertNotEqual(kernel, "portable")
        // AVX-512 is only used when the OS saves the ZMM state too.
        if cpu.os_avx512 != 0 { XCTAssertEqual(cpu.os_avx, 1) }
        guard getenv("OPENBLAS_CORETYPE") == nil else { return }  // a user's choice wins
        if cpu.avx512 != 0 && cpu.os_avx512 != 0 {
            XCTAssertEqual(kernel, "skylakex")
        } else if cpu.avx2 != 0 && cpu.fma != 0 && cpu.os_avx != 0 {
            XCTAssertNotEqual(kernel, "prescott")
        }
        XCTAssertTrue(String(cString: abk_info()).contains("kernel="))
    }

    func testThreadCountDoesNotChangeResults() throws {
        let m = try Model.load(path: examplesDir + "/mbn_resnet8.adv.onnx")
        let x = randomTensor([6, 3, 32, 32], seed: 21).data.map { ($0 + 1) / 2 }
        let before = abk_get_threads()
        defer { abk_set_threads(before) }
        abk_set_threads(1)
        let one = try Session(model: m).gradient(x, batch: 6, labels: [0, 1, 2, 3, 4, 5], loss: .crossEntropy, domain: 0)
        abk_set_threads(2)
        let two = try Session(model: m).gradient(x, batch: 6, labels: [0, 1, 2, 3, 4, 5], loss: .crossEntropy, domain: 0)
        XCTAssertEqual(one.logits, two.logits)
        XCTAssertEqual(one.gradient, two.gradient)
    }
}
