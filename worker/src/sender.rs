//! The outbox sender: takes the alerts that are due, groups those with the same channels still
//! to deliver and the same recipients into one alert set, delivers the set to each of its
//! channels ([`Channels`]: the email, Slack, signed webhooks), and records each channel's result
//! durably before the next. Transient failures are rescheduled per channel on the exponential
//! backoff of [`retry`] (or the server's `Retry-After` when longer; the next attempt time is
//! persisted, so a restart resumes the schedule); permanent ones (SMTP 5xx, bad addresses, an
//! HTTP 4xx) mark the channel failed, and the alerts with it, for the operator.
//!
//! The set is planned (written down) before anything is sent, and a channel marked delivered is
//! never sent to again, so a crash, an outage or a replay resends only what was not delivered,
//! with the same id (Message-ID, `webhook-id`, the id in the Slack text). At-least-once towards
//! each endpoint: a delivery accepted just before a crash, not yet written down, is made again
//! after the restart with that same id; the file transport never writes the same set twice.
//!
//! The id is the planned set's ([`crate::alert::set_id`] of `planned`, the Message-ID from
//! [`crate::alert::message_id`]), on both backends: a set once planned keeps its members and its
//! id, whatever part of it is still owed.
//!
//! With several workers on one state (NATS), a set is sent under a short claim, renewed while
//! the delivery is in progress, so a dead worker's sets move to another worker in seconds and a
//! slow one keeps its own; a delivery's outcome is written down with retries through a state
//! outage rather than delivered again. There it is written down one alert at a time, so the
//! worker taking a set over reads its other members: one marked delivered on a channel means
//! the message went (the rest is written down, not sent again); one still owed but held by
//! another worker makes the set wait, so it never goes out in parts.
//!
//! [`retry`]: crate::retry

use crate::alert::{Alert, ChannelDelivery, OutboxEntry, OutboxStatus, PlannedSet, EMAIL};
use crate::channels::{Channels, Failure};
use crate::email::SendError;
use crate::state::counters;
use crate::state::StateBackend;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::queue::now_ms;
use tokio::sync::{watch, Notify};

/// Most items listed in one email; more go in the next one.
const MAX_ALERTS_PER_EMAIL: usize = 200;

/// How long a claim to send holds before another worker may take the alerts over, and how
/// often it is renewed while a delivery is in progress.
const CLAIM_MS: i64 = crate::state::nats::CLAIM_MS;
const CLAIM_RENEW_MS: i64 = crate::state::nats::CLAIM_RENEW_MS;

/// How long and how hard to keep trying.
#[derive(Debug, Clone)]
pub struct SendPolicy {
    pub max_backoff: Duration,
    pub give_up_after_ms: i64,
    /// Where to send when no recipients are configured and emails are files.
    pub from: String,
    /// Items the catalog does not know are looked up on their platform before the alert goes
    /// out (sources with API credentials; bounded wait).
    pub lookup: Option<Arc<crate::sync::lookup::Lookup>>,
}

impl SendPolicy {
    pub fn from_config(c: &Config) -> SendPolicy {
        SendPolicy {
            lookup: crate::sync::lookup::Lookup::from_config(c),
            max_backoff: c.email.max_backoff.get(),
            give_up_after_ms: c.email.give_up_after.get().as_millis() as i64,
            from: c.email.from.clone(),
        }
    }
}

