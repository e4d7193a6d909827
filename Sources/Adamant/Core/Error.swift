/// The kind of an ``AdamantError``; each maps to one `ADM_ERR_*` status of the C ABI.
public enum ErrorKind: Int32, Sendable {
    /// A bad argument: NULL, out of range, inconsistent.
    case invalidArgument = 1
    /// A file could not be read or written.
    case io = 2
    /// A malformed or invalid ONNX model.
    case parse = 3
    /// An op, attribute or data type adamant does not run.
    case unsupported = 4
    /// A wrong shape or buffer length.
    case shape = 5
    /// An unknown BN domain, or domain files that disagree.
    case domain = 6
    /// A bug in adamant.
    case `internal` = 7
    /// A resource limit would be exceeded: a context limit (batch, pixels per image, attack steps,
    /// input bytes) or the memory the system can give.
    case resource = 8
    /// The call was cancelled from another thread (`adm_context_cancel`).
    case cancelled = 9
}

/// Every failure adamant reports: a kind and a human-readable message.
public struct AdamantError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, coarsely.
    public let kind: ErrorKind
    /// What went wrong, for a person.
    public let message: String

    /// Creates an error.
    public init(_ kind: ErrorKind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }
}

@inline(__always)
func fail(_ kind: ErrorKind, _ message: String) -> AdamantError { AdamantError(kind, message) }

/// Multiplies sizes, failing instead of trapping on overflow.
func checkedProduct(_ dims: [Int], what: @autoclosure () -> String) throws -> Int {
    var n = 1
    for d in dims {
        guard d >= 0 else { throw fail(.shape, "\(what()): negative dimension in \(dims)") }
        let (r, o) = n.multipliedReportingOverflow(by: d)
        guard !o, r <= Int(Int32.max) * 16 else { throw fail(.shape, "\(what()): shape \(dims) is too large") }
        n = r
    }
    return n
}
