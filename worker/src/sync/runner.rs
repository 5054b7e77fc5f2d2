//! Running catalog syncs: one source at a time on demand (`stockhook-worker sync`), and in
//! `run` one task per source with API credentials that syncs at start if the source never
//! synced, then every `[sync] interval`.
//!
//! The one `match` on a source's platform API ([`SourceApi`]) is here. A sync fetches the whole
//! batch first (no state touched), then brings it in through [`catalog::apply`], one chunk per
//! state transaction, so event processing is never held up for long. Its events are named by
//! the run's start time: a crash mid-apply leaves each chunk applied or not, and the next run
//! applies the whole batch again (newer snapshot time, new ids), which finishes the job.
//!
//! What it records per source, as state counters (so `stats` sees them on either backend):
//! `sync.<source>.last_at` (start of the last complete sync, Unix ms), `sync.<source>.errors`,
//! and the last failure's kind and time (`sync.<source>.last_error`, a [`ErrorKind`] code, 0 when
//! the last run succeeded; `sync.<source>.last_error_at`). A 401/403 stops that source's
//! scheduled sync until the worker restarts, a SIGHUP brings the source changed credentials, or
//! `stockhook-worker sync` succeeds; state is never deleted for it.

use super::http::{ApiClient, SyncError};
use crate::catalog::{self, CatalogBatch, Origin};
use crate::reload::RulesSlot;
use crate::state::{Applied, RuleConfig, StateBackend, StateError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockhook_shared::config::{Config, SourceApi, SourceConfig};
use stockhook_shared::queue::now_ms;
use tokio::sync::{watch, Notify};

/// After a failed scheduled sync, the next try comes after this (or the interval, if shorter).
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(15 * 60);

/// Counter names of a source's sync record.
pub mod keys {
    pub fn last_at(source: &str) -> String {
        format!("sync.{source}.last_at")
    }
    pub fn errors(source: &str) -> String {
        format!("sync.{source}.errors")
    }
    pub fn last_error(source: &str) -> String {
        format!("sync.{source}.last_error")
    }
    pub fn last_error_at(source: &str) -> String {
        format!("sync.{source}.last_error_at")
    }
}

/// The kind of a sync's failure, as recorded (a counter holds numbers only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Unauthorized = 1,
    Transient = 2,
    Refused = 3,
    Protocol = 4,
    Config = 5,
    State = 6,
}

impl ErrorKind {
    fn of(e: &SyncError) -> ErrorKind {
        match e {
            SyncError::Unauthorized { .. } => ErrorKind::Unauthorized,
            SyncError::Transient { .. } => ErrorKind::Transient,
            SyncError::Refused { .. } => ErrorKind::Refused,
            SyncError::Protocol { .. } => ErrorKind::Protocol,
            SyncError::Config(_) => ErrorKind::Config,
        }
    }
    fn from_code(c: i64) -> Option<ErrorKind> {
        Some(match c {
            1 => ErrorKind::Unauthorized,
            2 => ErrorKind::Transient,
            3 => ErrorKind::Refused,
            4 => ErrorKind::Protocol,
            5 => ErrorKind::Config,
            6 => ErrorKind::State,
            _ => return None,
        })
    }
    /// What `stats` says about it: what happened and what to do.
    pub fn describe(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized: the platform refused the credentials; scheduled sync of this source is stopped until the token is fixed (then restart, or run `stockhook-worker sync --source NAME`)",
            ErrorKind::Transient => "the API could not be reached or kept failing (network, 429, 5xx); retried at the next run",
            ErrorKind::Refused => "the API refused a query (see the worker log for its answer)",
            ErrorKind::Protocol => "the API's answer was not what it documents (see the worker log)",
            ErrorKind::Config => "the source's API configuration is incomplete (see the worker log)",
            ErrorKind::State => "the state store failed while applying the catalog; the next run applies it again",
        }
    }
}

/// What a sync run did, for `sync` output and logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SyncReport {
    pub source: String,
    pub platform: String,
    pub ok: bool,
    pub dry_run: bool,
    pub items: usize,
    pub locations: usize,
    pub sales: usize,
    pub alerts: usize,
    pub fetch_ms: u64,
    pub apply_ms: u64,
    pub error: Option<String>,
    /// True when the credentials were refused (the scheduled sync stops).
    pub unauthorized: bool,
}

