import XCTest
import CBackend
@testable import Adamant

/// The compute backend: kernel choice from CPUID/XCR0, the instruction-set override, and results
/// that never depend on the thread count, the batch size or batch-mates — on every ISA path.
final class BackendTests: XCTestCase {
    func testFastKernelIsChosenFromCPUIDAndXCR0() throws {
        XCTAssertEqual(abk_init(), 1, "OpenBLAS (libopenblas0) must be installed")
        var cpu = abk_cpu()
        abk_cpu_features(&cpu)
        let kernel = String(cString: abk_kernel()).lowercased()
        XCTAssertNotEqual(kernel, "portable")
        // AVX-512 is only used when the OS saves the ZMM state too.
        if cpu.os_avx512 != 0 { XCTAssertEqual(cpu.os_avx, 1) }
        if cpu.avx512 != 0 && cpu.fma != 0 && cpu.os_avx512 != 0 {
            XCTAssertEqual(Backend.supportedISA, .avx512)
        } else if cpu.avx2 != 0 && cpu.fma != 0 && cpu.os_avx != 0 {
            XCTAssertEqual(Backend.supportedISA, .avx2)
        } else {
            XCTAssertEqual(Backend.supportedISA, .scalar)
        }
        XCTAssertTrue(String(cString: abk_info()).contains("kernel="))
        // The OpenBLAS kernel follows an explicit ADAMANT_ISA; otherwise a user's OPENBLAS_CORETYPE wins.
        let isaEnv = getenv("ADAMANT_ISA").map { String(cString: $0) }
        let expected = ["scalar": "prescott", "avx2": "haswell", "avx512": "skylakex"]
        if let e = isaEnv, let want = expected[e.lowercased()] {
            XCTAssertEqual(kernel, want)
        } else if getenv("OPENBLAS_CORETYPE") == nil {
            XCTAssertEqual(kernel, expected[Backend.supportedISA.name])
        }
    }

    func testISAOverride() throws {
        let before = Backend.isa
        defer { try? Backend.setISA(before) }
        XCTAssertEqual(Backend.supportedISAs.first, .scalar)
        XCTAssertEqual(Backend.supportedISAs.last, Backend.supportedISA)
        for isa in InstructionSet.allCases {
            if isa <= Backend.supportedISA {
                try Backend.setISA(isa)
                XCTAssertEqual(Backend.isa, isa)
                XCTAssertTrue(String(cString: backendInfo()).hasPrefix("isa=\(isa.name) "))
            } else {
                // A level the CPU lacks is an error that names what it supports, and changes nothing.
                let current = Backend.isa
                XCTAssertThrowsError(try Backend.setISA(isa)) { e in
                    XCTAssertTrue("\(e)".contains(Backend.supportedISA.name), "\(e)")
                }
                XCTAssertEqual(Backend.isa, current)
            }
        }
        try Backend.setISA(nil)
        XCTAssertEqual(Backend.isa, Backend.supportedISA)
        XCTAssertEqual(InstructionSet(name: "AVX2"), .avx2)
        XCTAssertNil(InstructionSet(name: "sse9"))
    }

    /// abk_parallel_units runs every part exactly once, with its index and the part count, whatever
    /// the threads (more or fewer than the parts) and from inside another job (serially).
    func testParallelUnitsRunsEveryPartOnce() {
        for threads in [1, 2, 3, 8] {
            for parts in [0, 1, 2, 5, 64, 300] {
                var counts = [Int32](repeating: 0, count: parts + 1)
                counts[parts] = Int32(parts)  // the part count each part saw must equal this
                counts.withUnsafeMutableBufferPointer { cp in
                    abk_parallel_units(Int32(threads), Int32(parts), { ctx, part, parts in
                        let c = ctx!.assumingMemoryBound(to: Int32.self)
                        if parts == c[Int(parts)] { c[Int(part)] += 1 }
                    }, cp.baseAddress)
                }
                XCTAssertEqual(Array(counts[0..<parts]), [Int32](repeating: 1, count: parts), "\(threads) threads, \(parts) parts")
            }
        }
    }

    /// Logits and input gradients of every sample, bit for bit, whatever the thread count (1, 2, 3,
    /// 8), the batch size and the batch-mates — on every instruction-set path this machine has.
    func testResultsDoNotDependOnThreadsBatchOrBatchMates() throws {
        var models = [("mbn_resnet8.adv", try Model.load(path: examplesDir + "/mbn_resnet8.adv.onnx"))]
        // The external models add Flatten/Reshape + Gemm heads and other convolution shapes.
        for name in ["cifar10_resnet_2b", "cifar10_sri_resnet_a"] where FileManager.default.fileExists(atPath: externalDir + "/\(name).onnx") {
            models.append((name, try Model.load(path: externalDir + "/\(name).onnx")))
        }
        let before = abk_get_threads()
        defer { abk_set_threads(before) }
        let batch = 6, per = 3 * 32 * 32
        let x = randomTensor([batch, 3, 32, 32], seed: 21).data.map { ($0 + 1) / 2 }
        let labels: [Int64] = [0, 1, 2, 3, 4, 5]
        try forEachISA { isa in
            for (name, m) in models {
                let what = "\(name) on \(isa.name)"
                abk_set_threads(1)
                let ref = try Session(model: m).gradient(x, batch: batch, labels: labels, loss: .crossEntropy, domain: 0)
                for t in [2, 3, 8] {
                    abk_set_threads(Int32(t))
                    let r = try Session(model: m).gradient(x, batch: batch, labels: labels, loss: .crossEntropy, domain: 0)
                    XCTAssertTrue(r.logits == ref.logits, "\(what): logits change with \(t) threads")
                    XCTAssertTrue(r.gradient == ref.gradient, "\(what): gradients change with \(t) threads")
                }
                // Sample 4 alone, and sample 4 among other batch-mates (reversed order, batch of 3).
                for t in [1, 2] {
                    abk_set_threads(Int32(t))
                    let alone = try Session(model: m).gradient(Array(x[(4 * per)..<(5 * per)]), batch: 1, labels: [4],
                                                               loss: .crossEntropy, domain: 0)
                    let mates = Array(x[(5 * per)..<(6 * per)] + x[(4 * per)..<(5 * per)] + x[(1 * per)..<(2 * per)])
                    let mixed = try Session(model: m).gradient(mates, batch: 3, labels: [5, 4, 1], loss: .crossEntropy, domain: 0)
                    let k = m.numClasses
                    XCTAssertTrue(alone.logits == Array(ref.logits[(4 * k)..<(5 * k)]), "\(what): logits depend on the batch")
                    XCTAssertTrue(alone.gradient == Array(ref.gradient[(4 * per)..<(5 * per)]), "\(what): gradient depends on the batch")
                    XCTAssertTrue(Array(mixed.logits[k..<(2 * k)]) == alone.logits, "\(what): logits depend on batch-mates")
                    XCTAssertTrue(Array(mixed.gradient[per..<(2 * per)]) == alone.gradient, "\(what): gradient depends on batch-mates")
                }
            }
        }
    }
}
