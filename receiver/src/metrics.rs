//! The receiver's metrics, one place: each outcome of a request is one named counter here, so
//! `/metrics` and the logs never disagree. Rendered as Prometheus text by [`Metrics::render`].
//! Labels are configured source names (anything else is `<unknown>`, see
//! [`crate::reload::SourceSet::label`]) and fixed codes, so the series stay few.

use stockhook_shared::metrics::{counter, gauge, CounterVec, GaugeVec, Histogram};
use stockhook_shared::queue::QueueStats;

pub struct Metrics {
    /// By source and HTTP status.
    pub requests: CounterVec,
    /// By source and reason code (`signature_mismatch`, `stale_timestamp`, ...).
    pub verify_failures: CounterVec,
    /// Seconds from the verified request to the durable append's answer.
    pub append_seconds: Histogram,
    /// Seconds per request, whole handler.
    pub request_seconds: Histogram,
    /// Unix time of the last event accepted, by source.
    pub last_event: GaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        let secs = [
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ];
        Metrics {
            requests: CounterVec::default(),
            verify_failures: CounterVec::default(),
            append_seconds: Histogram::new(&secs),
            request_seconds: Histogram::new(&secs),
            last_event: GaugeVec::default(),
        }
    }
}

impl Metrics {
    pub fn render(&self, q: &QueueStats) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(
            &mut out,
            "stockhook_requests_total",
            "Webhook requests by source and HTTP status.",
            &["source", "status"],
        );
        self.verify_failures.render(
            &mut out,
            "stockhook_verification_failures_total",
            "Requests refused by signature verification, by source and reason.",
            &["source", "reason"],
        );
        self.append_seconds.render(
            &mut out,
            "stockhook_append_seconds",
            "Durable append latency (group commit + fdatasync).",
        );
        self.request_seconds.render(
            &mut out,
            "stockhook_request_seconds",
            "Webhook request latency.",
        );
        self.last_event.render(
            &mut out,
            "stockhook_last_event_timestamp_seconds",
            "Unix time of the last event accepted (stored), by source.",
            &["source"],
        );
        stockhook_shared::telemetry::COMMIT_BATCH.render(
            &mut out,
            "stockhook_commit_batch_events",
            "Events per group commit.",
        );
        counter(
            &mut out,
            "stockhook_access_log_dropped_total",
            "Request log lines dropped because the log output did not keep up.",
            crate::access_log::dropped(),
        );
        gauge(
            &mut out,
            "stockhook_queue_pending",
            "Events waiting for the worker.",
            q.pending as f64,
        );
        gauge(
            &mut out,
            "stockhook_queue_leased",
            "Events delivered and not yet acked.",
            q.leased as f64,
        );
        gauge(
            &mut out,
            "stockhook_queue_dead_letters",
            "Dead-lettered events.",
            q.dead as f64,
        );
        gauge(
            &mut out,
            "stockhook_queue_disk_bytes",
            "Bytes the queue database occupies.",
            q.disk_bytes as f64,
        );
        stockhook_shared::process_metrics::render(&mut out);
        out
    }
}
