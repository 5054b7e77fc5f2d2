//! The worker's Prometheus metrics, one place: events applied, alerts by rule and status, email
//! send latency, queue lag, catalog syncs (recorded by `sync::observed`). Served on `[worker] metrics_listen` when it is set (the worker has no
//! other HTTP endpoint). Labels are source names the receiver accepted (configured names), the
//! fixed rule names and fixed outcome/status codes, so the series stay few.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use stockhook_shared::metrics::{gauge, CounterVec, GaugeVec, Histogram};
use stockhook_shared::metrics_http::{self, Answer, PROMETHEUS_TEXT};
use tokio::sync::watch;

/// Events taken from the queue, by source and outcome (`applied`, `already_processed`,
/// `dead_lettered`, `retried`).
pub static EVENTS: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Alerts by rule and status: `created` when the rules raise one, then `sent`, `retry` or
/// `failed` as the sender deals with it.
pub static ALERTS: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Catalog syncs by source and result (`ok`, `failed`, `unauthorized`).
pub static SYNCS: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Items (variants, listings) read by syncs that applied, by source.
pub static SYNC_ITEMS: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Levels held that a sync's snapshot corrected (a webhook missed), by source.
pub static SYNC_CORRECTIONS: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Start of the last successful sync per source (Unix seconds).
pub static SYNC_LAST_SUCCESS: LazyLock<GaugeVec> = LazyLock::new(GaugeVec::default);
/// Failed lease calls (the drain loop then waits, with a growing pause, before the next).
pub static LEASE_FAILURES: LazyLock<CounterVec> = LazyLock::new(CounterVec::default);
/// Seconds one email send (SMTP exchange or `.eml` write) took, whatever its result.
pub static EMAIL_SEND_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    Histogram::new(&[0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
});
/// Seconds from the receiver storing the oldest event of the last batch to the worker leasing
/// it (f64 bits).
static QUEUE_LAG_SECONDS: AtomicU64 = AtomicU64::new(0);

/// Records the lag of a leased batch from its oldest event's receipt time.
pub fn record_lag(oldest_received_ms: i64, now_ms: i64) {
    let lag = ((now_ms - oldest_received_ms).max(0) as f64) / 1000.0;
    QUEUE_LAG_SECONDS.store(lag.to_bits(), Ordering::Relaxed);
}

/// All of it as Prometheus text.
pub fn render() -> String {
    let mut out = String::with_capacity(4096);
    EVENTS.render(
        &mut out,
        "stockhook_worker_events_total",
        "Events taken from the queue, by source and outcome.",
        &["source", "outcome"],
    );
    ALERTS.render(
        &mut out,
        "stockhook_worker_alerts_total",
        "Alerts by rule and status (created, sent, retry, failed).",
        &["rule", "status"],
    );
    SYNCS.render(
        &mut out,
        "stockhook_sync_runs_total",
        "Catalog syncs from the platform APIs, by source and result (ok, failed, unauthorized).",
        &["source", "result"],
    );
    SYNC_ITEMS.render(
        &mut out,
        "stockhook_sync_items_total",
        "Items (variants, listings) read by catalog syncs that applied, by source.",
        &["source"],
    );
    SYNC_CORRECTIONS.render(
        &mut out,
        "stockhook_sync_corrections_total",
        "Levels a catalog sync corrected (a webhook was missed), by source.",
        &["source"],
    );
    SYNC_LAST_SUCCESS.render(
        &mut out,
        "stockhook_sync_last_success_timestamp_seconds",
        "Start of the last successful catalog sync, by source (Unix time).",
        &["source"],
    );
    LEASE_FAILURES.render(
        &mut out,
        "stockhook_worker_lease_failures_total",
        "Lease calls to the queue that failed; each is followed by a growing pause.",
        &[],
    );
    EMAIL_SEND_SECONDS.render(
        &mut out,
        "stockhook_worker_email_send_seconds",
        "Time one alert email send took (SMTP or .eml), whatever its result.",
    );
    gauge(
        &mut out,
        "stockhook_worker_queue_lag_seconds",
        "Seconds from the receiver storing the oldest event of the last batch to its lease.",
        f64::from_bits(QUEUE_LAG_SECONDS.load(Ordering::Relaxed)),
    );
    stockhook_shared::process_metrics::render(&mut out);
    out
}

/// Binds `addr` (`[worker] metrics_listen`) and serves `GET /metrics` there until `stop`.
pub async fn serve(
    addr: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = metrics_http::bind(addr, "worker.metrics_listen").await?;
    let handler = Arc::new(|path: String| async move {
        let answer: Answer = match path.as_str() {
            "/metrics" => (200, PROMETHEUS_TEXT, render()),
            _ => (404, "text/plain", "GET /metrics only\n".to_string()),
        };
        answer
    });
    Ok(tokio::spawn(metrics_http::serve(
        listener,
        move |p| handler(p),
        stop,
    )))
}
