//! What a catalog sync shows in the worker's `/metrics` (issue 17): runs by result, items read,
//! levels corrected, and the time of the last success per source. Kept apart from the runner so
//! the runner only says where a run starts and ends.
//!
//! Corrections are counted in the state (`source.<name>.corrections`, by the catalog apply);
//! a run's share is the counter's change across the run. Labels are configured source names.

use super::runner::SyncReport;
use crate::metrics;
use crate::state::{counters, StateBackend};

/// A sync run being watched: the source's correction count when it started.
pub struct Run {
    source: String,
    corrections_before: Option<i64>,
}

async fn corrections<S: StateBackend>(state: &S, source: &str) -> Option<i64> {
    let c = state.counters().await.ok()?;
    Some(
        c.get(&counters::source_corrections(source))
            .copied()
            .unwrap_or(0),
    )
}

/// Before the fetch: remembers the correction count.
pub async fn start<S: StateBackend>(state: &S, source: &str) -> Run {
    Run {
        source: source.to_string(),
        corrections_before: corrections(state, source).await,
    }
}

impl Run {
    /// After the run: counts it under `result` (`ok`, `failed`, `unauthorized`), its items and
    /// corrections, and on success (not a dry run) its start time as the last success.
    pub async fn finish<S: StateBackend>(
        self,
        state: &S,
        report: &SyncReport,
        result: &str,
        started_ms: i64,
    ) {
        let source = self.source.as_str();
        if report.dry_run {
            metrics::SYNCS.inc(&[source, result]);
            return;
        }
        // Read before any series moves: a scrape never sees this run counted without its
        // items and corrections (the state read is the only wait here).
        // Unknown (the state could not be read): 0, so the series exists all the same.
        let corrected = match (self.corrections_before, corrections(state, source).await) {
            (Some(before), Some(after)) => after.saturating_sub(before).max(0) as u64,
            _ => 0,
        };
        metrics::SYNC_ITEMS.add(&[source], report.items as u64);
        metrics::SYNC_CORRECTIONS.add(&[source], corrected);
        if report.ok {
            last_success(source, Some(started_ms));
        }
        metrics::SYNCS.inc(&[source, result]);
    }
}

/// Sets the last success gauge of `source` to `at_ms` (Unix ms); also from the state's record
/// (`sync.<source>.last_at`) when the worker starts, so a restart does not hide how old the last
/// sync is.
pub fn last_success(source: &str, at_ms: Option<i64>) {
    if let Some(at) = at_ms {
        metrics::SYNC_LAST_SUCCESS.set(&[source], at as f64 / 1000.0);
    }
}
