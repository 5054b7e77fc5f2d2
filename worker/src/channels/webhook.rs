//! The webhook channel: an alert set as one JSON POST signed with Standard Webhooks, so
//! stockhook can feed the operator's own tools (an ERP, a reorder script, an automation).
//!
//! Why it exists, and its contract: the receiving side verifies `webhook-signature`
//! (`v1,<base64 HMAC-SHA256 of "id.timestamp.body">` under the `whsec_` secret, written once in
//! `stockhook_shared::standard_webhooks`) and deduplicates on `webhook-id`, which is the alert
//! set's id: the same on every retry, after a crash too. The body is deterministic for a set;
//! only `webhook-timestamp` (the send time, which the receiver checks for freshness) changes.
//!
//! Body: `{"type": "stockhook.alerts", "timestamp": <RFC 3339 of the earliest alert>,
//! "data": {"id": <set id>, "alerts": [<alert>, ...]}}`, alerts sorted by id, each with its id,
//! rule, source, platform, item, sku, title, location, available, threshold, quiet_since,
//! quiet_days, at and created_at (unix ms); never the email recipients.

use super::http::{Outcome, Poster};
use super::Failure;
use crate::alert::Alert;
use crate::email::SendError;
use serde_json::json;
use stockhook_shared::standard_webhooks::sign_headers;

/// The payload's `type`.
pub const EVENT_TYPE: &str = "stockhook.alerts";

/// The body for `alerts`, of the alert set `set` (deterministic for a set).
pub fn render(set: &str, alerts: &[Alert]) -> Vec<u8> {
    let mut alerts: Vec<&Alert> = alerts.iter().collect();
    alerts.sort_by(|a, b| a.id.cmp(&b.id));
    alerts.dedup_by(|a, b| a.id == b.id);
    let earliest = alerts.iter().map(|a| a.created_at).min().unwrap_or(0);
    let items: Vec<serde_json::Value> = alerts
        .iter()
        .map(|a| {
            json!({
                "id": a.id, "rule": a.rule.as_str(), "source": a.source, "platform": a.platform,
                "item": a.item, "sku": a.sku, "title": a.title, "location": a.location,
                "available": a.available, "threshold": a.threshold,
                "quiet_since": a.quiet_since, "quiet_days": a.quiet_days,
                "at": a.at, "created_at": a.created_at,
            })
        })
        .collect();
    json!({
        "type": EVENT_TYPE,
        "timestamp": crate::email::rfc3339(earliest),
        "data": { "id": set, "alerts": items },
    })
    .to_string()
    .into_bytes()
}

/// Posts the alert set `set`, signed with `key` at `now_unix`. `Ok` carries the set id
/// (`webhook-id`).
pub async fn send(
    poster: &Poster,
    channel: &str,
    url: &str,
    key: &[u8],
    (set, alerts): (&str, &[Alert]),
    now_unix: i64,
) -> Result<String, Failure> {
    let id = set.to_string();
    let body = render(set, alerts);
    let headers = sign_headers(key, &id, now_unix, &body);
    let what = format!("webhook channel {channel}");
    match poster.post(url, &headers, body, &what).await {
        Outcome::Delivered { .. } => Ok(id),
        Outcome::Retry {
            reason,
            retry_after,
        } => Err(Failure::retry(&what, &reason, retry_after)),
        Outcome::Refused { status, body } => Err(Failure {
            error: SendError::Permanent(format!(
                "{what}: the endpoint refused the alerts (HTTP {status}{}{body})",
                if body.is_empty() { "" } else { " " }
            )),
            retry_after: None,
        }),
    }
}
