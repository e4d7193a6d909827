import CBackend
#if canImport(Glibc)
import Glibc
#endif

/// An instruction-set level of adamant's kernel paths (and of the OpenBLAS kernel it loads).
public enum InstructionSet: Int32, CaseIterable, Sendable, Comparable {
    /// Portable C (SSE2 at most) and OpenBLAS's Prescott kernels.
    case scalar = 0
    /// AVX2 + FMA kernels and OpenBLAS's Haswell kernels.
    case avx2 = 1
    /// AVX-512 (F, BW, DQ, VL) kernels and OpenBLAS's SkylakeX kernels.
    case avx512 = 2

    /// "scalar", "avx2" or "avx512".
    public var name: String { String(cString: abk_isa_name(rawValue)) }

    /// The level named `name` (case-insensitive), nil if unknown ("auto" is not a level).
    public init?(name: String) {
        let v = abk_isa_parse(name)
        guard v >= 0, let isa = InstructionSet(rawValue: v) else { return nil }
        self = isa
    }

    public static func < (a: InstructionSet, b: InstructionSet) -> Bool { a.rawValue < b.rawValue }
}

/// The process-wide compute backend: instruction-set level, threads, and a description.
public enum Backend {
    /// The highest level this CPU and OS support (CPUID feature bits *and* XCR0 state).
    public static var supportedISA: InstructionSet { InstructionSet(rawValue: abk_isa_supported()) ?? .scalar }

    /// Every level this machine can run, lowest first.
    public static var supportedISAs: [InstructionSet] { InstructionSet.allCases.filter { $0 <= supportedISA } }

    /// The level in force: the supported one, capped by `ADAMANT_ISA` or ``setISA(_:)``.
    public static var isa: InstructionSet { InstructionSet(rawValue: abk_isa()) ?? .scalar }

    /// Caps adamant's kernels at `isa` (nil = the highest supported). adamant's own kernels switch at
    /// once; OpenBLAS's kernel is chosen when it is first loaded and stays for the process.
    /// Throws if the CPU or the OS lacks the level.
    public static func setISA(_ isa: InstructionSet?) throws {
        guard abk_set_isa(isa?.rawValue ?? Int32(ABK_ISA_AUTO)) == 0 else {
            throw fail(.invalidArgument, "this CPU and OS support at most \(supportedISA.name) (CPUID and XCR0); \(isa?.name ?? "?") is not available")
        }
    }

    /// Caps adamant's kernels at the level named `name` ("avx512", "avx2", "scalar", case-insensitive),
    /// or "auto" for the highest supported: the names `ADAMANT_ISA` takes. Throws for an unknown name
    /// or a level the machine lacks.
    public static func setISA(named name: String) throws {
        let v = name.isEmpty ? -1 : abk_isa_parse(name)
        guard v != -1 else { throw fail(.invalidArgument, "'\(name)' is not an instruction set (use avx512, avx2, scalar or auto)") }
        try setISA(InstructionSet(rawValue: v))  // nil for auto
    }

    /// Fails if the environment asked for a level that cannot be honoured (`ADAMANT_ISA`).
    static func checkEnvironment() throws {
        if let e = abk_isa_error() { throw fail(.invalidArgument, String(cString: e)) }
    }
}

/// The compute backend in one line (instruction-set level, OpenBLAS kernel, threads, CPU features);
/// the returned pointer is owned by the backend.
public func backendInfo() -> UnsafePointer<CChar> { abk_info() }

/// `ADAMANT_WINOGRAD=0` turns Winograd off (every 3x3 convolution then runs as im2col + GEMM),
/// e.g. to compare with the plain arithmetic. Read once.
let winogradDisabled: Bool = {
    guard let v = getenv("ADAMANT_WINOGRAD") else { return false }
    return String(cString: v) == "0"
}()

/// Winograd runs on 3x3 layers with at least this many input and output channels (fewer: the direct
/// kernel, whose cost is not dominated by transforms). `ADAMANT_WINOGRAD_MIN_CHANNELS` overrides it.
let winogradMinChannels: Int = {
    if let v = getenv("ADAMANT_WINOGRAD_MIN_CHANNELS"), let n = Int(String(cString: v)), n >= 1 { return n }
    return 64
}()

/// Winograd F(2x2, 3x3) runs on 3x3 layers (of images from 7x7 up but too small for F(4x4, 3x3)) with at
/// least this many input and output channels: ResNet stages 3 and 4 (14x14 and 7x7, 256 channels and up),
/// not CIFAR networks (at most 64), whose direct kernels win. `ADAMANT_WINOGRAD2_MIN_CHANNELS`
/// overrides it.
let winograd2MinChannels: Int = {
    if let v = getenv("ADAMANT_WINOGRAD2_MIN_CHANNELS"), let n = Int(String(cString: v)), n >= 1 { return n }
    return 128
}()
