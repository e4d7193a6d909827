import ArgumentParser
import Adamant
import Foundation

struct Synth: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write a synthesized ResNet with random (seeded) weights as an ONNX file.",
        discussion: """
        --depth N: the torchvision-style ImageNet bottleneck ResNet (224x224, 1000 classes): 50, 101, 152, \
        or any depth >= 200 with depth = 3 x blocks + 2 (stage 2 has 24 blocks, stage 3 the rest: 638 = \
        [3,24,182,3]). --cifar-depth N: the CIFAR ResNet-(6n+2) (3x3 basic blocks, 16/32/64 channels, 32x32, \
        10 classes). The file is plain ONNX (opset 13, BatchNormalization kept, dynamic batch) that ONNX \
        Runtime reads. Weights: He-normal convolutions, realistic BN statistics, the last BN of each \
        residual branch scaled by 1/sqrt(blocks) so logits stay finite at any depth.
        """)
    @Option(parsing: .unconditional, help: "Depth of the ImageNet bottleneck ResNet: 50, 101, 152, or 200 to \(maxSynthDepth) with depth = 3 x blocks + 2.") var depth: Int?
    @Option(parsing: .unconditional, help: "Depth of the CIFAR ResNet (6n+2), 8 to \(maxSynthDepth).") var cifarDepth: Int?
    @Option(name: [.customShort("o"), .long], help: "Output ONNX file.") var output: String
    @Option(parsing: .unconditional, help: "Random seed of the weights.") var seed: UInt64 = 0
    @Flag(help: "Load the written file and run one forward pass on random pixels (prints the logits' range).")
    var check = false

    func validate() throws {
        guard (depth == nil) != (cifarDepth == nil) else { throw ValidationError("give exactly one of --depth, --cifar-depth") }
        if let depth { try checkSynthDepth(depth, cifar: false, "--depth") }
        if let cifarDepth { try checkSynthDepth(cifarDepth, cifar: true, "--cifar-depth") }
    }

    func run() throws {
        try checkOutputFile(output, "--output")
        let spec = try depth.map { try ResNetSpec.imagenet(depth: $0, seed: seed) } ?? ResNetSpec.cifar(depth: cifarDepth!, seed: seed)
        let t0 = Date()
        var summary: SynthSummary?
        try writingOutput(output, "--output") { summary = try spec.write(to: output) }
        let s = summary!
        let size = (try? FileManager.default.attributesOfItem(atPath: output)[.size] as? Int) ?? 0
        print(String(format: "wrote %@: %@, %d nodes, %.1f M weights (%.1f MB), file %.1f MB, %.1f s",
                     output, spec.description, s.nodes, Double(s.weightFloats) / 1e6, Double(s.weightBytes) / 1e6,
                     Double(size) / 1e6, Date().timeIntervalSince(t0)))
        if check {
            let m = try Model.load(path: output)
            let b = 2
            var rng = Xoshiro256(seed: seed, stream: 99)
            let x = (0..<(b * m.inputShape.reduce(1, *))).map { _ in rng.unitFloat() }
            let z = try Session(model: m).predict(x, batch: b, domain: m.defaultDomain)
            let finite = z.allSatisfy { $0.isFinite }
            let mean = z.reduce(0, +) / Float(z.count)
            let std = (z.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(z.count)).squareRoot()
            print(String(format: "check: logits of %d random images: min %.3g max %.3g std %.3g, %@", b,
                         z.min()!, z.max()!, std, finite ? "finite" : "NOT FINITE"))
            if !finite { throw ExitCode.failure }
        }
    }
}

/// The deepest network `synth` and `bench --depths` build (ImageNet 2000: about 3 GB of weights).
let maxSynthDepth = 2000

/// Checks a synthesized depth: in range, and a depth the family has (the message names the option).
func checkSynthDepth(_ d: Int, cifar: Bool, _ option: String) throws {
    try require(d, in: (cifar ? 8 : 50)...maxSynthDepth, option)
    do {
        _ = cifar ? try ResNetSpec.cifar(depth: d) : try ResNetSpec.imagenet(depth: d)
    } catch let e as AdamantError {
        throw ValidationError("\(option): \(e.message)")
    }
}
