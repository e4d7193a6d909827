/// Synthesized ResNets with random weights, for benchmarking how cost grows with depth and for
/// tests: the torchvision-style ImageNet bottleneck family (ResNet-50/101/152/200/...) and the
/// CIFAR ResNet-(6n+2) family of He et al. (ResNet-20/56/110/1202), written as plain ONNX files
/// (opset 13, BatchNormalization nodes kept, dynamic batch) that ONNX Runtime and PyTorch
/// evaluators read as well as adamant.
///
/// Weights are random but seeded (the same spec and seed give the same bytes) and chosen so that
/// activations stay bounded at any depth:
/// - convolutions: He-normal, std sqrt(2 / fan_in), no bias (as torchvision);
/// - every BatchNormalization: running mean ~ N(0, 0.1), running variance ~ U(0.5, 1.5),
///   beta ~ N(0, 0.1), gamma ~ U(0.5, 1.5) — except the last BN of each residual branch, whose
///   gamma is additionally multiplied by ``ResNetSpec/residualScale`` (default 1/sqrt(blocks)),
///   so the variance added by each block shrinks as the network deepens and the sum over blocks
///   stays bounded (the "small gamma on the last BN" trick of Goyal et al. 2017);
/// - the classifier: U(-1/sqrt(features), 1/sqrt(features)) weights and bias (torchvision's
///   default for Linear).
public struct ResNetSpec: Sendable, Equatable, CustomStringConvertible {
    /// Residual block type.
    public enum Block: String, Sendable {
        /// Two 3x3 convolutions (CIFAR ResNets, ResNet-18/34).
        case basic
        /// 1x1 -> 3x3 -> 1x1 with 4x expansion, stride on the 3x3 (torchvision v1.5).
        case bottleneck
    }

    /// Block type.
    public var block: Block
    /// Blocks per stage.
    public var stages: [Int]
    /// Width of each stage (bottleneck: the inner width; the stage outputs 4x this).
    public var stageWidths: [Int]
    /// Channels of the stem convolution.
    public var stemWidth: Int
    /// ImageNet stem (7x7 stride-2 convolution + 3x3 stride-2 max pool) instead of one 3x3 convolution.
    public var imagenetStem: Bool
    /// Input height and width (3 input channels, pixels in [0, 1]).
    public var inputSize: Int
    /// Number of logits.
    public var classes: Int
    /// Random seed of every weight.
    public var seed: UInt64
    /// Extra factor on the gamma of the last BN of each residual branch (nil = 1/sqrt(blocks)).
    public var residualScale: Float?

    /// Creates a spec; see ``imagenet(depth:seed:)`` and ``cifar(depth:seed:)`` for the two families.
    public init(block: Block, stages: [Int], stageWidths: [Int], stemWidth: Int, imagenetStem: Bool, inputSize: Int,
                classes: Int, seed: UInt64 = 0, residualScale: Float? = nil) {
        self.block = block
        self.stages = stages
        self.stageWidths = stageWidths
        self.stemWidth = stemWidth
        self.imagenetStem = imagenetStem
        self.inputSize = inputSize
        self.classes = classes
        self.seed = seed
        self.residualScale = residualScale
    }

    /// Output channels of a block = width x expansion.
    public var expansion: Int { block == .bottleneck ? 4 : 1 }
    /// Residual blocks in total.
    public var blocks: Int { stages.reduce(0, +) }
    /// Weighted layers on the main path: the stem convolution, the block convolutions and the
    /// classifier (projection shortcuts are not counted, as in the papers): 3 x blocks + 2 for
    /// bottleneck networks, 2 x blocks + 2 (= 6n + 2 with n blocks per stage) for basic ones.
    public var depth: Int { (block == .bottleneck ? 3 : 2) * blocks + 2 }
    /// The factor actually applied to the last BN gamma of each residual branch.
    public var effectiveResidualScale: Float { residualScale ?? 1 / Float(max(1, blocks)).squareRoot() }

