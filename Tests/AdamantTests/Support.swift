import XCTest
@testable import Adamant

/// ../shared relative to the repository root (CI lays it beside the clone).
let repoRoot: String = {
    var parts = #filePath.split(separator: "/").map(String.init)
    parts.removeLast(3)  // Tests/AdamantTests/Support.swift
    return "/" + parts.joined(separator: "/")
}()
let sharedDir = repoRoot + "/../shared"
let mbnDir = sharedDir + "/models/mbn"
let externalDir = sharedDir + "/models/external"
let examplesDir = repoRoot + "/examples/models"

func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    var rng = Xoshiro256(seed: seed)
    return Tensor(shape: shape, data: (0..<shape.reduce(1, *)).map { _ in (rng.unitFloat() * 2 - 1) * scale })
}

func ctx(batch: Int, bn: [BNParams] = []) -> ExecContext {
    ExecContext(bn: bn, declaredBatch: nil, batch: batch)
}

/// Checks an op's input gradients against central finite differences of <forward(x), w>, in Double
/// accumulation over random directions.
func checkGradient(_ op: any Op, _ inputs: [Tensor], needs: [Bool]? = nil, bn: [BNParams] = [],
                   tolerance: Double = 2e-2, h: Float = 1e-2, file: StaticString = #filePath, line: UInt = #line) throws {
    let c = ctx(batch: inputs[0].shape[0], bn: bn)
    let out = try op.forward(inputs, c)
    let w = randomTensor(out[0].shape, seed: 99)
    let needs = needs ?? inputs.map { _ in true }
    let grads = try op.backward(inputs, out, [w], needs: needs, c)
    func objective(_ ins: [Tensor]) throws -> Double {
        let y = try op.forward(ins, c)[0]
        return zip(y.data, w.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    for (k, needed) in needs.enumerated() where needed {
        let g = try XCTUnwrap(grads[k], "missing gradient for input \(k)", file: file, line: line)
        XCTAssertEqual(g.shape, inputs[k].shape, file: file, line: line)
        for trial in 0..<3 {
            let d = randomTensor(inputs[k].shape, seed: 1000 + UInt64(trial))
            var plus = inputs, minus = inputs
            for i in 0..<d.count {
                plus[k].data[i] += h * d.data[i]
                minus[k].data[i] -= h * d.data[i]
            }
            let numeric = (try objective(plus) - objective(minus)) / (2 * Double(h))
            let analytic = zip(g.data, d.data).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let scale = max(1e-3, abs(numeric), abs(analytic))
            XCTAssertLessThan(abs(numeric - analytic) / scale, tolerance,
                              "\(op.type) input \(k): numeric \(numeric) vs analytic \(analytic)", file: file, line: line)
        }
    }
}

func rawNode(_ op: String, _ attrs: [String: Attribute] = [:]) -> Attrs {
    Attrs(node: RawNode(index: 0, opType: op, name: "test", domain: "", inputs: [], outputs: [], attributes: attrs), opset: 13)
}

func raw(_ t: Tensor) -> RawTensor { RawTensor(name: "w", dims: t.shape, floats: t.data, ints: nil) }

/// Runs `body` once under every instruction-set level this machine supports (adamant's kernels
/// switch; the OpenBLAS kernel stays the one loaded first), then restores the level in force.
func forEachISA(_ body: (InstructionSet) throws -> Void) throws {
    let before = Backend.isa
    defer { try? Backend.setISA(before) }
    for isa in Backend.supportedISAs {
        try Backend.setISA(isa)
        XCTAssertEqual(Backend.isa, isa)
        try body(isa)
    }
}
