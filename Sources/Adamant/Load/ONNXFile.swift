import COnnx
#if canImport(Glibc)
import Glibc
#endif

/// An attribute value of an ONNX node, as read from the protobuf.
enum Attribute {
    case float(Float)
    case int(Int)
    case string(String)
    case floats([Float])
    case ints([Int])
    case tensor(RawTensor)
    case other(Int32)
}

/// A constant read from the file: float data, or integer data for shape-like inputs.
struct RawTensor {
    var name: String
    var dims: [Int]
    var floats: [Float]
    /// Set when the stored type is an integer type.
    var ints: [Int64]?
}

/// One ONNX node, as written in the file.
struct RawNode {
    var index: Int
    var opType: String
    var name: String
    var domain: String
    var inputs: [String]
    var outputs: [String]
    var attributes: [String: Attribute]

    /// The node named for error messages: `Conv 'conv1' (node #3)`.
    var label: String { "\(opType) '\(name.isEmpty ? "#\(index)" : name)'" }
}

/// A graph input or output with its declared shape (-1 = symbolic).
struct RawValueInfo {
    var name: String
    var dims: [Int]?
    /// ONNX element type (1 = float; 0 = not given).
    var elemType: Int32 = 0
}

/// An ONNX model read into Swift values: stage one of load -> optimize -> plan -> run.
struct ONNXFile {
    var irVersion: Int
    var opset: Int
    var producer: String
    var metadata: [String: String]
    var inputs: [RawValueInfo]
    var outputs: [RawValueInfo]
    var initializers: [String: RawTensor]
    var nodes: [RawNode]
    /// The checker's verdict: nil when it passed, else why it was skipped.
    var checkerNote: String?
    /// Where the serialized model can be read again (to write the single-file multi-domain format).
    var origin: ModelOrigin

    /// Reads a file from disk. The file's bytes are released as soon as they are parsed, and only
    /// its path is kept (a model's memory holds no second copy of its weights).
    static func read(path: String) throws -> ONNXFile {
        let origin = try ModelOrigin.file(path: path)
        return try ONNXFile(handle: try parseFile(path), source: path, origin: origin)
    }

    /// The protobuf of a file, streamed by the parser (no copy of the whole file in memory); a
    /// file that is not a regular one (a pipe) is read whole first.
    static func parseFile(_ path: String) throws -> OpaquePointer {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw fail(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return try parse(try readFile(path), source: path) }
        guard st.st_size > 0 else { throw fail(.parse, "\(path): empty file: not an ONNX model") }
        guard st.st_size <= Int(Int32.max) else { throw fail(.parse, "\(path): model larger than 2 GiB is not supported") }
        var err = [CChar](repeating: 0, count: 1024)
        var handle: OpaquePointer?
        guard ox_parse_fd(fd, &handle, &err, err.count) == 0, let m = handle else {
            throw fail(.parse, "\(path): \(String(cString: err))")
        }
        return m
    }

    /// Parses and validates serialized ModelProto bytes (kept, to save the model later).
    init(bytes: [UInt8], source: String) throws {
        try self.init(handle: try ONNXFile.parse(bytes, source: source), source: source, origin: .bytes(bytes))
    }

    /// The protobuf of serialized bytes (the caller frees it with ox_free).
    static func parse(_ bytes: [UInt8], source: String) throws -> OpaquePointer {
        try bytes.withUnsafeBytes { try parse($0, source: source) }
    }

    static func parse(_ buf: UnsafeRawBufferPointer, source: String) throws -> OpaquePointer {
        var err = [CChar](repeating: 0, count: 1024)
        var handle: OpaquePointer?
        let rc = ox_parse(buf.baseAddress, buf.count, &handle, &err, err.count)
        guard rc == 0, let m = handle else {
            throw fail(.parse, "\(source): \(String(cString: err))")
        }
        return m
    }

