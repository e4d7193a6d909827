#if canImport(Glibc)
import Glibc
#endif

/// Per-op wall time, for developers: with `ADAMANT_PROFILE=1` in the environment every node of every
/// forward and backward pass is timed, and a table (total ms per op kind and pass, sorted) is printed
/// on stderr when the process exits. Off by default: then it costs one branch per node.
enum Profiler {
    static let enabled: Bool = {
        guard let v = getenv("ADAMANT_PROFILE"), String(cString: v) != "0" else { return false }
        atexit { Profiler.report() }
        return true
    }()

    /// `ADAMANT_PROFILE=2`: a convolution's key also names its channels (`64->256`), so layers of one
    /// kind and map size but different shapes are told apart.
    static let byShape: Bool = {
        guard let v = getenv("ADAMANT_PROFILE") else { return false }
        return String(cString: v) == "2"
    }()

    private static var mutex = pthread_mutex_t()
    private static var totals: [String: (seconds: Double, calls: Int)] = [:]

    static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    static func record(_ key: String, since start: Double) {
        let dt = now() - start
        pthread_mutex_lock(&mutex)
        let old = totals[key] ?? (0, 0)
        totals[key] = (old.seconds + dt, old.calls + 1)
        pthread_mutex_unlock(&mutex)
    }

    static func report() {
        let all = totals.values.reduce(0) { $0 + $1.seconds }
        var lines = ["adamant profile (ADAMANT_PROFILE): op, total ms, share, calls"]
        for (k, v) in totals.sorted(by: { $0.value.seconds > $1.value.seconds }) {
            let share = all > 0 ? 100 * v.seconds / all : 0
            lines.append("  \(k.padding(44))\(fixed(v.seconds * 1e3).leftPadded(10)) \((fixed(share) + "%").leftPadded(7)) \(String(v.calls).leftPadded(8))")
        }
        fputs(lines.joined(separator: "\n") + "\n", stderr)
    }
}

/// A short description of a node for the profile (the op type, and the algorithm of a convolution).
func profileKey(_ op: any Op, _ inputs: [Tensor], backward: Bool) -> String {
    var key = op.type
    if let c = op as? Conv, let x = inputs.first, x.rank == 4 {
        let (h, w) = (x.shape[2], x.shape[3])
        // (a stride-2 layer's forward may run the channel-blocked direct kernel, its gradient not)
        let algorithm = !backward && c.usesStridedC16(h: h, w: w) ? "directC16" : "\(c.algorithm(h, w))"
        key += " \(c.kh)x\(c.kw)/\(c.strides.0) \(algorithm) \(h)x\(w)"
        if Profiler.byShape { key += " \(c.inPerGroup * c.group)->\(c.outChannels)" + (c.fusedResidual ? " +res" : "") }
    }
    return backward ? key + " (backward)" : key
}

/// `v` with one decimal.
private func fixed(_ v: Double) -> String {
    let t = Int((v * 10).rounded())
    return "\(t / 10).\(abs(t % 10))"
}

extension String {
    func padding(_ n: Int) -> String { count >= n ? self + " " : self + String(repeating: " ", count: n - count) }
    func leftPadded(_ n: Int) -> String { count >= n ? self : String(repeating: " ", count: n - count) + self }
}
