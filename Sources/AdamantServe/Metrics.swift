import Foundation
import Prometheus

/// A metric name: `name`_`unit`, with its help text.
private func d(_ name: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
    MetricNameDescriptor(metricName: name, unitName: unit, helpText: help)
}

/// The service's Prometheus metrics (served at GET /metrics in the text exposition format).
final class ServeMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// Latency buckets in seconds, 0.5 ms to 60 s.
    static let buckets: [Double] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60]
    let inFlight: Gauge
    let queued: Gauge
    let running: Gauge
    let batchImages: ValueHistogram

    init() {
        inFlight = registry.makeGauge(descriptor: d("adamant_serve_in_flight", "requests", "Requests being handled now"))
        queued = registry.makeGauge(descriptor: d("adamant_serve_queued", "jobs", "Model jobs waiting for a worker"))
        running = registry.makeGauge(descriptor: d("adamant_serve_running", "jobs", "Model jobs running on workers"))
        batchImages = registry.makeValueHistogram(descriptor: d("adamant_serve_predict_batch", "images", "Images per model call of /v1/predict (more than one request's: dynamic batching)"),
                                                  buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256])
    }

    /// Records one finished request.
    func record(endpoint: String, status: Int, seconds: Double, errorKind: String?) {
        registry.makeCounter(descriptor: d("adamant_serve_requests", "total", "HTTP requests by endpoint and status"),
                             labels: [("endpoint", endpoint), ("status", String(status))]).increment()
        registry.makeValueHistogram(descriptor: d("adamant_serve_request_duration", "seconds", "Request latency in seconds by endpoint"),
                                    labels: [("endpoint", endpoint)], buckets: ServeMetrics.buckets).record(seconds)
        if let kind = errorKind {
            registry.makeCounter(descriptor: d("adamant_serve_errors", "total", "Failed requests by endpoint and error kind"),
                                 labels: [("endpoint", endpoint), ("kind", kind)]).increment()
        }
    }

    /// Counts the images of a /v1/predict or /v1/attack request.
    func images(endpoint: String, _ n: Int) {
        registry.makeCounter(descriptor: d("adamant_serve_images", "total", "Images received by endpoint"),
                             labels: [("endpoint", endpoint)]).increment(by: Int64(n))
    }

    /// The text exposition.
    func text() -> String { registry.emitToString() }
}
