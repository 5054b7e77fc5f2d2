//! The outbox sender: takes the alerts that are due, groups those for the same recipients into
//! one email, sends it, and records the result durably. Transient failures are rescheduled on the
//! exponential backoff of [`retry`] (the next attempt time is persisted, so a restart resumes the
//! schedule); permanent ones (SMTP 5xx, bad addresses) mark the alerts failed for the operator.
//!
//! At-least-once towards the mail server: an email accepted just before a crash, whose alerts were
//! not yet marked sent, is sent again after the restart with the same Message-ID (mail clients
//! drop such duplicates); the file transport never writes the same alert set twice.
//!
//! [`retry`]: crate::retry

use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use crate::email::{Mailer, SendError};
use crate::state::counters;
use crate::state::StateBackend;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::queue::now_ms;
use tokio::sync::{watch, Notify};

/// Most items listed in one email; more go in the next one.
const MAX_ALERTS_PER_EMAIL: usize = 200;

/// How long a claim to send holds before another worker may take the alerts over.
const CLAIM_MS: i64 = crate::state::nats::CLAIM_MS;

/// How long and how hard to keep trying.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    pub max_backoff: Duration,
    pub give_up_after_ms: i64,
    /// Where to send when no recipients are configured and emails are files.
    pub from: String,
}

impl SendPolicy {
    pub fn from_config(c: &Config) -> SendPolicy {
        SendPolicy {
            max_backoff: c.email.max_backoff.get(),
            give_up_after_ms: c.email.give_up_after.get().as_millis() as i64,
            from: c.email.from.clone(),
        }
    }
}

