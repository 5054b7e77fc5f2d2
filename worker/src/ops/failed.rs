//! `failed list|show|replay|purge`: the dead letters as the operator sees and changes them,
//! and, after a replay, waiting for the worker's verdict on each event.

use super::{control, fmt_time, render, Kind, OpsError, Selection};
use crate::backend::Queue;
use crate::control::AlertFilter;
use serde_json::json;
use std::fmt::Write as _;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::envelope::{Envelope, EventId};
use stockhook_shared::queue::{DeadFilter, QueueError, QueueOps};

/// `failed list`.
pub async fn failed_list(
    config: &Config,
    sel: &Selection,
    as_json: bool,
) -> Result<String, OpsError> {
    let mut rows = Vec::new();
    if sel.wants(Kind::Event) {
        let q = Queue::open(config).await?;
        for d in q.dead_list(sel.dead_filter()?).await? {
            rows.push(json!({
                "id": d.id.to_string(), "kind": "event", "source": d.source, "topic": d.topic,
                "error": d.error, "attempts": d.attempts, "when": fmt_time(d.dead_at_ms), "size": d.size,
            }));
        }
    }
    if sel.wants(Kind::Alert) {
        let c = control(config).await?;
        for e in c.alerts(sel.alert_filter()).await? {
            rows.push(json!({
                "id": e.alert.id, "kind": "alert", "source": e.alert.source, "topic": e.alert.rule.as_str(),
                "error": e.last_error.unwrap_or_default(), "attempts": e.attempts,
                "when": fmt_time(e.first_attempt_at.unwrap_or(e.alert.created_at)),
                "item": e.alert.item,
            }));
        }
    }
    if as_json {
        return Ok(serde_json::to_string_pretty(&rows).map_err(anyhow::Error::from)? + "\n");
    }
    if rows.is_empty() {
        return Ok("no failed events or alerts\n".into());
    }
    let mut out = format!(
        "{:<34} {:<6} {:<16} {:>8} {:<25} ERROR\n",
        "ID", "KIND", "SOURCE", "ATTEMPTS", "WHEN"
    );
    for r in &rows {
        let _ = writeln!(
            out,
            "{:<34} {:<6} {:<16} {:>8} {:<25} {}",
            r["id"].as_str().unwrap_or(""),
            r["kind"].as_str().unwrap_or(""),
            r["source"].as_str().unwrap_or(""),
            r["attempts"].to_string(),
            r["when"].as_str().unwrap_or(""),
            r["error"].as_str().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "\n{} failed. Replay with `stockhook-worker failed replay ID` (or --all --dry-run).",
        rows.len()
    );
    Ok(out)
}

/// `failed show ID`.
pub async fn failed_show(
    config: &Config,
    id: &str,
    payload: bool,
    as_json: bool,
) -> Result<String, OpsError> {
    if let Some(eid) = id.starts_with("evt_").then(|| EventId::parse(id)).flatten() {
        let q = Queue::open(config).await?;
        let (d, env) = q.dead_show(eid).await?;
        let mut v = json!({
            "id": d.id.to_string(), "kind": "event", "source": d.source, "platform": d.platform.as_str(),
            "topic": d.topic, "error": d.error, "attempts": d.attempts,
            "received_at": fmt_time(d.received_at_ms), "dead_at": fmt_time(d.dead_at_ms), "size": d.size,
            "headers": env.headers,
        });
        if payload {
            v["payload"] = json!(String::from_utf8_lossy(&env.body));
        }
        return Ok(render(&v, as_json));
    }
    if id.starts_with("evt_") {
        return Err(OpsError::Usage(format!(
            "{id} is not an event id (evt_ and 16 hex digits)"
        )));
    }
    let c = control(config).await?;
    let e = c
        .alerts(AlertFilter {
            ids: vec![id.to_string()],
            ..Default::default()
        })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| OpsError::Failed(anyhow::anyhow!("no such alert: {id}")))?;
    let v = json!({
        "id": e.alert.id, "kind": "alert", "rule": e.alert.rule.as_str(), "status": e.status,
        "source": e.alert.source, "item": e.alert.item, "sku": e.alert.sku, "title": e.alert.title,
        "available": e.alert.available, "threshold": e.alert.threshold, "attempts": e.attempts,
        "error": e.last_error, "created_at": fmt_time(e.alert.created_at), "message_id": e.message_id,
    });
    // Per channel (email, Slack, webhooks): status, attempts, error, the id it carried.
    let mut v = v;
    if !e.channels.is_empty() {
        v["channels"] = json!(e.channels);
    }
    Ok(render(&v, as_json))
}

