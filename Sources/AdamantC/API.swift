// The C ABI of include/adamant.h: `public @_cdecl` functions only. Every argument is validated
// here, so a bad call returns a status and a message instead of trapping in the host process.
import Adamant
import AdamantABI
import CBackend

let versionString: StaticString = "0.1.0"

@_cdecl("adm_version")
public func adm_version() -> UnsafePointer<CChar> {
    UnsafeRawPointer(versionString.utf8Start).assumingMemoryBound(to: CChar.self)
}

@_cdecl("adm_abi_version")
public func adm_abi_version() -> Int32 { 1 }

@_cdecl("adm_last_error")
public func adm_last_error() -> UnsafePointer<CChar> { LastError.pointer }

@_cdecl("adm_backend_info")
public func adm_backend_info() -> UnsafePointer<CChar> { backendInfo() }

@_cdecl("adm_set_num_threads")
public func adm_set_num_threads(_ threads: Int32) -> adm_status {
    guarded {
        guard threads >= 0 && threads <= 1024 else { throw invalid("threads must be in [0, 1024], got \(threads)") }
        abk_set_threads(threads)
    }
}

@_cdecl("adm_set_isa")
public func adm_set_isa(_ isa: UnsafePointer<CChar>?) -> adm_status {
    guarded {
        guard let isa else { return try Backend.setISA(nil) }
        try Backend.setISA(named: String(cString: isa))
    }
}

@_cdecl("adm_isa")
public func adm_isa() -> UnsafePointer<CChar> { abk_isa_name(abk_isa()) }

@_cdecl("adm_isa_supported")
public func adm_isa_supported() -> UnsafePointer<CChar> { abk_isa_name(abk_isa_supported()) }

// MARK: Loading

@_cdecl("adm_load_options_default")
public func adm_load_options_default(_ opts: UnsafeMutablePointer<adm_load_options>?) {
    guard let opts else { return }
    opts.pointee = adm_load_options()
    opts.pointee.struct_size = MemoryLayout<adm_load_options>.size
    opts.pointee.pixel_min = 0
    opts.pointee.pixel_max = 1
}

/// sizeof(adm_load_options) before memory_limit was appended: still accepted (no cap).
let loadOptionsSizeV0 = MemoryLayout<adm_load_options>.offset(of: \adm_load_options.memory_limit)!

func loadOptions(_ p: UnsafePointer<adm_load_options>?) throws -> LoadOptions {
    var o = LoadOptions()
    guard let p else { return o }
    // Read struct_size alone first: a caller built against the older header passed a shorter struct.
    let size = UnsafeRawPointer(p).load(as: Int.self)
    guard size == MemoryLayout<adm_load_options>.size || size == loadOptionsSizeV0 else {
        throw invalid("adm_load_options.struct_size is \(unsigned(size)), expected \(MemoryLayout<adm_load_options>.size) (call adm_load_options_default)")
    }
    var v = adm_load_options()
    withUnsafeMutableBytes(of: &v) { dst in dst.copyMemory(from: UnsafeRawBufferPointer(start: p, count: size)) }
    // 0 is no cap; size_t values above INT64_MAX (negative here) are no cap in practice.
    if v.memory_limit > 0 { o.memoryLimit = v.memory_limit }
    if v.mean != nil || v.mean_len > 0 { o.mean = Array(try buffer(v.mean, try count(v.mean_len, "mean_len"), "mean")) }
    if v.std != nil || v.std_len > 0 { o.std = Array(try buffer(v.std, try count(v.std_len, "std_len"), "std")) }
    if v.set_pixel_range != 0 { o.pixelRange = (v.pixel_min, v.pixel_max) }
    if let d = v.default_domain { o.defaultDomain = String(cString: d) }
    return o
}

@_cdecl("adm_model_load")
public func adm_model_load(_ path: UnsafePointer<CChar>?, _ opts: UnsafePointer<adm_load_options>?,
                           _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let m = try Model.load(path: try string(path, "path"), options: try loadOptions(opts))
        out.pointee = retained(ModelBox(m))
    }
}

@_cdecl("adm_model_load_memory")
public func adm_model_load_memory(_ data: UnsafeRawPointer?, _ len: Int, _ opts: UnsafePointer<adm_load_options>?,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let n = try count(len, "len")
        let bytes = n == 0 ? [] : Array(UnsafeRawBufferPointer(start: try required(data, "data"), count: n))
        let m = try Model.load(bytes: bytes, options: try loadOptions(opts))
        out.pointee = retained(ModelBox(m))
    }
}

