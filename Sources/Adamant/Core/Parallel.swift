import CBackend
import Dispatch

/// adamant's own parallelism: work is split into at most ``threads`` chunks run concurrently.
/// OpenBLAS is kept single-threaded (see `CBackend`), so nothing is oversubscribed.
enum Parallel {
    /// Threads to use (the process-wide setting of `adm_set_num_threads`).
    static var threads: Int { Int(abk_get_threads()) }

    /// Splits `0..<count` into at most `threads` contiguous ranges and runs `body` on each.
    static func forRanges(_ count: Int, threads: Int, _ body: (Range<Int>) -> Void) {
        let t = max(1, min(threads, count))
        if t == 1 {
            if count > 0 { body(0..<count) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: t) { k in
            let lo = count * k / t, hi = count * (k + 1) / t
            if hi > lo { body(lo..<hi) }
        }
    }
}

/// Columns per GEMM call in ``gemmColumns``. Fixed, whatever the thread count: OpenBLAS's kernels
/// (Haswell's among them) may round a column differently depending on where it falls in a call, so
/// the calls themselves must not depend on the split.
let gemmColumnBlock = 256

/// C[m x n] = op(A) * B with B and C row-major and not transposed, as fixed blocks of
/// ``gemmColumnBlock`` columns (one GEMM call each) spread over `threads`. The blocks depend only on
/// `n`, so the result is bit-identical for every thread count.
func gemmColumns(transA: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
    let blocks = (n + gemmColumnBlock - 1) / gemmColumnBlock
    // Below ~2 MFLOP a thread costs more than it saves.
    let t = 2 * m * n * k < 2_000_000 ? 1 : threads
    Parallel.forRanges(blocks, threads: t) { r in
        for blk in r {
            let j0 = blk * gemmColumnBlock, j1 = min(n, j0 + gemmColumnBlock)
            abk_sgemm(transA ? 1 : 0, 0, Int32(m), Int32(j1 - j0), Int32(k), 1, a, Int32(lda), b + j0, Int32(ldb), 0,
                      c + j0, Int32(ldc))
        }
    }
}

/// C[m x n] = alpha * A[m x k] * op(B) + beta * C, all row-major, computed one row of C (one sample)
/// per GEMM call, so that a row's result never depends on how many rows (batch-mates) share a call.
func gemmPerRow(m: Int, n: Int, k: Int, alpha: Float, a: UnsafePointer<Float>, transB: Bool,
                b: UnsafePointer<Float>, ldb: Int, beta: Float, c: UnsafeMutablePointer<Float>) {
    for i in 0..<m {
        abk_sgemm(0, transB ? 1 : 0, 1, Int32(n), Int32(k), alpha, a + i * k, Int32(k), b, Int32(ldb), beta,
                  c + i * n, Int32(n))
    }
}
