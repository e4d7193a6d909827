import CBackend
import CKernels
import Glibc

/// adamant's own parallelism: work is split into at most ``threads`` chunks run concurrently.
/// OpenBLAS is kept single-threaded (see `CBackend`), so nothing is oversubscribed.
enum Parallel {
    /// Threads to use (the process-wide setting of `adm_set_num_threads`).
    static var threads: Int { Int(abk_get_threads()) }

    /// Splits `0..<count` into at most `threads` contiguous ranges and runs `body` on each, on
    /// adamant's persistent worker threads (`abk_parallel`). The ranges depend only on `count` and
    /// the number of parts, and no result may depend on which thread runs a range.
    ///
    /// With `split` above 1 (work whose ranges are independent units, each with output of its own),
    /// `0..<count` goes to up to `split` ranges per thread, which the threads take in order as each
    /// finishes its last (`abk_parallel_units`): on a host whose other processes slow one thread
    /// down, the others take over its share instead of waiting for it at the end of every layer.
    static func forRanges(_ count: Int, threads: Int, split: Int = 1, _ body: (Range<Int>) -> Void) {
        let t = max(1, min(threads, count))
        if t == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        let parts = split > 1 ? min(count, t * split) : t
        withoutActuallyEscaping(body) { body in
            var job = Job(count: count, body: body)
            withUnsafeMutablePointer(to: &job) { jp in
                let run: abk_task_fn = { ctx, part, parts in
                    let job = ctx!.assumingMemoryBound(to: Job.self)
                    let (count, k, t) = (job.pointee.count, Int(part), Int(parts))
                    let lo = count * k / t, hi = count * (k + 1) / t
                    if hi > lo { job.pointee.body(lo..<hi) }
                }
                if parts > t { abk_parallel_units(Int32(t), Int32(parts), run, jp) } else { abk_parallel(Int32(t), run, jp) }
            }
        }
    }

    /// Ranges per thread for ``forRanges(_:threads:split:_:)`` in the long parallel loops of the GEMMs,
    /// Winograd, the phased kernel and col2im (`ADAMANT_SPLIT`, 1 to 64, sets it at start: 1 = one
    /// range per thread, as before). AMD EPYC family 25 model 1 (Zen 3), avx2, 2 threads, against
    /// ONNX Runtime in the same rounds: ResNet-50 batch 1, 1.05 -> 0.98x; batch 8, 1.09 -> 1.01x; with
    /// a process busy half of each 10 ms on the machine, 1.00 -> 0.89x.
    nonisolated(unsafe) static var split: Int = {
        if let v = getenv("ADAMANT_SPLIT"), let n = Int(String(cString: v)), (1...64).contains(n) { return n }
        return 4
    }()

    /// The ``split`` for a loop of `flops` floating-point operations: several ranges per thread from
    /// 8 MFLOP (about 50 µs a thread), where a thread slowed by the host would hold the others up
    /// for longer than the extra claims cost; one below (a CIFAR layer at batch 1).
    static func split(flops: Int) -> Int { flops >= 8_000_000 ? split : 1 }

    /// Splits `0..<count` elements of a memory-bound pass into slices of at least 64K elements (one
    /// per thread at most) and runs `body` on each; elementwise work only (no result depends on it).
    static func forSlices(_ count: Int, threads: Int, _ body: (Range<Int>) -> Void) {
        let parts = max(1, min(threads, count / 65_536))
        if parts == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        forRanges(parts, threads: parts) { r in
            for p in r { body((count * p / parts)..<(count * (p + 1) / parts)) }
        }
    }

    /// FLOPs from which a GEMM or a ``ConvAlgorithm/phased`` layer (and its input gradient) runs on
    /// more than one thread. Waking the pool's spinning workers costs well under a microsecond: at 2M
    /// (the old limit) a CIFAR network's 4x4-map layers (64 channels, 1.2 MFLOP) and its stem ran on
    /// one thread while the other waited; at 100K, cifar10_sri_resnet_a at batch 1, 2 threads, avx512
    /// (interleaved): forward 53.4 -> 47.4 us, input gradient 148 -> 131 us; other models unchanged.
    static let minFLOPs = 100_000

