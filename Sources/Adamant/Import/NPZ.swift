import CZip
#if canImport(Glibc)
import Glibc
#endif

/// One array of a `.npz` archive, converted to float32.
public struct NPYArray: Sendable {
    /// The array's shape (C order).
    public var shape: [Int]
    /// The values, C order, as float32.
    public var values: [Float]
}

/// A NumPy `.npz` archive (a zip of `.npy` files, as `np.savez` and `np.savez_compressed` write it):
/// the member list is read at open, each array is decompressed and parsed when asked for.
///
/// Supports stored and DEFLATE members, ZIP64 sizes and offsets, `.npy` format versions 1–3, and
/// little-endian float32, float64 and float16 arrays in C order (converted to float32); other
/// element types can be listed but not read as floats.
public struct NPZArchive {
    struct Member {
        var name: String
        var method: Int
        var compressedSize: Int
        var size: Int
        var localHeaderOffset: Int
        var crc: UInt32
    }

    /// Where the archive came from (for messages).
    public let source: String
    private let data: [UInt8]
    private let members: [String: Member]
    /// Array names (the member names without `.npy`), in archive order.
    public let names: [String]

    /// Opens a `.npz` file.
    public init(path: String) throws {
        guard let f = fopen(path, "rb") else {
            throw fail(.io, "cannot open '\(path)': \(String(cString: strerror(errno)))")
        }
        defer { fclose(f) }
        var st = stat()
        guard fstat(fileno(f), &st) == 0 else { throw fail(.io, "cannot stat '\(path)'") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw fail(.io, "'\(path)' is not a regular file") }
        let n = Int(st.st_size)
        let bytes = [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = n == 0 ? 0 : fread(buf.baseAddress, 1, n, f)
        }
        guard bytes.count == n else { throw fail(.io, "reading '\(path)' failed") }
        try self.init(bytes: bytes, source: path)
    }

    /// Parses an archive held in memory.
    public init(bytes: [UInt8], source: String = "<memory>") throws {
        self.source = source
        data = bytes
        var list: [Member] = []
        try NPZArchive.readDirectory(bytes, source: source, into: &list)
        var map: [String: Member] = [:]
        var names: [String] = []
        for m in list {
            guard m.name.hasSuffix(".npy") else { continue }
            let key = String(m.name.dropLast(4))
            guard map[key] == nil else { throw fail(.parse, "\(source): the archive holds two arrays named '\(key)'") }
            map[key] = m
            names.append(key)
        }
        members = map
        self.names = names
    }

    private static func u16(_ b: [UInt8], _ o: Int) -> Int { Int(b[o]) | Int(b[o + 1]) << 8 }
    private static func u32(_ b: [UInt8], _ o: Int) -> Int { u16(b, o) | u16(b, o + 2) << 16 }
    private static func u64(_ b: [UInt8], _ o: Int) -> Int {
        let v = UInt64(u32(b, o)) | UInt64(u32(b, o + 4)) << 32
        return v > UInt64(Int.max) ? Int.max : Int(v)
    }

