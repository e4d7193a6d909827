import Adamant
import Hummingbird

/// A request that cannot be served: an HTTP status, a stable machine-readable kind (also the
/// `kind` label of `adamant_serve_errors_total`) and a message for a person.
struct ServeError: Error, CustomStringConvertible {
    /// The response status.
    let status: HTTPResponse.Status
    /// A short stable name: bad_request, bad_image, wrong_size, too_large, unknown_domain,
    /// bad_attack_params, overloaded, cancelled, not_found, method_not_allowed, internal.
    let kind: String
    /// What went wrong.
    let message: String
    /// Seconds for a Retry-After header (503 only).
    var retryAfter: Int? = nil

    var description: String { "\(status.code) \(kind): \(message)" }

    static func badRequest(_ m: String) -> ServeError { ServeError(status: .badRequest, kind: "bad_request", message: m) }
    static func badImage(_ m: String) -> ServeError { ServeError(status: .badRequest, kind: "bad_image", message: m) }
    static func wrongSize(_ m: String) -> ServeError { ServeError(status: .badRequest, kind: "wrong_size", message: m) }
    static func tooLarge(_ m: String) -> ServeError { ServeError(status: .contentTooLarge, kind: "too_large", message: m) }
    static func unknownDomain(_ m: String) -> ServeError { ServeError(status: .notFound, kind: "unknown_domain", message: m) }
    static func attackParams(_ m: String) -> ServeError {
        ServeError(status: .unprocessableContent, kind: "bad_attack_params", message: m)
    }
    static func overloaded(_ m: String, retryAfter: Int) -> ServeError {
        ServeError(status: .serviceUnavailable, kind: "overloaded", message: m, retryAfter: retryAfter)
    }

    /// Maps an error thrown by the runtime to a response. `attack`: invalid arguments are attack
    /// parameters (422) rather than bad input (400).
    static func from(_ e: AdamantError, attack: Bool) -> ServeError {
        switch e.kind {
        case .domain: return .unknownDomain(e.message)
        case .shape: return .wrongSize(e.message)
        case .invalidArgument: return attack ? .attackParams(e.message) : .badRequest(e.message)
        case .resource: return .tooLarge(e.message)
        case .cancelled:
            return ServeError(status: HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"),
                              kind: "cancelled", message: e.message)
        default: return ServeError(status: .internalServerError, kind: "internal", message: e.message)
        }
    }

    /// The JSON body: {"error": {"status": 400, "kind": "...", "message": "..."}}.
    var json: String {
        "{\"error\":{\"status\":\(status.code),\"kind\":\(jsonString(kind)),\"message\":\(jsonString(message))}}"
    }
}

/// A float as JSON: the shortest decimal that reads back to the same float32 (`null` if not finite).
func jsonFloat(_ v: Float) -> String { v.isFinite ? "\(v)" : "null" }
