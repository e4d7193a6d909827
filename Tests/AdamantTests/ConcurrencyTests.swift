import Foundation
import Synchronization
import XCTest
@testable import Adamant

/// Issue #8: one model shared by 8 threads, each with its own Session, running a mix of predict,
/// gradient and PGD: every result is bit-identical to the serial run, also while the host's own
/// threads keep every core busy. No timing is asserted; the calls must simply complete.
/// `make test-tsan` runs this class under ThreadSanitizer.
final class ConcurrencyTests: XCTestCase {
    static let model: Model = try! Model.load(domains: [("clean", examplesDir + "/mbn_resnet8.clean.onnx"),
                                                        ("adv", examplesDir + "/mbn_resnet8.adv.onnx")])

    /// One unit of work and the bits it produced.
    enum Job {
        case predict(seed: UInt64, batch: Int, domain: Int)
        case gradient(seed: UInt64, batch: Int, domain: Int, loss: Loss)
        case pgd(seed: UInt64, batch: Int, attackDomain: Int, evalDomain: Int, norm: Norm, targeted: Bool)
    }

    static let jobs: [Job] = [
        .predict(seed: 1, batch: 1, domain: 0),
        .gradient(seed: 2, batch: 2, domain: 1, loss: .crossEntropy),
        .pgd(seed: 3, batch: 2, attackDomain: 1, evalDomain: 0, norm: .linf, targeted: false),
        .predict(seed: 4, batch: 3, domain: 1),
        .gradient(seed: 5, batch: 1, domain: 0, loss: .cwMargin),
        .pgd(seed: 6, batch: 1, attackDomain: 0, evalDomain: 1, norm: .l2, targeted: true),
    ]

    static func images(_ n: Int, seed: UInt64) -> [Float] {
        randomTensor([n, 3, 32, 32], seed: seed).data.map { ($0 + 1) / 2 }
    }

    /// Runs a job; the result is every float (as bits) and integer it returned, in order.
    static func run(_ job: Job, _ s: Session) throws -> [UInt32] {
        func bits(_ a: [Float]) -> [UInt32] { a.map(\.bitPattern) }
        switch job {
        case let .predict(seed, batch, domain):
            return bits(try s.predict(images(batch, seed: seed), batch: batch, domain: domain))
        case let .gradient(seed, batch, domain, loss):
            let labels = (0..<batch).map { Int64(($0 + Int(seed)) % 10) }
            let r = try s.gradient(images(batch, seed: seed), batch: batch, labels: labels, loss: loss, domain: domain)
            return bits(r.loss) + bits(r.gradient) + bits(r.logits)
        case let .pgd(seed, batch, attackDomain, evalDomain, norm, targeted):
            var c = PGDConfig()
            c.steps = 2; c.seed = seed; c.norm = norm
            c.eps = norm == .linf ? 8.0 / 255 : 0.5; c.alpha = norm == .linf ? 2.0 / 255 : 0.1
            c.attackDomain = attackDomain; c.evalDomain = evalDomain
            if targeted { c.targets = .random }
            let labels = (0..<batch).map { Int64(($0 * 3 + Int(seed)) % 10) }
            let r = try s.pgd(images(batch, seed: seed), batch: batch, labels: labels, config: c)
            return bits(r.adversarial) + bits(r.loss) + r.success.map { $0 ? 1 : 0 }
                + r.stepsUsed.map { UInt32(bitPattern: $0) } + (r.targets + r.predictions).map { UInt32(truncatingIfNeeded: $0) }
        }
    }

    /// The serial reference: every job once, in order, on one session.
    static let serial: [[UInt32]] = {
        let s = Session(model: model)
        return jobs.map { try! run($0, s) }
    }()

    /// `threads` threads, each with its own Session, each running every job `rounds` times starting
    /// at a different job (so different kinds of call overlap); returns the mismatches and errors.
    func runConcurrently(threads: Int = 8, rounds: Int = 2) -> [String] {
        let reference = Self.serial
        let problems = Mutex<[String]>([])
        let start = DispatchGroup(), done = DispatchGroup()
        let go = DispatchSemaphore(value: 0)
        for t in 0..<threads {
            start.enter(); done.enter()
            let thread = Thread {
                let s = Session(model: Self.model)
                start.leave()
                go.wait()
                for round in 0..<rounds {
                    for k in 0..<Self.jobs.count {
                        let j = (k + t + round) % Self.jobs.count
                        do {
                            if try Self.run(Self.jobs[j], s) != reference[j] {
                                problems.withLock { $0.append("thread \(t) round \(round): job \(j) differs from the serial run") }
                            }
                        } catch {
                            problems.withLock { $0.append("thread \(t) round \(round): job \(j) threw \(error)") }
                        }
                    }
                }
                done.leave()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }
        start.wait()  // every session exists: release them together
        for _ in 0..<threads { go.signal() }
        done.wait()
        return problems.withLock { $0 }
    }

    func testEightThreadsMixedCallsBitIdenticalToSerial() {
        XCTAssertEqual(Self.serial.count, Self.jobs.count)
        XCTAssertEqual(runConcurrently(), [])
    }

    func testBitIdenticalWhileHostThreadsAreBusy() {
        _ = Self.serial
        // The host's own threads spin on arithmetic (one per core, at least 2, at most 4) for the
        // whole run: adamant's calls still complete with the serial run's exact results.
        let spinners = max(2, min(4, ProcessInfo.processInfo.activeProcessorCount))
        let spin = Spin()
        let spinning = DispatchGroup()
        for i in 0..<spinners {
            spinning.enter()
            Thread {
                var x = UInt64(i) &+ 0x9E37_79B9_7F4A_7C15
                while !spin.stop.load(ordering: .relaxed) {
                    for _ in 0..<10_000 { x = x &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407 }
                }
                spin.sink.wrappingAdd(x, ordering: .relaxed)
                spinning.leave()
            }.start()
        }
        let problems = runConcurrently(threads: 8, rounds: 1)
        spin.stop.store(true, ordering: .relaxed)
        spinning.wait()
        XCTAssertEqual(problems, [])
    }
}

/// The busy host threads' shared state: a stop flag, and a sink for their arithmetic.
private final class Spin: Sendable {
    let stop = Atomic<Bool>(false)
    let sink = Atomic<UInt64>(0)
}
