#if canImport(Glibc)
import Glibc
#endif

/// Recycled tensor storage of one ``Session``: the executor hands every activation, gradient and
/// scratch buffer it is done with back here, and ops draw their outputs from it, so after the first
/// call with a given batch size a forward pass, a gradient or a whole attack takes all its large
/// buffers from the pool instead of the allocator (no page faults, no zero-filling by the kernel).
/// Buffers are matched by exact element count. The pool holds at most the peak of one call;
/// ``Session/releaseMemory()`` empties it.
final class BufferPool: @unchecked Sendable {
    private var free: [Int: [[Float]]] = [:]
    private var mutex = pthread_mutex_t()
    /// Buffers the pool had to allocate (none was free of that size): the allocation count a test
    /// checks stays flat after warm-up.
    private(set) var allocations = 0
    /// Floats currently held (free) in the pool.
    private(set) var heldFloats = 0

    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }

    /// A buffer of `count` floats whose contents are undefined.
    func take(_ count: Int) -> [Float] {
        pthread_mutex_lock(&mutex)
        if var list = free[count], let a = list.popLast() {
            free[count] = list.isEmpty ? nil : list
            heldFloats -= count
            pthread_mutex_unlock(&mutex)
            return a
        }
        allocations += 1
        pthread_mutex_unlock(&mutex)
        return [Float](unsafeUninitializedCapacity: count) { _, k in k = count }
    }

    /// Returns a buffer for reuse. The caller must not use `a` afterwards (a buffer still shared
    /// with another value would only cost a copy on its next write, never a wrong result).
    func give(_ a: [Float]) {
        guard a.count > 0 else { return }
        pthread_mutex_lock(&mutex)
        free[a.count, default: []].append(a)
        heldFloats += a.count
        pthread_mutex_unlock(&mutex)
    }

    /// Drops every held buffer.
    func removeAll() {
        pthread_mutex_lock(&mutex)
        free = [:]
        heldFloats = 0
        pthread_mutex_unlock(&mutex)
    }
}

extension ExecContext {
    /// A tensor whose every element the op writes before reading, from the session's pool.
    func uninitialized(_ shape: [Int]) -> Tensor {
        guard let pool else { return Tensor(uninitialized: shape) }
        return Tensor(shape: shape, data: pool.take(shape.product))
    }

    /// A zero-filled tensor, from the session's pool.
    func zeros(_ shape: [Int]) -> Tensor {
        guard let pool else { return Tensor(zeros: shape) }
        var data = pool.take(shape.product)
        data.withUnsafeMutableBufferPointer { p in p.update(repeating: 0) }
        return Tensor(shape: shape, data: data)
    }

    /// Scratch floats (contents undefined); hand them back with ``recycle(_:)-([Float])``.
    func scratch(_ count: Int) -> [Float] {
        guard let pool else { return [Float](unsafeUninitializedCapacity: count) { _, k in k = count } }
        return pool.take(count)
    }

    func recycle(_ a: [Float]) { pool?.give(a) }
    func recycle(_ t: Tensor) { pool?.give(t.data) }
}

/// Whether two arrays share storage (an op returned its input as its output).
func sameStorage(_ a: [Float], _ b: [Float]) -> Bool {
    guard a.count > 0, b.count > 0 else { return false }
    return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in pa.baseAddress == pb.baseAddress } }
}