@_cdecl("adm_model_load_domains")
public func adm_model_load_domains(_ names: UnsafePointer<UnsafePointer<CChar>?>?,
                                   _ paths: UnsafePointer<UnsafePointer<CChar>?>?, _ n: Int,
                                   _ opts: UnsafePointer<adm_load_options>?,
                                   _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let c = try count(n, "count")
        guard c >= 1 else { throw invalid("count must be at least 1") }
        let names = try required(names, "names"), paths = try required(paths, "paths")
        let list = try (0..<c).map { i in
            (name: try string(names[i], "names[\(i)]"), path: try string(paths[i], "paths[\(i)]"))
        }
        let m = try Model.load(domains: list, options: try loadOptions(opts))
        out.pointee = retained(ModelBox(m))
    }
}

@_cdecl("adm_model_free")
public func adm_model_free(_ model: OpaquePointer?) {
    guard let model, let b = try? modelBox(model) else { return }
    Unmanaged.passUnretained(b).release()
}

@_cdecl("adm_model_save")
public func adm_model_save(_ model: OpaquePointer?, _ path: UnsafePointer<CChar>?) -> adm_status {
    guarded { try modelBox(model).model.save(to: try string(path, "path")) }
}

// MARK: Importing checkpoints

@_cdecl("adm_import_tensorpack")
public func adm_import_tensorpack(_ checkpoint: UnsafePointer<CChar>?, _ arch: UnsafePointer<CChar>?,
                                  _ blocks: UnsafePointer<Int32>?, _ nBlocks: Int, _ inputSize: Int32,
                                  _ output: UnsafePointer<CChar>?) -> adm_status {
    guarded {
        let path = try string(checkpoint, "checkpoint"), out = try string(output, "output")
        let name = try string(arch, "arch")
        guard let a = TensorpackImport.Arch(rawValue: name.lowercased()) else {
            throw invalid("unknown arch '\(name)'; use one of \(TensorpackImport.Arch.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var counts: [Int]?
        if blocks != nil || nBlocks != 0 {
            guard nBlocks == 4 else { throw invalid("n_blocks must be 4 (one count per group), got \(unsigned(nBlocks))") }
            counts = Array(try buffer(blocks, nBlocks, "blocks")).map(Int.init)
        }
        guard inputSize >= 0 && inputSize <= 4096 else { throw invalid("input_size must be in [0, 4096] (0 = 224), got \(inputSize)") }
        let options = TensorpackImport.Options(arch: a, blocks: counts, inputSize: inputSize == 0 ? 224 : Int(inputSize))
        try TensorpackImport.convert(checkpoint: path, options: options, output: out)
    }
}

// MARK: Introspection

@_cdecl("adm_model_domain_count")
public func adm_model_domain_count(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded { try required(out, "out").pointee = try modelBox(model).model.domains.count }
}

@_cdecl("adm_model_domain_name")
public func adm_model_domain_name(_ model: OpaquePointer?, _ index: Int,
                                  _ out: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        let b = try modelBox(model)
        guard index >= 0 && index < b.domainNames.count else {
            throw AdamantError(.domain, "domain index \(unsigned(index)) is out of range; the model has \(b.domainNames.count) domain(s): \(b.model.domains.joined(separator: ", "))")
        }
        out.pointee = UnsafePointer(b.domainNames[index])
    }
}

@_cdecl("adm_model_domain_index")
public func adm_model_domain_index(_ model: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                   _ out: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = try modelBox(model).model.domainIndex(try string(name, "name"))
    }
}

@_cdecl("adm_model_default_domain")
public func adm_model_default_domain(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded { try required(out, "out").pointee = try modelBox(model).model.defaultDomain }
}

@_cdecl("adm_model_input_shape")
public func adm_model_input_shape(_ model: OpaquePointer?, _ c: UnsafeMutablePointer<Int>?,
                                  _ h: UnsafeMutablePointer<Int>?, _ w: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded {
        let s = try modelBox(model).model.inputShape
        let (c, h, w) = (try required(c, "channels"), try required(h, "height"), try required(w, "width"))
        c.pointee = s[0]; h.pointee = s[1]; w.pointee = s[2]
    }
}

@_cdecl("adm_model_num_classes")
public func adm_model_num_classes(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded { try required(out, "out").pointee = try modelBox(model).model.numClasses }
}

@_cdecl("adm_model_channel_order")
public func adm_model_channel_order(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<UnsafePointer<CChar>?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        let bgr = try modelBox(model).model.preprocessing.channelOrder == .bgr
        out.pointee = bgr ? channelOrderBGR.utf8CString : channelOrderRGB.utf8CString
    }
}

private let channelOrderRGB: StaticString = "rgb"
private let channelOrderBGR: StaticString = "bgr"

extension StaticString {
    /// The literal as a C string (static storage, NUL-terminated).
    var utf8CString: UnsafePointer<CChar> { UnsafeRawPointer(utf8Start).assumingMemoryBound(to: CChar.self) }
}

