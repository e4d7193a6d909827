#if canImport(Glibc)
import Glibc
#endif

/// Imports the tensorpack `.npz` checkpoints of facebookresearch/ImageNet-Adversarial-Training
/// (ResNet-50/101/152, ResNet-152-Denoise, ResNeXt-101 32x8d-DenoiseAll) as ONNX models in
/// adamant's format.
///
/// The graph follows that code's definition: an NCHW bottleneck ResNet (`conv0` 7x7/2 + BN + ReLU,
/// a 3x3/2 max pool, four groups of bottleneck blocks with the stride on the 3x3 `conv2`, a
/// zero-init-style BN after `conv3`, a `convshortcut` + BN where the channel count changes, global
/// average pooling and the `linear` layer). Every convolution and the max pool use TensorFlow's
/// 'SAME' padding, which for stride 2 on an even size pads one pixel more at the bottom/right than at
/// the top/left; the importer writes those pads explicitly for the chosen input size. BatchNorm
/// epsilon is tensorpack's 1e-5. Feature-denoising blocks (non-local means, embedded Gaussian or
/// dot-product) are emitted with Reshape, Transpose, MatMul, Div and Softmax.
///
/// The model's input is what the reference code feeds its graph: BGR images with pixels in
/// [0, 255], N x 3 x H x W; the normalization of `AdvImageNetModel.image_preprocess`
/// (x * 2/255 - 1, i.e. mean 127.5, std 127.5 per channel) is stored as adamant metadata, with the
/// pixel range [0, 255] and channel order BGR, so adamant's attacks run in that pixel space.
/// ONNX Runtime users apply `(x - 127.5) / 127.5` themselves.
public enum TensorpackImport {
    /// The architectures of the reference code.
    public enum Arch: String, Sendable, CaseIterable {
        case resnet50
        case resnet101
        case resnet152
        /// ResNet-152 with an embedded-Gaussian (softmax) denoising block after each group.
        case resnet152Denoise = "resnet152-denoise"
        /// ResNeXt-101 32x8d with a dot-product denoising block (no embedding) after every block.
        case resnext101DenoiseAll = "resnext101-denoiseall"

        /// Blocks per group.
        public var blocks: [Int] {
            switch self {
            case .resnet50: return [3, 4, 6, 3]
            case .resnet101, .resnext101DenoiseAll: return [3, 4, 23, 3]
            case .resnet152, .resnet152Denoise: return [3, 8, 36, 3]
            }
        }
        /// ResNeXt cardinality (1 for ResNet).
        var group: Int { self == .resnext101DenoiseAll ? 32 : 1 }
        /// Channels per group of the first stage's 3x3 convolution ("res2_bottleneck").
        var res2Bottleneck: Int { self == .resnext101DenoiseAll ? 8 : 64 }
    }

    /// What to build.
    public struct Options: Sendable {
        /// The architecture.
        public var arch: Arch
        /// Blocks per group, overriding the architecture's (for depth-reduced variants; 4 groups).
        public var blocks: [Int]?
        /// Input height and width (the explicit 'SAME' pads depend on it); the reference uses 224.
        public var inputSize: Int

        /// Options for `arch` at 224 x 224 with its own depth.
        public init(arch: Arch, blocks: [Int]? = nil, inputSize: Int = 224) {
            self.arch = arch
            self.blocks = blocks
            self.inputSize = inputSize
        }
    }

    /// Checkpoint names that are not model variables and are ignored (training bookkeeping):
    /// names outside the network's scopes, and optimizer slots (`.../Momentum`, Adam's moments).
    static func isBookkeeping(_ name: String) -> Bool {
        if ["/Momentum", "/Adam", "/Adam_1"].contains(where: { name.hasSuffix($0) }) { return true }
        let modelScopes = ["conv0/", "linear/"]
        if modelScopes.contains(where: { name.hasPrefix($0) }) { return false }
        if name.hasPrefix("group") { return false }
        return true
    }

    /// Reads `checkpoint` (.npz) and writes the ONNX model to `output`. Returns the variables
    /// ignored as training bookkeeping (names outside the network's scopes, e.g. `global_step`).
    @discardableResult
    public static func convert(checkpoint: String, options: Options, output: String) throws -> [String] {
        try write(archive: try NPZArchive(path: checkpoint), options: options, output: output)
    }

    /// Builds the model from an opened archive and writes it to `output` (checked by onnx::checker
    /// first). Returns the ignored bookkeeping variables.
    @discardableResult
    public static func write(archive: NPZArchive, options: Options, output: String) throws -> [String] {
        let (builder, ignored) = try build(archive: archive, options: options)
        try builder.check()
        try builder.save(to: output)
        return ignored
    }

