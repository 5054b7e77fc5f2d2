//! The worker's control API: what the ops CLI asks of the worker's state (alerts, counters,
//! items, replay simulation), served on `<data_dir>/worker.sock` (mode 0600) while
//! `stockhook-worker run` holds the state database, and answered from the database directly when
//! the worker is stopped (sled allows one process per database).
//!
//! Transport, versioning and the 0600 bind are [`stockhook_shared::rpc`], as for the queue
//! socket. Ops: `alerts`, `alert_replay` and `alert_purge` ([`Control::alert_change`]),
//! `counters`, `items`, `simulate`, `import` (a catalog batch through the rules), `preview`
//! (the scheduled pass in dry run at a given time), `sync` (a catalog sync run by the worker,
//! which holds the API credentials).

use crate::adapters;
use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use crate::catalog::{CatalogBatch, Origin};
use crate::state::NatsState;
use crate::state::{Applied, ItemState, Prepared, RuleConfig, StateError};
use crate::state::{SledState, StateBackend};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use stockhook_shared::envelope::Envelope;
use stockhook_shared::queue::now_ms;
use stockhook_shared::queue::protocol::WireEnvelope;
use stockhook_shared::rpc::{self, Response, RpcClient, RpcError};
use tokio::sync::watch;

/// Which alerts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AlertFilter {
    pub ids: Vec<String>,
    pub status: Option<OutboxStatus>,
    pub source: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<usize>,
}