@_cdecl("adm_model_pixel_range")
public func adm_model_pixel_range(_ model: OpaquePointer?, _ lo: UnsafeMutablePointer<Float>?,
                                  _ hi: UnsafeMutablePointer<Float>?) -> adm_status {
    guarded {
        let p = try modelBox(model).model.preprocessing
        let (lo, hi) = (try required(lo, "lo"), try required(hi, "hi"))
        lo.pointee = p.pixelMin; hi.pointee = p.pixelMax
    }
}

@_cdecl("adm_model_info_json")
public func adm_model_info_json(_ model: OpaquePointer?, _ buf: UnsafeMutablePointer<CChar>?, _ bufLen: Int,
                                _ needed: UnsafeMutablePointer<Int>?) -> adm_status {
    guarded {
        let needed = try required(needed, "needed")
        let json = try modelBox(model).model.info().json
        let bytes = Array(json.utf8) + [0]
        needed.pointee = bytes.count
        guard bufLen >= bytes.count else {
            if bufLen > 0, let buf { buf[0] = 0 }
            throw invalid("buffer of \(unsigned(bufLen)) bytes is too small; \(bytes.count) needed")
        }
        let dst = try required(buf, "buf")
        bytes.withUnsafeBufferPointer { src in
            UnsafeMutableRawPointer(dst).copyMemory(from: src.baseAddress!, byteCount: bytes.count)
        }
    }
}

// MARK: Contexts and inference

@_cdecl("adm_context_create")
public func adm_context_create(_ model: OpaquePointer?, _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        out.pointee = retained(ContextBox(try modelBox(model)))
    }
}

@_cdecl("adm_context_free")
public func adm_context_free(_ ctx: OpaquePointer?) {
    guard let ctx, let b = try? contextBox(ctx) else { return }
    Unmanaged.passUnretained(b).release()
}

@_cdecl("adm_context_limits_default")
public func adm_context_limits_default(_ limits: UnsafeMutablePointer<adm_context_limits>?) {
    guard let limits else { return }
    var l = adm_context_limits()
    l.struct_size = MemoryLayout<adm_context_limits>.size
    l.max_batch = Limits.defaultMaxBatch
    l.max_pixels_per_image = Limits.defaultMaxPixelsPerImage
    l.max_attack_steps_total = Limits.defaultMaxAttackStepsTotal
    l.max_input_bytes = Limits.defaultMaxInputBytes
    limits.pointee = l
}

@_cdecl("adm_context_set_limits")
public func adm_context_set_limits(_ ctx: OpaquePointer?, _ limits: UnsafePointer<adm_context_limits>?) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        guard let limits else { box.limits = Limits(); return }
        let v = limits.pointee
        guard v.struct_size == MemoryLayout<adm_context_limits>.size else {
            throw invalid("adm_context_limits.struct_size is \(unsigned(v.struct_size)), expected \(MemoryLayout<adm_context_limits>.size) (call adm_context_limits_default)")
        }
        // size_t values above INT64_MAX are "no limit" in practice: keep them as the largest Int.
        func value(_ n: Int) -> Int { n < 0 ? Int.max : n }
        box.limits = Limits(maxBatch: value(v.max_batch), maxPixelsPerImage: value(v.max_pixels_per_image),
                            maxAttackStepsTotal: value(v.max_attack_steps_total), maxInputBytes: value(v.max_input_bytes))
    }
}

@_cdecl("adm_context_get_limits")
public func adm_context_get_limits(_ ctx: OpaquePointer?, _ out: UnsafeMutablePointer<adm_context_limits>?) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        let out = try required(out, "out")
        guard out.pointee.struct_size == MemoryLayout<adm_context_limits>.size else {
            throw invalid("adm_context_limits.struct_size is \(unsigned(out.pointee.struct_size)), expected \(MemoryLayout<adm_context_limits>.size) (call adm_context_limits_default)")
        }
        let l = box.limits
        out.pointee.max_batch = l.maxBatch
        out.pointee.max_pixels_per_image = l.maxPixelsPerImage
        out.pointee.max_attack_steps_total = l.maxAttackStepsTotal
        out.pointee.max_input_bytes = l.maxInputBytes
    }
}

@_cdecl("adm_context_cancel")
public func adm_context_cancel(_ ctx: OpaquePointer?) -> adm_status {
    // Called from another thread than the context's: touches only the atomic flag, and does not
    // clear that thread's last error (it sets this thread's, as every call does).
    guarded { try contextBox(ctx).cancelRequested.store(true) }
}

