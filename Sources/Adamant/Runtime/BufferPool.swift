import CBackend
#if canImport(Glibc)
import Glibc
#endif

/// Recycled tensor storage of one ``Session``: the executor hands every activation, gradient and
/// scratch buffer it is done with back here, and ops draw their outputs from it, so after the first
/// call with a given batch size a forward pass, a gradient or a whole attack takes all its large
/// buffers from the pool instead of the allocator (no page faults, no zero-filling by the kernel).
/// Buffers are matched by exact element count, per batch size, and only the buffers of the
/// ``maxBatchSizes`` most recently used batch sizes are kept: a caller whose batch size keeps
/// changing (an attack whose active samples shrink) gets bounded memory, not one set of buffers per
/// size. ``Session/releaseMemory()`` empties the pool.
final class BufferPool: @unchecked Sendable {
    /// Batch sizes whose buffers are kept (two calls' worth: a batch split over threads runs pieces
    /// of two sizes at most).
    static let maxBatchSizes = 4
    /// Buffers are kept per batch size and lane: the pieces of a batch that run on the threads at
    /// once each draw from their worker's lane, so every lane sees the same sequence of takes and
    /// gives on every call and needs no new buffer after the first (one shared list would need more
    /// whenever the threads' peaks happen to coincide, at any later call).
    private struct Key: Hashable { let batch: Int, lane: Int }
    /// One (batch, lane)'s buffers: per element count (`counts`, searched linearly: a plan uses a
    /// few dozen sizes), the free buffers and how many are lent out. Taking and giving back look a
    /// size up here instead of hashing it into nested dictionaries (a small model at batch 1 spent a
    /// fifth of its time in the pool's dictionaries).
    private final class Lane {
        var counts: [Int] = []
        var free: [[[Float]]] = []
        var lent: [Int] = []
        /// The index of `count`, appended when new.
        func slot(_ count: Int) -> Int {
            if let i = counts.firstIndex(of: count) { return i }
            counts.append(count)
            free.append([])
            lent.append(0)
            return counts.count - 1
        }
        func index(_ count: Int) -> Int? { counts.firstIndex(of: count) }
        /// Floats held free, and lent out.
        var heldFloats: Int { zip(counts, free).reduce(0) { $0 + $1.0 * $1.1.count } }
        var lentFloats: Int { zip(counts, lent).reduce(0) { $0 + $1.0 * $1.1 } }
    }
    private var lanes: [Key: Lane] = [:]
    /// The lane of the last take or give (a call draws from one lane again and again).
    private var lastKey: Key?
    private var lastLane: Lane?
    private var lastUse: [Int: Int] = [:]            // batch -> tick
    /// The batch the last take or give touched (touching it again changes no order).
    private var lastTouched: Int?
    private var tick = 0
    private var mutex = pthread_mutex_t()
    /// Buffers the pool had to allocate (none was free of that size): the allocation count a test
    /// checks stays flat after warm-up.
    private(set) var allocations = 0
    /// Floats currently held (free) in the pool.
    private(set) var heldFloats = 0
    /// Floats currently lent out (taken, not yet given back), and the most ever lent at once: a test
    /// holds the memory estimate of a call against the pool's real peak.
    private(set) var lentFloats = 0
    private(set) var peakLentFloats = 0
    /// The most floats the pool ever held, free and lent together (its footprint: a buffer of a
    /// new size is allocated even when buffers of other sizes are free).
    private(set) var peakFootprintFloats = 0

    /// Bytes held free in the pool.
    var heldBytes: Int { heldFloats * MemoryLayout<Float>.size }

