import ArgumentParser
import Adamant
import CImageIO
import Foundation

let cifar10Classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

/// A batch of images in pixel space with optional labels.
struct ImageSet {
    var pixels: [Float]
    var count: Int
    var shape: [Int]
    var labels: [Int64]?
    var names: [String]
    var classNames: [String]?
}

func isDataset(_ path: String) -> Bool {
    var dir: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &dir), dir.boolValue { return true }
    return path.hasSuffix(".tar") || path.hasSuffix(".tar.gz") || path.hasSuffix(".tgz")
}

/// Reads a dataset archive or directory laid out as <class>/<image>. Class indices follow CIFAR-10's
/// order when the folder names are CIFAR-10's, else the sorted folder names.
func readDataset(_ path: String, limit: Int, spread: Bool = true) throws -> ImageSet {
    var ds = aio_dataset()
    var err = [CChar](repeating: 0, count: 512)
    // First try CIFAR-10 names; fall back to the folders' own names if some folder is not one of them.
    var cNames = cifar10Classes.map { strdup($0) }
    defer { cNames.forEach { free($0) } }
    var rc = cNames.withUnsafeMutableBufferPointer { buf -> Int32 in
        buf.withMemoryRebound(to: UnsafePointer<CChar>?.self) {
            aio_dataset_read(path, limit, spread ? 1 : 0, $0.baseAddress, cifar10Classes.count, &ds, &err, err.count)
        }
    }
    if rc != 0 {
        rc = aio_dataset_read(path, limit, spread ? 1 : 0, nil, 0, &ds, &err, err.count)
    }
    guard rc == 0 else { throw inputError(path, "cannot read dataset '\(path)': \(String(cString: err))") }
    defer { aio_dataset_free(&ds) }
    let n = ds.count, per = ds.channels * ds.height * ds.width
    return ImageSet(pixels: Array(UnsafeBufferPointer(start: ds.pixels, count: n * per)), count: n,
                    shape: [ds.channels, ds.height, ds.width],
                    labels: Array(UnsafeBufferPointer(start: ds.labels, count: n)),
                    names: (0..<n).map { String(cString: ds.paths[$0]!) },
                    classNames: (0..<ds.num_classes).map { String(cString: ds.class_names[$0]!) })
}

/// Decodes image files. An image whose size differs from the model's input is an error (exit 65)
/// naming the file and both sizes, unless `resize` (--resize) asks to scale it (bilinear, as
/// PyTorch's F.interpolate with align_corners=False). A grayscale file's one channel is replicated
/// to R, G and B, with a warning on stderr.
func readImages(_ paths: [String], shape: [Int], resize: Bool = false) throws -> ImageSet {
    var pixels: [Float] = []
    var err = [CChar](repeating: 0, count: 512)
    for p in paths {
        var img = aio_image()
        guard aio_decode_file(p, &img, &err, err.count) == 0 else {
            throw inputError(p, "cannot decode '\(p)': \(String(cString: err))")
        }
        defer { aio_image_free(&img) }
        guard img.channels == shape[0] else { throw CLIError(.data, "'\(p)' has \(img.channels) channels, the model wants \(shape[0])") }
        if img.grayscale != 0 {
            warn("'\(p)' is a grayscale image: its one channel is replicated to the model's \(shape[0]) channels (R = G = B)")
        }
        if img.height == shape[1] && img.width == shape[2] {
            pixels += UnsafeBufferPointer(start: img.data, count: img.channels * img.height * img.width)
        } else {
            guard resize else {
                throw CLIError(.data, "'\(p)' is \(img.width)x\(img.height) pixels (width x height); the model expects \(shape[2])x\(shape[1]) images; pass --resize to scale images to the model's size (bilinear)")
            }
            var out: UnsafeMutablePointer<Float>?
            guard aio_resize(img.data, img.channels, img.height, img.width, shape[1], shape[2], &out, &err, err.count) == 0,
                  let out else { throw CLIError(.data, "cannot resize '\(p)': \(String(cString: err))") }
            pixels += UnsafeBufferPointer(start: out, count: shape.reduce(1, *))
            free(out)
        }
    }
    return ImageSet(pixels: pixels, count: paths.count, shape: shape, labels: nil, names: paths, classNames: nil)
}

/// "adamant: warning: ..." on stderr.
func warn(_ message: String) {
    FileHandle.standardError.write("adamant: warning: \(message)\n".data(using: .utf8)!)
}

/// Images from files or one dataset, checked against the model's input shape.
func loadInputs(_ inputs: [String], model: Model, limit: Int, resize: Bool = false) throws -> ImageSet {
    var set: ImageSet
    if inputs.count == 1 && isDataset(inputs[0]) {
        set = try readDataset(inputs[0], limit: limit)
    } else {
        guard !inputs.isEmpty else { throw ValidationError("no images given") }
        set = try readImages(limit > 0 ? Array(inputs.prefix(limit)) : inputs, shape: model.inputShape, resize: resize)
    }
    guard set.shape == model.inputShape else {
        throw CLIError(.data, "images are \(set.shape), the model expects \(model.inputShape)")
    }
    toPixelSpace(&set, model)
    return set
}

/// Maps decoded images (RGB in [0, 1]) to the model's pixel space: its pixel range and channel
/// order (e.g. BGR in [0, 255] for the tensorpack imports). The identity for RGB [0, 1] models.
func toPixelSpace(_ set: inout ImageSet, _ model: Model) {
    model.preprocessing.fromUnitRGB(&set.pixels, channels: set.shape[0], plane: set.shape[1] * set.shape[2])
}

/// Writes one image given in the model's pixel space (`pre`: mapped back to RGB in [0, 1]).
func writePNG(_ path: String, _ chw: ArraySlice<Float>, shape: [Int], pre: Preprocessing = Preprocessing()) throws {
    var err = [CChar](repeating: 0, count: 512)
    var pixels = Array(chw)
    pre.toUnitRGB(&pixels, channels: shape[0], plane: shape[1] * shape[2])
    let rc = pixels.withUnsafeBufferPointer {
        aio_write_png(path, $0.baseAddress, shape[0], shape[1], shape[2], &err, err.count)
    }
    guard rc == 0 else { throw CLIError(.cantCreate, "cannot write '\(path)': \(String(cString: err))") }
}