impl AlertFilter {
    fn keep(&self, e: &OutboxEntry) -> bool {
        (self.ids.is_empty() || self.ids.contains(&e.alert.id))
            && self.status.is_none_or(|s| s == e.status)
            && self.source.as_ref().is_none_or(|s| *s == e.alert.source)
            && self.since_ms.is_none_or(|t| e.alert.created_at >= t)
            && self.until_ms.is_none_or(|t| e.alert.created_at < t)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op {
    Alerts {
        filter: AlertFilter,
    },
    AlertReplay {
        filter: AlertFilter,
        dry_run: bool,
    },
    AlertPurge {
        filter: AlertFilter,
        dry_run: bool,
    },
    Counters,
    Items,
    /// A source's items by SKU (SKU -> item id), for matching an import's rows.
    SkuIndex {
        source: String,
    },
    Simulate {
        events: Vec<WireEnvelope>,
    },
    Import {
        batch: Box<CatalogBatch>,
        origin: Origin,
        dry_run: bool,
    },
    Preview {
        at: i64,
    },
    Sync {
        source: Option<String>,
        dry_run: bool,
    },
}

/// What the running worker does for the `sync` op: syncs the named source (or all) and answers
/// with the reports, or an error text.
pub type SyncHook = Arc<
    dyn Fn(
            Option<String>,
            bool,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<serde_json::Value, String>> + Send>,
        > + Send
        + Sync,
>;

/// What applying an imported batch did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportOutcome {
    /// Synthetic events of the batch.
    pub events: usize,
    /// Of them, applied before (the same file imported again): nothing changed for them.
    pub already: usize,
    /// The alerts it raised (or would raise, in a dry run).
    pub alerts: Vec<Alert>,
}

/// How long an import's alerts wait beyond the digest window, so the sender, woken by
/// another event midway, does not send the first chunks' alerts apart from the rest: the
/// low-stock items of one import go out as one email.
pub const IMPORT_HOLD_MS: i64 = 3_000;

/// The operations, on the local database, over the socket, or on JetStream KV (where every
/// worker's state is, so no socket is needed).
pub enum Control {
    Local(Arc<SledState>, Arc<RuleConfig>),
    Remote(RpcClient),
    Nats(Arc<NatsState>, Arc<RuleConfig>),
}

impl Control {
    /// Connects to a running worker, else opens the state database directly.
    pub async fn open(data_dir: &Path, rules: RuleConfig) -> Result<Control, StateError> {
        let sock = data_dir.join("worker.sock");
        if let Ok(c) = RpcClient::connect(&sock).await {
            return Ok(Control::Remote(c));
        }
        let store = SledState::open(&data_dir.join("state"))?;
        Ok(Control::Local(Arc::new(store), Arc::new(rules)))
    }

    /// [`Control::open`] for the configured backend: with `nats`, the KV buckets directly.
    pub async fn open_for(
        config: &stockhook_shared::config::Config,
        rules: RuleConfig,
    ) -> Result<Control, StateError> {
        if config.backend() == stockhook_shared::config::Backend::Nats {
            let st = NatsState::connect(config).await?;
            return Ok(Control::Nats(Arc::new(st), Arc::new(rules)));
        }
        Control::open(&config.data_dir, rules).await
    }

    async fn call<T: for<'de> Deserialize<'de>>(&self, op: Op) -> Result<T, StateError> {
        let r = match self {
            Control::Local(store, rules) => dispatch(store, rules, op).await.into_result(),
            Control::Nats(store, rules) => dispatch(store, rules, op).await.into_result(),
            Control::Remote(client) => client.call(op).await,
        };
        r.map_err(|e| match e {
            RpcError::Refused {
                not_found: Some(id),
                ..
            } => StateError::NotFound(id),
            RpcError::Refused { message, .. } => StateError::Storage {
                context: "worker".into(),
                message,
            },
            RpcError::BadAnswer(message) => StateError::Storage {
                context: "worker answer".into(),
                message,
            },
            e => StateError::Storage {
                context: format!("worker socket {}", sock_path(self)),
                message: match e {
                    RpcError::Closed => "the worker closed the connection".into(),
                    e => e.to_string(),
                },
            },
        })
    }

    pub async fn alerts(&self, filter: AlertFilter) -> Result<Vec<OutboxEntry>, StateError> {
        self.call(Op::Alerts { filter }).await
    }
    /// Failed alerts back to pending with attempts reset (`replay`), or deleted (purge);
    /// returns their ids.
    pub async fn alert_change(
        &self,
        filter: AlertFilter,
        replay: bool,
        dry_run: bool,
    ) -> Result<Vec<String>, StateError> {
        self.call(if replay {
            Op::AlertReplay { filter, dry_run }
        } else {
            Op::AlertPurge { filter, dry_run }
        })
        .await
    }
    pub async fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        self.call(Op::Counters).await
    }
    pub async fn items(&self) -> Result<Vec<ItemState>, StateError> {
        self.call(Op::Items).await
    }
    /// `source`'s items by SKU (SKU -> item id): what an import matches its rows with, without
    /// carrying every item's record through the call.
    pub async fn sku_index(&self, source: &str) -> Result<BTreeMap<String, String>, StateError> {
        self.call(Op::SkuIndex {
            source: source.to_string(),
        })
        .await
    }
    /// Applies a catalog batch (an import) through the rules; `dry_run` writes nothing.
    pub async fn import(
        &self,
        batch: CatalogBatch,
        origin: Origin,
        dry_run: bool,
    ) -> Result<ImportOutcome, StateError> {
        self.call(Op::Import {
            batch: Box::new(batch),
            origin,
            dry_run,
        })
        .await
    }
    /// The time-based alerts the scheduled pass would raise at `at` (nothing is written).
    pub async fn preview(&self, at: i64) -> Result<Vec<Alert>, StateError> {
        self.call(Op::Preview { at }).await
    }
    /// Asks the running worker to sync (only over its socket; otherwise the caller syncs on
    /// the state it opened itself, see [`Control::state`]).
    pub async fn sync(
        &self,
        source: Option<String>,
        dry_run: bool,
    ) -> Result<Vec<crate::sync::runner::SyncReport>, StateError> {
        self.call(Op::Sync { source, dry_run }).await
    }
    /// The alerts these events would raise if processed now (nothing is written), with the
    /// error for any that cannot be read.
    pub async fn simulate(&self, events: &[Envelope]) -> Result<Vec<Simulated>, StateError> {
        self.call(Op::Simulate {
            events: events.iter().map(WireEnvelope::from).collect(),
        })
        .await
    }
}

/// One event's dry-run outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Simulated {
    pub id: String,
    pub error: Option<String>,
    pub already_processed: bool,
    pub alerts: Vec<Alert>,
}

