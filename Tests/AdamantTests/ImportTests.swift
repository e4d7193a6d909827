import XCTest
@testable import Adamant

/// The pieces of the tensorpack importer that are not checked end to end from Python
/// (bindings/python/tests/test_tensorpack.py compares whole imported networks with PyTorch).
final class ImportTests: XCTestCase {
    /// TensorFlow 'SAME': out = ceil(in / stride), the odd pixel of padding after.
    func testSamePadding() {
        let cases: [(Int, Int, Int, (Int, Int, Int))] = [
            (224, 7, 2, (112, 2, 3)), (112, 3, 2, (56, 0, 1)), (56, 3, 2, (28, 0, 1)), (56, 1, 2, (28, 0, 0)),
            (56, 3, 1, (56, 1, 1)), (57, 7, 2, (29, 3, 3)), (29, 3, 2, (15, 1, 1)), (7, 1, 2, (4, 0, 0)),
        ]
        for (size, k, s, want) in cases {
            let got = TensorpackImport.samePadding(size, kernel: k, stride: s)
            XCTAssertEqual([got.out, got.begin, got.end], [want.0, want.1, want.2], "size \(size) k \(k) s \(s)")
        }
    }

    func testPixelSpaceMapping() {
        let pre = Preprocessing(mean: [127.5, 127.5, 127.5], std: [127.5, 127.5, 127.5], pixelMin: 0, pixelMax: 255,
                                channelOrder: .bgr)
        // two 1x2 images, RGB in [0, 1]
        let rgb: [Float] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1, 0, 0.5, 0.25, 0, 1]
        var x = rgb
        pre.fromUnitRGB(&x, channels: 3, plane: 2)
        let want: [Float] = [0.5, 0.6, 0.3, 0.4, 0.1, 0.2, 0, 1, 0.5, 0.25, 1, 0].map { $0 * 255 }
        for (a, b) in zip(x, want) { XCTAssertEqual(a, b, accuracy: 1e-4) }
        pre.toUnitRGB(&x, channels: 3, plane: 2)
        for (a, b) in zip(x, rgb) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        var y = rgb
        Preprocessing().fromUnitRGB(&y, channels: 3, plane: 2)
        XCTAssertEqual(y, rgb)   // RGB in [0, 1]: the identity
    }

    // MARK: .npz reading (stored members; DEFLATE ones are numpy's savez_compressed in the Python tests)

    static func crc32(_ b: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for byte in b {
            c ^= UInt32(byte)
            for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
        }
        return ~c
    }

    static func npy(descr: String, shape: [Int], data: [UInt8], fortran: Bool = false) -> [UInt8] {
        let dims = shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? "," : "")
        var header = "{'descr': '\(descr)', 'fortran_order': \(fortran ? "True" : "False"), 'shape': (\(dims)), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let n = header.utf8.count
        return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xFF), UInt8(n >> 8)] + Array(header.utf8) + data
    }

    /// A zip archive with stored members, as np.savez writes it.
    static func zipArchive(_ members: [(String, [UInt8])], corruptCRC: Bool = false) -> [UInt8] {
        func le16(_ v: Int) -> [UInt8] { [UInt8(v & 0xFF), UInt8((v >> 8) & 0xFF)] }
        func le32(_ v: Int) -> [UInt8] { le16(v & 0xFFFF) + le16((v >> 16) & 0xFFFF) }
        var out: [UInt8] = [], dir: [UInt8] = []
        for (name, data) in members {
            let crc = Int(crc32(data) ^ (corruptCRC ? 1 : 0))
            let offset = out.count
            let nameBytes = Array(name.utf8)
            out += le32(0x0403_4b50) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc) + le32(data.count)
                + le32(data.count) + le16(nameBytes.count) + le16(0) + nameBytes + data
            dir += le32(0x0201_4b50) + le16(20) + le16(20) + le16(0) + le16(0) + le16(0) + le16(0) + le32(crc)
                + le32(data.count) + le32(data.count) + le16(nameBytes.count) + le16(0) + le16(0) + le16(0) + le16(0)
                + le32(0) + le32(offset) + nameBytes
        }
        let dirOffset = out.count
        out += dir
        out += le32(0x0605_4b50) + le16(0) + le16(0) + le16(members.count) + le16(members.count) + le32(dir.count)
            + le32(dirOffset) + le16(0)
        return out
    }

    static func bytes<T>(_ v: [T]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

    func testNPZStoredArraysOfEachFloatType() throws {
        let f32: [Float] = [1.5, -2, 3.25, 0, 7, -8]
        let f64: [Double] = [0.1, 0.2, 0.3]
        let f16: [Float16] = [1, -0.5, 65504]
        let archive = try NPZArchive(bytes: ImportTests.zipArchive([
            ("conv0/W.npy", ImportTests.npy(descr: "<f4", shape: [2, 3], data: ImportTests.bytes(f32))),
            ("linear/b:0.npy", ImportTests.npy(descr: "<f8", shape: [3], data: ImportTests.bytes(f64))),
            ("half.npy", ImportTests.npy(descr: "<f2", shape: [1, 3], data: ImportTests.bytes(f16))),
            ("step.npy", ImportTests.npy(descr: "<i8", shape: [], data: ImportTests.bytes([Int64(5)]))),
        ]))
        XCTAssertEqual(archive.names, ["conv0/W", "linear/b:0", "half", "step"])
        let a = try archive.floats("conv0/W")
        XCTAssertEqual(a.shape, [2, 3])
        XCTAssertEqual(a.values, f32)
        XCTAssertEqual(try archive.floats("linear/b:0").values, f64.map(Float.init))
        XCTAssertEqual(try archive.floats("half").values, [1, -0.5, 65504])
        XCTAssertEqual(try archive.shape("step"), [])
        XCTAssertThrowsError(try archive.floats("step")) { e in
            XCTAssertTrue((e as! AdamantError).message.contains("element type '<i8'"))
        }
        XCTAssertThrowsError(try archive.floats("absent"))
    }

    func testNPZErrors() throws {
        let good = ImportTests.npy(descr: "<f4", shape: [2], data: ImportTests.bytes([Float(1), 2]))
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "no error" } catch let e as AdamantError { return e.message } catch { return "\(error)" }
        }
        XCTAssertTrue(message { _ = try NPZArchive(bytes: Array("not a zip".utf8)) }.contains("not a .npz file"))
        let badCRC = try NPZArchive(bytes: ImportTests.zipArchive([("a.npy", good)], corruptCRC: true))
        XCTAssertTrue(message { _ = try badCRC.floats("a") }.contains("CRC"))
        let fortran = try NPZArchive(bytes: ImportTests.zipArchive([("a.npy", ImportTests.npy(descr: "<f4", shape: [2], data: ImportTests.bytes([Float(1), 2]), fortran: true))]))
        XCTAssertTrue(message { _ = try fortran.floats("a") }.contains("Fortran order"))
        let short = try NPZArchive(bytes: ImportTests.zipArchive([("a.npy", ImportTests.npy(descr: "<f4", shape: [3], data: ImportTests.bytes([Float(1), 2])))]))
        XCTAssertTrue(message { _ = try short.floats("a") }.contains("8 data bytes for shape [3]"))
        var truncated = ImportTests.zipArchive([("a.npy", good)])
        truncated.removeLast(30)
        XCTAssertFalse(message { _ = try NPZArchive(bytes: truncated) } == "no error")
        XCTAssertTrue(message { _ = try NPZArchive(path: "/nonexistent/x.npz") }.contains("cannot open"))
    }

    /// A checkpoint built in memory: the importer names a missing variable and a misshaped one.
    func testImporterNamesMissingAndMisshapedVariables() throws {
        let w = ImportTests.npy(descr: "<f4", shape: [2048, 10], data: ImportTests.bytes([Float](repeating: 0, count: 20480)))
        let b = ImportTests.npy(descr: "<f4", shape: [10], data: ImportTests.bytes([Float](repeating: 0, count: 10)))
        let conv0 = ImportTests.npy(descr: "<f4", shape: [7, 7, 3, 32], data: ImportTests.bytes([Float](repeating: 0, count: 7 * 7 * 3 * 32)))
        let archive = try NPZArchive(bytes: ImportTests.zipArchive([("linear/W.npy", w), ("linear/b.npy", b), ("conv0/W.npy", conv0)]))
        XCTAssertThrowsError(try TensorpackImport.serialized(archive: archive, options: .init(arch: .resnet50, blocks: [1, 1, 1, 1], inputSize: 64))) { e in
            let m = (e as! AdamantError).message
            XCTAssertEqual((e as! AdamantError).kind, .shape)
            XCTAssertTrue(m.contains("misshaped variable(s): conv0/W is [7, 7, 3, 32], expected [7, 7, 3, 64]"), m)
            XCTAssertTrue(m.contains("missing variable(s): conv0/bn/gamma"), m)
        }
    }
}