    /// The imported model as serialized ONNX bytes.
    public static func serialized(archive: NPZArchive, options: Options) throws -> [UInt8] {
        let (builder, _) = try build(archive: archive, options: options)
        try builder.check()
        return try builder.serialized()
    }

    /// TensorFlow 'SAME' padding: output size and the pads before and after.
    static func samePadding(_ size: Int, kernel: Int, stride: Int) -> (out: Int, begin: Int, end: Int) {
        let out = (size + stride - 1) / stride
        let total = max((out - 1) * stride + kernel - size, 0)
        return (out, total / 2, total - total / 2)
    }

    static func build(archive: NPZArchive, options: Options) throws -> (ONNXBuilder, [String]) {
        let arch = options.arch
        let blocks = options.blocks ?? arch.blocks
        guard blocks.count == 4, blocks.allSatisfy({ $0 >= 1 && $0 <= 1000 }) else {
            throw fail(.invalidArgument, "blocks must be 4 counts of 1 to 1000 (one per group), got \(blocks)")
        }
        guard options.inputSize >= 1 && options.inputSize <= 4096 else {
            throw fail(.invalidArgument, "input size must be in 1...4096, got \(options.inputSize)")
        }
        // Variable names as stored: tensorpack's dumps may keep TensorFlow's ":0" suffix.
        var byName: [String: String] = [:]
        for n in archive.names {
            let key = n.hasSuffix(":0") ? String(n.dropLast(2)) : n
            guard byName[key] == nil else { throw fail(.parse, "\(archive.source): variable '\(key)' is stored twice") }
            byName[key] = n
        }
        var used = Set<String>()
        var missing: [String] = []
        var misshaped: [String] = []
        let source = archive.source

        /// Reads a variable of the expected shape; records a missing or misshaped one and returns nil.
        func variable(_ name: String, _ shape: [Int]) throws -> [Float]? {
            guard let stored = byName[name] else { missing.append(name); return nil }
            used.insert(name)
            let a = try archive.floats(stored)
            guard a.shape == shape else {
                misshaped.append("\(name) is \(a.shape), expected \(shape)")
                return nil
            }
            return a.values
        }

        // The classifier's shape gives the class count (1000 in the reference code).
        let features = 2048
        guard let linearName = byName["linear/W"] else {
            throw fail(.parse, "\(source): missing variable 'linear/W' (is this a tensorpack checkpoint of facebookresearch/ImageNet-Adversarial-Training?)")
        }
        let linearShape = try archive.shape(linearName)
        guard linearShape.count == 2, linearShape[0] == features, linearShape[1] >= 1 else {
            throw fail(.shape, "\(source): variable 'linear/W' is \(linearShape), expected [\(features), classes]")
        }
        let classes = linearShape[1]

        let depth = 3 * blocks.reduce(0, +) + 2
        let b = ONNXBuilder(graphName: "tensorpack_\(arch.rawValue)", producer: "adamant-import-tensorpack", opset: 13)
        let s0 = options.inputSize
        try b.addValue(output: false, name: "input", dims: [-1, 3, s0, s0])
        try b.addValue(output: true, name: "logits", dims: [-1, classes])
        var counter = 0
        func fresh(_ base: String) -> String { counter += 1; return "\(base)__\(counter)" }

        /// A tensorpack Conv2D without bias: `scope/W` [k, k, cin/group, cout] (HWIO) -> OIHW.
        func conv(_ x: String, _ scope: String, cin: Int, cout: Int, k: Int, stride: Int, group: Int = 1,
                  size: Int) throws -> (String, Int) {
            let (out, p0, p1) = samePadding(size, kernel: k, stride: stride)
            let wName = scope + "/W"
            if let hwio = try variable(wName, [k, k, cin / group, cout]) {
                let ci = cin / group
                var oihw = [Float](repeating: 0, count: hwio.count)
                for h in 0..<k { for w in 0..<k { for i in 0..<ci { for o in 0..<cout {
                    oihw[((o * ci + i) * k + h) * k + w] = hwio[((h * k + w) * ci + i) * cout + o]
                } } } }
                try b.addInitializer(wName, dims: [cout, ci, k, k], oihw)
            }
            let y = fresh(scope)
            b.addNode("Conv", name: scope, inputs: [x, wName], outputs: [y], ints: [("group", group)],
                      intLists: [("kernel_shape", [k, k]), ("strides", [stride, stride]), ("pads", [p0, p0, p1, p1]),
                                 ("dilations", [1, 1])])
            return (y, out)
        }
        /// tensorpack BatchNorm in inference mode: `scope/{gamma,beta,mean/EMA,variance/EMA}`.
        func bn(_ x: String, _ scope: String, _ c: Int) throws -> String {
            let names = ["gamma", "beta", "mean/EMA", "variance/EMA"].map { scope + "/" + $0 }
            for n in names {
                if let v = try variable(n, [c]) { try b.addInitializer(n, dims: [c], v) }
            }
            let y = fresh(scope)
            b.addNode("BatchNormalization", name: scope, inputs: [x] + names, outputs: [y],
                      floats: [("epsilon", 1e-5), ("momentum", 0.9)])
            return y
        }
        func relu(_ x: String) -> String {
            let y = fresh("relu")
            b.addNode("Relu", name: y, inputs: [x], outputs: [y])
            return y
        }
        func binary(_ op: String, _ a: String, _ c: String) -> String {
            let y = fresh(op.lowercased())
            b.addNode(op, name: y, inputs: [a, c], outputs: [y])
            return y
        }
        var shapeConstants: [[Int]: String] = [:]
        func reshape(_ x: String, _ shape: [Int]) throws -> String {
            let sName: String
            if let n = shapeConstants[shape] { sName = n } else {
                sName = "shape_" + shape.map { $0 < 0 ? "m\(-$0)" : "\($0)" }.joined(separator: "_")
                try b.addInitializer(sName, dims: [shape.count], int64: shape)
                shapeConstants[shape] = sName
            }
            let y = fresh("reshape")
            b.addNode("Reshape", name: y, inputs: [x, sName], outputs: [y])
            return y
        }
        func transpose(_ x: String) -> String {
            let y = fresh("transpose")
            b.addNode("Transpose", name: y, inputs: [x], outputs: [y], intLists: [("perm", [0, 2, 1])])
            return y
        }
        var scalarConstants: [Float: String] = [:]
        func scalar(_ v: Float) throws -> String {
            if let n = scalarConstants[v] { return n }
            let n = "const_\(scalarConstants.count)"
            try b.addInitializer(n, dims: [], [v])
            scalarConstants[v] = n
            return n
        }

        /// Feature denoising (Xie et al. 2019, Fig. 4-5): non-local means, a 1x1 conv + BN, a residual add.
        func denoise(_ x: String, _ scope: String, c: Int, size: Int, embed: Bool, softmax: Bool) throws -> String {
            let hw = size * size
            var theta = x, phi = x
            var ce = c
            if embed {
                ce = c / 2
                theta = try conv(x, scope + "/embedding_theta", cin: c, cout: ce, k: 1, stride: 1, size: size).0
                phi = try conv(x, scope + "/embedding_phi", cin: c, cout: ce, k: 1, stride: 1, size: size).0
            }
            let g = try reshape(x, [-1, c, hw])
            var f: String
            if c > hw || softmax {
                // Pairwise affinities of positions: [N, HW, HW] = theta^T phi.
                let t = transpose(try reshape(theta, [-1, ce, hw]))
                var a = binary("MatMul", t, try reshape(phi, [-1, ce, hw]))
                if softmax {
                    a = binary("Div", a, try scalar(Float(ce).squareRoot()))
                    let y = fresh("softmax")
                    b.addNode("Softmax", name: y, inputs: [a], outputs: [y], ints: [("axis", -1)])
                    a = y
                }
                // out[i, p] = sum_q g[i, q] a[p, q]
                f = binary("MatMul", g, transpose(a))
            } else {
                // The same product grouped the cheaper way when C <= HW: (phi g^T)^T theta.
                let pg = binary("MatMul", try reshape(phi, [-1, ce, hw]), transpose(g))
                f = binary("MatMul", transpose(pg), try reshape(theta, [-1, ce, hw]))
            }
            if !softmax { f = binary("Div", f, try scalar(Float(hw))) }
            f = try reshape(f, [-1, c, size, size])
            f = try bn(try conv(f, scope + "/conv", cin: c, cout: c, k: 1, stride: 1, size: size).0, scope + "/conv/bn", c)
            return binary("Add", x, f)
        }

        // Stem.
        var (x, size) = try conv("input", "conv0", cin: 3, cout: 64, k: 7, stride: 2, size: s0)
        x = relu(try bn(x, "conv0/bn", 64))
        let (pooled, p0, p1) = samePadding(size, kernel: 3, stride: 2)
        let pool = fresh("pool0")
        b.addNode("MaxPool", name: "pool0", inputs: [x], outputs: [pool], ints: [("ceil_mode", 0)],
                  intLists: [("kernel_shape", [3, 3]), ("strides", [2, 2]), ("pads", [p0, p0, p1, p1])])
        x = pool
        size = pooled
        var cin = 64
        let chFactor = arch.res2Bottleneck * arch.group / 64
        for (gi, (n, width)) in zip(blocks, [64, 128, 256, 512]).enumerated() {
            let groupName = "group\(gi)"
            for bi in 0..<n {
                let scope = "\(groupName)/block\(bi)"
                let stride = bi == 0 && gi > 0 ? 2 : 1
                let inner = width * chFactor, cout = width * 4
                var (h, s) = try conv(x, scope + "/conv1", cin: cin, cout: inner, k: 1, stride: 1, size: size)
                h = relu(try bn(h, scope + "/conv1/bn", inner))
                (h, s) = try conv(h, scope + "/conv2", cin: inner, cout: inner, k: 3, stride: stride, group: arch.group, size: s)
                h = relu(try bn(h, scope + "/conv2/bn", inner))
                (h, s) = try conv(h, scope + "/conv3", cin: inner, cout: cout, k: 1, stride: 1, size: s)
                h = try bn(h, scope + "/conv3/bn", cout)
                var shortcut = x
                if cin != cout {
                    let (sc, _) = try conv(x, scope + "/convshortcut", cin: cin, cout: cout, k: 1, stride: stride, size: size)
                    shortcut = try bn(sc, scope + "/convshortcut/bn", cout)
                } else if stride != 1 {
                    throw fail(.internal, "\(scope): identity shortcut with stride \(stride)")
                }
                x = relu(binary("Add", h, shortcut))
                size = s
                cin = cout
                if arch == .resnext101DenoiseAll {
                    x = try denoise(x, scope + "/non_local", c: cout, size: size, embed: false, softmax: false)
                }
            }
            if arch == .resnet152Denoise {
                x = try denoise(x, groupName + "_denoise", c: cin, size: size, embed: true, softmax: true)
            }
        }
        let gap = fresh("gap")
        b.addNode("GlobalAveragePool", name: "gap", inputs: [x], outputs: [gap])
        let flat = fresh("flatten")
        b.addNode("Flatten", name: "flatten", inputs: [gap], outputs: [flat], ints: [("axis", 1)])
        if let w = try variable("linear/W", [features, classes]) { try b.addInitializer("linear/W", dims: [features, classes], w) }
        if let bias = try variable("linear/b", [classes]) { try b.addInitializer("linear/b", dims: [classes], bias) }
        b.addNode("Gemm", name: "linear", inputs: [flat, "linear/W", "linear/b"], outputs: ["logits"],
                  floats: [("alpha", 1), ("beta", 1)])

        let unused = byName.keys.filter { !used.contains($0) }
        let extra = unused.filter { !isBookkeeping($0) }.sorted()
        let ignored = unused.filter { isBookkeeping($0) }.sorted()
        let archLabel = options.blocks == nil ? arch.rawValue : "\(arch.rawValue) with blocks \(blocks)"
        func list(_ v: [String]) -> String {
            v.prefix(8).joined(separator: ", ") + (v.count > 8 ? ", ... (\(v.count) in all)" : "")
        }
        var problems: [String] = []
        if !missing.isEmpty { problems.append("missing variable(s): \(list(missing))") }
        if !misshaped.isEmpty { problems.append("misshaped variable(s): \(list(misshaped))") }
        if !extra.isEmpty { problems.append("variable(s) the architecture does not use: \(list(extra))") }
        if !problems.isEmpty {
            throw fail(.shape, "\(source) does not match \(archLabel): " + problems.joined(separator: "; "))
        }
        b.setMetadata(FormatKeys.mean, "127.5,127.5,127.5")
        b.setMetadata(FormatKeys.std, "127.5,127.5,127.5")
        b.setMetadata(FormatKeys.pixelRange, "0.0,255.0")
        b.setMetadata(FormatKeys.channelOrder, ChannelOrder.bgr.rawValue)
        b.setMetadata("adamant.source", "tensorpack checkpoint, facebookresearch/ImageNet-Adversarial-Training \(archLabel) (depth \(depth)), input \(s0)x\(s0) BGR in [0, 255], normalized (x - 127.5) / 127.5")
        return (b, ignored)
    }
}