impl SyncReport {
    pub fn line(&self) -> String {
        let verb = if self.dry_run {
            "would apply"
        } else {
            "applied"
        };
        match &self.error {
            None => format!(
                "{}: {verb} {} items, {} locations, {} order lines (fetch {:.1} s, apply {:.1} s); {} alerts\n",
                self.source,
                self.items,
                self.locations,
                self.sales,
                self.fetch_ms as f64 / 1000.0,
                self.apply_ms as f64 / 1000.0,
                self.alerts
            ),
            Some(e) => format!("{}: sync FAILED: {e}\n", self.source),
        }
    }
}

/// Fetches a source's catalog from its platform's API. `Ok(None)`: the source has no API
/// configured.
pub async fn fetch(
    source: &SourceConfig,
    api: &ApiClient,
    started: i64,
) -> Result<Option<CatalogBatch>, SyncError> {
    let mut batch = match source.api() {
        None => return Ok(None),
        Some(SourceApi::Shopify(cfg)) => super::shopify::fetch(cfg, api, started).await?,
        Some(SourceApi::Amazon(_)) => {
            let cfg = super::amazon::AmazonConfig::from_source(source)?;
            super::amazon::fetch(&cfg, api, started).await?
        }
        Some(SourceApi::Ebay(_)) => {
            let cfg = super::ebay::EbayConfig::from_source(source)?;
            super::ebay::fetch(&cfg, api, started).await?
        }
    };
    batch.source = source.name.clone();
    Ok(Some(batch))
}

/// Sets a counter to `value` (counters only add: the difference to its current value).
async fn set_counter<S: StateBackend>(
    state: &S,
    counters: &BTreeMap<String, i64>,
    name: String,
    value: i64,
) -> Result<(), StateError> {
    let delta = value - counters.get(&name).copied().unwrap_or(0);
    if delta == 0 {
        return Ok(());
    }
    state.add_counter(name, delta).await
}

async fn record<S: StateBackend>(
    state: &S,
    source: &str,
    started: i64,
    failure: Option<ErrorKind>,
) -> Result<(), StateError> {
    let c = state.counters().await?;
    match failure {
        None => {
            set_counter(state, &c, keys::last_at(source), started).await?;
            set_counter(state, &c, keys::last_error(source), 0).await
        }
        Some(kind) => {
            set_counter(state, &c, keys::last_error(source), kind as i64).await?;
            set_counter(state, &c, keys::last_error_at(source), started).await?;
            state.add_counter(keys::errors(source), 1).await
        }
    }
}

/// One sync of one source: fetch, apply (unless `dry_run`), record. Never fails: a failure is
/// in the report (and the log, and the state's counters).
pub async fn sync_source<S: StateBackend>(
    source: &SourceConfig,
    state: &S,
    rules: Arc<RuleConfig>,
    api: &ApiClient,
    dry_run: bool,
) -> SyncReport {
    let started = now_ms();
    let observed = super::observed::start(state, &source.name).await;
    let t0 = Instant::now();
    let mut report = SyncReport {
        source: source.name.clone(),
        platform: source.platform.to_string(),
        dry_run,
        ..SyncReport::default()
    };
    let fetched = fetch(source, api, started).await;
    report.fetch_ms = t0.elapsed().as_millis() as u64;
    let failure = match fetched {
        Ok(None) => {
            report.error = Some(format!(
                "source {} has no platform API configured (add [sources.{}_sync] with its credentials)",
                source.name, source.platform
            ));
            return report;
        }
        Ok(Some(batch)) => {
            report.items = batch.items.len();
            report.locations = batch.locations.len();
            report.sales = batch.sales.len();
            let t1 = Instant::now();
            let origin = Origin::Sync {
                run_started_at: started,
            };
            let applied = catalog::apply(state, rules, &batch, &origin, now_ms(), dry_run).await;
            report.apply_ms = t1.elapsed().as_millis() as u64;
            match applied {
                Ok(a) => {
                    report.alerts = a
                        .iter()
                        .map(|x| match x {
                            Applied::Done { alerts } => alerts.len(),
                            Applied::AlreadyProcessed => 0,
                        })
                        .sum();
                    report.ok = true;
                    None
                }
                Err(e) => {
                    report.error = Some(format!("applying the catalog: {e}"));
                    Some(ErrorKind::State)
                }
            }
        }
        Err(e) => {
            report.unauthorized = matches!(e, SyncError::Unauthorized { .. });
            report.error = Some(e.to_string());
            Some(ErrorKind::of(&e))
        }
    };
    let outcome = match failure {
        None => "ok",
        Some(ErrorKind::Unauthorized) => "unauthorized",
        Some(_) => "failed",
    };
    match &report.error {
        None => tracing::info!(
            source = %source.name,
            items = report.items,
            locations = report.locations,
            order_lines = report.sales,
            alerts = report.alerts,
            fetch_ms = report.fetch_ms,
            apply_ms = report.apply_ms,
            dry_run,
            "catalog synced"
        ),
        Some(e) if report.unauthorized => {
            tracing::error!(source = %source.name, error = %e, "catalog sync stopped: credentials refused")
        }
        Some(e) => tracing::warn!(source = %source.name, error = %e, "catalog sync failed"),
    }
    if !dry_run {
        if let Err(e) = record(state, &source.name, started, failure).await {
            tracing::warn!(source = %source.name, error = %e, "could not record the sync's outcome");
        }
    }
    observed.finish(state, &report, outcome, started).await;
    report
}