    /// Bands of rows to cut each of `units` work units into, so that `threads` threads get at least
    /// two pieces each: 1 when the units alone do, else as many as that takes, at most `rows` (a band
    /// holds a row at least). A function of its arguments only, never of which thread runs a piece.
    static func bands(units: Int, rows: Int, threads: Int) -> Int {
        units >= 2 * threads ? 1 : min(rows, (2 * threads + units - 1) / units)
    }

    private struct Job {
        let count: Int
        let body: (Range<Int>) -> Void
    }
}

/// Runs adamant's GEMM (`gemm.h`) for all m rows and n columns of `io`, split over `threads`: by
/// column chunks when there are enough of them, else also by blocks of rows. Every element's
/// arithmetic is fixed by the kernel, so the split never changes a result.
/// With `transposed`, `a` is the packed W [k x m] (with `AKN_GEMM_SLACK` floats after it) and
/// C = epilogue(W^T . B), read straight from W's panels (`akn_gemm_transposed`).
func gemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, transposed: Bool = false, io: akn_gemm_cols, threads: Int) {
    // Split when the FLOPs pay for waking the threads (``Parallel/minFLOPs``), or when a GEMM of a few
    // columns (one column at a time, bound by reading A) streams at least 256 KB of A: a 3x3 layer of
    // 128 channels on a 2x2 map (1.2 MFLOP, 590 KB of weights) took 38 µs on one thread, 24 µs on two
    // (cifar10_sri_resnet_a).
    let narrow = n <= Int(AKN_GEMM_NARROW)
    let t = 2 * m * n * k < Parallel.minFLOPs && !(narrow && m * k >= 65_536) ? 1 : max(1, threads)
    gemm(m: m, n: n, k: k, packed: a, transposed: transposed, io: io, threads: t)
}

