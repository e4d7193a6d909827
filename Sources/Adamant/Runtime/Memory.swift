import CBackend
import CKernels
#if canImport(Glibc)
import Glibc
#endif

/// What a call on a ``Session`` does, for its memory estimate.
public enum CallKind: Sendable {
    /// One forward pass (adm_predict).
    case predict
    /// A forward pass that keeps every activation, then the backward pass (adm_gradient).
    case gradient
    /// Gradients over and over plus the attack's own per-image state (PGD, APGD, AutoAttack-lite).
    case attack

    var name: String {
        switch self { case .predict: return "predict"; case .gradient: return "gradient"; case .attack: return "attack" }
    }
}

/// Activation memory of one plan (one BN domain's executor) from a simulation of the executor over
/// the shapes at load. The session's pool reuses a buffer only for the same element count and keeps
/// every buffer it allocated until the call ends, so what a pass holds is, per size, the most
/// buffers of that size alive at once: values alive at each node of a forward pass (inputs read for
/// the last time are released after the node, as the executor does; in-place reuse is ignored, so
/// this errs high); for a gradient every forward value (kept for the backward pass) plus, per size,
/// the most gradients alive at once during the backward pass. Kernel scratch comes from the
/// convolutions' own formulas (``Conv/scratchCounts(input:n:backward:)``) for the piece size.
struct MemoryPlan {
    /// Floats per sample the pool holds after a forward pass (no values kept).
    let forwardFloats: Int
    /// Floats per sample after a gradient (forward values kept + backward gradients).
    let gradientFloats: Int
    /// The same with a compact tape (``Executor/Tape``): the forward pass's buffers (back in the
    /// pool), the values kept whole, the masks' bits, and the backward gradients.
    let compactGradientFloats: Int
    /// Floats per sample a segmented forward pass (``Schedule``) adds on the whole batch: the
    /// whole-batch segments' values, as ``forwardFloats`` counts them, and each joined piece output.
    let segmentFloats: Int
    /// Every convolution with its per-sample input shape (for scratch).
    let convs: [(op: Conv, input: [Int])]
    /// Every other op that takes scratch (``Op/scratchCounts(_:backward:threads:)``), with its input
    /// shapes and which inputs are per-sample activations (their first dimension is the batch).
    let others: [(op: any Op, inputs: [[Int]], batched: [Bool])]