/// Syncs the sources with an API (only `only`, if given), one after the other.
pub async fn sync_all<S: StateBackend>(
    config: &Config,
    state: &S,
    rules: Arc<RuleConfig>,
    only: Option<&str>,
    dry_run: bool,
) -> Result<Vec<SyncReport>, String> {
    let chosen: Vec<&SourceConfig> = config
        .sources
        .iter()
        .filter(|s| only.is_none_or(|n| s.name == n))
        .collect();
    if let Some(n) = only {
        if chosen.is_empty() {
            return Err(format!("no source named {n} in the config"));
        }
    }
    let with_api: Vec<&SourceConfig> = chosen.into_iter().filter(|s| s.api().is_some()).collect();
    if with_api.is_empty() {
        return Err(match only {
            Some(n) => format!("source {n} has no platform API configured (e.g. [sources.shopify_sync] with shop_domain and an access token)"),
            None => "no source has a platform API configured (e.g. [sources.shopify_sync] with shop_domain and an access token)".into(),
        });
    }
    let api = ApiClient::new().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for s in with_api {
        out.push(sync_source(s, state, rules.clone(), &api, dry_run).await);
    }
    Ok(out)
}

/// `run`'s schedule: one task per source with an API. Returns when `stop` fires.
///
/// It follows the config a SIGHUP reload publishes on `config`: a source added (or its API
/// settings changed) gets its task (started now, so a source that never synced syncs at once),
/// a source removed loses it, and a new `[sync] interval` restarts every task under it (each
/// task counts its wait from its source's last sync, so a restart does not sync again early).
pub async fn schedule<S: StateBackend>(
    mut config: watch::Receiver<Arc<Config>>,
    state: Arc<S>,
    rules: Arc<RulesSlot>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let api = match ApiClient::new() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "catalog sync is off");
            return;
        }
    };
    // Source name -> (its config as last started, its task's stop, the task).
    type Running = (String, watch::Sender<bool>, tokio::task::JoinHandle<()>);
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut interval: Option<Duration> = None;
    loop {
        let cfg = config.borrow_and_update().clone();
        let new_interval = cfg.sync.interval.get();
        if interval.is_some_and(|i| i != new_interval) {
            tracing::info!(
                interval_s = new_interval.as_secs(),
                "sync interval changed: schedule restarted"
            );
        }
        let restart_all = interval != Some(new_interval);
        interval = Some(new_interval);
        let wanted: BTreeMap<String, (String, &SourceConfig)> = cfg
            .sources
            .iter()
            .filter(|s| s.api().is_some())
            .map(|s| (s.name.clone(), (fingerprint(s), s)))
            .collect();
        let stale: Vec<String> = running
            .iter()
            .filter(|(name, (fp, _, _))| {
                restart_all || wanted.get(*name).is_none_or(|(f, _)| f != fp)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            if let Some((_, tx, task)) = running.remove(&name) {
                let _ = tx.send(true);
                let _ = task.await;
            }
        }
        for (name, (fp, source)) in wanted {
            if running.contains_key(&name) {
                continue;
            }
            tracing::debug!(source = %name, "catalog sync scheduled");
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(source_loop(
                source.clone(),
                state.clone(),
                rules.clone(),
                api.clone(),
                wake.clone(),
                new_interval,
                rx,
            ));
            running.insert(name, (fp, tx, task));
        }
        tokio::select! {
            changed = config.changed() => {
                if changed.is_err() {
                    // No more reloads: keep the tasks until stop.
                    let _ = stop.changed().await;
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    for (_, (_, tx, task)) in running {
        let _ = tx.send(true);
        let _ = task.await;
    }
}

/// What of a source's config its sync task depends on: the whole source, its secrets as
/// digests (any rotated token is a change). Only ever compared, never logged.
fn fingerprint(s: &SourceConfig) -> String {
    stockhook_shared::secret::fingerprint(s)
}

async fn source_loop<S: StateBackend>(
    source: SourceConfig,
    state: Arc<S>,
    rules: Arc<RulesSlot>,
    api: ApiClient,
    wake: Arc<Notify>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let last = match state.counters().await {
        Ok(c) => c.get(&keys::last_at(&source.name)).copied(),
        Err(e) => {
            tracing::warn!(source = %source.name, error = %e, "cannot read the last sync time; syncing now");
            None
        }
    };
    super::observed::last_success(&source.name, last);
    // Never synced: now. Else when the interval since the last one is over.
    let mut wait = match last {
        None => Duration::ZERO,
        Some(_) if interval.is_zero() => return,
        Some(at) => {
            let due = at.saturating_add(interval.as_millis() as i64);
            Duration::from_millis((due - now_ms()).max(0) as u64)
        }
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let run = sync_source(&source, &*state, rules.current(), &api, false);
        let report = tokio::select! {
            r = run => r,
            // A shutdown mid-sync: what was applied stays applied; the next start finishes.
            _ = stop.changed() => return,
        };
        if report.alerts > 0 {
            wake.notify_one();
        }
        if report.unauthorized {
            return;
        }
        if interval.is_zero() {
            return;
        }
        wait = if report.ok {
            interval
        } else {
            interval.min(RETRY_FAILED_AFTER)
        };
    }
}

/// `stats --json`'s `sync` object: per source with an API, its last sync, errors and last
/// error; and the totals.
pub fn stats_json(config: &Config, counters: &BTreeMap<String, i64>) -> Value {
    let get = |k: String| counters.get(&k).copied();
    let mut sources = serde_json::Map::new();
    let mut errors = 0;
    let mut last_at: Option<i64> = None;
    for s in config.sources.iter().filter(|s| s.api().is_some()) {
        let at = get(keys::last_at(&s.name));
        let e = get(keys::errors(&s.name)).unwrap_or(0);
        errors += e;
        last_at = last_at.max(at);
        let last_error = get(keys::last_error(&s.name))
            .and_then(ErrorKind::from_code)
            .map(|k| json!({"kind": format!("{k:?}").to_lowercase(), "at": get(keys::last_error_at(&s.name)), "message": k.describe()}));
        sources.insert(
            s.name.clone(),
            json!({"last_at": at, "errors": e, "last_error": last_error, "corrections": get(crate::state::counters::source_corrections(&s.name)).unwrap_or(0)}),
        );
    }
    // Corrections come from imports as well as syncs: the total counts both.
    let corrections = counters
        .get(crate::state::counters::SYNC_CORRECTIONS)
        .copied()
        .unwrap_or(0);
    json!({"last_at": last_at, "errors": errors, "corrections": corrections, "sources": sources})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip() {
        for k in [
            ErrorKind::Unauthorized,
            ErrorKind::Transient,
            ErrorKind::Refused,
            ErrorKind::Protocol,
            ErrorKind::Config,
            ErrorKind::State,
        ] {
            assert_eq!(ErrorKind::from_code(k as i64), Some(k));
        }
        assert_eq!(ErrorKind::from_code(0), None);
    }
}