/// Runs until `stop`; finishes the delivery in progress first.
pub async fn run<S: StateBackend>(
    state: Arc<S>,
    mailer: Channels,
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
fn plan(due: Vec<OutboxEntry>, now: i64) -> Vec<Vec<OutboxEntry>> {
    let mut planned: BTreeMap<PlannedSet, Vec<OutboxEntry>> = BTreeMap::new();
    let mut fresh: BTreeMap<(Vec<String>, Vec<String>), Vec<OutboxEntry>> = BTreeMap::new();
    for e in due {
        if e.planned.is_empty() {
            // Same channels still to go and same recipients: one set.
            fresh
                .entry((e.due_channels(now), recipients_of(&e)))
                .or_default()
                .push(e);
        } else {
            planned.entry(e.planned.clone()).or_default().push(e);
        }
    }
    let mut sets: Vec<Vec<OutboxEntry>> = planned.into_values().collect();
    for (_, entries) in fresh {
        for chunk in entries.chunks(MAX_ALERTS_PER_EMAIL) {
            let mut ids: Vec<String> = chunk.iter().map(|e| e.alert.id.clone()).collect();
            ids.sort();
            let set = PlannedSet::from(ids);
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
///
/// Per alert set, each channel of its route in turn (name order): skip it when already
/// delivered (so a replay or a restart never sends it twice), else deliver and write the result
/// down at once, before the next channel. The claim is taken again before each further channel:
/// with several workers on one state, another may have taken the set over in between (it then
/// sees what this one delivered).
pub async fn send_due<S: StateBackend>(
    state: &Arc<S>,
    channels: &Channels,
    policy: &SendPolicy,
) -> Result<usize, crate::state::StateError> {
    let now = now_ms();
    let mut due = state.due_alerts(now).await?;
    for e in &mut due {
        e.materialize(&channels.route(&e.alert));
    }
    let mut sent = 0;
    let mut work: std::collections::VecDeque<Vec<OutboxEntry>> = plan(due, now).into();
    while let Some(chunk) = work.pop_front() {
        // Only what this worker claimed: with several workers on one state, each alert is
        // sent by exactly one of them.
        let recipients = chunk.first().map(recipients_of).unwrap_or_default();
        // Every channel some entry of the set still owes, in name order.
        let names: BTreeSet<String> = chunk.iter().flat_map(|e| e.due_channels(now)).collect();
        let mut chunk = chunk;
        for name in &names {
            let claimed_at = now_ms();
            // No delivery begins after half the claim's life: past that it may have lapsed
            // (this process stopped in between) and another worker may be sending the set.
            // A monotonic instant: it runs on while the process is stopped.
            let not_after = std::time::Instant::now() + Duration::from_millis(CLAIM_MS as u64 / 2);
            let mut claimed = state
                .claim_alerts(chunk.clone(), claimed_at + CLAIM_MS)
                .await?;
            for e in &mut claimed {
                e.materialize(&channels.route(&e.alert));
            }
            // The set the chunk was planned into: the claim hands back each entry's stored set,
            // which another worker may have planned differently (from its own snapshot). Those
            // are sent later in this pass, each with its own set.
            let set = chunk.first().map(|e| e.planned.clone()).unwrap_or_default();
            let (claimed, other): (Vec<_>, Vec<_>) =
                claimed.into_iter().partition(|e| e.planned == set);
            let mut by_set: BTreeMap<PlannedSet, Vec<OutboxEntry>> = BTreeMap::new();
            for e in other {
                by_set.entry(e.planned.clone()).or_default().push(e);
            }
            work.extend(by_set.into_values());
            if claimed.is_empty() {
                break;
            }
            chunk = claimed;
            let set_id = crate::alert::set_id(&set);
            // Only the entries this channel still owes, as the claim found them: with several
            // workers, another may have delivered (or rescheduled) some of them between our
            // snapshot and our claim, and an alert is never sent twice to a channel.
            let at = now_ms();
            let owed: BTreeSet<String> = chunk
                .iter()
                .filter(|e| {
                    e.channels.get(name).is_some_and(|d| {
                        d.status == OutboxStatus::Pending && d.next_attempt_at <= at
                    })
                })
                .map(|e| e.alert.id.clone())
                .collect();
            let ids: Vec<String> = chunk.iter().map(|e| e.alert.id.clone()).collect();
            if owed.is_empty() {
                // Release the claim without changing anything.
                state.update_alerts(ids, |_| {}, vec![]).await?;
                continue;
            }
            // The set is one message per channel: if any member is marked delivered on this
            // channel, it went (a worker stopped while writing it down); if a member still owed
            // is not ours to send now, the set waits for it, never going out in parts.
            let found = match on_channel(state, channels, &set, &chunk, name, at).await? {
                SetOnChannel::Delivered(id) => Some(id),
                SetOnChannel::Ours => None,
                SetOnChannel::Wait => {
                    tracing::info!(channel = %name, alerts = owed.len(), "part of a planned set is held elsewhere; it waits");
                    state.update_alerts(ids, |_| {}, vec![]).await?;
                    // Two workers may each hold part of one set (each claimed from a snapshot
                    // that showed the other's part taken): both let go, then come back after
                    // a random pause, so one of them finds the whole set free and takes it.
                    tokio::time::sleep(contention_pause()).await;
                    break;
                }
            };
            let mut alerts: Vec<Alert> = chunk
                .iter()
                .filter(|e| owed.contains(&e.alert.id))
                .map(|e| e.alert.clone())
                .collect();
            if found.is_none() {
                if let Some(l) = &policy.lookup {
                    l.enrich(&mut alerts, &**state).await;
                }
            }
            // Stalled (or paused) since the claim for half its life: it may have lapsed and
            // been taken over. Leave the set to the next pass, which claims again.
            if std::time::Instant::now() > not_after {
                tracing::warn!(channel = %name, alerts = alerts.len(), "claim too old to send on; claiming again");
                break;
            }
            let started = std::time::Instant::now();
            let (result, lost) = match &found {
                Some(id) => {
                    tracing::info!(channel = %name, alerts = alerts.len(), set = %set_id, "set already delivered on this channel; writing the rest of it down");
                    (Ok(id.clone()), false)
                }
                None => {
                    deliver_renewing(
                        state,
                        channels,
                        (name, (&set_id, &alerts), &recipients),
                        &ids,
                        not_after,
                    )
                    .await
                }
            };
            let late = std::time::Instant::now() > not_after;
            if (lost || late) && result.is_err() {
                // Another worker owns the set now, and its schedule: nothing to write down.
                tracing::warn!(channel = %name, alerts = alerts.len(), "claim lost to another worker mid-delivery; it sends them");
                break;
            }
            if name == EMAIL && found.is_none() {
                crate::metrics::EMAIL_SEND_SECONDS.observe(started.elapsed().as_secs_f64());
            }
            let now = now_ms();
            let delivered: Vec<OutboxEntry> = chunk
                .iter()
                .filter(|e| owed.contains(&e.alert.id))
                .cloned()
                .collect();
            let step = Step::of(name, &result, &delivered, policy, now);
            let routes: HashMap<String, Vec<String>> = chunk
                .iter()
                .map(|e| (e.alert.id.clone(), e.channels.keys().cloned().collect()))
                .collect();
            // What the update does to each entry, applied here too, to count transitions. The
            // update covers the whole claimed set (releasing every claim), and changes only
            // the entries that were delivered.
            let apply = {
                let step = step.clone();
                let owed = owed.clone();
                move |e: &mut OutboxEntry| {
                    if !owed.contains(&e.alert.id) {
                        return;
                    }
                    if let Some(route) = routes.get(&e.alert.id) {
                        e.materialize(route);
                    }
                    step.apply(e);
                }
            };
            let before: Vec<OutboxStatus> = chunk.iter().map(|e| e.status).collect();
            for e in &mut chunk {
                apply(e);
            }
            let changed = |to: OutboxStatus| {
                chunk
                    .iter()
                    .zip(&before)
                    .filter(|(e, b)| e.status != **b && e.status == to)
                    .count() as i64
            };
            let (now_sent, now_failed) =
                (changed(OutboxStatus::Sent), changed(OutboxStatus::Failed));
            // The counters go in the same write as the outcome: one commit (and one sync on
            // sled) per delivery, where there were up to three.
            let emailed = name == EMAIL && found.is_none() && matches!(step, Step::Sent { .. });
            let counts: Vec<(String, i64)> = [
                (counters::ALERTS_SENT, now_sent),
                (counters::ALERTS_FAILED, now_failed),
                (counters::EMAILS_SENT, i64::from(emailed)),
            ]
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| (c.to_string(), n))
            .collect();
            write_down(state, ids, apply, counts).await?;
            if found.is_some() {
                continue;
            }
            step.log(name, alerts.len());
            let status = match &step {
                Step::Sent { .. } => "sent",
                Step::Retry { .. } => "retry",
                Step::Failed { .. } => "failed",
            };
            for a in &alerts {
                crate::metrics::ALERTS.inc(&[a.rule.as_str(), status]);
            }
            if matches!(step, Step::Sent { .. }) {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// How long a worker that let go of part of a set waits before it looks again: random, so two
/// workers that let go together do not come back together.
fn contention_pause() -> Duration {
    Duration::from_millis(100 + rand::random::<u64>() % 1_400)
}

/// Where a planned set stands on one channel, for the worker holding `mine` of it.
enum SetOnChannel {
    /// A member is marked delivered: the set went, with this id. The rest is written down
    /// as delivered, not sent again.
    Delivered(String),
    /// Every member the channel still owes is in `mine` and due: send them, as the set.
    Ours,
    /// A member the channel owes is claimed by another worker, or not due yet.
    Wait,
}

/// Reads the other members of `set` (those still planned into it) when `mine` is not all of
/// it, and says where the set stands on `channel` at `now`.
async fn on_channel<S: StateBackend>(
    state: &Arc<S>,
    channels: &Channels,
    set: &PlannedSet,
    mine: &[OutboxEntry],
    channel: &str,
    now: i64,
) -> Result<SetOnChannel, crate::state::StateError> {
    let held: BTreeSet<&str> = mine.iter().map(|e| e.alert.id.as_str()).collect();
    let others: Vec<String> = set
        .iter()
        .filter(|id| !held.contains(id.as_str()))
        .cloned()
        .collect();
    let mut members: Vec<OutboxEntry> = mine.to_vec();
    if !others.is_empty() {
        for mut e in state.alerts(others).await? {
            if e.planned == *set {
                e.materialize(&channels.route(&e.alert));
                members.push(e);
            }
        }
    }
    let delivered = members.iter().find_map(|e| {
        e.channels
            .get(channel)
            .filter(|d| d.status == OutboxStatus::Sent)
            .and_then(|d| d.delivery_id.clone())
    });
    if let Some(id) = delivered {
        return Ok(SetOnChannel::Delivered(id));
    }
    let waiting = members.iter().any(|e| {
        e.channels.get(channel).is_some_and(|d| {
            d.status == OutboxStatus::Pending
                && (d.next_attempt_at > now || !held.contains(e.alert.id.as_str()))
        })
    });
    Ok(if waiting {
        SetOnChannel::Wait
    } else {
        SetOnChannel::Ours
    })
}

/// How long [`write_down`] keeps trying.
const WRITE_DOWN_PATIENCE: Duration = Duration::from_secs(120);

/// Writes a delivery's outcome down (and releases the claims), retrying while the state is
/// unreachable (a NATS server restarting): the delivery happened, and an outcome not written
/// down would be delivered again, with the same id, by the next pass. Gives up (returns the
/// error) after [`WRITE_DOWN_PATIENCE`]. A partial write retried re-applies the same outcome.
async fn write_down<S: StateBackend, F>(
    state: &Arc<S>,
    ids: Vec<String>,
    apply: F,
    counters: Vec<(String, i64)>,
) -> Result<(), crate::state::StateError>
where
    F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static,
{
    let give_up = tokio::time::Instant::now() + WRITE_DOWN_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match state
            .update_alerts(ids.clone(), apply.clone(), counters.clone())
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < give_up => {
                tracing::warn!(error = %e, alerts = ids.len(), "cannot write down a delivery's outcome yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Delivers `alerts` on channel `name`, renewing the claims on `ids` every [`CLAIM_RENEW_MS`]
/// meanwhile. Also returns whether a renewal found a claim taken over (this process was paused
/// or cut off past the claim's life). The delivery is not abandoned then: an SMTP send runs on
/// the blocking pool and finishes regardless, and what it did is worth writing down (an alert
/// marked sent is not sent again by the next claimer that has not started yet).
async fn deliver_renewing<S: StateBackend>(
    state: &Arc<S>,
    channels: &Channels,
    (name, set, recipients): (&str, (&str, &[Alert]), &[String]),
    ids: &[String],
    not_after: std::time::Instant,
) -> (Result<String, Failure>, bool) {
    let every = Duration::from_millis(CLAIM_RENEW_MS as u64);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deliver = channels.deliver_before(name, set, recipients, Some(not_after));
    tokio::pin!(deliver);
    let mut lost = false;
    loop {
        tokio::select! {
            r = &mut deliver => return (r, lost),
            _ = tick.tick(), if !lost => {
                match state.renew_claims(ids.to_vec(), now_ms() + CLAIM_MS).await {
                    Ok(true) => {}
                    Ok(false) => lost = true,
                    // The claim may lapse; nothing better to do than go on and try again.
                    Err(e) => tracing::warn!(error = %e, "cannot renew send claims"),
                }
            }
        }
    }
}

/// What one delivery attempt does to one channel of each entry of the set.
#[derive(Debug, Clone)]
enum Step {
    Sent {
        channel: String,
        id: String,
        now: i64,
    },
    Retry {
        channel: String,
        error: String,
        now: i64,
        next: i64,
        attempt: u32,
    },
    Failed {
        channel: String,
        error: String,
        now: i64,
        gave_up: bool,
    },
}

impl Step {
    /// Classifies `result`: transient failures get the next attempt time (the backoff, or the
    /// server's `Retry-After` when longer), or fail for good past `give_up_after`.
    fn of(
        channel: &str,
        result: &Result<String, Failure>,
        chunk: &[OutboxEntry],
        policy: &SendPolicy,
        now: i64,
    ) -> Step {
        let channel = channel.to_string();
        let ch = |e: &OutboxEntry| e.channels.get(&channel).cloned();
        match result {
            Ok(id) => Step::Sent {
                channel,
                id: id.clone(),
                now,
            },
            Err(Failure {
                error: SendError::Permanent(m),
                ..
            }) => Step::Failed {
                channel,
                error: m.clone(),
                now,
                gave_up: false,
            },
            Err(Failure {
                error: SendError::Transient(m),
                retry_after,
            }) => {
                let first = chunk
                    .iter()
                    .filter_map(|e| ch(e).and_then(|d| d.first_attempt_at))
                    .min()
                    .unwrap_or(now);
                if now - first >= policy.give_up_after_ms {
                    return Step::Failed {
                        channel,
                        error: m.clone(),
                        now,
                        gave_up: true,
                    };
                }
                let attempt = chunk
                    .iter()
                    .filter_map(|e| ch(e).map(|d| d.attempts))
                    .max()
                    .unwrap_or(0)
                    + 1;
                let backoff = crate::retry::delay_for_attempt(attempt, policy.max_backoff);
                let wait = retry_after.map_or(backoff, |r| r.max(backoff));
                Step::Retry {
                    channel,
                    error: m.clone(),
                    now,
                    next: now + wait.as_millis() as i64,
                    attempt,
                }
            }
        }
    }

    fn apply(&self, e: &mut OutboxEntry) {
        let (channel, now) = match self {
            Step::Sent { channel, now, .. }
            | Step::Retry { channel, now, .. }
            | Step::Failed { channel, now, .. } => (channel, *now),
        };
        let d = e
            .channels
            .entry(channel.clone())
            .or_insert_with(|| ChannelDelivery::pending(now));
        d.attempts += 1;
        d.first_attempt_at.get_or_insert(now);
        match self {
            Step::Sent { id, .. } => {
                d.status = OutboxStatus::Sent;
                d.sent_at = Some(now);
                d.delivery_id = Some(id.clone());
                d.last_error = None;
            }
            Step::Retry { error, next, .. } => {
                d.last_error = Some(error.clone());
                d.next_attempt_at = *next;
            }
            Step::Failed { error, .. } => {
                d.status = OutboxStatus::Failed;
                d.last_error = Some(error.clone());
            }
        }
        e.recompute();
    }

    fn log(&self, channel: &str, alerts: usize) {
        match self {
            Step::Sent { id, .. } => {
                if channel == EMAIL {
                    tracing::info!(message_id = %id, alerts, "alert email sent");
                }
            }
            Step::Retry {
                error,
                now,
                next,
                attempt,
                ..
            } => {
                tracing::warn!(channel, alerts, attempt, retry_in_ms = next - now, error = %error, "alerts not delivered; will retry")
            }
            Step::Failed {
                error,
                gave_up: true,
                ..
            } => {
                tracing::error!(channel, alerts, error = %error, "alerts failed for good: gave up after the retry period; see `stockhook-worker failed list`")
            }
            Step::Failed { error, .. } => {
                tracing::error!(channel, alerts, error = %error, "alerts refused permanently; see `stockhook-worker failed list`, fix, then `failed replay`")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{test_alert, Rule};

    fn policy() -> SendPolicy {
        SendPolicy {
            lookup: None,
            max_backoff: Duration::from_secs(2),
            give_up_after_ms: 3_600_000,
            from: "s@example.com".into(),
        }
    }

    fn chunk(first_attempt_at: Option<i64>) -> Vec<OutboxEntry> {
        let mut e = OutboxEntry::new(test_alert(Rule::OutOfStock, "shop", "1"), 0);
        e.materialize(&["email".to_string(), "slack".to_string()]);
        e.channels.get_mut("slack").unwrap().first_attempt_at = first_attempt_at;
        vec![e]
    }

    fn transient(retry_after: Option<Duration>) -> Result<String, Failure> {
        Err(Failure {
            error: SendError::Transient("HTTP 429".into()),
            retry_after,
        })
    }

    #[test]
    fn retry_after_longer_than_the_backoff_is_honoured() {
        let now = 1_000_000;
        let step = Step::of(
            "slack",
            &transient(Some(Duration::from_secs(120))),
            &chunk(None),
            &policy(),
            now,
        );
        assert!(
            matches!(step, Step::Retry { next, attempt: 1, .. } if next == now + 120_000),
            "{step:?}"
        );
        // Shorter than the backoff: the backoff (about 1 s at the first retry).
        let step = Step::of(
            "slack",
            &transient(Some(Duration::ZERO)),
            &chunk(None),
            &policy(),
            now,
        );
        assert!(
            matches!(step, Step::Retry { next, .. } if (now + 800..=now + 1_200).contains(&next)),
            "{step:?}"
        );
    }

    #[test]
    fn a_step_changes_only_its_channel() {
        let mut c = chunk(None);
        let step = Step::of("slack", &transient(None), &c, &policy(), 5_000);
        step.apply(&mut c[0]);
        assert_eq!(c[0].channels["slack"].attempts, 1);
        assert_eq!(c[0].channels["slack"].first_attempt_at, Some(5_000));
        assert_eq!(c[0].channels["email"].attempts, 0);
        assert_eq!(c[0].status, OutboxStatus::Pending);
        assert_eq!(c[0].next_attempt_at, 0, "email is still due");
        Step::of("email", &Ok("<m@stockhook>".into()), &c, &policy(), 6_000).apply(&mut c[0]);
        assert_eq!(c[0].message_id.as_deref(), Some("<m@stockhook>"));
        assert_eq!(c[0].status, OutboxStatus::Pending, "slack still to go");
    }

    #[test]
    fn transient_failures_past_give_up_after_fail_for_good() {
        let now = 10_000_000;
        let step = Step::of(
            "slack",
            &transient(None),
            &chunk(Some(now - 3_600_000)),
            &policy(),
            now,
        );
        assert!(
            matches!(step, Step::Failed { gave_up: true, .. }),
            "{step:?}"
        );
        let permanent = Err(Failure::from(SendError::Permanent("HTTP 404".into())));
        let step = Step::of("slack", &permanent, &chunk(None), &policy(), now);
        assert!(
            matches!(step, Step::Failed { gave_up: false, .. }),
            "{step:?}"
        );
    }
    /// A state whose stored entries moved on after the sender's snapshot, as with two workers
    /// on JetStream: `due_alerts` returns the stale snapshot, `claim_alerts` the stored truth.
    struct Moved {
        stored: std::sync::Mutex<BTreeMap<String, OutboxEntry>>,
        snapshot: Vec<OutboxEntry>,
        /// Each `update_alerts` call: the ids and the counters it carried.
        updates: std::sync::Mutex<Vec<Update>>,
    }

    type Update = (Vec<String>, Vec<(String, i64)>);

    impl Moved {
        fn new(stored: BTreeMap<String, OutboxEntry>, snapshot: Vec<OutboxEntry>) -> Moved {
            Moved {
                stored: std::sync::Mutex::new(stored),
                snapshot,
                updates: std::sync::Mutex::new(Vec::new()),
            }
        }
    }

    impl StateBackend for Moved {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn apply_batch(
            &self,
            _: Vec<crate::state::Prepared>,
            _: Arc<crate::state::RuleConfig>,
            _: i64,
            _: bool,
        ) -> Result<Vec<crate::state::Applied>, crate::state::StateError> {
            Ok(vec![])
        }
        async fn run_no_sales(
            &self,
            _: Arc<crate::state::RuleConfig>,
            _: i64,
            _: bool,
        ) -> Result<Vec<Alert>, crate::state::StateError> {
            Ok(vec![])
        }
        async fn due_alerts(&self, _: i64) -> Result<Vec<OutboxEntry>, crate::state::StateError> {
            Ok(self.snapshot.clone())
        }
        async fn next_due(&self) -> Result<Option<i64>, crate::state::StateError> {
            Ok(None)
        }
        async fn outbox<F>(&self, keep: F) -> Result<Vec<OutboxEntry>, crate::state::StateError>
        where
            F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static,
        {
            let s = self.stored.lock().unwrap();
            Ok(s.values().filter(|e| keep(e)).cloned().collect())
        }
        async fn alerts(
            &self,
            ids: Vec<String>,
        ) -> Result<Vec<OutboxEntry>, crate::state::StateError> {
            let s = self.stored.lock().unwrap();
            Ok(ids.iter().filter_map(|id| s.get(id).cloned()).collect())
        }
        async fn claim_alerts(
            &self,
            entries: Vec<OutboxEntry>,
            _: i64,
        ) -> Result<Vec<OutboxEntry>, crate::state::StateError> {
            let mut s = self.stored.lock().unwrap();
            let mut mine = Vec::new();
            for e in entries {
                if let Some(cur) = s.get_mut(&e.alert.id) {
                    if cur.status == OutboxStatus::Pending {
                        if cur.planned.is_empty() && !e.planned.is_empty() {
                            cur.planned = e.planned.clone();
                        }
                        mine.push(cur.clone());
                    }
                }
            }
            Ok(mine)
        }
        async fn update_alerts<F>(
            &self,
            ids: Vec<String>,
            f: F,
            counters: Vec<(String, i64)>,
        ) -> Result<(), crate::state::StateError>
        where
            F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static,
        {
            self.updates.lock().unwrap().push((ids.clone(), counters));
            let mut s = self.stored.lock().unwrap();
            for id in ids {
                if let Some(e) = s.get_mut(&id) {
                    f(e);
                }
            }
            Ok(())
        }
        async fn purge_alerts(&self, _: Vec<String>) -> Result<(), crate::state::StateError> {
            Ok(())
        }
        async fn counters(&self) -> Result<BTreeMap<String, i64>, crate::state::StateError> {
            Ok(BTreeMap::new())
        }
        async fn items(&self) -> Result<Vec<crate::state::ItemState>, crate::state::StateError> {
            Ok(vec![])
        }
        async fn live_item_ids(&self, _: String) -> Result<Vec<String>, crate::state::StateError> {
            Ok(vec![])
        }
        async fn sync(&self) -> Result<(), crate::state::StateError> {
            Ok(())
        }
    }

    /// An emailed set is written down in one update, its counters with it: on sled each update
    /// is a commit and a sync, and the counters cost two more of each per email before.
    #[tokio::test]
    async fn a_delivery_and_its_counters_are_written_down_in_one_update() {
        let data = tempfile::tempdir().unwrap();
        let config: Config =
            toml::from_str("[alerts]\nrecipients = [\"ops@example.com\"]\n").unwrap();
        let mailer = crate::email::Mailer::from_config(&config.email, data.path()).unwrap();
        let channels = Channels::from_config(&config, mailer).unwrap();
        let mut a = test_alert(Rule::LowStock, "shop", "z");
        a.recipients = vec!["ops@example.com".into()];
        let z = OutboxEntry::new(a, 0);
        let id = z.alert.id.clone();
        let state = Arc::new(Moved::new(
            BTreeMap::from([(id.clone(), z.clone())]),
            vec![z],
        ));
        assert_eq!(send_due(&state, &channels, &policy()).await.unwrap(), 1);
        assert_eq!(
            std::fs::read_dir(data.path().join("mail")).unwrap().count(),
            1
        );
        let updates = state.updates.lock().unwrap().clone();
        assert_eq!(
            updates,
            vec![(
                vec![id.clone()],
                vec![
                    (counters::ALERTS_SENT.to_string(), 1),
                    (counters::EMAILS_SENT.to_string(), 1)
                ]
            )]
        );
        assert_eq!(state.stored.lock().unwrap()[&id].status, OutboxStatus::Sent);
    }

    /// Another worker delivered x and y by email, and is between channels (claims released),
    /// when this worker, planning from an older snapshot, groups x, y and a new z into one set:
    /// x and y keep the set they were planned into, so the email goes to z only, the webhook to
    /// x and y as their set and to z as its own, each once.
    #[tokio::test]
    async fn a_stale_plan_never_sends_a_channel_twice() {
        use stockhook_tests::hooks::{HookServer, Kind};
        let hook = HookServer::start(Kind::StandardWebhooks(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
        ));
        let data = tempfile::tempdir().unwrap();
        let config: Config = toml::from_str(&format!(
            "[alerts]\nrecipients = [\"ops@example.com\"]\nchannels = [\"email\", \"hook\"]\n\
             [[channels]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            hook.url("/in")
        ))
        .unwrap();
        let mailer = crate::email::Mailer::from_config(&config.email, data.path()).unwrap();
        let channels = Channels::from_config(&config, mailer).unwrap();
        let route = vec!["email".to_string(), "hook".to_string()];
        let entry = |item: &str| {
            let mut a = test_alert(Rule::LowStock, "shop", item);
            a.recipients = vec!["ops@example.com".into()];
            OutboxEntry::new(a, 0)
        };
        let (x, y, z) = (entry("x"), entry("y"), entry("z"));
        let (x_id, y_id) = (x.alert.id.clone(), y.alert.id.clone());
        let snapshot = vec![x.clone(), y.clone(), z.clone()];
        let mut stored = BTreeMap::new();
        for mut e in [x, y] {
            e.materialize(&route);
            let d = e.channels.get_mut("email").unwrap();
            d.status = OutboxStatus::Sent;
            d.delivery_id = Some("<other@stockhook>".into());
            e.planned = vec!["x-and-y".to_string()].into();
            e.recompute();
            stored.insert(e.alert.id.clone(), e);
        }
        stored.insert(z.alert.id.clone(), z.clone());
        let state = Arc::new(Moved::new(stored, snapshot));
        send_due(&state, &channels, &policy()).await.unwrap();

        let mail: Vec<String> = std::fs::read_dir(data.path().join("mail"))
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .collect();
        assert_eq!(mail.len(), 1);
        // The alert ids header, unfolded.
        let mut ids: Vec<String> = Vec::new();
        let mut lines = mail[0].lines();
        while let Some(l) = lines.next() {
            if let Some(v) = l.strip_prefix(&format!("{}:", crate::email::ALERT_IDS_HEADER)) {
                ids.extend(v.split_whitespace().map(String::from));
                for cont in lines.by_ref() {
                    if !cont.starts_with([' ', '\t']) {
                        break;
                    }
                    ids.extend(cont.split_whitespace().map(String::from));
                }
                break;
            }
        }
        assert_eq!(ids, vec![z.alert.id.clone()], "the email went to z only");
        // ... as the set it was planned into, x, y and z (x and y had theirs already).
        let z_set = crate::alert::set_id(&[&x_id, &y_id, &z.alert.id]);
        assert!(
            mail[0].contains(&format!(
                "Message-ID: {}\r\n",
                crate::alert::message_id(&z_set)
            )),
            "{}",
            mail[0]
        );

        let mut got: Vec<(String, Vec<String>)> = hook
            .accepted()
            .iter()
            .map(|r| {
                let body = r.json();
                let ids = body["data"]["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["id"].as_str().map(String::from))
                    .collect();
                (body["data"]["id"].as_str().unwrap_or("").to_string(), ids)
            })
            .collect();
        got.sort();
        let mut want = vec![
            (
                crate::alert::set_id(&["x-and-y"]),
                vec![x_id.clone(), y_id.clone()],
            ),
            (z_set.clone(), vec![z.alert.id.clone()]),
        ];
        for (_, ids) in &mut want {
            ids.sort();
        }
        for (_, ids) in &mut got {
            ids.sort();
        }
        want.sort();
        assert_eq!(
            got, want,
            "each alert once on the webhook, in its planned set"
        );
        let s = state.stored.lock().unwrap();
        assert!(s.values().all(|e| e.status == OutboxStatus::Sent), "{s:#?}");
    }
}
