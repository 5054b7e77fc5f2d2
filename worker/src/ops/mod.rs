//! The operator's commands: `failed list|show|replay|purge`, `stats`, `export`, `preview`
//! (`import` is in [`crate::catalog::import`]). They reach the
//! queue through the receiver's socket (or its database when the receiver is stopped) and the
//! worker's state through the worker's socket (or its database when the worker is stopped).
//!
//! Destructive bulk operations (`--all`, or filters without ids) ask for `--yes`; `--dry-run`
//! shows what would happen, including which alerts a replayed event would raise. Payloads are
//! shown only with `show --payload`.

mod failed;
mod report;
mod sync;

pub use failed::{failed_change, failed_list, failed_show, REPLAY_WAIT};
pub use report::{export_csv, preview, stats};
pub use sync::{connect, sync};

use crate::alert::OutboxStatus;
use crate::control::{AlertFilter, Control};
use crate::state::{RuleConfig, StateError};
use std::fmt::Write as _;
use std::path::Path;
use stockhook_shared::config::Config;
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::{now_ms, DeadFilter, QueueError};

/// Why a command failed: bad usage (exit 2) or the operation itself (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

impl From<QueueError> for OpsError {
    fn from(e: QueueError) -> Self {
        OpsError::Failed(e.into())
    }
}

impl From<StateError> for OpsError {
    fn from(e: StateError) -> Self {
        OpsError::Failed(e.into())
    }
}

/// Which failures a command is about.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub ids: Vec<String>,
    pub all: bool,
    pub source: Option<String>,
    pub kind: Option<Kind>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Event,
    Alert,
}

impl Selection {
    fn is_bulk(&self) -> bool {
        self.ids.is_empty()
    }
    fn event_ids(&self) -> Result<Vec<EventId>, OpsError> {
        self.ids
            .iter()
            .filter(|i| i.starts_with("evt_"))
            .map(|i| {
                EventId::parse(i).ok_or_else(|| {
                    OpsError::Usage(format!("{i} is not an event id (evt_ and 16 hex digits)"))
                })
            })
            .collect()
    }
    fn alert_ids(&self) -> Vec<String> {
        self.ids
            .iter()
            .filter(|i| !i.starts_with("evt_"))
            .cloned()
            .collect()
    }
    fn wants(&self, k: Kind) -> bool {
        let by_kind = self.kind.is_none_or(|x| x == k);
        let by_ids = self.ids.is_empty()
            || match k {
                Kind::Event => self.ids.iter().any(|i| i.starts_with("evt_")),
                Kind::Alert => self.ids.iter().any(|i| !i.starts_with("evt_")),
            };
        by_kind && by_ids
    }
    fn dead_filter(&self) -> Result<DeadFilter, OpsError> {
        Ok(DeadFilter {
            ids: self.event_ids()?,
            source: self.source.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            limit: self.limit,
        })
    }
    fn alert_filter(&self) -> AlertFilter {
        AlertFilter {
            ids: self.alert_ids(),
            status: Some(OutboxStatus::Failed),
            source: self.source.clone(),
            since_ms: self.since_ms,
            until_ms: self.until_ms,
            limit: self.limit,
        }
    }
    /// Refuses an empty selection and unconfirmed bulk changes.
    pub fn check(&self, verb: &str, dry_run: bool, yes: bool) -> Result<(), OpsError> {
        if self.ids.is_empty()
            && !self.all
            && self.source.is_none()
            && self.since_ms.is_none()
            && self.until_ms.is_none()
        {
            return Err(OpsError::Usage(format!(
                "name what to {verb}: IDs, or --all (optionally with --source/--kind/--since/--until/--limit)"
            )));
        }
        if self.is_bulk() && !dry_run && !yes {
            return Err(OpsError::Usage(format!(
                "this would {verb} every matching failure: run with --dry-run to see them, then again with --yes"
            )));
        }
        Ok(())
    }
}

pub(crate) fn fmt_time(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// `--since`/`--until`: RFC 3339, a date, or a duration back from now ("24h", "7d").
pub fn parse_when(s: &str) -> Result<i64, String> {
    if let Some(t) = crate::adapters::parse_time(s) {
        return Ok(t);
    }
    stockhook_shared::duration::parse_duration(s)
        .map(|d| now_ms() - d.as_millis() as i64)
        .map_err(|_| format!("`{s}` is not a time: use RFC 3339 (2026-11-28T10:00:00Z), a date (2026-11-28) or a duration back from now (24h, 7d)"))
}

pub(crate) async fn control(config: &Config) -> Result<Control, OpsError> {
    Control::open_for(config, RuleConfig::from_config(config)).await.map_err(|e| match e {
        StateError::Locked { .. } => OpsError::Failed(anyhow::anyhow!(
            "{e}; its socket {} did not answer: is the worker stuck? check `journalctl -u stockhook-worker`",
            config.data_dir.join("worker.sock").display()
        )),
        other => OpsError::Failed(other.into()),
    })
}

fn render(v: &serde_json::Value, as_json: bool) -> String {
    if as_json {
        return serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    }
    let mut out = String::new();
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            let shown = match val {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let _ = writeln!(out, "{k:<12} {shown}");
        }
    }
    out
}

/// The data dir must exist for any command but `run`.
pub fn require_data_dir(config: &Config) -> Result<(), OpsError> {
    if !Path::new(&config.data_dir).exists() {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "data_dir {} does not exist: is --config pointing at the right file? (the receiver creates it on first start)",
            config.data_dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::report::csv_field;
    use super::*;

    #[test]
    fn bulk_needs_yes_and_a_selection() {
        let s = Selection {
            all: true,
            ..Default::default()
        };
        assert!(
            matches!(s.check("replay", false, false), Err(OpsError::Usage(m)) if m.contains("--yes"))
        );
        assert!(s.check("replay", true, false).is_ok());
        assert!(s.check("replay", false, true).is_ok());
        let none = Selection::default();
        assert!(
            matches!(none.check("purge", true, true), Err(OpsError::Usage(m)) if m.contains("--all"))
        );
        let ids = Selection {
            ids: vec!["evt_0000000000000001".into()],
            ..Default::default()
        };
        assert!(
            ids.check("replay", false, false).is_ok(),
            "named ids need no --yes"
        );
    }

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(csv_field("-5"), "-5");
    }

    #[test]
    fn when_accepts_times_and_durations() {
        assert_eq!(
            parse_when("2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600_000
        );
        let back = parse_when("24h").unwrap();
        assert!((now_ms() - back - 86_400_000).abs() < 5_000);
        assert!(parse_when("soon").unwrap_err().contains("RFC 3339"));
    }
}
