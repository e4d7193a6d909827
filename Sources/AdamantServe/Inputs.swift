import Adamant
import CImageIO
import Foundation

/// A decoded request batch: N images in pixel space, NCHW float32, with the request's JSON fields
/// (attack parameters may come there as well as in the query string).
struct InputBatch {
    var pixels: [Float]
    var count: Int
    /// Top-level JSON fields other than the images (JSON bodies only).
    var fields: [String: Any] = [:]
}

/// Decodes request bodies in the formats the endpoints take, checked against the model's input
/// shape [C, H, W]:
/// - `image/png`, `image/jpeg`: one image;
/// - `multipart/form-data`: one image per part;
/// - `application/octet-stream`: raw little-endian float32 NCHW with an `X-Shape: N,C,H,W` header;
/// - `application/json`: `{"shape": [N,C,H,W], "data": [floats]}` or `{"images": [base64 PNG/JPEG]}`.
/// Every failure is a ``ServeError`` with status 400 (or 413 for too many images).
struct InputDecoder {
    let shape: [Int]
    let maxBatch: Int
    /// Scale images of another size to the model's (bilinear), as the CLI's --resize.
    let resize: Bool

    var perImage: Int { shape.reduce(1, *) }

    func decode(body: [UInt8], contentType: String?, shapeHeader: String?) throws -> InputBatch {
        guard !body.isEmpty else { throw ServeError.badRequest("the request body is empty: send an image (PNG/JPEG), a multipart batch, raw float32 with X-Shape, or JSON") }
        let ct = (contentType ?? "").lowercased()
        let mime = ct.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        switch mime {
        case "image/png", "image/jpeg", "image/jpg":
            return InputBatch(pixels: try decodeImage(body, name: "the request body"), count: 1)
        case "multipart/form-data":
            let parts = try multipartParts(body, contentType: contentType ?? "")
            guard !parts.isEmpty else { throw ServeError.badRequest("the multipart body has no parts") }
            try checkCount(parts.count)
            var px: [Float] = []
            px.reserveCapacity(parts.count * perImage)
            for (i, p) in parts.enumerated() { px += try decodeImage(p.body, name: "part \(i)\(p.name.map { " ('\($0)')" } ?? "")") }
            return InputBatch(pixels: px, count: parts.count)
        case "application/octet-stream", "application/x-float32":
            return try decodeRaw(body, shapeHeader: shapeHeader)
        case "application/json":
            return try decodeJSON(body)
        case "":
            throw ServeError.badRequest("missing Content-Type: use image/png, image/jpeg, multipart/form-data, application/octet-stream (float32 + X-Shape) or application/json")
        default:
            throw ServeError(status: .unsupportedMediaType, kind: "bad_request",
                             message: "unsupported Content-Type '\(mime)': use image/png, image/jpeg, multipart/form-data, application/octet-stream (float32 + X-Shape) or application/json")
        }
    }

    func checkCount(_ n: Int) throws {
        guard n >= 1 else { throw ServeError.badRequest("the batch has no images") }
        guard n <= maxBatch else { throw ServeError.tooLarge("\(n) images in one request; this server takes at most \(maxBatch) (--max-batch)") }
    }

    /// One PNG or JPEG, as CHW floats in [0, 1] of the model's size.
    func decodeImage(_ bytes: [UInt8], name: String) throws -> [Float] {
        var img = aio_image()
        var err = [CChar](repeating: 0, count: 512)
        let rc = bytes.withUnsafeBufferPointer { aio_decode_memory($0.baseAddress, $0.count, &img, &err, err.count) }
        guard rc == 0 else { throw ServeError.badImage("cannot decode \(name) as PNG or JPEG: \(String(cString: err))") }
        defer { aio_image_free(&img) }
        guard img.channels == shape[0] else {
            throw ServeError.wrongSize("\(name) has \(img.channels) channels; the model expects \(shape[0])")
        }
        if img.height == shape[1] && img.width == shape[2] {
            return Array(UnsafeBufferPointer(start: img.data, count: perImage))
        }
        guard resize else {
            throw ServeError.wrongSize("\(name) is \(img.width)x\(img.height) pixels (width x height); the model expects \(shape[2])x\(shape[1]) images (add ?resize=true to scale it, bilinear)")
        }
        var out: UnsafeMutablePointer<Float>?
        guard aio_resize(img.data, img.channels, img.height, img.width, shape[1], shape[2], &out, &err, err.count) == 0,
              let out else { throw ServeError.badImage("cannot resize \(name): \(String(cString: err))") }
        defer { free(out) }
        return Array(UnsafeBufferPointer(start: out, count: perImage))
    }