    init(_ e: Executor, shapes: [[Int]?], segments: [Schedule.Segment] = []) {
        let g = e.graph
        func size(_ v: Int) -> Int {
            guard g.constants[v] == nil, let s = shapes[v] else { return 0 }
            return Array(s.dropFirst()).product
        }
        func add(_ a: Int, _ b: Int) -> Int { let (r, o) = a.addingReportingOverflow(b); return o ? Int.max : r }
        func footprint(_ most: [Int: Int]) -> Int {
            most.reduce(0) { add($0, $1.key.multipliedReportingOverflow(by: $1.value).overflow ? Int.max : $1.key * $1.value) }
        }
        let sizes = g.valueNames.indices.map(size)
        // Forward over `nodes`, values released after their last reader (the graph input is the
        // caller's; `held`, a segment's input, stays held throughout): per size, the most alive at once.
        func peak(_ nodes: Range<Int>, holding held: Int? = nil) -> [Int: Int] {
            var live: [Int: Int] = [:], most: [Int: Int] = [:]
            func alive(_ size: Int) {
                live[size, default: 0] += 1
                most[size] = max(most[size] ?? 0, live[size]!)
            }
            if let h = held, sizes[h] > 0 { alive(sizes[h]) }
            for k in nodes {
                let n = g.nodes[k]
                for o in n.outputs where sizes[o] > 0 { alive(sizes[o]) }
                for i in Set(n.inputs) where e.lastUse[i] == k && i != g.input && i != held && sizes[i] > 0 { live[sizes[i]]! -= 1 }
            }
            return most
        }
        forwardFloats = footprint(peak(g.nodes.indices))
        let kept = g.nodes.reduce(0) { acc, n in n.outputs.reduce(acc) { add($0, sizes[$1]) } }
        // The same over the whole-batch segments alone, plus the joined output of every piece segment.
        var segMost: [Int: Int] = [:]
        if segments.count > 1 {
            for seg in segments {
                if seg.piece != nil {
                    if sizes[seg.output] > 0 { segMost[sizes[seg.output], default: 0] += 1 }
                } else {
                    for (size, count) in peak(seg.nodes, holding: seg.input) { segMost[size, default: 0] += count }
                }
            }
        }
        segmentFloats = footprint(segMost)
        // Backward: a value's gradient lives from its first reader (in reverse order) to the node that
        // produced it; each node allocates its inputs' gradients while its outputs' are still held.
        var grads = Set<Int>([g.output])
        var held: [Int: Int] = [sizes[g.output]: 1], gmost = held
        func hold(_ v: Int) {
            held[sizes[v], default: 0] += 1
            gmost[sizes[v]] = max(gmost[sizes[v]] ?? 0, held[sizes[v]]!)
        }
        for n in g.nodes.reversed() {
            guard n.outputs.contains(where: { grads.contains($0) }) else { continue }
            let needed = Set(n.inputs.filter { e.dependsOnInput[$0] && g.constants[$0] == nil })
            guard !needed.isEmpty else { continue }
            for o in n.outputs where !grads.contains(o) { hold(o); grads.insert(o) }  // zero-filled
            for i in needed { hold(i) }  // fresh (an existing one is accumulated into, then freed)
            for o in n.outputs where grads.remove(o) != nil { held[sizes[o]]! -= 1 }
            for i in needed where !grads.insert(i).inserted { held[sizes[i]]! -= 1 }
        }
        gradientFloats = add(kept, footprint(gmost))
        let keptCompact = g.nodes.reduce(0) { acc, n in
            n.outputs.reduce(acc) { a, v in
                switch e.keptAs[v] {
                case .values: return add(a, sizes[v])
                case .positive: return add(a, (sizes[v] + 63) / 64 * 2)
                case .shape: return a
                }
            }
        }
        compactGradientFloats = add(add(forwardFloats, keptCompact), footprint(gmost))
        convs = g.nodes.compactMap { n in
            guard let c = n.op as? Conv, let s = shapes[n.inputs[0]], s.count == 4 else { return nil }
            return (c, Array(s.dropFirst()))
        }
        others = g.nodes.compactMap { n in
            guard !(n.op is Conv), n.inputs.allSatisfy({ shapes[$0] != nil }),
                  !n.op.scratchCounts(n.inputs.map { shapes[$0]! }, backward: true, threads: 1).isEmpty else { return nil }
            return (n.op, n.inputs.map { shapes[$0]! }, n.inputs.map { g.constants[$0] == nil && shapes[$0]!.first == shapes[g.input]!.first })
        }
    }

    /// Floats the pool holds after one pass of `kind` on a piece of `n` samples: values (per size)
    /// plus the scratch buffers of the ops, each size as many times as one op holds it at once.
    func pieceFloats(_ n: Int, gradient: Bool, compact: Bool = false, threads: Int = Parallel.threads) -> Int {
        let perSample = gradient ? (compact ? compactGradientFloats : gradientFloats) : forwardFloats
        let (values, o) = n.multipliedReportingOverflow(by: perSample)
        guard !o else { return Int.max }
        var scratch: [Int: Int] = [:]  // size -> most buffers of that size one op holds
        func note(_ counts: [Int]) {
            var mult: [Int: Int] = [:]
            for c in counts where c > 0 { mult[c, default: 0] += 1 }
            for (c, k) in mult { scratch[c] = max(scratch[c] ?? 0, k) }
        }
        for (c, s) in convs { note(c.scratchCounts(input: s, n: n, backward: gradient)) }
        for (op, inputs, batched) in others {
            let shapes = zip(inputs, batched).map { s, b in b && !s.isEmpty ? [n] + s.dropFirst() : s }
            note(op.scratchCounts(shapes, backward: gradient, threads: threads))
        }
        var total = values
        for (c, k) in scratch {
            let (m, o1) = c.multipliedReportingOverflow(by: k)
            let (t, o2) = total.addingReportingOverflow(m)
            guard !o1, !o2 else { return Int.max }
            total = t
        }
        return total
    }
}

/// A byte count with its exact value when rounded: "64.3 MB (67446400 bytes)", "1000 bytes".
func exactBytes(_ n: Int) -> String { n >= 1024 && n < Int.max ? "\(byteCount(n)) (\(n) bytes)" : byteCount(n) }