/// Runs until `stop`; finishes the email in progress first.
pub async fn run<S: StateBackend>(
    state: Arc<S>,
    mailer: Mailer,
    policy: SendPolicy,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = send_due(&state, &mailer, &policy).await {
            tracing::error!(error = %e, "outbox: cannot read or update; retrying in 5 s");
        }
        if *stop.borrow() {
            return;
        }
        let nap = match state.next_due().await {
            Ok(Some(t)) => Duration::from_millis((t - now_ms()).clamp(0, 60_000) as u64),
            Ok(None) => Duration::from_secs(60),
            Err(_) => Duration::from_secs(5),
        };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

/// The recipients of an entry, normalized (sorted, deduplicated): alerts for the same
/// recipients share an email.
fn recipients_of(e: &OutboxEntry) -> Vec<String> {
    let mut to = e.alert.recipients.clone();
    to.sort();
    to.dedup();
    to
}

/// Splits what is due into emails. Sets planned before (a send that a crash or a transient
/// failure interrupted) are kept exactly as planned; the rest are grouped by recipients, at most
/// [`MAX_ALERTS_PER_EMAIL`] per email, each entry carrying its new set in `planned`. The claim
/// (`StateBackend::claim_alerts`) writes the set down, atomically with the claim, before the
/// email is sent.
fn plan(due: Vec<OutboxEntry>) -> Vec<Vec<OutboxEntry>> {
    let mut planned: BTreeMap<Vec<String>, Vec<OutboxEntry>> = BTreeMap::new();
    let mut fresh: BTreeMap<Vec<String>, Vec<OutboxEntry>> = BTreeMap::new();
    for e in due {
        if e.planned.is_empty() {
            fresh.entry(recipients_of(&e)).or_default().push(e);
        } else {
            planned.entry(e.planned.clone()).or_default().push(e);
        }
    }
    let mut sets: Vec<Vec<OutboxEntry>> = planned.into_values().collect();
    for (_, entries) in fresh {
        for chunk in entries.chunks(MAX_ALERTS_PER_EMAIL) {
            let mut set: Vec<String> = chunk.iter().map(|e| e.alert.id.clone()).collect();
            set.sort();
            let mut chunk = chunk.to_vec();
            for e in &mut chunk {
                e.planned = set.clone();
            }
            sets.push(chunk);
        }
    }
    sets
}

/// Sends everything due now. Returns after one pass.
pub async fn send_due<S: StateBackend>(
    state: &Arc<S>,
    mailer: &Mailer,
    policy: &SendPolicy,
) -> Result<usize, crate::state::StateError> {
    let now = now_ms();
    let due = state.due_alerts(now).await?;
    let mut sent = 0;
    for chunk in plan(due) {
        // Only what this worker claimed: with several workers on one state, each alert is
        // sent by exactly one of them.
        let recipients = chunk.first().map(recipients_of).unwrap_or_default();
        let claimed = state
            .claim_alerts(chunk.clone(), now_ms() + CLAIM_MS)
            .await?;
        if claimed.is_empty() {
            continue;
        }
        let chunk = claimed.as_slice();
        let alerts: Vec<Alert> = chunk.iter().map(|e| e.alert.clone()).collect();
        let ids: Vec<String> = alerts.iter().map(|a| a.id.clone()).collect();
        let to = if recipients.is_empty() && mailer.mail_dir().is_some() {
            vec![policy.from.clone()]
        } else {
            recipients.clone()
        };
        let result = if to.is_empty() {
            Err(SendError::Permanent(
                    "no recipients: set [alerts] recipients (or EMAIL_RECIPIENTS), or recipients on the source".into(),
                ))
        } else {
            mailer.send(&alerts, &to).await
        };
        let now = now_ms();
        match result {
            Ok(done) => {
                let message_id = done.message_id.clone();
                state
                    .update_alerts(
                        ids.clone(),
                        move |e| {
                            e.status = OutboxStatus::Sent;
                            e.attempts += 1;
                            e.sent_at = Some(now);
                            e.first_attempt_at.get_or_insert(now);
                            e.message_id = Some(message_id.clone());
                            e.last_error = None;
                        },
                        Some((counters::ALERTS_SENT.to_string(), ids.len() as i64)),
                    )
                    .await?;
                state
                    .update_alerts(vec![], |_| {}, Some((counters::EMAILS_SENT.to_string(), 1)))
                    .await?;
                tracing::info!(message_id = %done.message_id, alerts = ids.len(), "alert email sent");
                sent += 1;
            }
            Err(SendError::Transient(err)) => {
                let give_up = policy.give_up_after_ms;
                let max = policy.max_backoff;
                let first = chunk
                    .iter()
                    .filter_map(|e| e.first_attempt_at)
                    .min()
                    .unwrap_or(now);
                let expired = now - first >= give_up;
                let attempts = chunk.iter().map(|e| e.attempts).max().unwrap_or(0) + 1;
                let next = now + crate::retry::delay_for_attempt(attempts, max).as_millis() as i64;
                let msg = err.clone();
                state
                    .update_alerts(
                        ids.clone(),
                        move |e| {
                            e.attempts += 1;
                            e.first_attempt_at.get_or_insert(now);
                            e.last_error = Some(msg.clone());
                            if expired {
                                e.status = OutboxStatus::Failed;
                            } else {
                                e.next_attempt_at = next;
                            }
                        },
                        expired.then(|| (counters::ALERTS_FAILED.to_string(), ids.len() as i64)),
                    )
                    .await?;
                if expired {
                    tracing::error!(alerts = ids.len(), error = %err, "alert email failed for good: gave up after the retry period; see `stockhook-worker failed list`");
                } else {
                    tracing::warn!(alerts = ids.len(), attempt = attempts, retry_in_ms = next - now, error = %err, "alert email not sent; will retry");
                }
            }
            Err(SendError::Permanent(err)) => {
                let msg = err.clone();
                state
                    .update_alerts(
                        ids.clone(),
                        move |e| {
                            e.attempts += 1;
                            e.first_attempt_at.get_or_insert(now);
                            e.status = OutboxStatus::Failed;
                            e.last_error = Some(msg.clone());
                        },
                        Some((counters::ALERTS_FAILED.to_string(), ids.len() as i64)),
                    )
                    .await?;
                tracing::error!(alerts = ids.len(), error = %err, "alert email refused permanently; see `stockhook-worker failed list`, fix, then `failed replay`");
            }
        }
    }
    Ok(sent)
}