@_cdecl("adm_predict")
public func adm_predict(_ ctx: OpaquePointer?, _ domain: Int, _ x: UnsafePointer<Float>?, _ xLen: Int, _ batch: Int,
                        _ logits: UnsafeMutablePointer<Float>?, _ logitsLen: Int) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        let b = try count(batch, "batch")
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let need = b * s.model.numClasses
        guard logitsLen == need else {
            throw AdamantError(.shape, "logits_len is \(unsigned(logitsLen)); \(b) x \(s.model.numClasses) = \(need) needed")
        }
        let out = try required(logits, "logits")
        let d = try domainIndex(domain, s.model)
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        try s.checkMemory(batch: b, kind: .predict)
        let y = try s.predict(xs, batch: b, domain: d)
        out.update(from: y, count: need)
    }
}

// MARK: Gradients

@_cdecl("adm_gradient")
public func adm_gradient(_ ctx: OpaquePointer?, _ domain: Int, _ loss: Int32, _ x: UnsafePointer<Float>?, _ xLen: Int,
                         _ batch: Int, _ labels: UnsafePointer<Int64>?, _ labelsLen: Int,
                         _ lossOut: UnsafeMutablePointer<Float>?, _ lossLen: Int,
                         _ grad: UnsafeMutablePointer<Float>?, _ gradLen: Int) -> adm_status {
    gradientCall(ctx, domain, loss, lossNames: "ADM_LOSS_CE = 0, ADM_LOSS_CW = 1, ADM_LOSS_DLR = 2; ADM_LOSS_DLR_TARGETED = 3 through adm_gradient_targeted",
                 x, xLen, batch, labels, labelsLen, targets: nil, lossOut, lossLen, grad, gradLen)
}

@_cdecl("adm_vjp")
public func adm_vjp(_ ctx: OpaquePointer?, _ domain: Int, _ x: UnsafePointer<Float>?, _ xLen: Int, _ batch: Int,
                    _ gradLogits: UnsafePointer<Float>?, _ gradLogitsLen: Int,
                    _ logits: UnsafeMutablePointer<Float>?, _ logitsLen: Int,
                    _ grad: UnsafeMutablePointer<Float>?, _ gradLen: Int) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        let b = try count(batch, "batch")
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let k = s.model.numClasses
        let (need, o) = b.multipliedReportingOverflow(by: k)
        guard !o, gradLogitsLen == need else {
            throw AdamantError(.shape, "grad_logits_len is \(unsigned(gradLogitsLen)); \(b) x \(k) = \(o ? "too many" : "\(need)") needed")
        }
        let gz = try buffer(gradLogits, gradLogitsLen, "grad_logits")
        if logits != nil && logitsLen != need {
            throw AdamantError(.shape, "logits_len is \(unsigned(logitsLen)); \(b) x \(k) = \(need) needed")
        }
        let out = try required(grad, "grad")
        guard gradLen == xLen else { throw AdamantError(.shape, "grad_len is \(unsigned(gradLen)), x_len is \(xLen)") }
        let d = try domainIndex(domain, s.model)
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        try s.checkMemory(batch: b, kind: .gradient)
        let r = try s.vjp(xs, batch: b, gradLogits: gz, domain: d)
        out.update(from: r.gradient, count: r.gradient.count)
        logits?.update(from: r.logits, count: need)
    }
}

/// The body of adm_gradient and adm_gradient_targeted (`targets` nil for the former): every
/// argument validated, then Session.gradient.
private func gradientCall(_ ctx: OpaquePointer?, _ domain: Int, _ loss: Int32, lossNames: String,
                          _ x: UnsafePointer<Float>?, _ xLen: Int, _ batch: Int, _ labels: UnsafePointer<Int64>?,
                          _ labelsLen: Int, targets: (pointer: UnsafePointer<Int64>?, count: Int)?,
                          _ lossOut: UnsafeMutablePointer<Float>?, _ lossLen: Int,
                          _ grad: UnsafeMutablePointer<Float>?, _ gradLen: Int) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        guard let l = Loss(rawValue: loss) else { throw invalid("unknown loss \(loss) (\(lossNames))") }
        let b = try count(batch, "batch")
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let ln = try count(labelsLen, "labels_len")
        let tn = try targets.map { try count($0.count, "targets_len") }
        if lossOut != nil && lossLen != b { throw AdamantError(.shape, "loss_len is \(unsigned(lossLen)), batch is \(b)") }
        if grad != nil && gradLen != xLen { throw AdamantError(.shape, "grad_len is \(unsigned(gradLen)), x_len is \(xLen)") }
        let d = try domainIndex(domain, s.model)
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        try s.checkMemory(batch: b, kind: .gradient)
        let ls = Array(try buffer(labels, ln, "labels"))
        var ts: [Int64]? = nil
        if let targets, let tn, targets.pointer != nil || tn > 0 { ts = Array(try buffer(targets.pointer, tn, "targets")) }
        let r: (loss: [Float], logits: [Float])
        if let grad {
            // Computed into a pooled buffer, copied to the caller's only once the call has succeeded
            // (an error or a cancellation writes nothing).
            try s.checkInputLength(xs.count, batch: b)
            r = try s.withPooledFloats(xs.count, batch: b) { g in
                let r = try s.gradient(pixels: xs, batch: b, labels: ls, targets: ts, loss: l, domain: d, into: g)
                grad.update(from: g, count: xs.count)
                return r
            }
        } else {
            r = try s.gradient(pixels: xs, batch: b, labels: ls, targets: ts, loss: l, domain: d, into: nil)
        }
        lossOut?.update(from: r.loss, count: b)
    }
}

