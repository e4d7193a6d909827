import CBackend
import CKernels
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

/// C[m x n] = op(A) * B with B and C row-major and not transposed; the n columns are split over
/// `threads` single-threaded GEMM calls (bit-identical to one call: each element's sum over k is
/// computed the same way whatever the split).
func gemmColumns(transA: Bool, m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int,
                 b: UnsafePointer<Float>, ldb: Int, c: UnsafeMutablePointer<Float>, ldc: Int, threads: Int) {
    // Below ~2 MFLOP a split costs more than it saves; keep blocks a multiple of 16 columns.
    let t = (2 * m * n * k < 2_000_000 || n < 32) ? 1 : min(threads, n / 16)
    if t <= 1 {
        abk_sgemm(transA ? 1 : 0, 0, Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), 0, c, Int32(ldc))
        return
    }
    let blocks = (n + 15) / 16
    Parallel.forRanges(blocks, threads: t) { r in
        let j0 = r.lowerBound * 16, j1 = min(n, r.upperBound * 16)
        abk_sgemm(transA ? 1 : 0, 0, Int32(m), Int32(j1 - j0), Int32(k), 1, a, Int32(lda), b + j0, Int32(ldb), 0,
                  c + j0, Int32(ldc))
    }
}

/// The compute backend in one line (OpenBLAS kernel, adamant's conv kernel, threads, CPU features);
/// the returned pointer is owned by the backend.
public func backendInfo() -> UnsafePointer<CChar> {
    _ = akn_variant()  // choose the conv kernel so the line names it
    return abk_info()
}
