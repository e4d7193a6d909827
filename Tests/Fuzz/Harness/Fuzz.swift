// libFuzzer target (issue #8): load an ONNX model from the fuzzer's bytes through the C ABI
// (adm_model_load_memory), then one adm_predict and one adm_gradient on a single image.
// A hostile file may be rejected with any status; what must never happen is a crash, a trap, a
// sanitizer report, a leak or a hang. Built by Tests/Fuzz/run.sh with -sanitize=fuzzer,address,
// which instruments Adamant, AdamantC and this file and links libFuzzer.
import struct AdamantABI.adm_context_limits
import AdamantC

/// At most this many pixels (H x W) per image and input bytes per call, so a model that declares a
/// huge input is refused by the context limits (ADM_ERR_RESOURCE) instead of making a run slow.
let maxPixels = 64 * 64
let maxInputBytes = 3 * 64 * 64 * 4 * 2

/// libFuzzer's driver (libclang_rt.fuzzer).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<CInt>,
                         _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt

/// SwiftPM links an executable's entry point as `<module>_main` (so tests can link the module);
/// it hands the command line to libFuzzer's driver, which is libFuzzer's own main() otherwise.
@_cdecl("AdamantFuzz_main")
public func fuzzMain(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    fuzzInit()
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzOne(data, size) }
}

func fuzzInit() {
    _ = adm_set_num_threads(1)  // deterministic, and one core: the machine is shared
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    var model: OpaquePointer?
    guard adm_model_load_memory(UnsafeRawPointer(data), size, nil, &model) == 0, let model else { return 0 }
    defer { adm_model_free(model) }
    var c = 0, h = 0, w = 0, classes = 0, domains = 0
    var lo: Float = 0, hi: Float = 1
    guard adm_model_input_shape(model, &c, &h, &w) == 0, adm_model_num_classes(model, &classes) == 0,
          adm_model_domain_count(model, &domains) == 0, adm_model_pixel_range(model, &lo, &hi) == 0 else {
        fatalError("a loaded model does not answer its queries: \(String(cString: adm_last_error()))")
    }
    var ctx: OpaquePointer?
    guard adm_context_create(model, &ctx) == 0, let ctx else { return 0 }
    defer { adm_context_free(ctx) }
    var limits = adm_context_limits()
    adm_context_limits_default(&limits)
    limits.max_batch = 1
    limits.max_pixels_per_image = maxPixels
    limits.max_input_bytes = maxInputBytes
    limits.max_attack_steps_total = 1
    guard adm_context_set_limits(ctx, &limits) == 0 else { fatalError(String(cString: adm_last_error())) }

    // One image: c*h*w floats when that fits the limits; otherwise the limits must refuse the call.
    let (hw, o1) = h.multipliedReportingOverflow(by: w)
    let (n, o2) = hw.multipliedReportingOverflow(by: c)
    let fits = !o1 && !o2 && hw <= maxPixels && n <= maxInputBytes / 4
    let len = fits ? n : 1
    var seed = UInt32(truncatingIfNeeded: size) &* 2_654_435_761
    let x = (0..<len).map { _ -> Float in
        seed = seed &* 1_664_525 &+ 1_013_904_223
        let u = Float(seed >> 8) / Float(1 << 24)
        return lo.isFinite && hi.isFinite ? lo + (hi - lo) * u : u
    }
    let domain = domains > 0 ? (size % domains) : 0
    var logits = [Float](repeating: 0, count: max(classes, 1))
    let s1 = x.withUnsafeBufferPointer {
        adm_predict(ctx, domain, $0.baseAddress, len, 1, &logits, classes)
    }
    if !fits && s1 == 0 { fatalError("a model over the context limits was run: input \(c)x\(h)x\(w)") }
    guard s1 == 0, classes > 0 else { return 0 }
    var labels: [Int64] = [Int64(size % classes)]
    var loss: Float = 0
    var grad = [Float](repeating: 0, count: len)
    _ = x.withUnsafeBufferPointer { xp in
        grad.withUnsafeMutableBufferPointer { gp in
            adm_gradient(ctx, domain, Int32(size & 1), xp.baseAddress, len, 1, &labels, 1, &loss, 1, gp.baseAddress, len)
        }
    }
    return 0
}
