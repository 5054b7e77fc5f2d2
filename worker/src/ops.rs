//! The operator's commands: `failed list|show|replay|purge`, `stats`, `export`, `preview`
//! (`import` is in [`crate::catalog::import`]). They reach the
//! queue through the receiver's socket (or its database when the receiver is stopped) and the
//! worker's state through the worker's socket (or its database when the worker is stopped).
//!
//! Destructive bulk operations (`--all`, or filters without ids) ask for `--yes`; `--dry-run`
//! shows what would happen, including which alerts a replayed event would raise. Payloads are
//! shown only with `show --payload`.

use crate::alert::OutboxStatus;
use crate::backend::Queue;
use crate::control::{AlertFilter, Control};
use crate::state::{counters, RuleConfig, StateError};
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::envelope::{Envelope, EventId};
use stockhook_shared::queue::{now_ms, DeadFilter, QueueError, QueueOps};

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
        let ids = if replay {
            c.alert_replay(sel.alert_filter(), dry_run).await?
        } else {
            c.alert_purge(sel.alert_filter(), dry_run).await?
        };
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

/// `stats`.
pub async fn stats(config: &Config, as_json: bool) -> Result<String, OpsError> {
    let queue = match Queue::open(config).await {
        Ok(q) => q.stats().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let c = control(config).await?;
    let counters = c.counters().await?;
    let pending = c
        .alerts(AlertFilter {
            status: Some(OutboxStatus::Pending),
            ..Default::default()
        })
        .await?
        .len();
    let failed = c
        .alerts(AlertFilter {
            status: Some(OutboxStatus::Failed),
            ..Default::default()
        })
        .await?
        .len();
    // Sent alerts are counted from the outbox itself (plus those swept after 30 days), so the
    // figure always agrees with what `failed show` says, whatever a crash interrupted.
    let sent_now = c
        .alerts(AlertFilter {
            status: Some(OutboxStatus::Sent),
            ..Default::default()
        })
        .await?
        .len() as i64;
    let get = |k: &str| counters.get(k).copied().unwrap_or(0);
    // Items in the catalog now (live: removed ones are counted in catalog.removed).
    let catalog_items = c
        .items()
        .await?
        .iter()
        .filter(|it| it.removed.is_none())
        .count();
    let sent = sent_now + get(counters::ALERTS_SWEPT);
    let mut sources = serde_json::Map::new();
    for s in &config.sources {
        let (p, d) = match &queue {
            Ok(q) => (
                q.pending_by_source
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map_or(0, |x| x.1),
                q.dead_by_source
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map_or(0, |x| x.1),
            ),
            Err(_) => (0, 0),
        };
        sources.insert(
            s.name.clone(),
            json!({"processed": get(&counters::source_processed(&s.name)), "pending": p, "dead": d, "future_timestamps": get(&counters::source_future(&s.name)), "corrections": get(&counters::source_corrections(&s.name))}),
        );
    }
    let v = json!({
        "queue": match &queue {
            Ok(q) => json!({"pending": q.pending, "leased": q.leased, "dead": q.dead, "acked_retained": q.acked_retained, "disk_bytes": q.disk_bytes}),
            Err(e) => json!({"error": e}),
        },
        "events": {"processed": get(counters::EVENTS_PROCESSED), "ignored": get(counters::EVENTS_IGNORED), "duplicate": get(counters::EVENTS_DUPLICATE), "stale_levels": get(counters::LEVELS_STALE), "future_timestamps": get(counters::FUTURE_TIMESTAMPS), "old_timestamps": get(counters::OLD_TIMESTAMPS)},
        "facts": {"refused": get(counters::FACTS_REFUSED)},
        "catalog": {"removed": get(counters::CATALOG_REMOVED), "items": catalog_items},
        "alerts": {"created": get(counters::ALERTS_CREATED), "sent": sent, "pending": pending, "failed": failed, "cancelled": get(counters::ALERTS_CANCELLED)},
        "emails": {"sent": get(counters::EMAILS_SENT)},
        "ebay": {"account_deletions": get(counters::EBAY_ACCOUNT_DELETIONS)},
        "sources": sources,
        "sync": crate::sync::runner::stats_json(config, &counters),
    });
    if as_json {
        return Ok(serde_json::to_string_pretty(&v).map_err(anyhow::Error::from)? + "\n");
    }
    let mut out = String::new();
    flatten(&v, "", &mut out);
    Ok(out)
}

/// `preview --at`: the scheduled pass in dry run at `at`: the time-based alerts it would raise.
pub async fn preview(config: &Config, at: i64, as_json: bool) -> Result<String, OpsError> {
    let alerts = control(config).await?.preview(at).await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&alerts).map_err(anyhow::Error::from)? + "\n");
    }
    let mut out = format!(
        "{} time-based alert(s) would fire at {} (nothing sent, nothing written)\n",
        alerts.len(),
        fmt_time(at)
    );
    for a in &alerts {
        // What the rule is about: the quiet period, or the days of cover and what to order.
        let why = match (&a.cover, a.quiet_since) {
            (Some(c), _) => format!(
                "{:.1} days of cover, runs out {}, reorder {}",
                c.days_of_cover,
                fmt_time(c.stockout_date),
                c.reorder_qty
            ),
            (None, Some(since)) => format!("quiet since {}", fmt_time(since)),
            (None, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{}\t{}\t{}\tsku={}\tavailable={}\t{why}",
            a.rule.as_str(),
            a.source,
            a.item,
            a.sku.as_deref().unwrap_or("-"),
            a.available.map_or("-".to_string(), |n| n.to_string()),
        );
    }
    Ok(out)
}

