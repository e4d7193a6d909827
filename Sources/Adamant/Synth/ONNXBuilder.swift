import COnnx

/// Builds an ONNX model from scratch through the COnnx bridge (protobuf via libonnx) and writes
/// it to a file or to bytes. Used by the ResNet synthesizer; nodes are appended in order, so the
/// caller emits them topologically sorted.
final class ONNXBuilder {
    private let model: OpaquePointer
    private var err = [CChar](repeating: 0, count: 512)
    /// Floats held by the initializers added so far.
    private(set) var initializerFloats = 0

    /// A new model importing ai.onnx `opset`, IR version `irVersion`.
    init(graphName: String, producer: String = "adamant", opset: Int = 13, irVersion: Int = 7) {
        model = ox_new_model(Int64(irVersion), Int64(opset), producer, graphName)
    }

    deinit { ox_free(model) }

    private func message() -> String { String(cString: err) }

    /// Declares a float input or output; a negative dim is the symbolic `dimParam`.
    func addValue(output: Bool, name: String, dims: [Int], dimParam: String = "batch") throws {
        let d = dims.map(Int64.init)
        guard ox_add_value_info(model, output ? 1 : 0, name, 1, d, d.count, dimParam, &err, err.count) == 0 else {
            throw fail(.internal, message())
        }
    }

    /// Appends a node; attributes are ints, int lists or floats.
    func addNode(_ op: String, name: String, inputs: [String], outputs: [String],
                 ints: [(String, Int)] = [], intLists: [(String, [Int])] = [], floats: [(String, Float)] = []) {
        let n = withCStrings(inputs) { ins in
            withCStrings(outputs) { outs in
                ox_add_node(model, op, name, ins.baseAddress, ins.count, outs.baseAddress, outs.count)
            }
        }
        for (k, v) in ints { ox_node_add_attr_int(model, n, k, Int64(v)) }
        for (k, v) in intLists {
            let l = v.map(Int64.init)
            ox_node_add_attr_ints(model, n, k, l, l.count)
        }
        for (k, v) in floats { ox_node_add_attr_float(model, n, k, v) }
    }

    /// Appends a float initializer (names must be unique).
    func addInitializer(_ name: String, dims: [Int], _ data: [Float]) throws {
        precondition(dims.reduce(1, *) == data.count, "initializer \(name): dims \(dims) vs \(data.count) values")
        let d = dims.map(Int64.init)
        guard ox_add_initializer_float(model, name, d, d.count, data, &err, err.count) == 0 else {
            throw fail(.internal, message())
        }
        initializerFloats += data.count
    }

    /// Appends an int64 initializer (a Reshape's target shape).
    func addInitializer(_ name: String, dims: [Int], int64 data: [Int]) throws {
        precondition(dims.reduce(1, *) == data.count, "initializer \(name): dims \(dims) vs \(data.count) values")
        let d = dims.map(Int64.init), v = data.map(Int64.init)
        guard ox_add_initializer_int64(model, name, d, d.count, v, &err, err.count) == 0 else {
            throw fail(.internal, message())
        }
    }

    func setMetadata(_ key: String, _ value: String) { ox_set_metadata(model, key, value) }

    /// Runs onnx::checker on the model built so far.
    func check() throws {
        let r = ox_check(model, &err, err.count)
        guard r != 1 else { throw fail(.internal, "the synthesized model fails onnx::checker: \(message())") }
    }

    /// Serializes to a file (streamed, no extra in-memory copy).
    func save(to path: String) throws {
        guard ox_save(model, path, &err, err.count) == 0 else { throw fail(.io, message()) }
    }

    /// Serializes to bytes.
    func serialized() throws -> [UInt8] {
        var out: UnsafeMutableRawPointer?
        var len = 0
        guard ox_serialize(model, &out, &len, &err, err.count) == 0, let out else { throw fail(.internal, message()) }
        defer { free(out) }
        return Array(UnsafeRawBufferPointer(start: out, count: len))
    }
}

/// Calls `body` with NUL-terminated copies of `strings` (valid only inside `body`).
private func withCStrings<R>(_ strings: [String], _ body: (UnsafeBufferPointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let ptrs = copies.map { UnsafePointer<CChar>($0) }
    return ptrs.withUnsafeBufferPointer(body)
}

#if canImport(Glibc)
import Glibc
#endif