/// A number of bytes for a person: "1.5 GB", "12.0 MB", "512 bytes".
public func byteCount(_ n: Int) -> String {
    if n == Int.max { return "more than 9.2 EB" }
    let units = [(1 << 30, "GB"), (1 << 20, "MB"), (1 << 10, "KB")]
    for (u, name) in units where n >= u { return "\(Double(Int(Double(n) / Double(u) * 10)) / 10) \(name)" }
    return "\(n) bytes"
}

extension Model {
    /// Bytes the loaded model holds: packed weights (and the Winograd forms of the layers that use
    /// them and the adjoint panels small direct layers keep, built on first use, counted from the
    /// start), biases and per-domain BN scales and shifts,
    /// constants and BN parameters. An estimate from the plan, used by ``LoadOptions/memoryLimit``.
    static func weightBytes(graph: Graph, plans: [Executor], bn: [[BNParams]], shapes: [[Int]?]) -> Int {
        var floats = 0
        var seen = Set<ObjectIdentifier>(), extras = Set<ObjectIdentifier>()
        func add(_ n: Int) { let (r, o) = floats.addingReportingOverflow(n); floats = o ? Int.max : r }
        for (gi, g) in ([graph] + plans.map(\.graph)).enumerated() {
            for n in g.nodes {
                switch n.op {
                case let c as Conv:
                    add((c.bias?.count ?? 0) + (c.scale?.count ?? 0))
                    // (the GEMM panels of a layer whose F(2x2) matrices replace them: counted as those)
                    if seen.insert(ObjectIdentifier(c.weights)).inserted, !c.weights.winograd2Only { add(c.weights.forward.count) }
                    // The forms built on first use, once per weight (the plans share the base graph's).
                    guard gi > 0, extras.insert(ObjectIdentifier(c.weights)).inserted else { continue }
                    if let s = shapes[n.inputs[0]], s.count == 4, c.algorithm(s[2], s[3]) == .winograd {
                        let packed = akn_gemm_packed_a_size(Int32(c.outChannels), Int32(c.inPerGroup))
                        let adjoint = akn_gemm_packed_a_size(Int32(c.inPerGroup), Int32(c.outChannels))
                        add(36 &* (packed &+ adjoint))
                    }
                    if let s = shapes[n.inputs[0]], s.count == 4, c.usesStridedC16(h: s[2], w: s[3]) {
                        add(c.outChannels &* c.inPerGroup &* c.kh &* c.kw)  // the channel-blocked kernel's copy
                    }
                    if let s = shapes[n.inputs[0]], s.count == 4, c.algorithm(s[2], s[3]) == .winograd2 {
                        add(c.weights.winograd2Floats)
                    }
                    if let s = shapes[n.inputs[0]], s.count == 4, c.usesStridedFewAdjoint(h: s[2], w: s[3]) {
                        add(c.outChannels &* c.inPerGroup &* 9)  // the plain weights a few-channel stem's gradient reads
                    }
                    // W^T's own panels (the input gradient of a layer on a small map)
                    if let s = shapes[n.inputs[0]], s.count == 4, c.usesTransposedPanels(h: s[2], w: s[3]) {
                        add(c.algorithm(s[2], s[3]) == .winograd2 ? c.weights.winograd2AdjointFloats : c.weights.transposedFloats)
                    }
                    if let s = shapes[n.inputs[0]], s.count == 4, c.algorithm(s[2], s[3]) == .direct3x3,
                       c.outChannels &* c.inPerGroup &* 9 <= ConvWeights.cachedAdjointMaxFloats {
                        add((c.inPerGroup + 5) / 6 * c.outChannels * 54)  // the kept adjoint panels (small layers)
                        // and the channel-blocked kernel's copies, forward and adjoint, where it runs
                        if Conv.usesC16(channelsIn: c.inPerGroup, channelsOut: c.outChannels, h: s[2], w: s[3]) {
                            add(c.outChannels &* c.inPerGroup &* 9)
                        }
                        if Conv.usesC16(channelsIn: c.outChannels, channelsOut: c.inPerGroup, h: s[2], w: s[3]) {
                            add(c.outChannels &* c.inPerGroup &* 9)
                        }
                    }
                case let d as Gemm:
                    if seen.insert(ObjectIdentifier(d.weights)).inserted { add(d.weights.forward.count) }
                    add(d.c?.count ?? 0)
                case let d as MatMul:
                    if seen.insert(ObjectIdentifier(d.weights)).inserted { add(d.weights.forward.count) }
                default:
                    if gi == 0 { add(n.op.parameterCount) }
                }
            }
        }
        for t in graph.constants.values { add(t.count) }
        for domain in bn { for p in domain { add(p.scale.count + p.bias.count + p.mean.count + p.variance.count) } }
        let (bytes, o) = floats.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        return o ? Int.max : bytes
    }