// MARK: Attacks

@_cdecl("adm_attack_config_default")
public func adm_attack_config_default(_ cfg: UnsafeMutablePointer<adm_attack_config>?) {
    guard let cfg else { return }
    let d = PGDConfig()
    var c = adm_attack_config()
    c.struct_size = MemoryLayout<adm_attack_config>.size
    c.norm = d.norm.rawValue
    c.eps = d.eps
    c.alpha = d.alpha
    c.steps = Int32(d.steps)
    c.random_start = d.randomStart ? 1 : 0
    c.restarts = Int32(d.restarts)
    c.loss = d.loss.rawValue
    c.target_mode = 0
    c.early_stop = 0
    c.seed = 0
    c.sample_offset = 0
    cfg.pointee = c
}

func pgdConfig(_ p: UnsafePointer<adm_attack_config>?, batch: Int, model: Model) throws -> PGDConfig {
    let v = try required(p, "cfg").pointee
    guard v.struct_size == MemoryLayout<adm_attack_config>.size else {
        throw invalid("adm_attack_config.struct_size is \(v.struct_size), expected \(MemoryLayout<adm_attack_config>.size) (call adm_attack_config_default)")
    }
    var c = PGDConfig()
    guard let norm = Norm(rawValue: v.norm) else { throw invalid("unknown norm \(v.norm)") }
    guard let loss = Loss(rawValue: v.loss) else { throw invalid("unknown loss \(v.loss)") }
    c.norm = norm; c.loss = loss
    c.eps = v.eps; c.alpha = v.alpha
    c.steps = Int(v.steps); c.restarts = Int(v.restarts)
    c.randomStart = v.random_start != 0
    c.earlyStop = v.early_stop != 0
    c.attackDomain = try domainIndex(v.attack_domain, model, "attack_domain")
    c.evalDomain = try domainIndex(v.eval_domain, model, "eval_domain")
    c.seed = v.seed
    c.sampleOffset = v.sample_offset
    switch v.target_mode {
    case 0, 2:
        // Targets only mean something to ADM_TARGETED: given with another mode they are a mistake.
        guard v.targets == nil && v.targets_len == 0 else {
            let mode = v.target_mode == 0 ? "ADM_UNTARGETED" : "ADM_TARGETED_RANDOM"
            throw invalid("targets given (targets \(v.targets == nil ? "NULL" : "set"), targets_len \(unsigned(v.targets_len))) with target_mode \(mode); set target_mode = ADM_TARGETED to use them, or leave targets NULL and targets_len 0")
        }
        c.targets = v.target_mode == 0 ? .untargeted : .random
    case 1:
        let t = Array(try buffer(v.targets, try count(v.targets_len, "targets_len"), "targets"))
        guard t.count == batch else { throw AdamantError(.shape, "targets_len is \(t.count), batch is \(batch)") }
        c.targets = .targeted(t)
    default: throw invalid("unknown target_mode \(v.target_mode)")
    }
    return c
}

@_cdecl("adm_attack_pgd")
public func adm_attack_pgd(_ ctx: OpaquePointer?, _ cfg: UnsafePointer<adm_attack_config>?, _ x: UnsafePointer<Float>?,
                           _ xLen: Int, _ batch: Int, _ labels: UnsafePointer<Int64>?, _ labelsLen: Int,
                           _ xAdv: UnsafeMutablePointer<Float>?, _ xAdvLen: Int,
                           _ outputs: UnsafeMutablePointer<adm_attack_outputs>?) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        let b = try count(batch, "batch")
        let c = try pgdConfig(cfg, batch: b, model: s.model)
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let ln = try count(labelsLen, "labels_len")
        guard xAdvLen == xLen else { throw AdamantError(.shape, "x_adv_len is \(unsigned(xAdvLen)), x_len is \(xLen)") }
        let dst = try required(xAdv, "x_adv")
        if let o = outputs {
            guard o.pointee.struct_size == MemoryLayout<adm_attack_outputs>.size else {
                throw invalid("adm_attack_outputs.struct_size is \(o.pointee.struct_size), expected \(MemoryLayout<adm_attack_outputs>.size)")
            }
            guard o.pointee.len == b else { throw AdamantError(.shape, "outputs->len is \(unsigned(o.pointee.len)), batch is \(b)") }
        }
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        try box.limits.checkAttack(steps: c.steps, restarts: c.restarts)
        try s.checkMemory(batch: b, kind: .attack)
        let ls = Array(try buffer(labels, ln, "labels"))
        let r = try s.pgd(xs, batch: b, labels: ls, config: c, shouldCancel: { box.isCancelled })
        dst.update(from: r.adversarial, count: r.adversarial.count)
        if let o = outputs?.pointee {
            for i in 0..<b {
                o.success?[i] = r.success[i] ? 1 : 0
                o.loss?[i] = r.loss[i]
                o.steps_used?[i] = r.stepsUsed[i]
                o.targets?[i] = r.targets[i]
                o.predictions?[i] = r.predictions[i]
            }
        }
    }
}