    /// Parses "N,C,H,W" and checks it against the model.
    func batchShape(_ s: String) throws -> Int {
        let parts = s.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard parts.count == 4, parts.allSatisfy({ $0 != nil && $0! >= 0 }) else {
            throw ServeError.badRequest("the shape must be N,C,H,W (4 non-negative integers), got '\(s)'")
        }
        let d = parts.map { $0! }
        guard Array(d[1...]) == shape else {
            throw ServeError.wrongSize("the input is \(d[1])x\(d[2])x\(d[3]) (CxHxW); the model expects \(shape[0])x\(shape[1])x\(shape[2])")
        }
        try checkCount(d[0])
        return d[0]
    }

    func decodeRaw(_ body: [UInt8], shapeHeader: String?) throws -> InputBatch {
        guard let sh = shapeHeader else {
            throw ServeError.badRequest("raw float32 input needs an X-Shape: N,C,H,W header (e.g. X-Shape: 1,\(shape.map(String.init).joined(separator: ",")))")
        }
        let n = try batchShape(sh)
        guard body.count == n * perImage * 4 else {
            throw ServeError.wrongSize("X-Shape \(sh) needs \(n * perImage * 4) bytes of float32, the body has \(body.count)")
        }
        var px = [Float](repeating: 0, count: n * perImage)
        px.withUnsafeMutableBytes { dst in body.withUnsafeBytes { dst.copyMemory(from: $0) } }
        #if _endian(big)
        px = px.map { Float(bitPattern: $0.bitPattern.byteSwapped) }
        #endif
        return InputBatch(pixels: px, count: n)
    }

    func decodeJSON(_ body: [UInt8]) throws -> InputBatch {
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: Data(body)) } catch {
            throw ServeError.badRequest("the body is not valid JSON: \(error.localizedDescription)")
        }
        guard var dict = obj as? [String: Any] else { throw ServeError.badRequest("the JSON body must be an object") }
        if let images = dict.removeValue(forKey: "images") {
            guard dict["data"] == nil else { throw ServeError.badRequest("give either \"images\" or \"shape\" + \"data\", not both") }
            guard let list = images as? [Any] else { throw ServeError.badRequest("\"images\" must be a list of base64 PNG/JPEG strings") }
            try checkCount(list.count)
            var px: [Float] = []
            for (i, item) in list.enumerated() {
                guard let s = item as? String, let bytes = Data(base64Encoded: s, options: .ignoreUnknownCharacters) else {
                    throw ServeError.badImage("images[\(i)] is not a base64 string")
                }
                px += try decodeImage([UInt8](bytes), name: "images[\(i)]")
            }
            return InputBatch(pixels: px, count: list.count, fields: dict)
        }
        guard let shapeV = dict.removeValue(forKey: "shape"), let data = dict.removeValue(forKey: "data") else {
            throw ServeError.badRequest("the JSON body needs \"shape\": [N,C,H,W] and \"data\": [N*C*H*W numbers], or \"images\": [base64 PNG/JPEG]")
        }
        // Integers only, converted without trapping (1e30 or 2.5 is a 400, not a crash).
        let dims = (shapeV as? [Any])?.map { v -> Int? in
            guard let num = v as? NSNumber, !isJSONBool(v) else { return nil }
            let d = num.doubleValue
            return d.rounded() == d && abs(d) < 1e15 ? Int(d) : nil
        }
        guard let dims, dims.allSatisfy({ $0 != nil }) else {
            throw ServeError.badRequest("\"shape\" must be a list of 4 integers, e.g. [1, \(shape.map(String.init).joined(separator: ", "))]")
        }
        let sh = dims.map { $0! }
        let n = try batchShape(sh.map(String.init).joined(separator: ","))
        guard let values = data as? [Any] else { throw ServeError.badRequest("\"data\" must be a flat list of numbers") }
        guard values.count == n * perImage else {
            throw ServeError.wrongSize("\"shape\" \(sh) needs \(n * perImage) numbers in \"data\", got \(values.count)")
        }
        var px = [Float](repeating: 0, count: values.count)
        for (i, v) in values.enumerated() {
            guard let num = v as? NSNumber, !isJSONBool(v) else { throw ServeError.badRequest("\"data\"[\(i)] is not a number") }
            px[i] = num.floatValue
        }
        return InputBatch(pixels: px, count: n, fields: dict)
    }
}

