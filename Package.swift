// swift-tools-version:5.9
// adamant — a C-embeddable Swift runtime for robust ResNets with BatchNorm domains.
import PackageDescription

let package = Package(
    name: "adamant",
    products: [
        // libadamant.so: the C ABI (include/adamant.h). Build with `make` so that the Swift
        // runtime is linked statically and only the adm_* symbols are exported.
        .library(name: "adamant", type: .dynamic, targets: ["AdamantC"]),
        // The command-line tool; `make` installs it as dist/bin/adamant.
        .executable(name: "adamant-cli", targets: ["AdamantCLI"]),
        // The HTTP inference and attack service (`adamant serve`); `make` installs it as
        // dist/bin/adamant-serve. Its own target, so libadamant and the CLI never link SwiftNIO.
        .executable(name: "adamant-serve", targets: ["AdamantServe"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // libonnx (protobuf classes + checker) behind a plain C interface.
        .target(
            name: "COnnx",
            cxxSettings: [.define("ONNX_NAMESPACE", to: "onnx"), .define("ONNX_ML", to: "1")],
            linkerSettings: [.linkedLibrary("onnx"), .linkedLibrary("onnx_proto"), .linkedLibrary("protobuf")]
        ),
        // OpenBLAS loader (picks the right GEMM kernel), CPUID/XCR0 feature checks.
        .target(name: "CBackend", linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]),
        // Hand-written kernels (direct 3x3 convolution), AVX-512 / AVX2 variants picked at run time.
        .target(name: "CKernels", dependencies: ["CBackend"], cSettings: [.unsafeFlags(["-O3"])]),
        // JPEG/PNG decode and encode, CIFAR-style tar(.gz) reading (used by the CLI).
        .target(
            name: "CImageIO",
            linkerSettings: [.linkedLibrary("jpeg"), .linkedLibrary("png"), .linkedLibrary("z")]
        ),
        // Raw DEFLATE (zlib) for reading .npz checkpoints (`adamant import tensorpack`).
        .target(name: "CZip", linkerSettings: [.linkedLibrary("z")]),
        // The public header as a module, so the C ABI layer uses the very same declarations.
        .target(name: "AdamantABI"),
        // The Swift core: load -> optimize -> plan -> run, ops, attacks, calibration.
        .target(name: "Adamant", dependencies: ["COnnx", "CBackend", "CKernels", "CZip"]),
        // The C ABI: `public @_cdecl` functions only.
        .target(name: "AdamantC", dependencies: ["Adamant", "AdamantABI"], exclude: ["exports.map"]),
        // The `adamant` command-line tool.
        .executableTarget(
            name: "AdamantCLI",
            dependencies: [
                "Adamant", "CImageIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // `adamant serve`: HTTP inference and attacks (Hummingbird 2 on SwiftNIO).
        .executableTarget(
            name: "AdamantServe",
            dependencies: [
                "Adamant", "CImageIO", "CBackend",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            exclude: ["openapi.yaml"]
        ),
        .testTarget(name: "AdamantTests", dependencies: ["Adamant", "CBackend", "CImageIO"]),
    ],
    cxxLanguageStandard: .cxx17
)

// The libFuzzer target (Tests/Fuzz): only with ADAMANT_FUZZ=1, as Tests/Fuzz/run.sh builds it
// (`-sanitize=fuzzer,address`, its own --scratch-path); without the fuzzer runtime it has no main.
if Context.environment["ADAMANT_FUZZ"] == "1" {
    package.targets.append(.executableTarget(name: "AdamantFuzz", dependencies: ["AdamantC", "AdamantABI"],
                                             path: "Tests/Fuzz/Harness"))
    package.products.append(.executable(name: "adamant-fuzz", targets: ["AdamantFuzz"]))
}