// MARK: Calibration

@_cdecl("adm_calibrator_create")
public func adm_calibrator_create(_ model: OpaquePointer?, _ baseDomain: Int,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let m = try modelBox(model).model
        out.pointee = retained(CalibratorBox(try Calibrator(model: m, baseDomain: try domainIndex(baseDomain, m, "base_domain"))))
    }
}

@_cdecl("adm_calibrator_add")
public func adm_calibrator_add(_ cal: OpaquePointer?, _ x: UnsafePointer<Float>?, _ xLen: Int, _ batch: Int) -> adm_status {
    guarded {
        let c = try calibratorBox(cal).calibrator
        let xs = try buffer(x, try count(xLen, "x_len"), "x"), b = try count(batch, "batch")
        try Limits().check(model: c.model, batch: b, xLen: xs.count)  // the default limits
        try c.add(xs, batch: b)
    }
}

@_cdecl("adm_calibrator_finish")
public func adm_calibrator_finish(_ cal: OpaquePointer?, _ name: UnsafePointer<CChar>?,
                                  _ out: UnsafeMutablePointer<OpaquePointer?>?) -> adm_status {
    guarded {
        let out = try required(out, "out")
        out.pointee = nil
        let m = try calibratorBox(cal).calibrator.finish(name: try string(name, "name"))
        out.pointee = retained(ModelBox(m))
    }
}

@_cdecl("adm_calibrator_free")
public func adm_calibrator_free(_ cal: OpaquePointer?) {
    guard let cal, let b = try? calibratorBox(cal) else { return }
    Unmanaged.passUnretained(b).release()
}

// MARK: APGD and AutoAttack-lite

@_cdecl("adm_gradient_targeted")
public func adm_gradient_targeted(_ ctx: OpaquePointer?, _ domain: Int, _ loss: Int32, _ x: UnsafePointer<Float>?, _ xLen: Int,
                                  _ batch: Int, _ labels: UnsafePointer<Int64>?, _ labelsLen: Int,
                                  _ targets: UnsafePointer<Int64>?, _ targetsLen: Int,
                                  _ lossOut: UnsafeMutablePointer<Float>?, _ lossLen: Int,
                                  _ grad: UnsafeMutablePointer<Float>?, _ gradLen: Int) -> adm_status {
    gradientCall(ctx, domain, loss, lossNames: "ADM_LOSS_CE = 0, ADM_LOSS_CW = 1, ADM_LOSS_DLR = 2, ADM_LOSS_DLR_TARGETED = 3",
                 x, xLen, batch, labels, labelsLen, targets: (targets, targetsLen), lossOut, lossLen, grad, gradLen)
}

@_cdecl("adm_apgd_config_default")
public func adm_apgd_config_default(_ cfg: UnsafeMutablePointer<adm_apgd_config>?) {
    guard let cfg else { return }
    let d = APGDConfig()
    var c = adm_apgd_config()
    c.struct_size = MemoryLayout<adm_apgd_config>.size
    c.norm = d.norm.rawValue
    c.eps = d.eps
    c.steps = Int32(d.steps)
    c.restarts = Int32(d.restarts)
    c.loss = d.loss.rawValue
    c.target_mode = 0
    c.n_target_classes = 9
    c.rho = d.rho
    c.random_start = 1
    c.early_stop = 1
    cfg.pointee = c
}

/// ADM_TARGETED_TOP_K: APGD-T's targets.
let targetedTopK: Int32 = 3

