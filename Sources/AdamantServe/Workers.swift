import Adamant
import Foundation

/// A fixed set of worker threads, each with its own ``Session`` on the one shared ``Model``, fed from
/// a bounded queue. Model calls never run on the event loop: handlers suspend until a worker has
/// run their job. A full queue refuses new work (the caller answers 503).
///
/// Dynamic batching (`batchWindow` > 0): a worker that takes a predict job waits up to the window
/// (counted from that job's arrival) for more predict jobs on the same domain and runs them as one
/// batch of at most `maxBatch` images, then hands each job its own rows. Samples never interact in
/// adamant (BatchNorm runs in inference mode, and a sample's arithmetic does not depend on the batch
/// it is in), so a batched job's logits are bit for bit those it gets alone.
final class WorkerPool: @unchecked Sendable {
    /// A predict job: images, their count and domain, and where the logits go.
    final class PredictJob {
        let pixels: [Float]
        let count: Int
        let domain: Int
        let arrival: Date
        let isCancelled: () -> Bool
        let done: (Result<(logits: [Float], batch: Int), Error>) -> Void
        init(pixels: [Float], count: Int, domain: Int, isCancelled: @escaping () -> Bool,
             done: @escaping (Result<(logits: [Float], batch: Int), Error>) -> Void) {
            self.pixels = pixels; self.count = count; self.domain = domain; arrival = Date()
            self.isCancelled = isCancelled; self.done = done
        }
    }

    enum Job {
        case predict(PredictJob)
        /// Any other work on a session (attacks). The closure does the work and returns the call
        /// that reports its result, which the worker makes only after it has counted the job as no
        /// longer running (so a client that sees the answer never sees its job in the gauges).
        case task((Session) -> () -> Void)
    }

    let model: Model
    let maxQueue: Int
    let maxBatch: Int
    let batchWindow: TimeInterval
    private let cond = NSCondition()
    private var queue: [Job] = []
    private var head = 0
    private var stopping = false
    private var running = 0
    private var threads: [Thread] = []
    private var exited = 0
    /// Called with (queued, running) whenever they change (the metrics gauges), under the pool's
    /// lock so that the values it sees are in order.
    var onDepthChange: ((Int, Int) -> Void)?
    /// Called with the images of each predict batch a worker runs.
    var onBatch: ((Int) -> Void)?

    /// Starts `workers` threads.
    init(model: Model, workers: Int, maxQueue: Int, maxBatch: Int, batchWindow: TimeInterval) {
        self.model = model
        self.maxQueue = maxQueue
        self.maxBatch = maxBatch
        self.batchWindow = batchWindow
        for i in 0..<workers {
            let t = Thread { [unowned self] in self.workerLoop() }
            t.name = "adamant-worker-\(i)"
            t.stackSize = 16 << 20
            threads.append(t)
        }
        threads.forEach { $0.start() }
    }

    /// Jobs waiting (not yet taken by a worker).
    var queued: Int { cond.lock(); defer { cond.unlock() }; return queue.count - head }

    /// Queues a job, or throws 503 when the queue is full or the pool is stopping.
    func submit(_ job: Job) throws {
        cond.lock()
        let waiting = queue.count - head
        guard !stopping else {
            cond.unlock()
            throw ServeError.overloaded("the server is shutting down", retryAfter: 1)
        }
        guard waiting < maxQueue else {
            cond.unlock()
            throw ServeError.overloaded("the server is busy: \(waiting) requests are already waiting (--max-queue \(maxQueue)); retry later", retryAfter: 1)
        }
        queue.append(job)
        publish()
        cond.signal()
        cond.unlock()
    }

    /// Runs a predict job on a worker (possibly batched with others) and returns its logits and the
    /// number of images in the model call that computed them.
    func predict(_ pixels: [Float], count: Int, domain: Int, isCancelled: @escaping () -> Bool) async throws -> (logits: [Float], batch: Int) {
        try await withCheckedThrowingContinuation { cont in
            let job = PredictJob(pixels: pixels, count: count, domain: domain, isCancelled: isCancelled) { cont.resume(with: $0) }
            do { try submit(.predict(job)) } catch { cont.resume(throwing: error) }
        }
    }