async fn dispatch<S: StateBackend>(store: &Arc<S>, rules: &Arc<RuleConfig>, op: Op) -> Response {
    let r = async move {
        let to_json = |v: &dyn erased::Ser| v.to_value();
        match op {
            Op::Alerts { filter } => Ok(to_json(&matching(store, &filter, false).await?)),
            Op::AlertReplay { filter, dry_run } => {
                let ids = failed_ids(store, &filter).await?;
                if !dry_run {
                    let now = now_ms();
                    store
                        .update_alerts(ids.clone(), move |e| e.replay(now), vec![])
                        .await?;
                }
                Ok(to_json(&ids))
            }
            Op::AlertPurge { filter, dry_run } => {
                let ids = failed_ids(store, &filter).await?;
                if !dry_run {
                    store.purge_alerts(ids.clone()).await?;
                }
                Ok(to_json(&ids))
            }
            Op::Import {
                batch,
                origin,
                dry_run,
            } => {
                let mut held = (**rules).clone();
                held.digest_window_ms += IMPORT_HOLD_MS;
                let applied = crate::catalog::apply(
                    &**store,
                    Arc::new(held),
                    &batch,
                    &origin,
                    now_ms(),
                    dry_run,
                )
                .await?;
                let mut out = ImportOutcome {
                    events: applied.len(),
                    ..ImportOutcome::default()
                };
                for a in applied {
                    match a {
                        Applied::Done { alerts } => out.alerts.extend(alerts),
                        Applied::AlreadyProcessed => out.already += 1,
                    }
                }
                Ok(to_json(&out))
            }
            Op::Preview { at } => Ok(to_json(&store.run_no_sales(rules.clone(), at, true).await?)),
            Op::Sync { .. } => Err(StateError::Storage {
                context: "sync".into(),
                message: "no running worker to sync through".into(),
            }),
            Op::Counters => Ok(to_json(&store.counters().await?)),
            Op::Items => Ok(to_json(&store.items().await?)),
            Op::SkuIndex { source } => {
                let index: BTreeMap<String, String> = store
                    .items()
                    .await?
                    .into_iter()
                    .filter(|st| st.source == source)
                    .filter_map(|st| st.sku.map(|sku| (sku, st.item)))
                    .collect();
                Ok(to_json(&index))
            }
            Op::Simulate { events } => {
                let mut out = Vec::new();
                let mut envs = Vec::new();
                for w in events {
                    let id = w.id;
                    match w.into_envelope() {
                        Ok(e) => envs.push(e),
                        Err(e) => out.push(Simulated {
                            id: id.to_string(),
                            error: Some(e),
                            already_processed: false,
                            alerts: vec![],
                        }),
                    }
                }
                out.extend(simulate(store.as_ref(), rules, &envs).await?);
                Ok(to_json(&out))
            }
        }
    };
    let r: Result<serde_json::Value, StateError> = r.await;
    match r {
        Ok(result) => Response::ok(result),
        Err(StateError::NotFound(id)) => {
            Response::err(StateError::NotFound(id.clone()).to_string(), Some(id))
        }
        Err(e) => Response::err(e.to_string(), None),
    }
}

/// The socket a remote [`Control`] talks to, for error messages.
fn sock_path(c: &Control) -> String {
    match c {
        Control::Remote(client) => client.path().display().to_string(),
        _ => "(none: local)".into(),
    }
}

/// The outbox entries `filter` selects (only failed ones when `failed_only`), at most its
/// `limit`; an id it names that is not among them is `NotFound`.
async fn matching<S: StateBackend>(
    store: &Arc<S>,
    filter: &AlertFilter,
    failed_only: bool,
) -> Result<Vec<OutboxEntry>, StateError> {
    let f = filter.clone();
    let mut v = store
        .outbox(move |e| (!failed_only || e.status == OutboxStatus::Failed) && f.keep(e))
        .await?;
    if let Some(l) = filter.limit {
        v.truncate(l);
    }
    check_ids(filter, v.iter().map(|e| e.alert.id.as_str()))?;
    Ok(v)
}

/// The ids of the failed alerts `filter` selects (what replay and purge act on).
async fn failed_ids<S: StateBackend>(
    store: &Arc<S>,
    filter: &AlertFilter,
) -> Result<Vec<String>, StateError> {
    Ok(matching(store, filter, true)
        .await?
        .into_iter()
        .map(|e| e.alert.id)
        .collect())
}