func apgdConfig(_ p: UnsafePointer<adm_apgd_config>?, batch: Int, model: Model) throws -> APGDConfig {
    let v = try required(p, "cfg").pointee
    guard v.struct_size == MemoryLayout<adm_apgd_config>.size else {
        throw invalid("adm_apgd_config.struct_size is \(unsigned(v.struct_size)), expected \(MemoryLayout<adm_apgd_config>.size) (call adm_apgd_config_default)")
    }
    var c = APGDConfig()
    guard let norm = Norm(rawValue: v.norm) else { throw invalid("unknown norm \(v.norm) (ADM_NORM_LINF = 0, ADM_NORM_L2 = 1)") }
    guard let loss = Loss(rawValue: v.loss), loss != .dlrTargeted else {
        throw invalid("APGD loss must be ADM_LOSS_CE, ADM_LOSS_CW or ADM_LOSS_DLR, got \(v.loss) (targeted runs use targeted DLR by themselves)")
    }
    guard v.eps.isFinite, v.eps > 0 else { throw invalid("eps must be positive and finite, got \(v.eps)") }
    guard v.steps >= 1 else { throw invalid("steps must be at least 1, got \(v.steps)") }
    guard v.restarts >= 1 else { throw invalid("restarts must be at least 1, got \(v.restarts)") }
    guard v.rho.isFinite, v.rho >= 0, v.rho <= 1 else { throw invalid("rho must be in [0, 1], got \(v.rho)") }
    c.norm = norm; c.loss = loss
    c.eps = v.eps
    c.steps = Int(v.steps); c.restarts = Int(v.restarts)
    c.rho = v.rho
    c.randomStart = v.random_start != 0
    c.earlyStop = v.early_stop != 0
    c.attackDomain = try domainIndex(v.attack_domain, model, "attack_domain")
    c.evalDomain = try domainIndex(v.eval_domain, model, "eval_domain")
    c.seed = v.seed
    c.sampleOffset = v.sample_offset
    switch v.target_mode {
    case 0, 2, targetedTopK:
        guard v.targets == nil && v.targets_len == 0 else {
            let mode = ["ADM_UNTARGETED", "", "ADM_TARGETED_RANDOM", "ADM_TARGETED_TOP_K"][Int(v.target_mode)]
            throw invalid("targets given (targets \(v.targets == nil ? "NULL" : "set"), targets_len \(unsigned(v.targets_len))) with target_mode \(mode); set target_mode = ADM_TARGETED to use them, or leave targets NULL and targets_len 0")
        }
        if v.target_mode == 2 { c.targets = .random }
        if v.target_mode == targetedTopK {
            guard v.n_target_classes >= 1 else {
                throw invalid("n_target_classes must be at least 1 with ADM_TARGETED_TOP_K, got \(v.n_target_classes)")
            }
            c.topTargets = Int(v.n_target_classes)
        }
    case 1:
        let t = Array(try buffer(v.targets, try count(v.targets_len, "targets_len"), "targets"))
        guard t.count == batch else { throw AdamantError(.shape, "targets_len is \(t.count), batch is \(batch)") }
        c.targets = .targeted(t)
    default: throw invalid("unknown target_mode \(v.target_mode) (ADM_UNTARGETED 0, ADM_TARGETED 1, ADM_TARGETED_RANDOM 2, ADM_TARGETED_TOP_K 3)")
    }
    if v.target_mode != targetedTopK {
        guard v.n_target_classes >= 0 else { throw invalid("n_target_classes must be at least 0, got \(v.n_target_classes)") }
    }
    return c
}

/// The context's max_attack_steps_total against APGD's steps x runs (restarts, times the targets of APGD-T).
func checkBudget(_ box: ContextBox, steps: Int, runs: Int) throws {
    let limit = box.limits.maxAttackStepsTotal
    let (total, o) = steps.multipliedReportingOverflow(by: runs)
    if limit > 0 && (o || total > limit) {
        throw AdamantError(.resource, "steps x runs (restarts x APGD-T targets) = \(steps) x \(runs) = \(o ? "too many" : "\(total)") exceeds the context's max_attack_steps_total \(limit) (adm_context_set_limits)")
    }
}

/// Shared argument checks of adm_attack_apgd and adm_autoattack_lite.
func checkAttackBuffers(_ s: Session, _ b: Int, _ xLen: Int, _ xAdvLen: Int, _ outputs: UnsafeMutablePointer<adm_attack_outputs>?) throws {
    guard xAdvLen == xLen else { throw AdamantError(.shape, "x_adv_len is \(unsigned(xAdvLen)), x_len is \(unsigned(xLen))") }
    if let o = outputs {
        guard o.pointee.struct_size == MemoryLayout<adm_attack_outputs>.size else {
            throw invalid("adm_attack_outputs.struct_size is \(unsigned(o.pointee.struct_size)), expected \(MemoryLayout<adm_attack_outputs>.size)")
        }
        guard o.pointee.len == b else { throw AdamantError(.shape, "outputs->len is \(unsigned(o.pointee.len)), batch is \(b)") }
    }
}

