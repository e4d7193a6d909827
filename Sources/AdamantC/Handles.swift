import Adamant
import AdamantABI

/// The thread-local last error message behind `adm_last_error()`.
enum LastError {
    private static let key: pthread_key_t = {
        var k = pthread_key_t()
        pthread_key_create(&k) { free($0) }
        return k
    }()

    static func set(_ message: String) {
        if let old = pthread_getspecific(key) { free(old) }
        pthread_setspecific(key, strdup(message))
    }

    static func clear() { set("") }

    static var pointer: UnsafePointer<CChar> {
        if let p = pthread_getspecific(key) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
        set("")
        return UnsafePointer(pthread_getspecific(key)!.assumingMemoryBound(to: CChar.self))
    }
}

/// Runs a C-ABI body: clears the error, maps thrown errors to status codes and messages.
@inline(__always)
func guarded(_ body: () throws -> Void) -> adm_status {
    LastError.clear()
    do {
        try body()
        return 0
    } catch let e as AdamantError {
        LastError.set(e.message)
        return e.kind.rawValue
    } catch {
        LastError.set("\(error)")
        return ErrorKind.internal.rawValue
    }
}

func invalid(_ msg: String) -> AdamantError { AdamantError(.invalidArgument, msg) }

/// Unwraps a required pointer argument.
@inline(__always)
func required<T>(_ p: T?, _ name: String) throws -> T {
    guard let p else { throw invalid("\(name) is NULL") }
    return p
}

/// A C string argument as a Swift String.
func string(_ p: UnsafePointer<CChar>?, _ name: String) throws -> String {
    String(cString: try required(p, name))
}

/// A (pointer, length) buffer argument; NULL with length 0 is an empty buffer.
func buffer<T>(_ p: UnsafePointer<T>?, _ len: Int, _ name: String) throws -> UnsafeBufferPointer<T> {
    if len == 0 { return UnsafeBufferPointer(start: nil, count: 0) }
    return UnsafeBufferPointer(start: try required(p, name), count: len)
}

/// Boxes behind the opaque handles. A magic number catches stale or foreign pointers early.
final class ModelBox {
    static let magic: UInt64 = 0x6164_6d5f_6d6f_646c
    var tag = ModelBox.magic
    let model: Model
    /// Domain names as C strings, alive as long as the model.
    let domainNames: [UnsafeMutablePointer<CChar>]
    init(_ m: Model) {
        model = m
        domainNames = m.domains.map { strdup($0)! }
    }
    deinit {
        tag = 0
        domainNames.forEach { free($0) }
    }
}

final class ContextBox {
    static let magic: UInt64 = 0x6164_6d5f_6374_7820
    var tag = ContextBox.magic
    let model: ModelBox
    let session: Session
    init(_ m: ModelBox) { model = m; session = Session(model: m.model) }
    deinit { tag = 0 }
}

final class CalibratorBox {
    static let magic: UInt64 = 0x6164_6d5f_6361_6c69
    var tag = CalibratorBox.magic
    let calibrator: Calibrator
    init(_ c: Calibrator) { calibrator = c }
    deinit { tag = 0 }
}

func modelBox(_ p: OpaquePointer?) throws -> ModelBox {
    let b = Unmanaged<ModelBox>.fromOpaque(UnsafeRawPointer(try required(p, "model"))).takeUnretainedValue()
    guard b.tag == ModelBox.magic else { throw invalid("model is not a live adm_model handle") }
    return b
}

func contextBox(_ p: OpaquePointer?) throws -> ContextBox {
    let b = Unmanaged<ContextBox>.fromOpaque(UnsafeRawPointer(try required(p, "ctx"))).takeUnretainedValue()
    guard b.tag == ContextBox.magic else { throw invalid("ctx is not a live adm_context handle") }
    return b
}

func calibratorBox(_ p: OpaquePointer?) throws -> CalibratorBox {
    let b = Unmanaged<CalibratorBox>.fromOpaque(UnsafeRawPointer(try required(p, "cal"))).takeUnretainedValue()
    guard b.tag == CalibratorBox.magic else { throw invalid("cal is not a live adm_calibrator handle") }
    return b
}

func retained<T: AnyObject>(_ o: T) -> OpaquePointer { OpaquePointer(Unmanaged.passRetained(o).toOpaque()) }

/// Converts a size_t count to Int, rejecting absurd values.
func count(_ n: Int, _ name: String) throws -> Int {
    guard n >= 0, n <= Int(Int32.max) * 64 else { throw invalid("\(name) = \(n) is out of range") }
    return n
}

#if canImport(Glibc)
import Glibc
#endif
