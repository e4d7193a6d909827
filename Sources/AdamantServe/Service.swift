import Adamant
import CBackend
import CImageIO
import Foundation
import Hummingbird
import Logging
import NIOCore

/// The request context: Hummingbird's core storage plus the connection, so that a long job can
/// notice that its client has gone (``isGone``).
struct ServeContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    let channel: any Channel

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }

    /// True once the client's connection is closed.
    var isGone: @Sendable () -> Bool {
        let ch = channel
        return { !ch.isActive }
    }
}

/// Server limits and behaviour (`adamant serve` options).
struct ServeSettings: Sendable {
    var workers: Int
    var computeThreads: Int
    var maxBatch: Int
    var maxBody: Int
    var maxQueue: Int
    var maxSteps: Int
    var batchWindowMs: Double
}

/// Request parameters: query-string values, overridden by the top-level fields of a JSON body.
struct Params {
    var values: [String: String] = [:]

    init(query: [String: String], fields: [String: Any]) {
        values = query
        for (k, v) in fields {
            if let s = v as? String { values[k] = s }
            else if isJSONBool(v), let b = v as? Bool { values[k] = b ? "true" : "false" }
            else if let n = v as? NSNumber { values[k] = n.stringValue }
            else if let a = v as? [Any] { values[k] = a.map { "\($0)" }.joined(separator: ",") }
        }
    }

    subscript(_ key: String) -> String? { values[key] }

    /// A number such as 0.03, 8/255 or 2e-3 (attack parameters: a bad one is a 422).
    func number(_ key: String) throws -> Float? {
        guard let s = values[key] else { return nil }
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        if parts.count == 2, let a = Float(parts[0]), let b = Float(parts[1]), b != 0 { return a / b }
        if parts.count == 1, let v = Float(s) { return v }
        throw ServeError.attackParams("\(key) must be a number such as 0.03 or 8/255, got '\(s)'")
    }

    func int(_ key: String, attack: Bool = true) throws -> Int? {
        guard let s = values[key] else { return nil }
        guard let v = Int(s) else {
            let m = "\(key) must be an integer, got '\(s)'"
            throw attack ? ServeError.attackParams(m) : ServeError.badRequest(m)
        }
        return v
    }

    func bool(_ key: String, attack: Bool = true) throws -> Bool? {
        guard let s = values[key]?.lowercased() else { return nil }
        switch s {
        case "1", "true", "yes", "on", "": return true
        case "0", "false", "no", "off": return false
        default:
            let m = "\(key) must be true or false, got '\(s)'"
            throw attack ? ServeError.attackParams(m) : ServeError.badRequest(m)
        }
    }
}

/// The HTTP service: routes, handlers, and the error/metrics/logging middleware.
final class AdamantService: Sendable {
    let model: Model
    let pool: WorkerPool
    let settings: ServeSettings
    let metrics: ServeMetrics
    let logger: Logger
    let modelName: String
    /// The GET /v1/model body (computed once).
    let infoJSON: String