fn flatten(v: &serde_json::Value, prefix: &str, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, val) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(val, &p, out);
            }
        }
        other => {
            let _ = writeln!(
                out,
                "{prefix} {}",
                other
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| other.to_string())
            );
        }
    }
}

/// `sync`: a catalog sync of one source (or all with an API) now. Through the running worker
/// when there is one (it holds the state and the credentials), else on the state directly.
/// Fails (exit 1) when any source's sync failed, after printing every report.
pub async fn sync(
    config: &Config,
    source: Option<String>,
    dry_run: bool,
    as_json: bool,
) -> Result<String, OpsError> {
    use crate::sync::runner::sync_all;
    stockhook_shared::durable::create_dir_all(&config.data_dir).map_err(|e| {
        OpsError::Failed(anyhow::anyhow!(
            "creating data_dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let c = control(config).await?;
    let reports = match &c {
        Control::Remote(..) => c.sync(source, dry_run).await.map_err(|e| match e {
            StateError::Storage { message, .. } => OpsError::Failed(anyhow::anyhow!(message)),
            other => OpsError::Failed(other.into()),
        })?,
        Control::Local(store, rules) => {
            sync_all(config, &**store, rules.clone(), source.as_deref(), dry_run)
                .await
                .map_err(|m| OpsError::Failed(anyhow::anyhow!(m)))?
        }
        Control::Nats(store, rules) => {
            sync_all(config, &**store, rules.clone(), source.as_deref(), dry_run)
                .await
                .map_err(|m| OpsError::Failed(anyhow::anyhow!(m)))?
        }
    };
    let text = if as_json {
        serde_json::to_string_pretty(&reports).map_err(anyhow::Error::from)? + "\n"
    } else {
        reports.iter().map(|r| r.line()).collect()
    };
    if let Some(failed) = reports.iter().find(|r| !r.ok) {
        print!("{text}");
        return Err(OpsError::Failed(anyhow::anyhow!(
            "the sync of {} failed{}",
            failed.source,
            if failed.unauthorized {
                ": credentials refused, nothing in state was changed or deleted"
            } else {
                ""
            }
        )));
    }
    Ok(text)
}

/// `connect`: the Shopify webhook subscriptions of `source` at `url` (created unless `check`
/// or `dry_run`). `check` fails (exit 1) when a topic is missing.
pub async fn connect(
    config: &Config,
    source: &str,
    url: Option<&str>,
    check: bool,
    dry_run: bool,
    as_json: bool,
) -> Result<String, OpsError> {
    use crate::sync::connect;
    use stockhook_shared::config::SourceApi;
    let s = config
        .sources
        .iter()
        .find(|s| s.name == source)
        .ok_or_else(|| OpsError::Usage(format!("no source named {source} in the config")))?;
    let Some(SourceApi::Shopify(api_cfg)) = s.api() else {
        return Err(OpsError::Usage(format!(
            "source {source} has no [sources.shopify_sync] table (shop_domain and an access token): connect registers Shopify webhooks only"
        )));
    };
    if url.is_none() && !check {
        return Err(OpsError::Usage(format!(
            "--url https://<your host>/webhooks/{source} is needed (or --check to list what is registered)"
        )));
    }
    if let Some(u) = url {
        let path = format!("/webhooks/{source}");
        if !u.starts_with("https://") || !u.ends_with(&path) {
            return Err(OpsError::Usage(format!(
                "--url must be the public HTTPS address of this source, ending in {path} (Shopify delivers to HTTPS only), e.g. https://hooks.example.com{path}"
            )));
        }
    }
    let api = crate::sync::ApiClient::new().map_err(|e| OpsError::Failed(e.into()))?;
    let states = connect::connect(api_cfg, &api, url, check, dry_run)
        .await
        .map_err(|e| OpsError::Failed(e.into()))?;
    let text = if as_json {
        serde_json::to_string_pretty(&states).map_err(anyhow::Error::from)? + "\n"
    } else {
        connect::render(&states)
    };
    let missing = states.iter().filter(|s| s.status == "missing").count();
    if check && missing > 0 {
        print!("{text}");
        return Err(OpsError::Failed(anyhow::anyhow!(
            "{missing} of {} topics are not registered{}: run `stockhook-worker connect --source {source} --url URL`",
            states.len(),
            url.map(|u| format!(" at {u}")).unwrap_or_default()
        )));
    }
    Ok(text)
}

/// `export --csv`: current inventory state per item with last sale, alert state and days of
/// cover (velocity, days, stock-out date, reorder quantity; empty without a velocity). Items
/// removed from their catalog are left out unless `all` (then with removal time and reason).
pub async fn export_csv(
    config: &Config,
    since_ms: Option<i64>,
    all: bool,
) -> Result<String, OpsError> {
    let c = control(config).await?;
    let mut out = String::from("source,platform,item,sku,title,available,locations,first_seen,last_sale_at,units_sold,low_stock_armed,out_of_stock_armed,last_alert,last_alert_at,removed_at,removed_reason,velocity_per_day,days_of_cover,stockout_date,reorder_qty,location_names\n");
    let rules = RuleConfig::from_config(config);
    let now = now_ms();
    for it in c.items().await? {
        if it.removed.is_some() && !all {
            continue;
        }
        let latest = it
            .levels
            .values()
            .map(|l| l.at)
            .chain(it.last_sale_at)
            .max()
            .unwrap_or(it.first_seen_at);
        if since_ms.is_some_and(|s| latest < s) {
            continue;
        }
        let locations: Vec<String> = it
            .levels
            .iter()
            .map(|(k, l)| {
                format!(
                    "{k}={}",
                    l.available
                        .map_or("untracked".to_string(), |a| a.to_string())
                )
            })
            .collect();
        let cover = crate::cover::cover(&it, &rules, now);
        let fields = [
            it.source.clone(),
            it.platform.clone(),
            it.item.clone(),
            it.sku.clone().unwrap_or_default(),
            it.title.clone().unwrap_or_default(),
            it.total().map_or(String::new(), |a| a.to_string()),
            locations.join(";"),
            fmt_time(it.first_seen_at),
            it.last_sale_at.map(fmt_time).unwrap_or_default(),
            it.sold().to_string(),
            it.arming.low_armed.to_string(),
            it.arming.out_armed.to_string(),
            it.last_alert
                .map(|(r, _)| r.as_str().to_string())
                .unwrap_or_default(),
            it.last_alert.map(|(_, t)| fmt_time(t)).unwrap_or_default(),
            it.removed
                .as_ref()
                .map(|r| fmt_time(r.at))
                .unwrap_or_default(),
            it.removed
                .as_ref()
                .map(|r| r.reason.clone())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.velocity_per_day.to_string())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.days_of_cover.to_string())
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| fmt_time(c.stockout_date))
                .unwrap_or_default(),
            cover
                .as_ref()
                .map(|c| c.reorder_qty.to_string())
                .unwrap_or_default(),
            // What `import` reads back: the catalog's names of the item's locations.
            it.location_names
                .iter()
                .map(|(id, name)| format!("{id}={name}"))
                .collect::<Vec<_>>()
                .join(";"),
        ];
        let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        out.push_str(&row.join(","));
        out.push('\n');
    }
    Ok(out)
}

fn csv_field(s: &str) -> String {
    // Quote when needed; neutralize spreadsheet formulas (a title can start with '=').
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
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
