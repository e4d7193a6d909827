#if canImport(Glibc)
import Glibc
#endif

/// How a forward pass over a batch is cut into segments of the plan, each run its own way: in
/// pieces of a few samples spread over the threads (each piece single-threaded inside, its
/// activations small enough to stay in cache), or on the whole batch at once with the threads
/// inside each op (every layer's weights then read once per batch, not once per piece).
///
/// Pieces suit the layers whose activations outweigh their weights (a ResNet's stem and first
/// stages); the whole batch suits those whose weights outweigh their activations by far and exceed
/// 8 MiB (a ResNet's stage 4: 18 MB of weights a block against 0.4 MB of activations per sample),
/// which per-sample pieces would stream from memory once per sample. Measured at batch 8 (AMD EPYC,
/// AVX-512, 2 threads): ResNet-50's stage 4, 32.2 ms in per-sample pieces, 24.5 ms on the whole
/// batch; stage 3's blocks (4.5 MB) gain nothing on the whole batch with F(2x2) Winograd and lose
/// 6 % with the direct 3x3 kernel (ResNet-338), so they stay in pieces. Samples never interact (BN
/// runs in inference mode) and every kernel computes an element the same way whatever the batch,
/// so the schedule changes no result.
enum Schedule {
    /// Nodes `nodes` of a plan, which read only `input` (the previous segment's output, or the graph
    /// input) and constants from outside, and after which only `output` is read.
    struct Segment: Equatable {
        let nodes: Range<Int>
        let input: Int
        let output: Int
        /// Samples per piece, or nil: the whole batch at once.
        let piece: Int?
    }

    /// Weight floats from which a segment counts as weight-heavy (8 MiB), when they also exceed its
    /// largest per-sample activation.
    nonisolated(unsafe) static var heavyWeightFloats = 1 << 21

    /// Floats of a piece's largest activation the pieces aim at (512 KiB).
    static let pieceFloats = 131_072

    /// Bytes of kept values (every sample's, for the backward pass) up to which a gradient runs
    /// segment by segment; above, it keeps a compact tape (``Model/compactsGradient(batch:)``), and
    /// if even that passes, it runs in pieces over the whole graph, each piece's values kept only
    /// while its backward pass runs. 1 GiB: at batch 8, ResNet-50 to -152 (59-105 MB a sample) run
    /// segmented with whole values, ResNet-200 to -638 segmented with compact tapes (ResNet-638's PGD
    /// step at batch 8: 1.68 GB peak, within 1.5 x its weights + 512 MiB).
    nonisolated(unsafe) static var gradientBudgetBytes = 1 << 30

    /// Bytes of whole kept values above which a gradient keeps a compact tape
    /// (``Model/compactsGradient(batch:)``): `ADAMANT_COMPACT_TAPE_MB` (0: always), else nil,
    /// ``gradientBudgetBytes``.
    nonisolated(unsafe) static var compactTapeBytes: Int? = {
        guard let v = getenv("ADAMANT_COMPACT_TAPE_MB"), let n = Int(String(cString: v)), n >= 0, n <= 1 << 30 else { return nil }
        return n << 20
    }()

    /// The segments of `e` for per-sample value shapes `shapes` (inferred at load): cut wherever a
    /// single value is live, each stretch classed as weight-heavy (whole batch) or not (pieces), and
    /// neighbours of the same class merged. A light stretch's piece is `pieceFloats` over its largest
    /// activation. One segment (whatever its class) means the plain forward pass.
    static func segments(_ e: Executor, shapes: [[Int]?]) -> [Segment] {
        let g = e.graph
        func perSample(_ v: Int) -> Int {
            guard g.constants[v] == nil, let s = shapes[v], !s.isEmpty else { return 0 }
            return s.dropFirst().reduce(1, *)
        }
        // Cut points: after node k, the values produced so far (and the input) that a later node reads.
        var live = Set<Int>([g.input])
        var stretches: [(nodes: Range<Int>, input: Int, output: Int)] = []
        var start = 0, startInput = g.input
        for (k, n) in g.nodes.enumerated() {
            for o in n.outputs where e.lastUse[o] > k { live.insert(o) }
            for i in Set(n.inputs) where e.lastUse[i] == k { live.remove(i) }
            if live.count == 1, let v = live.first, n.outputs.contains(v), k + 1 < g.nodes.count {
                stretches.append((start..<(k + 1), startInput, v))
                start = k + 1
                startInput = v
            }
        }
        stretches.append((start..<g.nodes.count, startInput, g.output))
        // Class and piece per stretch, then merged.
        var merged: [(nodes: Range<Int>, input: Int, output: Int, heavy: Bool, largest: Int)] = []
        for s in stretches {
            var weights = 0, largest = 1
            for k in s.nodes {
                weights += g.nodes[k].op.parameterCount
                for o in g.nodes[k].outputs { largest = max(largest, perSample(o)) }
            }
            // (a stretch without weights, a pooling or a reshape, goes with the one before it)
            let heavy = weights == 0 ? merged.last?.heavy ?? false : weights >= heavyWeightFloats && weights >= largest
            if let last = merged.last, last.heavy == heavy {
                merged[merged.count - 1] = (last.nodes.lowerBound..<s.nodes.upperBound, last.input, s.output, heavy,
                                            max(last.largest, largest))
            } else {
                merged.append((s.nodes, s.input, s.output, heavy, largest))
            }
        }
        return merged.map { Segment(nodes: $0.nodes, input: $0.input, output: $0.output,
                                    piece: $0.heavy ? nil : max(1, pieceFloats / $0.largest)) }
    }
}