    /// "resnet50", "cifar_resnet20", or a description of a custom spec.
    public var name: String {
        if self == (try? ResNetSpec.imagenet(depth: depth, seed: seed)) { return "resnet\(depth)" }
        if self == (try? ResNetSpec.cifar(depth: depth, seed: seed)) { return "cifar_resnet\(depth)" }
        return "resnet\(depth)_\(block.rawValue)_\(stages.map(String.init).joined(separator: "-"))_w\(stageWidths.map(String.init).joined(separator: "-"))_\(inputSize)px"
    }

    public var description: String {
        "\(name): \(block.rawValue) blocks \(stages), widths \(stageWidths), input 3x\(inputSize)x\(inputSize), \(classes) classes, seed \(seed)"
    }

    /// Blocks per stage of the ImageNet bottleneck ResNet of a given depth: 50 [3,4,6,3],
    /// 101 [3,4,23,3], 152 [3,8,36,3]; from 200 up stage 2 has 24 blocks and stage 3 the rest
    /// (200 [3,24,36,3], 638 [3,24,182,3]); depth = 3 x blocks + 2.
    public static func imagenetStages(depth: Int) throws -> [Int] {
        switch depth {
        case 50: return [3, 4, 6, 3]
        case 101: return [3, 4, 23, 3]
        case 152: return [3, 8, 36, 3]
        default:
            guard depth >= 200, (depth - 2) % 3 == 0 else {
                throw fail(.invalidArgument, "ImageNet bottleneck ResNet depth \(depth): use 50, 101, 152, or a depth >= 200 with depth = 3 x blocks + 2 (200, 203, ..., 638)")
            }
            return [3, 24, (depth - 2) / 3 - 30, 3]
        }
    }

    /// The torchvision-style ImageNet bottleneck ResNet: 224x224 input, 1000 classes.
    public static func imagenet(depth: Int, seed: UInt64 = 0) throws -> ResNetSpec {
        ResNetSpec(block: .bottleneck, stages: try imagenetStages(depth: depth), stageWidths: [64, 128, 256, 512],
                   stemWidth: 64, imagenetStem: true, inputSize: 224, classes: 1000, seed: seed)
    }

    /// The CIFAR ResNet-(6n+2) of He et al. (2016): a 3x3 stem with 16 channels, three stages of n
    /// basic blocks with 16/32/64 channels, 32x32 input, 10 classes. Where the shape changes the
    /// shortcut is a 1x1 stride-2 convolution + BN (option B of the paper).
    public static func cifar(depth: Int, seed: UInt64 = 0) throws -> ResNetSpec {
        guard depth >= 8, (depth - 2) % 6 == 0 else {
            throw fail(.invalidArgument, "CIFAR ResNet depth \(depth): must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, 1202, ...)")
        }
        let n = (depth - 2) / 6
        return ResNetSpec(block: .basic, stages: [n, n, n], stageWidths: [16, 32, 64], stemWidth: 16,
                          imagenetStem: false, inputSize: 32, classes: 10, seed: seed)
    }

    /// Checks the spec's sizes.
    func validate() throws {
        guard !stages.isEmpty, stages.count == stageWidths.count, stages.allSatisfy({ $0 >= 1 }),
              stageWidths.allSatisfy({ $0 >= 1 }), stemWidth >= 1, classes >= 1 else {
            throw fail(.invalidArgument, "bad ResNet spec: \(stages.count) stages with blocks \(stages) and widths \(stageWidths)")
        }
        // Every stage after the first halves the resolution; the stem divides it by 4 (ImageNet) or 1.
        var s = imagenetStem ? ((inputSize + 1) / 2 + 1) / 2 : inputSize
        for _ in 1..<stages.count { s = (s + 1) / 2 }
        guard inputSize >= 1, s >= 1, inputSize <= 4096 else {
            throw fail(.invalidArgument, "input size \(inputSize) is too small or too large for \(stages.count) stages")
        }
    }
}

