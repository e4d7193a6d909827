import Adamant
import AdamantABI
import Synchronization

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
    /// What one call may ask for (adm_context_set_limits). Read and written by the owning thread only.
    var limits = Limits()
    /// Set by adm_context_cancel from any thread; cleared when a call starts; read between the ops of
    /// every pass (from the batch's worker threads too) and once per attack step.
    let cancelRequested = CancelFlag()
    init(_ m: ModelBox) {
        model = m
        session = Session(model: m.model)
        // Predict and gradient passes (and every attack step's) stop between two ops when cancelled.
        // The closure holds the flag, not the box: a weak reference to the box gave it a side table,
        // which made every retain and release of it, and each check, go the slow way (with the
        // executor's cast once per node, a chain of 100 ReLUs at batch 1: 31.3 -> 22.2 us).
        let flag = cancelRequested
        session.shouldCancel = { flag.isSet }
    }
    deinit { tag = 0 }

    /// Starts a call: clears a cancellation left from before.
    func beginCall() { cancelRequested.store(false) }

    var isCancelled: Bool { cancelRequested.isSet }
}

/// A context's cancellation request (adm_context_cancel): its own object, so that the session's
/// check holds it strongly without holding the context.
final class CancelFlag: Sendable {
    private let value = Atomic<Bool>(false)
    func store(_ v: Bool) { value.store(v, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}

/// Per-context limits (adm_context_limits); 0 in a field means no limit.
struct Limits {
    static let defaultMaxBatch = 65_536
    static let defaultMaxPixelsPerImage = 4096 * 4096
    static let defaultMaxAttackStepsTotal = 100_000
    static let defaultMaxInputBytes = 4 << 30

    var maxBatch = Limits.defaultMaxBatch
    var maxPixelsPerImage = Limits.defaultMaxPixelsPerImage
    var maxAttackStepsTotal = Limits.defaultMaxAttackStepsTotal
    var maxInputBytes = Limits.defaultMaxInputBytes

    /// Fails with ADM_ERR_RESOURCE before anything is allocated when a call on `batch` images of
    /// `model` would exceed a limit, or when the system cannot give the memory for its input.
    func check(model: Model, batch: Int, xLen: Int) throws {
        if maxBatch > 0 && batch > maxBatch {
            throw AdamantError(.resource, "batch \(batch) exceeds the context's max_batch \(maxBatch) (adm_context_set_limits)")
        }
        let s = model.inputShape
        let pixels = s[1].multipliedReportingOverflow(by: s[2])
        if maxPixelsPerImage > 0 && (pixels.overflow || pixels.partialValue > maxPixelsPerImage) {
            throw AdamantError(.resource, "the model's images have \(s[1]) x \(s[2]) pixels, above the context's max_pixels_per_image \(maxPixelsPerImage) (adm_context_set_limits)")
        }
        let bytes = xLen.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        if bytes.overflow || (maxInputBytes > 0 && bytes.partialValue > maxInputBytes) {
            throw AdamantError(.resource, "the input batch is \(bytes.overflow ? "too many" : "\(bytes.partialValue)") bytes, above the context's max_input_bytes \(maxInputBytes) (adm_context_set_limits)")
        }
        try checkAllocatable(bytes.partialValue, what: "the input batch (\(batch) images)")
    }

    func checkAttack(steps: Int, restarts: Int) throws {
        guard steps >= 1, restarts >= 1 else { return }  // PGD itself rejects these
        let total = steps * restarts  // both come from int32: no overflow in Int
        if maxAttackStepsTotal > 0 && total > maxAttackStepsTotal {
            throw AdamantError(.resource, "steps x restarts = \(steps) x \(restarts) = \(total) exceeds the context's max_attack_steps_total \(maxAttackStepsTotal) (adm_context_set_limits)")
        }
    }
}

/// Fails with ADM_ERR_RESOURCE when the system would refuse the working copies (input, normalized
/// input) of `bytes` bytes that a call makes, instead of letting the allocation abort the process.
func checkAllocatable(_ bytes: Int, what: String) throws {
    let (need, o) = bytes.multipliedReportingOverflow(by: 2)
    guard !o, need >= 0 else { throw AdamantError(.resource, "\(what) is too large to allocate") }
    guard need > 0 else { return }
    guard let p = malloc(need) else {
        throw AdamantError(.resource, "cannot allocate \(need) bytes for \(what): \(String(cString: strerror(ENOMEM)))")
    }
    free(p)
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

/// A size_t received as Int, printed as the unsigned value the caller passed (SIZE_MAX, not -1).
func unsigned(_ n: Int) -> String { String(UInt(bitPattern: n)) }

/// Converts a size_t count to Int, rejecting absurd values.
func count(_ n: Int, _ name: String) throws -> Int {
    guard n >= 0, n <= Int(Int32.max) * 64 else { throw invalid("\(name) = \(unsigned(n)) is out of range") }
    return n
}

/// Validates a size_t BN domain index against the model (printed unsigned).
func domainIndex(_ d: Int, _ model: Model, _ name: String = "domain") throws -> Int {
    guard d >= 0 && d < model.domains.count else {
        throw AdamantError(.domain, "\(name) index \(unsigned(d)) is out of range; the model has \(model.domains.count) domain(s): \(model.domains.joined(separator: ", "))")
    }
    return d
}

#if canImport(Glibc)
import Glibc
#endif