func writeOutputs(_ r: AttackResult, _ b: Int, _ outputs: UnsafeMutablePointer<adm_attack_outputs>?) {
    guard let o = outputs?.pointee else { return }
    for i in 0..<b {
        o.success?[i] = r.success[i] ? 1 : 0
        o.loss?[i] = r.loss[i]
        o.steps_used?[i] = r.stepsUsed[i]
        o.targets?[i] = r.targets[i]
        o.predictions?[i] = r.predictions[i]
    }
}

@_cdecl("adm_attack_apgd")
public func adm_attack_apgd(_ ctx: OpaquePointer?, _ cfg: UnsafePointer<adm_apgd_config>?, _ x: UnsafePointer<Float>?,
                            _ xLen: Int, _ batch: Int, _ labels: UnsafePointer<Int64>?, _ labelsLen: Int,
                            _ xAdv: UnsafeMutablePointer<Float>?, _ xAdvLen: Int,
                            _ outputs: UnsafeMutablePointer<adm_attack_outputs>?) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        let b = try count(batch, "batch")
        let c = try apgdConfig(cfg, batch: b, model: s.model)
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let ln = try count(labelsLen, "labels_len")
        try checkAttackBuffers(s, b, xLen, xAdvLen, outputs)
        let dst = try required(xAdv, "x_adv")
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        try checkBudget(box, steps: c.steps, runs: c.runs(classes: s.model.numClasses))
        try s.checkMemory(batch: b, kind: .attack)
        let ls = Array(try buffer(labels, ln, "labels"))
        let r = try s.apgd(Array(xs), batch: b, labels: ls, config: c, shouldCancel: { box.isCancelled })
        dst.update(from: r.adversarial, count: r.adversarial.count)
        writeOutputs(r, b, outputs)
    }
}

@_cdecl("adm_autoattack_lite")
public func adm_autoattack_lite(_ ctx: OpaquePointer?, _ cfg: UnsafePointer<adm_apgd_config>?, _ x: UnsafePointer<Float>?,
                                _ xLen: Int, _ batch: Int, _ labels: UnsafePointer<Int64>?, _ labelsLen: Int,
                                _ xAdv: UnsafeMutablePointer<Float>?, _ xAdvLen: Int,
                                _ outputs: UnsafeMutablePointer<adm_attack_outputs>?,
                                _ report: UnsafeMutablePointer<adm_autoattack_report>?) -> adm_status {
    guarded {
        let box = try contextBox(ctx)
        box.beginCall()
        let s = box.session
        let b = try count(batch, "batch")
        var c = try apgdConfig(cfg, batch: b, model: s.model)
        guard c.loss == .crossEntropy, cfg!.pointee.target_mode == 0 || cfg!.pointee.target_mode == targetedTopK else {
            throw invalid("adm_autoattack_lite sets the losses and targets itself: cfg->loss must be ADM_LOSS_CE and cfg->target_mode ADM_UNTARGETED (or ADM_TARGETED_TOP_K), with n_target_classes for APGD-T")
        }
        let nt = cfg!.pointee.n_target_classes
        guard nt >= 1 else { throw invalid("n_target_classes must be at least 1 (APGD-T's targets), got \(nt)") }
        c.topTargets = Int(nt)
        let xs = try buffer(x, try count(xLen, "x_len"), "x")
        let ln = try count(labelsLen, "labels_len")
        try checkAttackBuffers(s, b, xLen, xAdvLen, outputs)
        let dst = try required(xAdv, "x_adv")
        let rep = try required(report, "report")
        guard rep.pointee.struct_size == MemoryLayout<adm_autoattack_report>.size else {
            throw invalid("adm_autoattack_report.struct_size is \(unsigned(rep.pointee.struct_size)), expected \(MemoryLayout<adm_autoattack_report>.size)")
        }
        try box.limits.check(model: s.model, batch: b, xLen: xs.count)
        var ce = c; ce.topTargets = 0
        try checkBudget(box, steps: c.steps, runs: ce.runs(classes: s.model.numClasses) + c.runs(classes: s.model.numClasses))
        try s.checkMemory(batch: b, kind: .attack)
        let ls = Array(try buffer(labels, ln, "labels"))
        c.topTargets = Int(nt)
        let (r, report) = try s.autoAttackLite(Array(xs), batch: b, labels: ls, config: c, shouldCancel: { box.isCancelled })
        dst.update(from: r.adversarial, count: r.adversarial.count)
        writeOutputs(r, b, outputs)
        rep.pointee.images = report.images
        rep.pointee.clean_correct = report.cleanCorrect
        rep.pointee.robust_after_apgd_ce = report.robustAfterCE
        rep.pointee.robust_after_apgd_t = report.robustAfterT
    }
}