/// What ``ResNetSpec/write(to:)`` produced.
public struct SynthSummary: Sendable {
    /// Nodes in the graph.
    public var nodes: Int
    /// Float32 values in the initializers (weights and all BN tensors).
    public var weightFloats: Int
    /// 4 x ``weightFloats``.
    public var weightBytes: Int { 4 * weightFloats }
}

extension ResNetSpec {
    /// Writes the model as an ONNX file. Memory: about twice the weights (the protobuf plus one
    /// tensor being generated), streamed to the file without a further copy.
    @discardableResult
    public func write(to path: String, check: Bool = true) throws -> SynthSummary {
        let (b, s) = try build()
        if check { try b.check() }
        try b.save(to: path)
        return s
    }

    /// The model as serialized ONNX bytes.
    public func serialized() throws -> [UInt8] { try build().0.serialized() }

    func build() throws -> (ONNXBuilder, SynthSummary) {
        try validate()
        let b = ONNXBuilder(graphName: name, producer: "adamant-synth")
        var gen = WeightGenerator(seed: seed)
        var nodes = 0
        let gain = effectiveResidualScale
        try b.addValue(output: false, name: "input", dims: [-1, 3, inputSize, inputSize])
        try b.addValue(output: true, name: "logits", dims: [-1, classes])

        func conv(_ x: String, _ name: String, _ cin: Int, _ cout: Int, k: Int, stride: Int, pad: Int) throws -> String {
            try b.addInitializer(name + ".weight", dims: [cout, cin, k, k],
                                 gen.normal(cout * cin * k * k, std: (2 / Float(cin * k * k)).squareRoot()))
            b.addNode("Conv", name: name, inputs: [x, name + ".weight"], outputs: [name + ".out"],
                      ints: [("group", 1)],
                      intLists: [("kernel_shape", [k, k]), ("strides", [stride, stride]), ("pads", [pad, pad, pad, pad]),
                                 ("dilations", [1, 1])])
            nodes += 1
            return name + ".out"
        }
        func bn(_ x: String, _ name: String, _ c: Int, gammaScale: Float = 1) throws -> String {
            try b.addInitializer(name + ".weight", dims: [c], gen.uniform(c, 0.5, 1.5).map { $0 * gammaScale })
            try b.addInitializer(name + ".bias", dims: [c], gen.normal(c, std: 0.1))
            try b.addInitializer(name + ".running_mean", dims: [c], gen.normal(c, std: 0.1))
            try b.addInitializer(name + ".running_var", dims: [c], gen.uniform(c, 0.5, 1.5))
            b.addNode("BatchNormalization", name: name,
                      inputs: [x, name + ".weight", name + ".bias", name + ".running_mean", name + ".running_var"],
                      outputs: [name + ".out"], floats: [("epsilon", 1e-5), ("momentum", 0.9)])
            nodes += 1
            return name + ".out"
        }
        func unary(_ op: String, _ x: String, _ name: String, ints: [(String, Int)] = [], intLists: [(String, [Int])] = []) -> String {
            b.addNode(op, name: name, inputs: [x], outputs: [name + ".out"], ints: ints, intLists: intLists)
            nodes += 1
            return name + ".out"
        }

        var x = "input"
        x = try conv(x, "conv1", 3, stemWidth, k: imagenetStem ? 7 : 3, stride: imagenetStem ? 2 : 1, pad: imagenetStem ? 3 : 1)
        x = unary("Relu", try bn(x, "bn1", stemWidth), "relu")
        if imagenetStem {
            x = unary("MaxPool", x, "maxpool", ints: [("ceil_mode", 0)],
                      intLists: [("kernel_shape", [3, 3]), ("strides", [2, 2]), ("pads", [1, 1, 1, 1]), ("dilations", [1, 1])])
        }
        var cin = stemWidth
        for (si, (n, w)) in zip(stages, stageWidths).enumerated() {
            for bi in 0..<n {
                let stride = bi == 0 && si > 0 ? 2 : 1
                let p = "layer\(si + 1).\(bi)"
                let cout = w * expansion
                var h: String
                switch block {
                case .bottleneck:
                    h = unary("Relu", try bn(try conv(x, p + ".conv1", cin, w, k: 1, stride: 1, pad: 0), p + ".bn1", w), p + ".relu1")
                    h = unary("Relu", try bn(try conv(h, p + ".conv2", w, w, k: 3, stride: stride, pad: 1), p + ".bn2", w), p + ".relu2")
                    h = try bn(try conv(h, p + ".conv3", w, cout, k: 1, stride: 1, pad: 0), p + ".bn3", cout, gammaScale: gain)
                case .basic:
                    h = unary("Relu", try bn(try conv(x, p + ".conv1", cin, w, k: 3, stride: stride, pad: 1), p + ".bn1", w), p + ".relu1")
                    h = try bn(try conv(h, p + ".conv2", w, w, k: 3, stride: 1, pad: 1), p + ".bn2", w, gammaScale: gain)
                }
                var shortcut = x
                if stride != 1 || cin != cout {
                    shortcut = try bn(try conv(x, p + ".downsample.0", cin, cout, k: 1, stride: stride, pad: 0),
                                      p + ".downsample.1", cout)
                }
                b.addNode("Add", name: p + ".add", inputs: [h, shortcut], outputs: [p + ".add.out"])
                nodes += 1
                x = unary("Relu", p + ".add.out", p + ".relu")
                cin = cout
            }
        }
        x = unary("GlobalAveragePool", x, "avgpool")
        x = unary("Flatten", x, "flatten", ints: [("axis", 1)])
        let bound = 1 / Float(cin).squareRoot()
        try b.addInitializer("fc.weight", dims: [classes, cin], gen.uniform(classes * cin, -bound, bound))
        try b.addInitializer("fc.bias", dims: [classes], gen.uniform(classes, -bound, bound))
        b.addNode("Gemm", name: "fc", inputs: [x, "fc.weight", "fc.bias"], outputs: ["logits"],
                  ints: [("transB", 1)], floats: [("alpha", 1), ("beta", 1)])
        nodes += 1
        b.setMetadata("adamant.synth", description)
        return (b, SynthSummary(nodes: nodes, weightFloats: b.initializerFloats))
    }
}