    /// Estimated bytes of activations, gradients, scratch and working copies one `kind` call on
    /// `batch` images needs on a session (on top of ``weightBytes``), from the plan: the batch runs
    /// in pieces over `threads` threads as ``Session`` splits it, each piece's buffers as
    /// ``MemoryPlan`` simulates the pool, plus per-thread kernel scratch and the call's own copies of
    /// the input (normalized input, pieces, gradient, attack state). Int.max when it overflows.
    public func activationBytes(batch: Int, kind: CallKind, threads: Int? = nil) -> Int {
        guard batch >= 1 else { return 0 }
        let threads = max(1, threads ?? Parallel.threads)
        // (the schedule's budgets are settable: part of what the estimate depends on)
        let key = EstimateCache.Key(batch: batch, kind: kind, threads: threads, budget: Schedule.gradientBudgetBytes,
                                    compactTape: Schedule.compactTapeBytes)
        if let bytes = lastEstimate.value(for: key) { return bytes }
        let bytes = estimateActivationBytes(batch: batch, kind: kind, threads: threads)
        lastEstimate.store(bytes, for: key)
        return bytes
    }

    private func estimateActivationBytes(batch: Int, kind: CallKind, threads: Int) -> Int {
        let plan = memoryPlan
        let gradient = kind != .predict
        // Pieces as Session.chunked splits the batch: `count` pieces of floor(batch / count) or one
        // more samples, run by `workers` threads. The pool holds, per piece size, the buffers of as
        // many pieces as run at once.
        let piece = max(1, cacheFriendlyBatch)
        let pieces = (batch + piece - 1) / piece
        var sizes: [(samples: Int, concurrent: Int)] = [(batch, 1)]
        if pieces > 1 {
            let count = max(pieces, min(threads, batch))
            let workers = max(1, min(threads, count))
            let small = batch / count, large = batch % count
            sizes = [(small + 1, min(workers, large)), (small, min(workers, count - large))].filter { $0.0 > 0 && $0.1 > 0 }
        }
        // A gradient segment by segment keeps the whole batch's values, with the joined piece outputs.
        let segmented = gradient && segmentsGradient(batch: batch)
        if segmented { sizes = [(batch, 1)] }
        // An attack's active set shrinks from step to step: the pool keeps the buffers of its last
        // BufferPool.maxBatchSizes batch sizes, each at most the largest piece's.
        if kind == .attack, let top = sizes.first {
            let spare = BufferPool.maxBatchSizes - sizes.count
            if spare > 0 { sizes.append((top.samples, spare * top.concurrent)) }
        }
        var total = 0
        func add(_ n: Int, _ times: Int) -> Bool {
            let (m, o1) = n.multipliedReportingOverflow(by: times)
            let (s, o2) = total.addingReportingOverflow(m)
            total = s
            return !(o1 || o2)
        }
        let compact = gradient && compactsGradient(batch: batch)
        for (n, k) in sizes {
            guard add(plan.pieceFloats(n, gradient: gradient, compact: compact, threads: threads), k) else { return Int.max }
        }
        // A segmented forward pass (Session.segmentedForward) also holds whole-batch values and the
        // whole-batch segments' kernel scratch.
        if segmented { guard add(plan.segmentFloats, batch) else { return Int.max } }
        if kind == .predict && batch > 1 && plan.segmentFloats > 0 {
            guard add(plan.segmentFloats, batch), add(plan.pieceFloats(batch, gradient: false, threads: threads) - batch * plan.forwardFloats, 1)
            else { return Int.max }
        }
        // Per-thread kernel scratch (GEMM panels, tiles): 1 Mi floats a thread, generously.
        guard add(1 << 20, threads) else { return Int.max }
        // The call's own arrays, in floats per image: the normalized input and its pieces (2 x input),
        // logits; a gradient adds the per-piece gradients, the joined gradient and a copy of the input
        // (3 x input); an attack its clean, current, best and success images, a gathered batch and
        // APGD's momentum and previous point (8 x input).
        let input = inputShape.product, k = numClasses
        let copies: Int
        switch kind {
        case .predict: copies = 2 * input + 2 * k
        case .gradient: copies = 5 * input + 4 * k
        case .attack: copies = 13 * input + 6 * k
        }
        guard add(batch, copies) else { return Int.max }
        let (bytes, o) = total.multipliedReportingOverflow(by: MemoryLayout<Float>.size)
        return o ? Int.max : bytes
    }
}

