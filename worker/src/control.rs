//! The worker's control API: what the ops CLI asks of the worker's state (alerts, counters,
//! items, replay simulation), served on `<data_dir>/worker.sock` (mode 0600) while
//! `stockhook-worker run` holds the state database, and answered from the database directly when
//! the worker is stopped (sled allows one process per database).
//!
//! Same framing as the queue socket (length-prefixed JSON, `"v": 1`). Ops: `alerts`,
//! `alert_replay`, `alert_purge`, `counters`, `items`, `simulate`.

use crate::adapters;
use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use crate::state::NatsState;
use crate::state::{Applied, ItemState, Prepared, RuleConfig, StateError};
use crate::state::{SledState, StateBackend};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stockhook_shared::envelope::Envelope;
use stockhook_shared::queue::now_ms;
use stockhook_shared::queue::protocol::{read_frame, write_frame, WireEnvelope};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

const VERSION: u32 = 1;

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
    Alerts { filter: AlertFilter },
    AlertReplay { filter: AlertFilter, dry_run: bool },
    AlertPurge { filter: AlertFilter, dry_run: bool },
    Counters,
    Items,
    Simulate { events: Vec<WireEnvelope> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    v: u32,
    #[serde(flatten)]
    op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Response {
    ok: bool,
    #[serde(default)]
    result: serde_json::Value,
    #[serde(default)]
    error: Option<String>,
}

/// The operations, on the local database, over the socket, or on JetStream KV (where every
/// worker's state is, so no socket is needed).
pub enum Control {
    Local(Arc<SledState>, Arc<RuleConfig>),
    Remote(Mutex<UnixStream>, PathBuf),
    Nats(Arc<NatsState>, Arc<RuleConfig>),
}

impl Control {
    /// Connects to a running worker, else opens the state database directly.
    pub async fn open(data_dir: &Path, rules: RuleConfig) -> Result<Control, StateError> {
        let sock = data_dir.join("worker.sock");
        if let Ok(s) = UnixStream::connect(&sock).await {
            return Ok(Control::Remote(Mutex::new(s), sock));
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
            Control::Local(store, rules) => dispatch(store, rules, op).await,
            Control::Nats(store, rules) => dispatch(store, rules, op).await,
            Control::Remote(stream, path) => {
                let mut s = stream.lock().await;
                let err = |m: String| StateError::Storage {
                    context: format!("worker socket {}", path.display()),
                    message: m,
                };
                write_frame(&mut *s, &Request { v: VERSION, op })
                    .await
                    .map_err(|e| err(e.to_string()))?;
                read_frame::<_, Response>(&mut *s)
                    .await
                    .map_err(|e| err(e.to_string()))?
                    .ok_or_else(|| err("the worker closed the connection".into()))?
            }
        };
        if !r.ok {
            let msg = r.error.unwrap_or_default();
            if let Some(id) = msg.strip_prefix("no such alert: ") {
                return Err(StateError::NotFound(id.to_string()));
            }
            return Err(StateError::Storage {
                context: "worker".into(),
                message: msg,
            });
        }
        serde_json::from_value(r.result).map_err(|e| StateError::Storage {
            context: "worker answer".into(),
            message: e.to_string(),
        })
    }

    pub async fn alerts(&self, filter: AlertFilter) -> Result<Vec<OutboxEntry>, StateError> {
        self.call(Op::Alerts { filter }).await
    }
    /// Failed alerts back to pending, attempts reset; returns their ids.
    pub async fn alert_replay(
        &self,
        filter: AlertFilter,
        dry_run: bool,
    ) -> Result<Vec<String>, StateError> {
        self.call(Op::AlertReplay { filter, dry_run }).await
    }
    pub async fn alert_purge(
        &self,
        filter: AlertFilter,
        dry_run: bool,
    ) -> Result<Vec<String>, StateError> {
        self.call(Op::AlertPurge { filter, dry_run }).await
    }
    pub async fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        self.call(Op::Counters).await
    }
    pub async fn items(&self) -> Result<Vec<ItemState>, StateError> {
        self.call(Op::Items).await
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
            Op::Alerts { filter } => {
                let f = filter.clone();
                let mut v = store.outbox(move |e| f.keep(e)).await?;
                if let Some(l) = filter.limit {
                    v.truncate(l);
                }
                check_ids(&filter, v.iter().map(|e| e.alert.id.as_str()))?;
                Ok(to_json(&v))
            }
            Op::AlertReplay { filter, dry_run } => {
                let f = filter.clone();
                let mut v = store
                    .outbox(move |e| e.status == OutboxStatus::Failed && f.keep(e))
                    .await?;
                if let Some(l) = filter.limit {
                    v.truncate(l);
                }
                check_ids(&filter, v.iter().map(|e| e.alert.id.as_str()))?;
                let ids: Vec<String> = v.into_iter().map(|e| e.alert.id).collect();
                if !dry_run {
                    let now = now_ms();
                    store
                        .update_alerts(ids.clone(), move |e| e.replay(now), None)
                        .await?;
                }
                Ok(to_json(&ids))
            }
            Op::AlertPurge { filter, dry_run } => {
                let f = filter.clone();
                let mut v = store
                    .outbox(move |e| e.status == OutboxStatus::Failed && f.keep(e))
                    .await?;
                if let Some(l) = filter.limit {
                    v.truncate(l);
                }
                check_ids(&filter, v.iter().map(|e| e.alert.id.as_str()))?;
                let ids: Vec<String> = v.into_iter().map(|e| e.alert.id).collect();
                if !dry_run {
                    store.purge_alerts(ids.clone()).await?;
                }
                Ok(to_json(&ids))
            }
            Op::Counters => Ok(to_json(&store.counters().await?)),
            Op::Items => Ok(to_json(&store.items().await?)),
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
        Ok(result) => Response {
            ok: true,
            result,
            error: None,
        },
        Err(e) => Response {
            ok: false,
            result: serde_json::Value::Null,
            error: Some(e.to_string()),
        },
    }
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

/// Binds `<data_dir>/worker.sock` (0600, same way as the queue socket) and serves until `stop`.
/// A replay of alerts wakes the sender (`wake`), so they go out now, not at its next nap's end.
pub fn start<S: StateBackend>(
    data_dir: &Path,
    store: Arc<S>,
    rules: Arc<crate::reload::RulesSlot>,
    wake: Arc<tokio::sync::Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let path = data_dir.join("worker.sock");
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener =
        UnixListener::bind(&tmp).map_err(|e| anyhow::anyhow!("binding {}: {e}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, &path)?;
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                a = listener.accept() => if let Ok((mut s, _)) = a {
                    let store = store.clone();
                    let rules = rules.clone();
                    let wake = wake.clone();
                    tokio::spawn(async move {
                        while let Ok(Some(req)) = read_frame::<_, Request>(&mut s).await {
                            let resp = if req.v != VERSION {
                                Response { ok: false, result: serde_json::Value::Null, error: Some(format!("protocol version {} not served; this worker speaks {VERSION}", req.v)) }
                            } else {
                                let replay = matches!(req.op, Op::AlertReplay { dry_run: false, .. });
                                let resp = dispatch(&store, &rules.current(), req.op).await;
                                if replay {
                                    wake.notify_one();
                                }
                                resp
                            };
                            if write_frame(&mut s, &resp).await.is_err() {
                                break;
                            }
                        }
                    });
                },
                _ = stop.changed() => break,
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}
