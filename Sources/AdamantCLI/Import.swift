import ArgumentParser
import Adamant
import Foundation

/// `adamant import ...`: models from other frameworks' checkpoints.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Convert another framework's checkpoint into an ONNX model in adamant's format.",
        subcommands: [ImportTensorpack.self])
}

/// `adamant import tensorpack CKPT.npz --arch ... -o model.onnx`.
struct ImportTensorpack: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tensorpack",
        abstract: "Import a tensorpack .npz checkpoint of facebookresearch/ImageNet-Adversarial-Training.",
        discussion: """
        Builds the reference code's graph (resnet_model.py, nets.py) for --arch, reads every variable \
        by its tensorpack name (conv0/W, group0/block0/conv1/bn/gamma, ..., linear/W, linear/b) and \
        writes an ONNX file (opset 13) that adamant and ONNX Runtime load. A missing, misshaped or \
        unused variable is an error naming it (exit 65); names outside the network (global_step, \
        learning_rate, loss averages) are ignored and listed. The model takes BGR images with pixels \
        in [0, 255] (N x 3 x H x W); the normalization (x - 127.5) / 127.5 of the reference code, the \
        pixel range and the channel order are stored in the file, so adamant's predict, attack and \
        eval read PNG/JPEG files and work in that pixel space (use --preset xie2020 for the \
        reference threat model). ONNX Runtime users apply the normalization themselves.
        """)

    @Argument(help: "The tensorpack checkpoint (.npz).") var checkpoint: String
    @Option(help: "Architecture: \(TensorpackImport.Arch.allCases.map(\.rawValue).joined(separator: ", ")).")
    var arch: String
    @Option(name: [.customShort("o"), .long], help: "Output ONNX file.") var output: String
    @Option(parsing: .unconditional, help: ArgumentHelp("Blocks per group, overriding the architecture's (a depth-reduced variant).", valueName: "b0,b1,b2,b3"))
    var blocks: String?
    @Option(parsing: .unconditional, help: "Input height and width (the reference uses 224; the explicit 'SAME' pads depend on it).")
    var inputSize: Int = 224

    func archValue() throws -> TensorpackImport.Arch {
        guard let a = TensorpackImport.Arch(rawValue: arch.lowercased()) else {
            throw ValidationError("--arch must be one of \(TensorpackImport.Arch.allCases.map(\.rawValue).joined(separator: ", ")), got '\(arch)'")
        }
        return a
    }

    func blocksValue() throws -> [Int]? {
        guard let blocks else { return nil }
        let v = blocks.split(separator: ",", omittingEmptySubsequences: false).map { Int($0) }
        guard v.count == 4, v.allSatisfy({ ($0 ?? 0) >= 1 && ($0 ?? 0) <= 1000 }) else {
            throw ValidationError("--blocks needs four counts from 1 to 1000, e.g. 3,8,36,3, got '\(blocks)'")
        }
        return v.map { $0! }
    }

    func validate() throws {
        _ = try archValue()
        _ = try blocksValue()
        try require(inputSize, in: 32...4096, "--input-size")
    }

    func run() throws {
        try checkOutputFile(output, "--output")
        let options = TensorpackImport.Options(arch: try archValue(), blocks: try blocksValue(), inputSize: inputSize)
        let t0 = Date()
        let archive: NPZArchive
        do { archive = try NPZArchive(path: checkpoint) } catch let e as AdamantError where e.kind == .io {
            throw CLIError(.noInput, e.message)
        }
        var ignored: [String] = []
        try writingOutput(output, "--output") { ignored = try TensorpackImport.write(archive: archive, options: options, output: output) }
        if !ignored.isEmpty {
            warn("ignored \(ignored.count) checkpoint variable(s) outside the network: \(ignored.prefix(10).joined(separator: ", "))\(ignored.count > 10 ? ", ..." : "")")
        }
        print(String(format: "wrote %@: %@%@, %dx%d BGR input in [0, 255], %.1f s", output, options.arch.rawValue,
                     options.blocks.map { " blocks \($0)" } ?? "", inputSize, inputSize, Date().timeIntervalSince(t0)))
    }
}