    /// Runs `body` on a worker's session and returns its result.
    func run<T>(_ body: @escaping (Session) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { cont in
            do {
                try submit(.task { session in
                    let result = Result { try body(session) }
                    return { cont.resume(with: result) }
                })
            } catch { cont.resume(throwing: error) }
        }
    }

    /// Stops taking jobs, lets the workers finish the queued ones, and waits for them to exit.
    func shutdown() {
        cond.lock()
        stopping = true
        cond.broadcast()
        while exited < threads.count { cond.wait() }
        cond.unlock()
    }

    /// Reports the queue depth and running jobs (call with the lock held).
    private func publish() { onDepthChange?(queue.count - head, running) }

    private func take() -> Job {
        let j = queue[head]
        head += 1
        if head > 64 && head * 2 > queue.count { queue.removeFirst(head); head = 0 }
        return j
    }

    /// Takes the next job, or nil when stopping with nothing left. A predict job comes back with the
    /// other queued predict jobs of its domain that batching joins to it.
    private func next() -> [Job]? {
        cond.lock()
        defer { cond.unlock() }
        while queue.count == head && !stopping { cond.wait() }
        if queue.count == head { return nil }
        let first = take()
        guard case .predict(let p) = first, batchWindow > 0 else { running += 1; publish(); return [first] }
        var group = [first]
        var images = p.count
        let deadline = p.arrival.addingTimeInterval(batchWindow)
        while true {
            var i = head
            while i < queue.count && images < maxBatch {
                if case .predict(let q) = queue[i], q.domain == p.domain, images + q.count <= maxBatch {
                    group.append(queue[i]); images += q.count
                    queue.remove(at: i)
                } else { i += 1 }
            }
            if images >= maxBatch || stopping || Date() >= deadline { break }
            _ = cond.wait(until: deadline)
        }
        running += 1
        publish()
        return group
    }

    private func workerLoop() {
        let session = Session(model: model)
        while let jobs = next() {
            let report = execute(jobs, session)
            cond.lock(); running -= 1; publish(); cond.unlock()
            report()
        }
        cond.lock()
        exited += 1
        cond.broadcast()
        cond.unlock()
    }

    /// Runs `jobs` and returns the call that hands their results to the waiting requests.
    private func execute(_ jobs: [Job], _ session: Session) -> () -> Void {
        if jobs.count == 1, case .task(let body) = jobs[0] {
            return body(session)
        }
        var items: [PredictJob] = []
        for j in jobs { if case .predict(let p) = j { items.append(p) } }
        var results: [(PredictJob, Result<(logits: [Float], batch: Int), Error>)] = []
        let report = { for (p, r) in results { p.done(r) } }
        // Jobs whose client has gone are dropped before any work.
        var live: [PredictJob] = []
        for p in items {
            if p.isCancelled() { results.append((p, .failure(AdamantError(.cancelled, "the client closed the connection before the request ran")))) }
            else { live.append(p) }
        }
        guard !live.isEmpty else { return report }
        let total = live.reduce(0) { $0 + $1.count }
        onBatch?(total)
        let k = model.numClasses
        do {
            if live.count == 1 {
                let p = live[0]
                session.shouldCancel = p.isCancelled
                defer { session.shouldCancel = nil }
                results.append((p, .success((try session.predict(p.pixels, batch: p.count, domain: p.domain), total))))
                return report
            }
            var x: [Float] = []
            x.reserveCapacity(live.reduce(0) { $0 + $1.pixels.count })
            for p in live { x += p.pixels }
            let logits = try session.predict(x, batch: total, domain: live[0].domain)
            var row = 0
            for p in live {
                results.append((p, .success((Array(logits[(row * k)..<((row + p.count) * k)]), total))))
                row += p.count
            }
        } catch {
            for p in live { results.append((p, .failure(error))) }
        }
        return report
    }
}
