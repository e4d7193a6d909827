/// A dense float32 tensor in row-major (C) order: the value type every op reads and writes.
public struct Tensor: Sendable {
    /// Dimensions, outermost first (NCHW for images).
    public var shape: [Int]
    /// `shape.reduce(1, *)` elements.
    public var data: [Float]

    /// A tensor of zeros.
    public init(zeros shape: [Int]) {
        self.shape = shape
        self.data = [Float](repeating: 0, count: shape.reduce(1, *))
    }

    /// A tensor whose every element the caller writes before reading (skips zero-filling).
    init(uninitialized shape: [Int]) {
        self.shape = shape
        let n = shape.reduce(1, *)
        self.data = [Float](unsafeUninitializedCapacity: n) { _, count in count = n }
    }

    /// A tensor over existing data; `data.count` must match the shape.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.reduce(1, *) == data.count, "tensor data does not match its shape")
        self.shape = shape
        self.data = data
    }

    /// A value a gradient pass kept by its shape only (``BackwardRead/shape``), for the backward of
    /// ops that read no more of it: no elements (`data` empty).
    init(shapeOnly shape: [Int]) {
        self.shape = shape
        self.data = []
    }

    /// Number of elements.
    public var count: Int { data.count }
    /// Number of dimensions.
    public var rank: Int { shape.count }
}

/// Row-major strides of a shape.
func strides(of shape: [Int]) -> [Int] {
    var s = [Int](repeating: 1, count: shape.count)
    var acc = 1
    for i in stride(from: shape.count - 1, through: 0, by: -1) {
        s[i] = acc
        acc *= shape[i]
    }
    return s
}

extension Array where Element == Int {
    /// Product of the elements; Int.max when it overflows (a hostile shape then fails the checks
    /// that follow, instead of trapping).
    var product: Int {
        var p = 1
        for v in self {
            let (r, o) = p.multipliedReportingOverflow(by: v)
            if o { return Int.max }
            p = r
        }
        return p
    }
}