/// Seeded weights: one xoshiro256** stream per tensor (so a tensor's values depend only on the
/// seed and its position in the graph).
struct WeightGenerator {
    let seed: UInt64
    var tensor: UInt64 = 0

    init(seed: UInt64) { self.seed = seed }

    private mutating func next() -> Xoshiro256 {
        defer { tensor += 1 }
        return Xoshiro256(seed: seed, stream: tensor)
    }

    /// `n` values ~ N(0, std²) (Box-Muller, both outputs used).
    mutating func normal(_ n: Int, std: Float) -> [Float] {
        var r = next()
        return [Float](unsafeUninitializedCapacity: n) { buf, count in
            var i = 0
            let s = Double(std)
            while i < n {
                let u1 = max(Double(r.next() >> 11) * 0x1p-53, 1e-300)
                let u2 = Double(r.next() >> 11) * 0x1p-53
                let rad = (-2 * log(u1)).squareRoot() * s, th = 2 * Double.pi * u2
                buf[i] = Float(rad * cos(th))
                if i + 1 < n { buf[i + 1] = Float(rad * sin(th)) }
                i += 2
            }
            count = n
        }
    }

    /// `n` values ~ U(lo, hi).
    mutating func uniform(_ n: Int, _ lo: Float, _ hi: Float) -> [Float] {
        var r = next()
        return (0..<n).map { _ in lo + (hi - lo) * r.unitFloat() }
    }
}

#if canImport(Glibc)
import Glibc
#endif