    /// Reads and validates a parsed model (and frees it).
    init(handle m: OpaquePointer, source: String, origin: ModelOrigin) throws {
        defer { ox_free(m) }
        var err = [CChar](repeating: 0, count: 1024)
        self.origin = origin

        irVersion = Int(ox_ir_version(m))
        producer = String(cString: ox_producer_name(m))
        var opset = 0
        for i in 0..<ox_opset_count(m) {
            let d = String(cString: ox_opset_domain(m, i))
            if d.isEmpty || d == "ai.onnx" { opset = Int(ox_opset_version(m, i)) }
        }
        if opset == 0 { opset = irVersion < 3 ? 1 : 0 }
        guard opset > 0 else { throw fail(.parse, "\(source): the model imports no ai.onnx opset") }
        self.opset = opset


        var metadata: [String: String] = [:]
        for i in 0..<ox_metadata_count(m) {
            metadata[String(cString: ox_metadata_key(m, i))] = String(cString: ox_metadata_value(m, i))
        }
        self.metadata = metadata

        let initializerNames = (0..<ox_initializer_count(m)).map { String(cString: ox_tensor_name(ox_initializer(m, $0)!)) }

        inputs = (0..<ox_input_count(m)).map { i in
            let rank = ox_input_rank(m, i)
            return RawValueInfo(name: String(cString: ox_input_name(m, i)),
                                dims: rank < 0 ? nil : (0..<Int(rank)).map { Int(ox_input_dim(m, i, $0)) },
                                elemType: ox_input_elem_type(m, i))
        }
        outputs = (0..<ox_output_count(m)).map { i in
            let rank = ox_output_rank(m, i)
            return RawValueInfo(name: String(cString: ox_output_name(m, i)),
                                dims: rank < 0 ? nil : (0..<Int(rank)).map { Int(ox_output_dim(m, i, $0)) })
        }

        var nodes: [RawNode] = []
        for n in 0..<ox_node_count(m) {
            var attrs: [String: Attribute] = [:]
            for a in 0..<ox_attr_count(m, n) {
                let name = String(cString: ox_attr_name(m, n, a))
                let type = ox_attr_type(m, n, a)
                switch type {
                case 1: attrs[name] = .float(ox_attr_f(m, n, a))
                case 2: attrs[name] = .int(Int(ox_attr_i(m, n, a)))
                case 3: attrs[name] = .string(String(cString: ox_attr_s(m, n, a)))
                case 4:
                    guard let t = ox_attr_tensor(m, n, a) else {
                        throw fail(.parse, "\(source): node \(n) (\(String(cString: ox_node_op_type(m, n)))): attribute '\(name)' is typed TENSOR but carries no tensor")
                    }
                    attrs[name] = .tensor(try ONNXFile.readTensor(t, source: source))
                case 6: attrs[name] = .floats((0..<ox_attr_floats_count(m, n, a)).map { ox_attr_floats_at(m, n, a, $0) })
                case 7: attrs[name] = .ints((0..<ox_attr_ints_count(m, n, a)).map { Int(ox_attr_ints_at(m, n, a, $0)) })
                default: attrs[name] = .other(type)
                }
            }
            nodes.append(RawNode(
                index: n,
                opType: String(cString: ox_node_op_type(m, n)),
                name: String(cString: ox_node_name(m, n)),
                domain: String(cString: ox_node_domain(m, n)),
                inputs: (0..<ox_node_input_count(m, n)).map { String(cString: ox_node_input(m, n, $0)) },
                outputs: (0..<ox_node_output_count(m, n)).map { String(cString: ox_node_output(m, n, $0)) },
                attributes: attrs))
        }
        self.nodes = nodes

        // Name a dangling reference plainly before the checker reports it as an ordering problem.
        var defined = Set(initializerNames).union(inputs.map(\.name))
        for n in nodes { defined.formUnion(n.outputs) }
        for n in nodes {
            for i in n.inputs where !i.isEmpty && !defined.contains(i) {
                throw fail(.parse, "\(source): \(n.label) reads '\(i)', which is neither an initializer, a graph input nor a node output (missing initializer?)")
            }
        }
        switch ox_check(m, &err, err.count) {
        case 0: checkerNote = nil
        case 2: checkerNote = String(cString: err)
        default: throw fail(.parse, "\(source): ONNX checker: \(String(cString: err))")
        }

        // The weights last, after every check: each initializer's protobuf data is freed as soon as
        // it is converted, so loading never holds the file's weights twice.
        var inits: [String: RawTensor] = [:]
        for i in 0..<ox_initializer_count(m) {
            let t = try ONNXFile.readTensor(ox_initializer(m, i)!, source: source)
            ox_initializer_release_data(m, i)
            inits[t.name] = t
        }
        initializers = inits
    }