    /// Buffers of at least this many floats are allocated only after a trial allocation succeeds, so
    /// that memory the system refuses is an error, not an abort (smaller ones cannot plausibly fail).
    static let checkedAllocationFloats = 16 << 20

    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }

    /// A buffer of `count` floats whose contents are undefined, for a call on `batch` samples (from
    /// `lane`: a piece's worker). Fails with ``ErrorKind/resource`` when the system cannot give a
    /// new buffer that large.
    func take(_ count: Int, batch: Int, lane: Int = 0) throws -> [Float] {
        pthread_mutex_lock(&mutex)
        touch(batch)
        let l = self.lane(Key(batch: batch, lane: lane))
        let i = l.slot(count)
        // Popped in place (a copy of the list, then written back, allocated a new array on every take;
        // an emptied list stays, for the buffer's return).
        if let a = l.free[i].popLast() {
            heldFloats -= count
            lend(count, l, i)
            pthread_mutex_unlock(&mutex)
            return a
        }
        pthread_mutex_unlock(&mutex)
        let a = try BufferPool.allocate(count)
        pthread_mutex_lock(&mutex)
        allocations += 1
        // (the lane again: a take for another batch size may have dropped this one meanwhile)
        let l2 = self.lane(Key(batch: batch, lane: lane))
        lend(count, l2, l2.slot(count))
        pthread_mutex_unlock(&mutex)
        return a
    }

    /// The buffers of `key`, or nil when it has none (called with the mutex held).
    private func existingLane(_ key: Key) -> Lane? {
        if let l = lastLane, lastKey == key { return l }
        guard let l = lanes[key] else { return nil }
        lastKey = key
        lastLane = l
        return l
    }

    /// The buffers of `key`, created when new (called with the mutex held).
    private func lane(_ key: Key) -> Lane {
        if let l = existingLane(key) { return l }
        let l = Lane()
        lanes[key] = l
        lastKey = key
        lastLane = l
        return l
    }

    /// Records a buffer handed out (called with the mutex held).
    private func lend(_ count: Int, _ l: Lane, _ i: Int) {
        l.lent[i] += 1
        lentFloats += count
        peakLentFloats = max(peakLentFloats, lentFloats)
        peakFootprintFloats = max(peakFootprintFloats, lentFloats + heldFloats)
    }

    /// Forgets the peak of lent floats (tests measure one call's peak).
    func resetPeak() {
        pthread_mutex_lock(&mutex)
        peakLentFloats = lentFloats
        peakFootprintFloats = lentFloats + heldFloats
        pthread_mutex_unlock(&mutex)
    }

    /// A new buffer of `count` floats; a large one only after a trial allocation of its size
    /// succeeded (Swift's allocator aborts the process on failure).
    static func allocate(_ count: Int) throws -> [Float] {
        if count >= checkedAllocationFloats {
            let (bytes, o) = count.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
            // (a probe in C: the optimizer folds a Swift malloc whose only use is free into success)
            guard !o, abk_can_allocate(bytes) != 0 else {
                throw fail(.resource, "cannot allocate a buffer of \(count) floats (\(o ? "too many" : byteCount(bytes))): out of memory")
            }
        }
        return [Float](unsafeUninitializedCapacity: count) { _, k in k = count }
    }

    /// Returns a buffer for reuse. The caller must not use `a` afterwards (a buffer still shared
    /// with another value would only cost a copy on its next write, never a wrong result).
    /// Buffers come back to the lane they were taken from.
    func give(_ a: [Float], batch: Int, lane: Int = 0) {
        guard a.count > 0 else { return }
        let key = Key(batch: batch, lane: lane)
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        // Only as many buffers come back as went out: a tensor some op allocated itself is dropped
        // (else every call would add its buffers and the pool would grow without bound).
        guard let l = existingLane(key), let i = l.index(a.count), l.lent[i] > 0 else { return }
        l.lent[i] -= 1
        lentFloats -= a.count
        touch(batch)
        l.free[i].append(a)
        heldFloats += a.count
    }

    /// Marks `batch` as used now, dropping the buffers of the least recently used batch size when
    /// more than `maxBatchSizes` are kept (called with the mutex held).
    private func touch(_ batch: Int) {
        // (already the most recent: its tick would rise, no order would change)
        if lastTouched == batch { return }
        lastTouched = batch
        tick += 1
        lastUse[batch] = tick
        while lastUse.count > BufferPool.maxBatchSizes, let (old, _) = lastUse.min(by: { $0.value < $1.value }) {
            lastUse[old] = nil
            for (key, l) in lanes where key.batch == old {
                heldFloats -= l.heldFloats
                lentFloats -= l.lentFloats
                lanes[key] = nil
            }
            lastKey = nil
            lastLane = nil
        }
    }

    /// Floats held free for calls on `batch` samples (tests).
    func heldFloats(batch: Int) -> Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return lanes.reduce(0) { $0 + ($1.key.batch == batch ? $1.value.heldFloats : 0) }
    }

    /// Drops every held buffer.
    func removeAll() {
        pthread_mutex_lock(&mutex)
        lanes = [:]
        lastKey = nil
        lastLane = nil
        lastUse = [:]
        lastTouched = nil
        heldFloats = 0
        lentFloats = 0
        pthread_mutex_unlock(&mutex)
    }
}

extension ExecContext {
    /// A tensor whose every element the op writes before reading, from the session's pool.
    /// Fails with ``ErrorKind/resource`` when the system cannot give the memory (as do the others).
    func uninitialized(_ shape: [Int]) throws -> Tensor {
        guard let pool else { return Tensor(shape: shape, data: try BufferPool.allocate(shape.product)) }
        return Tensor(shape: shape, data: try pool.take(shape.product, batch: batch, lane: lane))
    }

    /// A zero-filled tensor, from the session's pool.
    func zeros(_ shape: [Int]) throws -> Tensor {
        var data = try pool?.take(shape.product, batch: batch, lane: lane) ?? BufferPool.allocate(shape.product)
        data.withUnsafeMutableBufferPointer { p in
            // (a batch's gradient buffers run to tens of MB: zeroed on every thread)
            guard let base = p.baseAddress else { return }
            Parallel.forSlices(p.count, threads: threads) { r in memset(base + r.lowerBound, 0, r.count * MemoryLayout<Float>.size) }
        }
        return Tensor(shape: shape, data: data)
    }

    /// Scratch floats (contents undefined); hand them back with ``recycle(_:)-([Float])``.
    func scratch(_ count: Int) throws -> [Float] {
        guard let pool else { return try BufferPool.allocate(count) }
        return try pool.take(count, batch: batch, lane: lane)
    }

    func recycle(_ a: [Float]) { pool?.give(a, batch: batch, lane: lane) }
    func recycle(_ t: Tensor) { pool?.give(t.data, batch: batch, lane: lane) }
}

/// Whether two arrays share storage (an op returned its input as its output).
func sameStorage(_ a: [Float], _ b: [Float]) -> Bool {
    guard a.count > 0, b.count > 0 else { return false }
    return a.withUnsafeBufferPointer { pa in b.withUnsafeBufferPointer { pb in pa.baseAddress == pb.baseAddress } }
}