impl Simulated {
    /// The outcome in words (`failed replay --dry-run`, the dashboard's preview).
    pub fn summary(&self) -> String {
        match (&self.error, self.already_processed, self.alerts.len()) {
            (Some(e), _, _) => format!("would fail again: {e}"),
            (None, true, _) => "already processed: would change nothing".into(),
            (None, false, 0) => "would be processed, no alert".into(),
            (None, false, _) => format!(
                "would raise: {}",
                self.alerts
                    .iter()
                    .map(|a| format!("{} for {}", a.rule.title(), a.display_name()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The alerts these events would raise if processed now, writing nothing (the replay dry run
/// of `failed replay --dry-run` and the dashboard's preview).
pub async fn simulate<S: StateBackend>(
    store: &S,
    rules: &Arc<RuleConfig>,
    envs: &[Envelope],
) -> Result<Vec<Simulated>, StateError> {
    let mut out = Vec::new();
    let mut prepared = Vec::new();
    for env in envs {
        match adapters::normalize(env) {
            Ok(normalized) => prepared.push(Prepared::new(env, normalized)),
            Err(e) => out.push(Simulated {
                id: env.id.to_string(),
                error: Some(e.to_string()),
                already_processed: false,
                alerts: vec![],
            }),
        }
    }
    let ids: Vec<String> = prepared.iter().map(|p| p.id.to_string()).collect();
    let applied = store
        .apply_batch(prepared, rules.clone(), now_ms(), true)
        .await?;
    for (id, a) in ids.into_iter().zip(applied) {
        out.push(match a {
            Applied::Done { alerts } => Simulated {
                id,
                error: None,
                already_processed: false,
                alerts,
            },
            Applied::AlreadyProcessed => Simulated {
                id,
                error: None,
                already_processed: true,
                alerts: vec![],
            },
        });
    }
    Ok(out)
}

fn check_ids<'a>(
    filter: &AlertFilter,
    found: impl Iterator<Item = &'a str> + Clone,
) -> Result<(), StateError> {
    for id in &filter.ids {
        if !found.clone().any(|f| f == id) {
            return Err(StateError::NotFound(id.clone()));
        }
    }
    Ok(())
}

/// Type-erased serialization, so the dispatch arms can share one `to_json`.
mod erased {
    pub trait Ser {
        fn to_value(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_value(&self) -> serde_json::Value {
            serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
        }
    }
}

/// Binds `<data_dir>/worker.sock` (0600, [`rpc::bind_private`]) and serves until `stop`.
/// A replay of alerts wakes the sender (`wake`), so they go out now, not at its next nap's end.
pub fn start<S: StateBackend>(
    data_dir: &Path,
    store: Arc<S>,
    rules: Arc<crate::reload::RulesSlot>,
    wake: Arc<tokio::sync::Notify>,
    sync: Option<SyncHook>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join("worker.sock");
    let listener = rpc::bind_private(&path)?;
    let service = Arc::new(WorkerService {
        store,
        rules,
        wake,
        sync,
    });
    Ok(tokio::spawn(async move {
        rpc::serve(listener, service, stop).await;
        let _ = std::fs::remove_file(&path);
    }))
}

/// The worker socket's operations on the running worker's state.
struct WorkerService<S> {
    store: Arc<S>,
    rules: Arc<crate::reload::RulesSlot>,
    wake: Arc<tokio::sync::Notify>,
    /// Runs a catalog sync in the worker (which holds the API credentials).
    sync: Option<SyncHook>,
}

impl<S: StateBackend> rpc::Service for WorkerService<S> {
    type Op = Op;
    const NAME: &'static str = "worker";

    async fn call(&self, op: Op) -> Response {
        if let (Op::Sync { source, dry_run }, Some(hook)) = (&op, &self.sync) {
            let r = hook(source.clone(), *dry_run).await;
            self.wake.notify_one();
            return match r {
                Ok(result) => Response::ok(result),
                Err(e) => Response::err(e, None),
            };
        }
        let replay = matches!(
            op,
            Op::AlertReplay { dry_run: false, .. } | Op::Import { dry_run: false, .. }
        );
        let resp = dispatch(&self.store, &self.rules.current(), op).await;
        if replay {
            self.wake.notify_one();
        }
        resp
    }
}