/// True for a JSON true/false as JSONSerialization returns it (an NSNumber of type "c"; `is Bool`
/// also holds for the numbers 0 and 1).
func isJSONBool(_ v: Any) -> Bool {
    guard let n = v as? NSNumber else { return false }
    return String(cString: n.objCType) == "c"
}

/// One part of a multipart/form-data body.
struct MultipartPart {
    var name: String?
    var body: [UInt8]
}

/// Splits a multipart/form-data body (RFC 7578) into its parts; malformed bodies are 400s.
func multipartParts(_ body: [UInt8], contentType: String) throws -> [MultipartPart] {
    var boundary: String?
    for param in contentType.split(separator: ";").dropFirst() {
        let kv = param.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
        if kv.count == 2, kv[0].lowercased() == "boundary" {
            boundary = kv[1].hasPrefix("\"") && kv[1].hasSuffix("\"") && kv[1].count >= 2 ? String(kv[1].dropFirst().dropLast()) : kv[1]
        }
    }
    guard let b = boundary, !b.isEmpty, b.utf8.count <= 200 else {
        throw ServeError.badRequest("multipart/form-data needs a boundary parameter in Content-Type")
    }
    let delim = Array(("--" + b).utf8)
    let crlf: [UInt8] = [13, 10]
    func find(_ needle: [UInt8], from: Int) -> Int? {
        guard needle.count <= body.count else { return nil }
        var i = from
        let last = body.count - needle.count
        while i <= last {
            if body[i] == needle[0] {
                var ok = true
                for j in 1..<needle.count where body[i + j] != needle[j] { ok = false; break }
                if ok { return i }
            }
            i += 1
        }
        return nil
    }
    guard var pos = find(delim, from: 0) else { throw ServeError.badRequest("the multipart body has no '--\(b)' delimiter") }
    var parts: [MultipartPart] = []
    while true {
        pos += delim.count
        // "--" after a delimiter ends the body.
        if pos + 1 < body.count, body[pos] == 45, body[pos + 1] == 45 { break }
        // Skip transport padding up to the CRLF.
        guard let lineEnd = find(crlf, from: pos) else { throw ServeError.badRequest("truncated multipart body") }
        // Headers (possibly none) end with an empty line: CRLF CRLF from the delimiter line's CRLF.
        guard let headerEnd = find(crlf + crlf, from: lineEnd) else {
            throw ServeError.badRequest("a multipart part has no header terminator")
        }
        let headers = headerEnd > lineEnd ? String(decoding: body[(lineEnd + 2)..<headerEnd], as: UTF8.self) : ""
        let contentStart = headerEnd + 4
        guard let next = find(crlf + delim, from: contentStart) else {
            throw ServeError.badRequest("a multipart part is not closed by '--\(b)'")
        }
        var name: String?
        for line in headers.split(separator: "\r\n") where line.lowercased().hasPrefix("content-disposition:") {
            if let r = line.range(of: "filename=\"") ?? line.range(of: "name=\"") {
                let rest = line[r.upperBound...]
                if let q = rest.firstIndex(of: "\"") { name = String(rest[..<q]) }
            }
        }
        parts.append(MultipartPart(name: name, body: Array(body[contentStart..<next])))
        pos = next + 2
    }
    return parts
}