    /// Reads the central directory (ZIP64 aware).
    private static func readDirectory(_ b: [UInt8], source: String, into out: inout [Member]) throws {
        let notZip = fail(.parse, "\(source): not a .npz file (no zip end-of-central-directory record)")
        guard b.count >= 22 else { throw notZip }
        // The end record is in the last 22 + 65535 bytes (its comment is at most 65535 bytes).
        var eocd = -1
        var i = b.count - 22
        let lowest = max(0, b.count - 22 - 65535)
        while i >= lowest {
            if b[i] == 0x50 && b[i + 1] == 0x4b && b[i + 2] == 0x05 && b[i + 3] == 0x06 { eocd = i; break }
            i -= 1
        }
        guard eocd >= 0 else { throw notZip }
        var entries = u16(b, eocd + 10)
        var dirSize = u32(b, eocd + 12)
        var dirOffset = u32(b, eocd + 16)
        if entries == 0xFFFF || dirSize == 0xFFFF_FFFF || dirOffset == 0xFFFF_FFFF {
            // ZIP64: a locator right before the end record points at the ZIP64 end record.
            let loc = eocd - 20
            guard loc >= 0, u32(b, loc) == 0x0706_4b50 else { throw fail(.parse, "\(source): ZIP64 locator missing") }
            let z = u64(b, loc + 8)
            guard z <= b.count - 56, u32(b, z) == 0x0606_4b50 else { throw fail(.parse, "\(source): bad ZIP64 end record") }
            entries = u64(b, z + 32)
            dirSize = u64(b, z + 40)
            dirOffset = u64(b, z + 48)
        }
        guard dirOffset <= b.count, dirSize <= b.count - dirOffset else {
            throw fail(.parse, "\(source): the zip directory lies outside the file (truncated download?)")
        }
        var p = dirOffset
        for _ in 0..<entries {
            guard p + 46 <= b.count, u32(b, p) == 0x0201_4b50 else { throw fail(.parse, "\(source): corrupt zip directory") }
            let method = u16(b, p + 10)
            let crc = UInt32(u32(b, p + 16))
            var csize = u32(b, p + 20), usize = u32(b, p + 24)
            let nameLen = u16(b, p + 28), extraLen = u16(b, p + 30), commentLen = u16(b, p + 32)
            var offset = u32(b, p + 42)
            guard p + 46 + nameLen + extraLen + commentLen <= b.count else { throw fail(.parse, "\(source): corrupt zip directory") }
            let name = String(decoding: b[(p + 46)..<(p + 46 + nameLen)], as: UTF8.self)
            // ZIP64 extra field: the 64-bit values of the fields set to 0xFFFFFFFF, in this order.
            var e = p + 46 + nameLen
            let eEnd = e + extraLen
            while e + 4 <= eEnd {
                let id = u16(b, e), len = u16(b, e + 2)
                if id == 1 {
                    var q = e + 4
                    if usize == 0xFFFF_FFFF, q + 8 <= e + 4 + len { usize = u64(b, q); q += 8 }
                    if csize == 0xFFFF_FFFF, q + 8 <= e + 4 + len { csize = u64(b, q); q += 8 }
                    if offset == 0xFFFF_FFFF, q + 8 <= e + 4 + len { offset = u64(b, q); q += 8 }
                }
                e += 4 + len
            }
            out.append(Member(name: name, method: method, compressedSize: csize, size: usize,
                              localHeaderOffset: offset, crc: crc))
            p += 46 + nameLen + extraLen + commentLen
        }
    }

    /// True if the archive holds an array called `name`.
    public func contains(_ name: String) -> Bool { members[name] != nil }

    /// The raw `.npy` bytes of one member.
    private func memberBytes(_ m: Member) throws -> [UInt8] {
        let b = data
        let h = m.localHeaderOffset
        guard h <= b.count - 30, NPZArchive.u32(b, h) == 0x0403_4b50 else {
            throw fail(.parse, "\(source): corrupt zip entry for '\(m.name)'")
        }
        let start = h + 30 + NPZArchive.u16(b, h + 26) + NPZArchive.u16(b, h + 28)
        guard start <= b.count, m.compressedSize <= b.count - start else {
            throw fail(.parse, "\(source): '\(m.name)' runs past the end of the file (truncated download?)")
        }
        var out: [UInt8]
        switch m.method {
        case 0:
            guard m.compressedSize == m.size else { throw fail(.parse, "\(source): stored member '\(m.name)' has inconsistent sizes") }
            out = Array(b[start..<(start + m.size)])
        case 8:
            var err = [CChar](repeating: 0, count: 256)
            var rc: Int32 = 0
            out = [UInt8](unsafeUninitializedCapacity: m.size) { dst, count in
                rc = b.withUnsafeBytes { src in
                    czip_inflate_raw(src.baseAddress! + start, m.compressedSize, dst.baseAddress, m.size, &err, err.count)
                }
                count = m.size
            }
            guard rc == 0 else { throw fail(.parse, "\(source): cannot decompress '\(m.name)': \(String(cString: err))") }
        default:
            throw fail(.unsupported, "\(source): '\(m.name)' uses zip compression method \(m.method); only stored (0) and DEFLATE (8) are supported")
        }
        let crc = out.withUnsafeBytes { UInt32(truncatingIfNeeded: czip_crc32($0.baseAddress, $0.count)) }
        guard crc == m.crc else { throw fail(.parse, "\(source): '\(m.name)' fails its CRC check (corrupt file)") }
        return out
    }