/// One memory estimate (``Model/activationBytes(batch:kind:threads:)``) and its inputs, shared by
/// a model's sessions.
final class EstimateCache: @unchecked Sendable {
    struct Key: Equatable {
        let batch: Int, kind: CallKind, threads: Int, budget: Int, compactTape: Int?
    }
    private var entry: (key: Key, bytes: Int)?
    private var mutex = pthread_mutex_t()

    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }

    func value(for key: Key) -> Int? {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard let e = entry, e.key == key else { return nil }
        return e.bytes
    }

    func store(_ bytes: Int, for key: Key) {
        pthread_mutex_lock(&mutex)
        entry = (key, bytes)
        pthread_mutex_unlock(&mutex)
    }
}

/// Bytes the system could give now: MemAvailable (/proc/meminfo), lowered to what the cgroup's
/// memory.max leaves when that is smaller; nil when neither can be read.
func availableMemory() -> Int? {
    func read(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var buf = [CChar](repeating: 0, count: 8192)
        let n = fread(&buf, 1, buf.count - 1, f)
        guard n > 0 else { return nil }
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
    var avail: Int? = nil
    if let m = read("/proc/meminfo") {
        for line in m.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let parts = line.split(separator: " ")
            if parts.count >= 2, let kb = Int(parts[1]) { avail = kb.multipliedReportingOverflow(by: 1024).partialValue }
        }
    }
    if let maxS = read("/sys/fs/cgroup/memory.max"), let limit = Int(maxS.split(separator: "\n").first ?? ""),
       let curS = read("/sys/fs/cgroup/memory.current"), let current = Int(curS.split(separator: "\n").first ?? "") {
        let left = max(0, limit - current)
        avail = min(avail ?? left, left)
    }
    return avail
}

/// Fails with ``ErrorKind/resource`` when the system refuses `bytes` bytes: a trial allocation
/// (released at once), so a request the allocator would abort on becomes an error.
func checkAllocatable(_ bytes: Int, what: @autoclosure () -> String) throws {
    // Below glibc's largest mmap threshold (32 MiB) a trial would move that threshold (and cannot
    // plausibly fail): only larger requests are tried.
    guard bytes >= 64 << 20 else { return }
    guard bytes < Int.max, abk_can_allocate(bytes) != 0 else {  // (in C: see BufferPool.allocate)
        throw fail(.resource, "cannot allocate \(byteCount(bytes)) for \(what()): out of memory")
    }
}

extension Session {
    /// Fails with ``ErrorKind/resource`` before anything is allocated when a `kind` call on `batch`
    /// images would need more memory than the model's ``LoadOptions/memoryLimit`` allows (weights +
    /// this call's estimated activations; the pool's buffers kept from earlier calls are dropped first
    /// when they would push past it) or than the system has available.
    public func checkMemory(batch: Int, kind: CallKind) throws {
        let need = model.activationBytes(batch: batch, kind: kind)
        var what: String { "\(kind.name) on a batch of \(batch)" }
        if let cap = model.memoryLimit {
            let (total, o) = model.weightBytes.addingReportingOverflow(need)
            if o || total > cap {
                throw fail(.resource, "\(what) needs about \(byteCount(need)) of activations (estimated from the plan) on top of the model's \(byteCount(model.weightBytes)) of weights, above the model's memory limit of \(exactBytes(cap)) (memory_limit at load); use a smaller batch")
            }
            let held = pool.heldBytes
            if held > 0 && (total.addingReportingOverflow(held).overflow || total + held > cap) { releaseMemory() }
        }
        // Small calls skip the system check (it reads /proc; they cannot plausibly fail). Without
        // /proc, a trial allocation of the whole estimate stands in.
        guard need >= 64 << 20 else { return }
        if let avail = availableMemory() {
            if need > avail + pool.heldBytes {
                throw fail(.resource, "\(what) needs about \(byteCount(need)) of activations (estimated from the plan); the system has \(byteCount(avail)) available; use a smaller batch")
            }
        } else {
            try checkAllocatable(need, what: what)
        }
    }
}
