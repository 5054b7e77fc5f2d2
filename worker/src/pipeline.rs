//! `stockhook-worker run`: lease a batch from the receiver's queue, normalize each event, apply the
//! batch to the state store in one transaction (processed ids, state, outbox), sync, and only then
//! ack. Three tasks, one job each: this drain loop, the [`sender`] (outbox -> email) and the
//! no-sales schedule. SIGTERM/SIGINT: the current batch is finished and acked, the sender finishes
//! the email it is on, and the process exits 0.
//!
//! A permanent failure (not JSON, a required field missing) dead-letters the event at once with
//! the adapter's error; a state-store failure fails the batch transiently so it is retried. Logs
//! name event ids, sources, topics and errors, never bodies.
//!
//! [`sender`]: crate::sender

use crate::adapters;
use crate::backend::Queue;
use crate::metrics;
use crate::plausible;
use crate::reload::RulesSlot;
use crate::retry::Backoff;
use crate::state::NatsState;
use crate::state::{counters, Applied, Prepared, RuleConfig};
use crate::state::{SledState, StateBackend};
use anyhow::Context as _;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::{Backend, Config, Platform};
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::{now_ms, Failure, Leased, QueueError, QueueOps};
use stockhook_shared::{lifecycle, sdnotify};
use tokio::sync::{watch, Notify};

/// How long one lease call waits for events; also the most a shutdown waits for it.
const LEASE_WAIT_MS: u64 = 1000;

/// Runs the worker until a signal. Errors are fatal start-up problems. The one place that
/// picks where the state lives (`[queue] backend`): everything below is generic over it.
/// `config_path` is the file `config` came from, read again on SIGHUP.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    if config.backend() == Backend::Nats {
        // Still used for the mail files and the control socket.
        stockhook_shared::durable::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data_dir {}", config.data_dir.display()))?;
        let state = NatsState::connect(&config)
            .await
            .context("queue.backend = \"nats\": opening the worker state in JetStream KV")?;
        return run_with(config, config_path, Arc::new(state)).await;
    }
    let state = SledState::open(&config.data_dir.join("state"))?;
    run_with(config, config_path, Arc::new(state)).await
}