    /// The shape of array `name` (reads its header).
    public func shape(_ name: String) throws -> [Int] { try header(name).shape }

    private func header(_ name: String) throws -> (descr: String, shape: [Int], dataStart: Int, bytes: [UInt8]) {
        guard let m = members[name] else { throw fail(.invalidArgument, "\(source): no array '\(name)'") }
        let b = try memberBytes(m)
        let what = "\(source): array '\(name)'"
        guard b.count >= 10, b[0] == 0x93, Array(b[1..<6]) == Array("NUMPY".utf8) else { throw fail(.parse, "\(what) is not in .npy format") }
        let major = Int(b[6])
        let (hlen, hstart): (Int, Int)
        switch major {
        case 1: (hlen, hstart) = (NPZArchive.u16(b, 8), 10)
        case 2, 3:
            guard b.count >= 12 else { throw fail(.parse, "\(what): truncated header") }
            (hlen, hstart) = (NPZArchive.u32(b, 8), 12)
        default: throw fail(.unsupported, "\(what): .npy format version \(major) is not supported")
        }
        guard hstart + hlen <= b.count else { throw fail(.parse, "\(what): truncated header") }
        let text = String(decoding: b[hstart..<(hstart + hlen)], as: UTF8.self)
        func value(_ key: String) throws -> Substring {
            let needle = Array("'\(key)':".utf8), hay = Array(text.utf8)
            guard needle.count <= hay.count,
                  let at = (0...(hay.count - needle.count)).first(where: { hay[$0..<($0 + needle.count)].elementsEqual(needle) }) else {
                throw fail(.parse, "\(what): header lacks '\(key)'")
            }
            let rest = String(decoding: hay[(at + needle.count)...], as: UTF8.self)
            return Substring(rest).drop(while: { $0 == " " })
        }
        var descrText = try value("descr")
        guard descrText.first == "'" else { throw fail(.unsupported, "\(what): structured dtype \(descrText.prefix(40)) is not supported") }
        descrText = descrText.dropFirst()
        let descr = String(descrText.prefix(while: { $0 != "'" }))
        let fortran = try value("fortran_order")
        guard fortran.hasPrefix("False") else { throw fail(.unsupported, "\(what) is stored in Fortran order; save it in C order") }
        let shapeText = try value("shape")
        guard shapeText.first == "(", let close = shapeText.firstIndex(of: ")") else { throw fail(.parse, "\(what): bad shape in header") }
        let dims = shapeText[shapeText.index(after: shapeText.startIndex)..<close].split(separator: ",")
            .map { $0.trimmingCharacters() }.filter { !$0.isEmpty }
        let shape = try dims.map { d -> Int in
            guard let v = Int(d), v >= 0 else { throw fail(.parse, "\(what): bad dimension '\(d)'") }
            return v
        }
        return (descr, shape, hstart + hlen, b)
    }

    /// Array `name` as float32 (from little-endian float32, float64 or float16).
    public func floats(_ name: String) throws -> NPYArray {
        let (descr, shape, start, b) = try header(name)
        let what = "\(source): array '\(name)'"
        let n = try checkedProduct(shape, what: what)
        let width: Int
        switch descr {
        case "<f4", "|f4": width = 4
        case "<f8", "|f8": width = 8
        case "<f2", "|f2": width = 2
        default: throw fail(.unsupported, "\(what) has element type '\(descr)'; expected little-endian float32, float64 or float16")
        }
        guard b.count - start == n * width else {
            throw fail(.parse, "\(what): \(b.count - start) data bytes for shape \(shape) of '\(descr)'")
        }
        let values = [Float](unsafeUninitializedCapacity: n) { dst, count in
            b.withUnsafeBytes { raw in
                let src = raw.baseAddress! + start
                switch width {
                case 4: if n > 0 { memcpy(dst.baseAddress!, src, n * 4) }
                case 8: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
                default: for i in 0..<n { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Float16.self)) }
                }
            }
            count = n
        }
        return NPYArray(shape: shape, values: values)
    }
}