    static func readTensor(_ t: OpaquePointer, source: String) throws -> RawTensor {
        var err = [CChar](repeating: 0, count: 512)
        let name = String(cString: ox_tensor_name(t))
        let dims = (0..<ox_tensor_rank(t)).map { Int(ox_tensor_dim(t, $0)) }
        var n = 0
        guard ox_tensor_numel(t, &n, &err, err.count) == 0 else {
            throw fail(.parse, "\(source): \(String(cString: err))")
        }
        let dt = ox_tensor_data_type(t)
        var ints: [Int64]? = nil
        var floats: [Float]
        if dt == 1 || dt == 11 {
            floats = [Float](unsafeUninitializedCapacity: n) { _, k in k = n }  // every element is written
            if n >= 1 << 18, let raw = ox_tensor_raw_floats(t, n) {
                // A large weight: copied on every thread (the page faults of the copy dominate loading).
                floats.withUnsafeMutableBytes { dst in
                    let (d, src) = (dst.baseAddress!, UnsafeRawPointer(raw))
                    Parallel.forSlices(n, threads: Parallel.threads) { r in
                        memcpy(d + 4 * r.lowerBound, src + 4 * r.lowerBound, 4 * r.count)
                    }
                }
            } else if ox_tensor_to_float(t, &floats, n, &err, err.count) != 0 {
                throw fail(.parse, "\(source): \(String(cString: err))")
            }
        } else {
            var iv = [Int64](repeating: 0, count: n)
            guard ox_tensor_to_int64(t, &iv, n, &err, err.count) == 0 else {
                throw fail(.unsupported, "\(source): \(String(cString: err))")
            }
            ints = iv
            floats = iv.map { Float($0) }
        }
        return RawTensor(name: name, dims: dims, floats: floats, ints: ints)
    }
}

/// Reads a whole file, failing with an `.io` error.
func readFile(_ path: String) throws -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw fail(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var st = stat()
    let expected = fstat(fd, &st) == 0 && st.st_size > 0 ? Int(st.st_size) : 0
    // Read straight into the result (one copy, no zero-filling), then keep reading in case the file
    // grew; a file that shrank meanwhile just gives fewer bytes (the parser rejects a truncated model).
    let capacity = max(expected, 1 << 16)
    var out = try [UInt8](unsafeUninitializedCapacity: capacity) { buf, count in
        count = 0
        while count < buf.count {
            let r = read(fd, buf.baseAddress! + count, buf.count - count)
            if r < 0 && errno == EINTR { continue }
            if r < 0 { throw fail(.io, "error reading '\(path)': \(String(cString: strerror(errno)))") }
            if r == 0 { break }
            count += r
        }
    }
    if out.count == capacity {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let r = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            if r < 0 && errno == EINTR { continue }
            if r < 0 { throw fail(.io, "error reading '\(path)': \(String(cString: strerror(errno)))") }
            if r == 0 { break }
            out.append(contentsOf: chunk[0..<r])
        }
    }
    return out
}

/// Where a model's serialized bytes come from, to write it again.
enum ModelOrigin {
    /// A file on disk, re-read when needed; its size and modification time at load tell if it changed.
    case file(path: String, size: Int, mtime: Int)
    /// Bytes handed over in memory (kept).
    case bytes([UInt8])

    static func file(path: String) throws -> ModelOrigin {
        var st = stat()
        guard stat(path, &st) == 0 else { throw fail(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))") }
        return .file(path: path, size: Int(st.st_size), mtime: Int(st.st_mtim.tv_sec) &* 1_000_000_000 &+ Int(st.st_mtim.tv_nsec))
    }

    /// The serialized model, as it was loaded.
    func bytes() throws -> [UInt8] {
        switch self {
        case .bytes(let b): return b
        case .file(let path, let size, let mtime):
            guard case .file(_, let size2, let mtime2) = try ModelOrigin.file(path: path), size2 == size, mtime2 == mtime else {
                throw fail(.io, "'\(path)' changed on disk since the model was loaded from it; load it again to save it")
            }
            return try readFile(path)
        }
    }
}
