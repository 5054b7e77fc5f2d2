//! The Slack channel: one incoming-webhook message per alert set.
//!
//! Why it exists: many sellers and most agencies live in Slack. An incoming webhook takes
//! `{"text": ...}` (mrkdwn) and answers `200 ok`; a bad message gets `400 invalid_payload` (or
//! similar), a revoked hook `403`/`404`/`410` (`invalid_token`, `no_service`,
//! `channel_is_archived`), and a busy one `429` with `Retry-After`. The text ends with the alert
//! set's id, so a message re-posted after a crash is recognisable as the same set.
//!
//! Never: logs the URL (it is the credential) or the message text.

use super::http::{Outcome, Poster};
use super::Failure;
use crate::alert::{Alert, Rule};
use crate::email::SendError;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Most items listed in one message; the rest are counted.
const MAX_LINES: usize = 40;

/// The message body for `alerts`, of the alert set `set`: deterministic for a set (sorted by
/// rule, source, name).
pub fn render(set: &str, alerts: &[Alert]) -> String {
    let mut alerts: Vec<&Alert> = alerts.iter().collect();
    alerts.sort_by(|a, b| {
        (a.rule, &a.source, a.display_name(), &a.id).cmp(&(
            b.rule,
            &b.source,
            b.display_name(),
            &b.id,
        ))
    });
    alerts.dedup_by(|a, b| a.id == b.id);
    let mut counts: BTreeMap<Rule, usize> = BTreeMap::new();
    for a in &alerts {
        *counts.entry(a.rule).or_default() += 1;
    }
    let sources: BTreeSet<&str> = alerts.iter().map(|a| a.source.as_str()).collect();
    let place = match sources.iter().next() {
        Some(only) if sources.len() == 1 => format!("at {}", escape(only)),
        _ => format!("across {} stores", sources.len()),
    };
    let summary: Vec<String> = counts
        .iter()
        .map(|(rule, n)| format!("{n} {}", rule.title().to_lowercase()))
        .collect();
    let mut text = format!("*Stock alerts: {} {place}*\n", summary.join(", "));
    for a in alerts.iter().take(MAX_LINES) {
        let _ = write!(text, "• {}: {}", a.rule.title(), escape(&a.display_name()));
        if let Some(sku) = a
            .sku
            .as_deref()
            .filter(|s| a.title.is_some() && !s.is_empty())
        {
            let _ = write!(text, " (SKU {})", escape(sku));
        }
        match (a.rule, a.available, a.threshold) {
            (Rule::NoSales, _, _) => {
                if let Some(days) = a.quiet_days {
                    let _ = write!(text, ", no sale in {days} days");
                }
            }
            (_, Some(n), Some(t)) => {
                let _ = write!(text, ", {n} available (threshold {t})");
            }
            (_, Some(n), None) => {
                let _ = write!(text, ", {n} available");
            }
            _ => {}
        }
        if sources.len() > 1 {
            let _ = write!(text, " at {}", escape(&a.source));
        }
        text.push('\n');
    }
    if alerts.len() > MAX_LINES {
        let _ = writeln!(text, "…and {} more", alerts.len() - MAX_LINES);
    }
    let _ = write!(text, "_stockhook alert set {set}_");
    text
}

/// Slack's mrkdwn control characters.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Posts the alert set `set` to Slack. `Ok` carries the set id.
pub async fn send(
    poster: &Poster,
    channel: &str,
    url: &str,
    set: &str,
    alerts: &[Alert],
) -> Result<String, Failure> {
    let id = set.to_string();
    let body = serde_json::json!({ "text": render(set, alerts) }).to_string();
    let what = format!("Slack channel {channel}");
    match poster.post(url, &[], body.into_bytes(), &what).await {
        Outcome::Delivered { .. } => Ok(id),
        Outcome::Retry {
            reason,
            retry_after,
        } => Err(Failure::retry(&what, &reason, retry_after)),
        Outcome::Refused { status, body } => {
            let msg = match status {
                403 | 404 | 410 => format!(
                    "{what}: Slack says the incoming webhook is revoked or gone \
                     (HTTP {status} {body}): create a new incoming webhook in Slack and update the \
                     channel's url, then `stockhook-worker failed replay`"
                ),
                _ => format!("{what}: Slack refused the message (HTTP {status} {body})"),
            };
            Err(Failure {
                error: SendError::Permanent(msg),
                retry_after: None,
            })
        }
    }
}