/// `failed replay` / `failed purge`. A replay of events waits up to `wait` (`None`: not at all)
/// for the worker to read each one again, and reports each outcome; an event that fails again
/// makes the command fail (exit 1), as does one still unread when the wait ends.
pub async fn failed_change(
    config: &Config,
    sel: &Selection,
    replay: bool,
    dry_run: bool,
    yes: bool,
    wait: Option<Duration>,
) -> Result<String, OpsError> {
    let verb = if replay { "replay" } else { "purge" };
    sel.check(verb, dry_run, yes)?;
    let mut out = String::new();
    let mut not_done = 0usize;
    if sel.wants(Kind::Event) {
        let q = Queue::open(config).await?;
        let f = sel.dead_filter()?;
        let ids = if replay {
            q.dead_replay(f.clone(), true).await?
        } else {
            q.dead_purge(f.clone(), true).await?
        };
        if dry_run && replay && !ids.is_empty() {
            // Which alerts would these events raise? Ask the worker's state, writing nothing.
            let envs = dead_envelopes(config, &q, &ids).await?;
            let c = control(config).await?;
            for s in c.simulate(&envs).await? {
                let what = s.summary();
                let _ = writeln!(out, "event {}: {what}", s.id);
            }
        } else if !dry_run {
            // Kept before the replay: what the outcome check simulates (read as now configured).
            let envs = match (replay, wait, &q) {
                (_, _, Queue::Nats(_)) => Vec::new(),
                (true, Some(_), _) => dead_envelopes(config, &q, &ids).await?,
                _ => Vec::new(),
            };
            let done = if replay {
                q.dead_replay(f, false).await?
            } else {
                q.dead_purge(f, false).await?
            };
            for id in &done {
                let _ = writeln!(
                    out,
                    "{} event {id}",
                    if replay { "replayed" } else { "purged" }
                );
            }
            if let (true, Some(limit)) = (replay, wait) {
                if matches!(q, Queue::Nats(_)) {
                    // JetStream gives a replayed event a new sequence, hence a new id: there is
                    // nothing to follow it by (yet).
                    let _ = writeln!(
                        out,
                        "(on the NATS backend a replayed event gets a new id: see its outcome in \
                         `failed list` and `stats`)"
                    );
                } else {
                    let envs: Vec<Envelope> =
                        envs.into_iter().filter(|e| done.contains(&e.id)).collect();
                    not_done = await_outcomes(config, &q, envs, limit, &mut out).await?;
                }
            }
        } else {
            for id in &ids {
                let _ = writeln!(out, "would {verb} event {id}");
            }
        }
    }
    if sel.wants(Kind::Alert) {
        let c = control(config).await?;
        let ids = c.alert_change(sel.alert_filter(), replay, dry_run).await?;
        for id in &ids {
            let _ = writeln!(
                out,
                "{} alert {id}",
                if dry_run {
                    format!("would {verb}")
                } else if replay {
                    "replayed".into()
                } else {
                    "purged".into()
                }
            );
        }
    }
    if not_done > 0 {
        return Err(OpsError::Failed(anyhow::anyhow!(
            "{out}{not_done} replayed event(s) not processed"
        )));
    }
    if out.is_empty() {
        out = format!("nothing to {verb}\n");
    }
    Ok(out)
}

/// The dead letters' envelopes, each with its source's current platform.
async fn dead_envelopes(
    config: &Config,
    q: &Queue,
    ids: &[EventId],
) -> Result<Vec<Envelope>, OpsError> {
    let mut envs = Vec::with_capacity(ids.len());
    for id in ids {
        let mut env = q.dead_show(*id).await?.1;
        crate::pipeline::read_as_configured(config, &mut env);
        envs.push(env);
    }
    Ok(envs)
}

/// How long `failed replay` waits for the outcome unless `--no-wait`.
pub const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// How often the outcome of a replay is checked while waiting.
const OUTCOME_POLL: Duration = Duration::from_millis(200);

/// Waits until the worker has read each replayed event again, up to `limit`: processed (its
/// state marks it), or dead-lettered again (back in the dead letters, with the error). Writes
/// one line per event; returns how many were not processed.
async fn await_outcomes(
    config: &Config,
    q: &Queue,
    mut waiting: Vec<Envelope>,
    limit: Duration,
    out: &mut String,
) -> Result<usize, OpsError> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut not_done = 0;
    while !waiting.is_empty() {
        let mut still = Vec::new();
        for env in waiting {
            // Naming an id that is not a dead letter is "no such event": not dead (yet).
            let again = match q
                .dead_list(DeadFilter {
                    ids: vec![env.id],
                    ..DeadFilter::default()
                })
                .await
            {
                Ok(d) => d,
                Err(QueueError::NotFound(_)) => Vec::new(),
                Err(e) => return Err(e.into()),
            };
            if let Some(d) = again.first() {
                let _ = writeln!(out, "event {}: failed again: {}", env.id, d.error);
                not_done += 1;
                continue;
            }
            still.push(env);
        }
        if !still.is_empty() {
            let c = control(config).await?;
            let sims = c.simulate(&still).await?;
            let mut left = Vec::new();
            for (env, sim) in still.into_iter().zip(sims) {
                if sim.already_processed {
                    let _ = writeln!(out, "event {}: processed", env.id);
                } else {
                    left.push(env);
                }
            }
            still = left;
        }
        waiting = still;
        if waiting.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            for env in &waiting {
                let _ = writeln!(
                    out,
                    "event {}: not read again within {}s (is stockhook-worker running?)",
                    env.id,
                    limit.as_secs()
                );
            }
            not_done += waiting.len();
            break;
        }
        tokio::time::sleep(OUTCOME_POLL).await;
    }
    Ok(not_done)
}