/// [`run`] on a given state backend.
pub async fn run_with<S: StateBackend>(
    config: Config,
    config_path: Option<PathBuf>,
    state: Arc<S>,
) -> anyhow::Result<()> {
    let mailer = crate::email::Mailer::from_config(&config.email, &config.data_dir)
        .map_err(|e| anyhow::anyhow!("email config: {e}"))?
        .with_stores(crate::email::Stores::from_config(&config));
    let channels = crate::channels::Channels::from_config(&config, mailer)
        .map_err(|e| anyhow::anyhow!("alert channels: {e}"))?;
    let rules = Arc::new(RulesSlot::new(RuleConfig::from_config(&config)));
    // Before READY=1: from then on a SIGHUP reloads instead of ending the process.
    let hup = lifecycle::reload_signals().context("listening for SIGHUP (config reload)")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    // The config as last (re)loaded, for what follows a SIGHUP beyond the rules (the sync
    // schedule and `sync` on demand).
    let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));

    let control = crate::control::start(
        &config.data_dir,
        state.clone(),
        rules.clone(),
        wake.clone(),
        Some(sync_hook(&config_rx, &state, &rules)),
        stop_rx.clone(),
    )
    .context("starting the worker control socket")?;
    let sender = tokio::spawn(crate::sender::run(
        state.clone(),
        channels,
        crate::sender::SendPolicy::from_config(&config),
        wake.clone(),
        stop_rx.clone(),
    ));
    let schedule = tokio::spawn(no_sales_schedule(
        state.clone(),
        rules.clone(),
        wake.clone(),
        config.alerts.no_sales_check.get(),
        stop_rx.clone(),
    ));
    let sync = tokio::spawn(crate::sync::runner::schedule(
        config_rx.clone(),
        state.clone(),
        rules.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    let metrics_task = match &config.worker.metrics_listen {
        Some(addr) => Some(metrics::serve(addr, stop_rx.clone()).await?),
        None => None,
    };
    let dashboard = crate::dashboard::start(
        &config,
        state.clone(),
        rules.clone(),
        wake.clone(),
        stop_rx.clone(),
    )
    .await
    .context("starting the dashboard ([dashboard] listen)")?;
    let watchdog = tokio::spawn(lifecycle::watchdog_pings(stop_rx.clone()));
    let reload = tokio::spawn(crate::reload::on_sighup(
        hup,
        rules.clone(),
        config_path,
        config.clone(),
        config_tx,
        stop_rx.clone(),
    ));
    let _ = sdnotify::ready();
    println!("ready state={}", state.describe());
    tracing::info!(state = %state.describe(), "worker ready");

    let signal = tokio::spawn(async move {
        lifecycle::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    drain(&config, &state, &rules, &wake, stop_rx.clone()).await;
    let _ = sdnotify::stopping();
    tracing::info!("shutting down: last batch acked, finishing the email in progress");
    let _ = sender.await;
    let _ = schedule.await;
    let _ = sync.await;
    let _ = control.await;
    let _ = reload.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    if let Some(t) = dashboard {
        let _ = t.await;
    }
    watchdog.abort();
    signal.abort();
    state.sync().await?;
    tracing::info!("worker stopped cleanly");
    Ok(())
}

/// `stockhook-worker sync` while this worker runs: the sync runs here, on this state.
fn sync_hook<S: StateBackend>(
    configs: &watch::Receiver<Arc<Config>>,
    state: &Arc<S>,
    rules: &Arc<RulesSlot>,
) -> crate::control::SyncHook {
    let configs = configs.clone();
    let state = state.clone();
    let rules = rules.clone();
    Arc::new(move |source: Option<String>, dry_run: bool| {
        // The config as last reloaded: a source added by a SIGHUP can be synced at once.
        let config = configs.borrow().clone();
        let (state, rules) = (state.clone(), rules.clone());
        Box::pin(async move {
            let reports = crate::sync::runner::sync_all(
                &config,
                &*state,
                rules.current(),
                source.as_deref(),
                dry_run,
            )
            .await?;
            serde_json::to_value(reports).map_err(|e| e.to_string())
        })
    })
}

/// The drain loop: connect (with backoff), lease, process, ack, until stopped.
///
/// From the receiver's socket, the next batch is leased while this one is processed: the
/// receiver reads and leases it on its own core while this process normalizes and writes state,
/// instead of each waiting for the other (docs/PERFORMANCE.md section 5). That lease does not
/// wait for events (a long poll would hold the connection, and so this batch's ack, for up to
/// [`LEASE_WAIT_MS`]); when nothing was ready, the next turn long-polls as before. A batch leased
/// ahead is processed before the loop stops; one lost with its connection is redelivered when its
/// lease runs out, as any leased batch is. Not on JetStream ([`Queue::leases_ahead`]): there the
/// next batch is left to the workers waiting for one.
async fn drain<S: StateBackend>(
    config: &Config,
    state: &Arc<S>,
    rules: &RulesSlot,
    wake: &Notify,
    stop: watch::Receiver<bool>,
) {
    let lease_ms = config.queue.lease_timeout.get().as_millis() as u64;
    let batch = config.worker.batch_size.max(1);
    let mut backoff = Backoff::reconnect();
    let mut client: Option<Queue> = None;
    let mut warned = false;
    let mut ahead: Vec<Leased> = Vec::new();
    while !*stop.borrow() || !ahead.is_empty() {
        let c = match &client {
            Some(c) => c,
            None => match Queue::connect(config).await {
                Ok(c) => {
                    if warned {
                        tracing::info!(queue = %c.describe(), "queue reachable again");
                    }
                    warned = false;
                    // Reset only by a lease that works: a queue that accepts connections and
                    // refuses leases must keep backing off.
                    client.insert(c)
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "queue not reachable; retrying with backoff");
                        warned = true;
                    }
                    let mut stop = stop.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => {}
                    }
                    continue;
                }
            },
        };
        let leased = if !ahead.is_empty() {
            Ok(std::mem::take(&mut ahead))
        } else {
            c.lease(batch, LEASE_WAIT_MS, lease_ms).await
        };
        let leased = match leased {
            Ok(l) => {
                backoff.reset();
                l
            }
            Err(e) => {
                // Connecting may well work again at once while leasing keeps failing (a queue
                // that refuses every lease): wait, longer each time, instead of spinning.
                let delay = backoff.next_delay();
                metrics::LEASE_FAILURES.inc(&[]);
                tracing::warn!(
                    error = %e,
                    retry_in_ms = delay.as_millis() as u64,
                    "lease failed; reconnecting after a pause"
                );
                client = None;
                let mut stop = stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        if leased.is_empty() {
            continue;
        }
        let mut leased = leased;
        for l in &mut leased {
            read_as_configured(config, &mut l.envelope);
        }
        let lease_ahead = async {
            if *stop.borrow() || !c.leases_ahead() {
                return Ok(Vec::new());
            }
            c.lease(batch, 0, lease_ms).await
        };
        let current = rules.current();
        let (done, next) = tokio::join!(process_batch(c, state, &current, leased), lease_ahead);
        match next {
            Ok(next) => ahead = next,
            // The next turn leases again, and backs off if that fails too.
            Err(e) => tracing::debug!(error = %e, "leasing the next batch ahead failed"),
        }
        if let Err(e) = done {
            tracing::warn!(error = %e, "queue call failed mid-batch; unacked events will be redelivered");
            client = None;
            ahead.clear();
        }
        wake.notify_one();
    }
}

/// Sets the event's platform to its source's platform in the current config. The receiver records
/// the platform with each event when it accepts it; an operator who then fixes a source's
/// `platform` (and replays what the wrong one dead-lettered) means the current one. An event of a
/// source no longer configured keeps the platform it was accepted with.
pub fn read_as_configured(config: &Config, env: &mut stockhook_shared::envelope::Envelope) {
    if let Some(s) = config.sources.iter().find(|s| s.name == env.source) {
        env.platform = s.platform;
    }
}

/// Normalizes, applies, syncs, then acks. Returns a queue error only (state errors become
/// transient failures of the batch's events).
pub async fn process_batch<S: StateBackend>(
    q: &impl QueueOps,
    state: &Arc<S>,
    rules: &Arc<RuleConfig>,
    leased: Vec<Leased>,
) -> Result<(), QueueError> {
    if let Some(oldest) = leased.iter().map(|l| l.envelope.received_at_ms).min() {
        metrics::record_lag(oldest, now_ms());
    }
    let mut prepared = Vec::with_capacity(leased.len());
    let mut permanent: Vec<(EventId, String)> = Vec::new();
    // eBay account deletions: (index in `prepared`, source, user id, notification id).
    let mut deletions: Vec<(usize, String, String, Option<String>)> = Vec::new();
    for l in &leased {
        let env = &l.envelope;
        match adapters::normalize(env) {
            Ok(normalized) => {
                if env.platform == Platform::Ebay {
                    if let Some(user) = adapters::ebay_deleted_user(env) {
                        deletions.push((
                            prepared.len(),
                            env.source.clone(),
                            user,
                            adapters::payload_dedup_key(env),
                        ));
                    }
                }
                prepared.push(Prepared::new(env, normalized))
            }
            Err(e) => {
                metrics::EVENTS.inc(&[&env.source, "dead_lettered"]);
                tracing::warn!(event_id = %env.id, source = %env.source, topic = env.topic().unwrap_or(""), error = %e, "event dead-lettered: cannot be read");
                permanent.push((env.id, e.to_string()));
            }
        }
    }
    for (id, error) in permanent {
        q.fail(id, Failure::Permanent { error }).await?;
    }
    if prepared.is_empty() {
        return Ok(());
    }
    let ids: Vec<EventId> = prepared.iter().map(|p| p.id).collect();
    let refusals = refusals(&prepared, rules);
    let sources: Vec<String> = prepared.iter().map(|p| p.source.clone()).collect();
    let applied = state
        .apply_batch(prepared, rules.clone(), now_ms(), false)
        .await;
    match applied {
        Ok(results) => {
            for (source, a) in sources.iter().zip(&results) {
                match a {
                    Applied::Done { alerts } => {
                        metrics::EVENTS.inc(&[source, "applied"]);
                        for alert in alerts {
                            metrics::ALERTS.inc(&[alert.rule.as_str(), "created"]);
                        }
                    }
                    Applied::AlreadyProcessed => {
                        metrics::EVENTS.inc(&[source, "already_processed"])
                    }
                }
            }
            let alerts: usize = results
                .iter()
                .map(|a| match a {
                    Applied::Done { alerts } => alerts.len(),
                    Applied::AlreadyProcessed => 0,
                })
                .sum();
            let again = results
                .iter()
                .filter(|a| matches!(a, Applied::AlreadyProcessed))
                .count();
            tracing::debug!(
                events = ids.len(),
                alerts,
                already_processed = again,
                "batch applied"
            );
            let (done, refused): (Vec<EventId>, Vec<EventId>) =
                ids.into_iter().partition(|id| !refusals.contains_key(id));
            q.ack(done).await?;
            for id in refused {
                if let Some(why) = refusals.get(&id) {
                    q.fail(id, Failure::Permanent { error: why.clone() })
                        .await?;
                }
            }
            for (i, source, user, notification) in deletions {
                // eBay re-sends a notification until it is acknowledged: a copy whose
                // notificationId was already applied is not applied or counted again, but its
                // retained copy (it names the user) is still purged.
                let first = matches!(results.get(i), Some(Applied::Done { .. }));
                purge_ebay_user(q, state, &source, &user, notification.as_deref(), first).await?;
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, events = ids.len(), "state store failed; events will be retried");
            let retry_at = now_ms() + 5_000;
            for source in &sources {
                metrics::EVENTS.inc(&[source, "retried"]);
            }
            for id in ids {
                q.fail(
                    id,
                    Failure::Transient {
                        error: e.to_string(),
                        retry_at_ms: retry_at,
                    },
                )
                .await?;
            }
            Ok(())
        }
    }
}

/// The events with facts refused as implausible, each with its dead-letter error (the rest of
/// the event is applied; `failed list` shows the error, `failed show --payload` the original;
/// `failed replay` after the sender or the limit is fixed applies the refused facts only).
/// Logs the events whose time was clamped (once per source per hour).
fn refusals(prepared: &[Prepared], rules: &RuleConfig) -> HashMap<EventId, String> {
    let now = now_ms();
    let mut out = HashMap::new();
    for p in prepared {
        let checked = plausible::check(&p.normalized.facts, p.accepted_at, &rules.events);
        if let Some(ahead) = checked.future_by_ms {
            plausible::log_future(&p.source, ahead, now);
        }
        if !checked.refused.is_empty() {
            tracing::warn!(event_id = %p.id, source = %p.source, refused = checked.refused.len(), "facts refused as implausible; the rest applied; event dead-lettered");
            out.insert(
                p.id,
                format!(
                    "{} of {} facts refused, the others applied: {}",
                    checked.refused.len(),
                    p.normalized.facts.len(),
                    checked
                        .refused
                        .iter()
                        .map(|(_, why)| why.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            );
        }
    }
    out
}

/// eBay's MARKETPLACE_ACCOUNT_DELETION: every retained event of this source that names the user
/// (the deletion notice included, now acked) is deleted from the queue. The worker's state holds
/// item ids, SKUs and titles only, never eBay user data, so there is nothing to delete there.
/// Counted and logged once per notificationId (`first`); the log line names the notification,
/// never the user: an eBay user id is personal data.
async fn purge_ebay_user<S: StateBackend>(
    q: &impl QueueOps,
    state: &Arc<S>,
    source: &str,
    user: &str,
    notification: Option<&str>,
    first: bool,
) -> Result<(), QueueError> {
    let n = q
        .purge_matching(source.to_string(), user.to_string())
        .await?;
    let notification_id = notification.unwrap_or("");
    if !first {
        tracing::debug!(
            source,
            notification_id,
            events_removed = n,
            "eBay account deletion re-sent: already applied"
        );
        return Ok(());
    }
    if let Err(e) = state
        .update_alerts(
            vec![],
            |_| {},
            vec![(counters::EBAY_ACCOUNT_DELETIONS.to_string(), 1)],
        )
        .await
    {
        tracing::warn!(error = %e, "could not count the eBay account deletion");
    }
    tracing::info!(
        source,
        notification_id,
        events_removed = n,
        "eBay account deletion applied"
    );
    Ok(())
}

/// Evaluates the no-sales rule every `every` (first run one interval after start), and forgets
/// what is older than 30 days.
async fn no_sales_schedule<S: StateBackend>(
    state: Arc<S>,
    rules: Arc<RulesSlot>,
    wake: Arc<Notify>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let every = every.max(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        // Processed marks and sent alerts older than this can no longer recur: an acked event
        // is never redelivered, and a dead letter was never marked.
        const KEEP_MS: i64 = 30 * 86_400_000;
        match state.housekeeping(now_ms() - KEEP_MS).await {
            Ok(n) if n > 0 => tracing::info!(
                records = n,
                "forgot processed marks and sent alerts older than 30 days"
            ),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; next run will retry"),
            _ => {}
        }
        match state.run_no_sales(rules.current(), now_ms(), false).await {
            Ok(alerts) if !alerts.is_empty() => {
                tracing::info!(alerts = alerts.len(), "no-sales alerts raised");
                wake.notify_one();
            }
            Err(e) => {
                tracing::warn!(error = %e, "no-sales evaluation failed; next run will retry")
            }
            _ => {}
        }
    }
}