private func gemm(m: Int, n: Int, k: Int, packed a: UnsafePointer<Float>, transposed: Bool, io: akn_gemm_cols, threads t: Int) {
    let chunk = Int(akn_gemm_chunk_cols())
    // A few columns run in the few-column kernel (akn_gemm's, rows in the lanes) on each thread's rows.
    // A plain B of one column is read in place there (a dense layer at batch 1: no packing at all),
    // so only a convolution's implicit im2col, packed either way, goes to the shared packing below.
    let narrow = n <= Int(AKN_GEMM_NARROW) && !transposed && io.conv == nil
    let chunks = (n + chunk - 1) / chunk
    // Many columns and an A that stays in cache, or a B too large to stay in a core's cache (over
    // 768 KB packed): column chunks only (each thread packs just its own columns of B and re-reads A
    // per block, instead of every row tile streaming all of B from L3: ResNet-50's 3x3/2 layer on
    // 56x56, B of 1152 x 784, 8 such layers on one input: 6.7 -> 5.1 ms). Else enough rows: one
    // block of rows per thread (balanced, each packs all of B); else column chunks, with row blocks
    // added when there are fewer chunks than threads.
    let columnsOnly = chunks >= 4 * t && (m * k <= 64 * 1024 || k * n > 192 * 1024)
    let rowBlocks = columnsOnly ? 1 : m >= 48 * t ? t
        : (chunks >= 2 * t ? 1 : max(1, min((m + 11) / 12, (2 * t + chunks - 1) / chunks)))
    let rowsPer = rowsPerBlock(m, blocks: rowBlocks)
    let split = Parallel.split(flops: 2 * m * n * k)
    let colUnits = rowBlocks >= t ? 1 : chunks
    let colsPer = ((chunks + colUnits - 1) / colUnits) * chunk
    let units = colUnits * rowBlocks
    let scratchSize = akn_gemm_scratch_size(Int32(k), Int32(chunk))
    var io = io
    // Threads splitting C by rows would each pack all of B: pack it once, together, then share it.
    if t > 1, rowBlocks > 1, colUnits == 1, k > 0, k * n <= 4 << 20, !narrow {
        let (mm, nn, kk) = (Int32(m), Int32(n), Int32(k))
        // Each thread packs rows of B for every column: for a plain B, the rows the previous layer
        // wrote as its rows of C (a layer's output is the next one's B) when it ran one range per
        // thread, so each packs from its own cache (after a GEMM cut finer, below, a thread's rows are
        // wherever it ran); for a convolution's implicit im2col of fewer column chunks than threads (64
        // output positions or fewer at batch 1), whole input channels, not one thread all of them while
        // the others wait (cifar10_sri_resnet_a's 3x3 layers on 4x4 maps, a ResNet's 3x3/2 layer to 7x7).
        // Other convolutions pack by column chunks.
        let taps = io.conv.map { max(1, Int($0.pointee.kh * $0.pointee.kw)) }
        let byRows = taps == nil || chunks < t
        let kPer = taps.map { (k / $0 + t - 1) / t * $0 } ?? rowsPerBlock(k, blocks: t)
        withUnsafePointer(to: &io) { iop in
            withThreadScratch(slot: 2, akn_gemm_packed_b_size(kk, nn)) { pb in
                if byRows {
                    Parallel.forRanges(t, threads: t) { r in
                        for part in r where part * kPer < k {
                            akn_gemm_pack_b_rows(iop, kk, nn, Int32(part * kPer), Int32(min(k, part * kPer + kPer)), pb)
                        }
                    }
                } else {
                    Parallel.forRanges(chunks, threads: t) { r in
                        akn_gemm_pack_b(iop, kk, nn, Int32(r.lowerBound * chunk), Int32(min(n, r.upperBound * chunk)), pb)
                    }
                }
                // Rows in up to `split` blocks per thread, taken as the threads come free (with one,
                // the rowBlocks chosen above).
                let fine = split > 1 ? max(rowBlocks, min((m + 5) / 6, t * split)) : rowBlocks
                let finePer = split > 1 ? rowsPerBlock(m, blocks: fine) : rowsPer
                Parallel.forRanges(fine, threads: t, split: split) { r in
                    withThreadScratch(slot: 3, 12 * 32 + 16) { tile in
                        for rb in r where rb * finePer < m {
                            akn_gemm_prepacked(mm, nn, kk, a, transposed ? 1 : 0, pb, iop, Int32(rb * finePer),
                                               Int32(min(m, rb * finePer + finePer)), 0, nn, tile)
                        }
                    }
                }
            }
        }
        return
    }
    withUnsafePointer(to: &io) { iop in
        Parallel.forRanges(units, threads: t, split: split) { r in
            withThreadScratch(slot: 0, scratchSize) { sp in
                for u in r {
                    let (ci, rb) = (u / rowBlocks, u % rowBlocks)
                    let m0 = rb * rowsPer, n0 = ci * colsPer
                    guard m0 < m, n0 < n else { continue }
                    let (m1, n1) = (Int32(min(m, m0 + rowsPer)), Int32(min(n, n0 + colsPer)))
                    if transposed {
                        akn_gemm_transposed(Int32(m), Int32(n), Int32(k), a, iop, Int32(m0), m1, Int32(n0), n1, sp)
                    } else {
                        akn_gemm(Int32(m), Int32(n), Int32(k), a, iop, Int32(m0), m1, Int32(n0), n1, sp)
                    }
                }
            }
        }
    }
}

/// Rows per block when `rows` rows of a GEMM's C go to `blocks` blocks: the share rounded up to a
/// multiple of 6 (A's panels). Also how B's rows are packed, as they were C's rows of the previous layer.
private func rowsPerBlock(_ rows: Int, blocks: Int) -> Int { ((rows + blocks - 1) / blocks + 5) / 6 * 6 }

/// Runs `body` with a pointer to `a`'s elements, or nil when `a` is nil.
@inline(__always)
func withOptionalBuffer<R>(_ a: [Float]?, _ body: (UnsafePointer<Float>?) throws -> R) rethrows -> R {
    guard let a else { return try body(nil) }
    return try a.withUnsafeBufferPointer { try body($0.baseAddress) }
}

/// Runs `body` with this thread's scratch buffer `slot` of at least `count` floats
/// (`akn_thread_scratch`: kept from call to call), or a fresh one if it cannot grow.
@inline(__always)
func withThreadScratch<R>(slot: Int32, _ count: Int, _ body: (UnsafeMutablePointer<Float>) throws -> R) rethrows -> R {
    // (at least one float: a slot never grown has no buffer, and a fresh one per call costs a malloc)
    if let p = akn_thread_scratch(slot, max(1, count)) { return try body(p) }
    var a = [Float](unsafeUninitializedCapacity: max(1, count)) { _, k in k = max(1, count) }
    return try a.withUnsafeMutableBufferPointer { try body($0.baseAddress!) }
}