    init(model: Model, modelName: String, settings: ServeSettings, logger: Logger) throws {
        self.model = model
        self.settings = settings
        self.logger = logger
        self.modelName = modelName
        let metrics = ServeMetrics()
        self.metrics = metrics
        pool = WorkerPool(model: model, workers: settings.workers, maxQueue: settings.maxQueue, maxBatch: settings.maxBatch,
                          batchWindow: settings.batchWindowMs / 1000)
        pool.onDepthChange = { q, r in metrics.queued.set(Double(q)); metrics.running.set(Double(r)) }
        pool.onBatch = { n in metrics.batchImages.record(Double(n)) }
        var info = try JSONSerialization.jsonObject(with: Data(try model.info().json.utf8)) as! [String: Any]
        info["model"] = modelName
        info["backend"] = String(cString: backendInfo())
        info["isa"] = Backend.isa.name
        info["server"] = ["workers": settings.workers, "compute_threads": Int(abk_get_threads()), "max_batch": settings.maxBatch,
                          "max_body_bytes": settings.maxBody, "max_queue": settings.maxQueue,
                          "max_attack_steps": settings.maxSteps, "batch_window_ms": settings.batchWindowMs,
                          "version": "0.1.0"] as [String: Any]
        infoJSON = String(decoding: try JSONSerialization.data(withJSONObject: info, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
    }

    // MARK: routes

    func router() -> Router<ServeContext> {
        let r = Router(context: ServeContext.self)
        r.add(middleware: ServeMiddleware(metrics: metrics, logger: logger))
        r.post("/v1/predict") { req, ctx in try await self.predict(req, ctx) }
        r.post("/v1/attack") { req, ctx in try await self.attack(req, ctx) }
        r.get("/v1/model") { _, _ in self.json(self.infoJSON) }
        r.get("/healthz") { _, _ in
            self.json("{\"status\":\"ok\",\"model\":\(jsonString(self.modelName)),\"queued\":\(self.pool.queued)}")
        }
        r.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: self.metrics.text())))
        }
        return r
    }

    /// The query string's parameters (percent-decoded; a repeated key keeps its last value).
    func query(_ req: Request) -> [String: String] {
        var d: [String: String] = [:]
        for (k, v) in req.uri.queryParameters { d[String(k)] = String(v) }
        return d
    }

    func json(_ s: String, status: HTTPResponse.Status = .ok, headers: HTTPFields = [:]) -> Response {
        var h = headers
        h[.contentType] = "application/json"
        return Response(status: status, headers: h, body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    /// The request body, at most --max-body bytes (413 beyond: by Content-Length before reading,
    /// else while reading a chunked body).
    func body(_ req: Request) async throws -> [UInt8] {
        if let cl = req.headers[.contentLength], let n = Int(cl), n > settings.maxBody {
            throw ServeError.tooLarge("the body is \(n) bytes; this server takes at most \(settings.maxBody) (--max-body)")
        }
        do {
            var buf = try await req.body.collect(upTo: settings.maxBody)
            return buf.readBytes(length: buf.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            throw ServeError.tooLarge("the body is over \(settings.maxBody) bytes, the most this server takes (--max-body)")
        }
    }

    func input(_ req: Request, resize: Bool) async throws -> InputBatch {
        let bytes = try await body(req)
        let dec = InputDecoder(shape: model.inputShape, maxBatch: settings.maxBatch, resize: resize)
        return try dec.decode(body: bytes, contentType: req.headers[.contentType],
                              shapeHeader: req.headers[.init("X-Shape")!])
    }

    /// A domain by name or index (unknown: 404).
    func domain(_ spec: String?, _ what: String) throws -> Int {
        guard let s = spec, !s.isEmpty else { return model.defaultDomain }
        if let i = model.domains.firstIndex(of: s) { return i }
        if let i = Int(s), i >= 0, i < model.domains.count { return i }
        throw ServeError.unknownDomain("unknown BN domain '\(s)' for \(what); the model has \(model.domains.joined(separator: ", "))")
    }

    /// Fails with 400 on the first NaN/infinite pixel, or (for attacks) one outside the pixel range.
    func checkPixels(_ x: [Float], range: Bool) throws {
        let per = model.inputShape.reduce(1, *)
        let (lo, hi) = (model.preprocessing.pixelMin, model.preprocessing.pixelMax)
        for (i, v) in x.enumerated() where !v.isFinite || (range && !(v >= lo && v <= hi)) {
            throw ServeError.badRequest("pixel \(i % per) of image \(i / per) is \(v): pixels must be finite\(range ? " and lie in [\(lo), \(hi)] (attacks work in pixel space)" : "")")
        }
    }

    // MARK: /v1/predict

    func predict(_ req: Request, _ ctx: ServeContext) async throws -> Response {
        let q = query(req)
        let resize = try Params(query: q, fields: [:]).bool("resize", attack: false) ?? false
        let input = try await input(req, resize: resize)
        let p = Params(query: q, fields: input.fields)
        let d = try domain(p["domain"], "domain")
        let k = model.numClasses
        let topK = try p.int("top_k", attack: false) ?? min(5, k)
        guard topK >= 1 else { throw ServeError.badRequest("top_k must be at least 1, got \(topK)") }
        try checkPixels(input.pixels, range: false)
        metrics.images(endpoint: "predict", input.count)
        let r: (logits: [Float], batch: Int)
        do {
            r = try await pool.predict(input.pixels, count: input.count, domain: d, isCancelled: ctx.isGone)
        } catch let e as AdamantError { throw ServeError.from(e, attack: false) }
        var out = "{\"domain\":\(jsonString(model.domains[d])),\"batch\":\(input.count),\"classes\":\(k),\"predictions\":["
        for i in 0..<input.count {
            let z = Array(r.logits[(i * k)..<((i + 1) * k)])
            let order = topIndices(z, min(topK, k))
            if i > 0 { out += "," }
            out += "{\"class\":\(order[0]),\"logits\":[" + z.map(jsonFloat).joined(separator: ",") + "],\"top_k\":["
            out += order.map { "{\"class\":\($0),\"logit\":\(jsonFloat(z[$0]))}" }.joined(separator: ",") + "]}"
        }
        out += "]}"
        return json(out, headers: [.init("X-Adamant-Batch")!: String(r.batch)])
    }

    // MARK: /v1/attack

    /// The PGD settings of a request, checked against the model and the server's limits (422).
    func pgdConfig(_ p: Params, batch: Int) throws -> (PGDConfig, targeted: String) {
        var c = PGDConfig()
        let allowed: Set<String> = ["eps", "alpha", "steps", "norm", "targeted", "restarts", "loss", "random_start",
                                    "early_stop", "attack_domain", "eval_domain", "seed", "label", "labels", "format",
                                    "resize", "attack"]
        for key in p.values.keys.sorted() where !allowed.contains(key) {
            throw ServeError.attackParams("unknown attack parameter '\(key)'; known: \(allowed.sorted().joined(separator: ", "))")
        }
        if let a = p["attack"], a.lowercased() != "pgd" {
            throw ServeError.attackParams("attack must be pgd, got '\(a)'")
        }
        c.eps = try p.number("eps") ?? 8.0 / 255
        guard c.eps.isFinite, c.eps > 0 else { throw ServeError.attackParams("eps must be finite and positive, got \(c.eps)") }
        c.alpha = try p.number("alpha") ?? c.eps / 4
        guard c.alpha.isFinite, c.alpha > 0 else { throw ServeError.attackParams("alpha must be finite and positive, got \(c.alpha) (default eps/4)") }
        c.steps = try p.int("steps") ?? 10
        c.restarts = try p.int("restarts") ?? 1
        guard c.steps >= 1 else { throw ServeError.attackParams("steps must be at least 1, got \(c.steps)") }
        guard c.restarts >= 1 else { throw ServeError.attackParams("restarts must be at least 1, got \(c.restarts)") }
        guard c.steps <= settings.maxSteps, c.restarts <= settings.maxSteps, c.steps * c.restarts <= settings.maxSteps else {
            throw ServeError.attackParams("steps x restarts = \(c.steps) x \(c.restarts) exceeds this server's limit of \(settings.maxSteps) (--max-steps)")
        }
        switch (p["norm"] ?? "linf").lowercased() {
        case "linf", "inf": c.norm = .linf
        case "l2": c.norm = .l2
        default: throw ServeError.attackParams("norm must be linf or l2, got '\(p["norm"]!)'")
        }
        switch (p["loss"] ?? "ce").lowercased() {
        case "ce": c.loss = .crossEntropy
        case "cw": c.loss = .cwMargin
        default: throw ServeError.attackParams("loss must be ce or cw, got '\(p["loss"]!)'")
        }
        c.randomStart = try p.bool("random_start") ?? true
        c.earlyStop = try p.bool("early_stop") ?? false
        if let s = p["seed"] {
            guard let v = UInt64(s) else { throw ServeError.attackParams("seed must be an integer from 0 to 2^64-1, got '\(s)'") }
            c.seed = v
        }
        let k = model.numClasses
        var targeted = "no"
        if let t = p["targeted"], !["", "no", "false", "none"].contains(t.lowercased()) {
            if t.lowercased() == "random" { c.targets = .random; targeted = "random" }
            else if let cls = Int64(t) {
                guard cls >= 0 && cls < Int64(k) else {
                    throw ServeError.attackParams("targeted class \(cls) is out of range: the model has \(k) classes (0 to \(k - 1))")
                }
                c.targets = .targeted([Int64](repeating: cls, count: batch)); targeted = String(cls)
            } else { throw ServeError.attackParams("targeted must be 'random' or a class index, got '\(t)'") }
        }
        return (c, targeted)
    }

    /// POST /v1/attack. The body is read through Hummingbird's inbound-close handler, which keeps
    /// reading the connection while the attack runs: when the client goes away, the flag is set and
    /// the attack stops at its next step (or op) with a cancelled error. (The connection is closed
    /// after the response: attacks are long, keep-alive buys little there.)
    func attack(_ req: Request, _ ctx: ServeContext) async throws -> Response {
        let closed = Flag()
        let channelGone = ctx.isGone
        var response = try await req.body.consumeWithInboundCloseHandler({ body in
            var r = req
            r.body = body
            return try await self.attack(r, ctx, isGone: { closed.isSet || channelGone() })
        }, onInboundClosed: { closed.set() })
        response.headers[.connection] = "close"
        return response
    }

    func attack(_ req: Request, _ ctx: ServeContext, isGone: @escaping @Sendable () -> Bool) async throws -> Response {
        let q = query(req)
        let resize = try Params(query: q, fields: [:]).bool("resize", attack: false) ?? false
        let input = try await input(req, resize: resize)
        let p = Params(query: q, fields: input.fields)
        let n = input.count
        var (c, targeted) = try pgdConfig(p, batch: n)
        let evalD = try domain(p["eval_domain"], "eval_domain")
        let attackD = try p["attack_domain"].map { try domain($0, "attack_domain") } ?? evalD
        c.attackDomain = attackD
        c.evalDomain = evalD
        let format = (p["format"] ?? "png").lowercased()
        guard ["png", "float32"].contains(format) else { throw ServeError.attackParams("format must be png or float32, got '\(format)'") }
        let k = Int64(model.numClasses)
        var labels: [Int64]? = nil
        if let l = p["labels"] ?? p["label"] {
            let v = l.split(separator: ",").map { Int64(String($0).trimmingCharacters(in: .whitespaces)) }
            guard v.allSatisfy({ $0 != nil }), v.count == n || v.count == 1 else {
                throw ServeError.attackParams("labels must be \(n) class indices (one per image) or one for all, got '\(l)'")
            }
            labels = v.count == n ? v.map { $0! } : [Int64](repeating: v[0]!, count: n)
            for (i, y) in labels!.enumerated() where y < 0 || y >= k {
                throw ServeError.attackParams("label \(y) of image \(i) is out of range: the model has \(k) classes (0 to \(k - 1))")
            }
            if case .targeted(let t) = c.targets, let i = labels!.indices.first(where: { labels![$0] == t[$0] }) {
                throw ServeError.attackParams("the target class \(t[i]) is the label of image \(i): a targeted attack needs a target other than the label")
            }
        }
        try checkPixels(input.pixels, range: true)
        metrics.images(endpoint: "attack", n)
        let x = input.pixels
        let config = c
        let gone = isGone
        let result: (AttackResult, [Int64])
        do {
            result = try await pool.run { session -> (AttackResult, [Int64]) in
                session.shouldCancel = gone
                defer { session.shouldCancel = nil }
                // Default labels: the model's own prediction through the evaluation domain (as the CLI).
                let y = try labels ?? predictedClasses(session.predict(x, batch: n, domain: config.evalDomain), Int(k))
                var cc = config
                if case .targeted(let t) = config.targets, let i = y.indices.first(where: { y[$0] == t[$0] }) {
                    throw ServeError.attackParams("the target class \(t[i]) is the predicted label of image \(i): a targeted attack needs a target other than the label (give labels=...)")
                }
                cc.sampleOffset = 0
                return (try session.pgd(x, batch: n, labels: y, config: cc, shouldCancel: gone), y)
            }
        } catch let e as AdamantError { throw ServeError.from(e, attack: true) }
        let (r, y) = result
        let per = model.inputShape.reduce(1, *)
        var out = "{\"attack\":\"pgd\",\"eps\":\(jsonFloat(c.eps)),\"alpha\":\(jsonFloat(c.alpha)),\"steps\":\(c.steps),"
        out += "\"norm\":\(jsonString(c.norm == Norm.l2 ? "l2" : "linf")),\"targeted\":\(jsonString(targeted)),\"restarts\":\(c.restarts),"
        out += "\"loss\":\(jsonString(c.loss == Loss.cwMargin ? "cw" : "ce")),\"random_start\":\(c.randomStart),\"early_stop\":\(c.earlyStop),"
        out += "\"seed\":\(c.seed),\"attack_domain\":\(jsonString(model.domains[attackD])),\"eval_domain\":\(jsonString(model.domains[evalD])),"
        out += "\"batch\":\(n),\"success_rate\":\(Double(r.success.filter { $0 }.count) / Double(n)),\"samples\":["
        for i in 0..<n {
            var linf: Float = 0, l2: Float = 0
            for j in 0..<per { let dlt = r.adversarial[i * per + j] - x[i * per + j]; linf = max(linf, abs(dlt)); l2 += dlt * dlt }
            if i > 0 { out += "," }
            out += "{\"label\":\(y[i]),\"target\":\(r.targets[i]),\"prediction\":\(r.predictions[i]),\"success\":\(r.success[i]),"
            out += "\"loss\":\(jsonFloat(r.loss[i])),\"steps_used\":\(r.stepsUsed[i]),\"linf\":\(jsonFloat(linf)),\"l2\":\(jsonFloat(l2.squareRoot()))}"
        }
        let shape = "[\(n),\(model.inputShape.map(String.init).joined(separator: ","))]"
        out += "],\"adversarial\":{\"format\":\(jsonString(format)),\"shape\":\(shape),"
        if format == "float32" {
            let data = r.adversarial.withUnsafeBytes { Data($0) }
            out += "\"data\":\"\(data.base64EncodedString())\"}}"
        } else {
            var images: [String] = []
            for i in 0..<n {
                var bytes: UnsafeMutablePointer<UInt8>?
                var len = 0
                var err = [CChar](repeating: 0, count: 256)
                let rc = r.adversarial.withUnsafeBufferPointer {
                    aio_encode_png($0.baseAddress! + i * per, model.inputShape[0], model.inputShape[1], model.inputShape[2],
                                   &bytes, &len, &err, err.count)
                }
                guard rc == 0, let bytes else {
                    throw ServeError(status: .internalServerError, kind: "internal", message: "PNG encoding failed: \(String(cString: err))")
                }
                images.append(Data(bytes: bytes, count: len).base64EncodedString())
                free(bytes)
            }
            out += "\"images\":[" + images.map { "\"\($0)\"" }.joined(separator: ",") + "]}}"
        }
        return json(out)
    }
}

/// A thread-safe flag, set once.
final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}

/// Top-`k` class indices by logit, highest first (ties: lower index first).
func topIndices(_ z: [Float], _ k: Int) -> [Int] {
    Array(z.indices.sorted { z[$0] > z[$1] || (z[$0] == z[$1] && $0 < $1) }.prefix(k))
}

/// Arg-max class per row of `logits` (first index on ties).
func predictedClasses(_ logits: [Float], _ k: Int) -> [Int64] {
    (0..<(logits.count / k)).map { i in
        var b = 0
        for j in 1..<k where logits[i * k + j] > logits[i * k + b] { b = j }
        return Int64(b)
    }
}

/// Around every request: counts it in flight, times it, turns every error into a JSON error body
/// with its status (and Retry-After for 503), records metrics and logs one line.
struct ServeMiddleware: RouterMiddleware {
    typealias Context = ServeContext
    let metrics: ServeMetrics
    let logger: Logger

    static func endpoint(_ path: String) -> String {
        switch path {
        case "/v1/predict": return "predict"
        case "/v1/attack": return "attack"
        case "/v1/model": return "model"
        case "/healthz": return "healthz"
        case "/metrics": return "metrics"
        default: return "other"
        }
    }

    func handle(_ request: Request, context: ServeContext, next: (Request, ServeContext) async throws -> Response) async throws -> Response {
        let start = DispatchTime.now().uptimeNanoseconds
        let ep = ServeMiddleware.endpoint(request.uri.path)
        metrics.inFlight.increment()
        defer { metrics.inFlight.decrement() }
        var response: Response
        var kind: String? = nil
        var message: String? = nil
        do {
            response = try await next(request, context)
        } catch {
            let e: ServeError
            switch error {
            case let s as ServeError: e = s
            case let a as AdamantError: e = ServeError.from(a, attack: ep == "attack")
            case let h as HTTPError:
                e = ServeError(status: h.status, kind: h.status == .notFound ? "not_found" : h.status == .methodNotAllowed ? "method_not_allowed" : "bad_request",
                               message: h.body ?? (h.status == .notFound ? "no such endpoint: \(request.method) \(request.uri.path); see GET /v1/model, POST /v1/predict, POST /v1/attack, GET /healthz, GET /metrics" : h.status.reasonPhrase))
            case is CancellationError:
                e = ServeError(status: HTTPResponse.Status(code: 499, reasonPhrase: "Client Closed Request"), kind: "cancelled", message: "the request was cancelled")
            default: e = ServeError(status: .internalServerError, kind: "internal", message: "\(error)")
            }
            var headers: HTTPFields = [.contentType: "application/json"]
            if let s = e.retryAfter { headers[.retryAfter] = String(s) }
            if e.status == .contentTooLarge || ep == "attack" { headers[.connection] = "close" }
            response = Response(status: e.status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: e.json)))
            kind = e.kind
            message = e.message
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        metrics.record(endpoint: ep, status: response.status.code, seconds: seconds, errorKind: kind)
        var meta: Logger.Metadata = ["method": "\(request.method)", "path": "\(request.uri.path)", "status": "\(response.status.code)",
                                     "ms": "\(String(format: "%.2f", seconds * 1000))"]
        if let kind { meta["error"] = "\(kind)"; meta["message"] = "\(message ?? "")" }
        logger.log(level: kind == "internal" ? .error : (kind != nil ? .notice : .info), "request", metadata: meta)
        return response
    }
}
