//! The worker's web dashboard and JSON read API (issue 16): stock, alerts and failed events in
//! a browser, one view per client. The worker serves it because it owns the state; the
//! receiver stays minimal.
//!
//! Pages and the API read a [`view::Snapshot`] of the state taken at most once per
//! [`SNAPSHOT_MAX_AGE`] and shared by every request meanwhile, so browsing never holds the
//! state store for a page's rendering and a burst of page loads costs one read of the state.
//! Modules: [`server`] (HTTP, routing, headers), [`auth`] (users, sessions, CSRF), [`pages`]
//! (maud templates), [`api`] (`/api/v1/`), [`chart`] (SVG), [`assets`] (embedded CSS),
//! [`view`] (rows, filters, scoping).

pub mod api;
pub mod assets;
pub mod auth;
pub mod chart;
pub mod pages;
pub mod server;
pub mod view;

use crate::backend::Queue;
use crate::email::admin_links::Stores;
use crate::reload::RulesSlot;
use crate::state::StateBackend;
use anyhow::Context as _;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockhook_shared::config::Config;
use stockhook_shared::queue::now_ms;
use tokio::sync::{watch, Mutex, Notify};
use view::Snapshot;

/// A snapshot younger than this is reused.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// What every request handler shares.
pub struct Dashboard<S> {
    pub state: Arc<S>,
    pub rules: Arc<RulesSlot>,
    pub config: Config,
    pub auth: auth::Auth,
    /// Wakes the sender after a resend.
    pub wake: Arc<Notify>,
    pub stores: Stores,
    /// The configured source names, in order.
    pub sources: Vec<String>,
    /// Serving HTTPS: session cookies are `Secure`.
    pub secure: bool,
    snapshot: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    queue: Mutex<Option<Arc<Queue>>>,
}

impl<S: StateBackend> Dashboard<S> {
    pub fn new(
        config: &Config,
        state: Arc<S>,
        rules: Arc<RulesSlot>,
        wake: Arc<Notify>,
        secure: bool,
    ) -> anyhow::Result<Dashboard<S>> {
        Ok(Dashboard {
            state,
            rules,
            config: config.clone(),
            auth: auth::Auth::from_config(&config.dashboard)?,
            wake,
            stores: Stores::from_config(config),
            sources: config.sources.iter().map(|s| s.name.clone()).collect(),
            secure,
            snapshot: Mutex::new(None),
            queue: Mutex::new(None),
        })
    }

    /// The current snapshot: the cached one if young enough, else a new one (one reader at a
    /// time; the others wait for it and share it).
    pub async fn snapshot(&self) -> anyhow::Result<Arc<Snapshot>> {
        let mut slot = self.snapshot.lock().await;
        if let Some((at, s)) = slot.as_ref() {
            if at.elapsed() < SNAPSHOT_MAX_AGE {
                return Ok(s.clone());
            }
        }
        let mut items = self.state.items().await.context("reading items")?;
        items.sort_by(|a, b| (&a.source, &a.item).cmp(&(&b.source, &b.item)));
        let outbox = self
            .state
            .outbox(|_| true)
            .await
            .context("reading alerts")?;
        let counters = self.state.counters().await.context("reading counters")?;
        let snap = Arc::new(Snapshot {
            taken_at: now_ms(),
            items,
            outbox,
            counters,
            rules: self.rules.current(),
        });
        *slot = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }

    /// Forgets the snapshot (after a change the next page must show).
    pub async fn invalidate(&self) {
        *self.snapshot.lock().await = None;
    }

    /// The queue (the receiver's socket, or JetStream), connected on first use and again after
    /// an error.
    pub async fn queue(&self) -> anyhow::Result<Arc<Queue>> {
        let mut slot = self.queue.lock().await;
        if let Some(q) = slot.as_ref() {
            return Ok(q.clone());
        }
        let q = Arc::new(
            Queue::connect(&self.config)
                .await
                .context("connecting to the queue")?,
        );
        *slot = Some(q.clone());
        Ok(q)
    }

    /// Drops the queue connection after an error, so the next request connects again.
    pub async fn queue_failed(&self) {
        *self.queue.lock().await = None;
    }
}

/// Starts the dashboard when `[dashboard] listen` is set: binds, prints `dashboard=<addr>` on
/// stdout (tests read the port), and serves until `stop`.
pub async fn start<S: StateBackend>(
    config: &Config,
    state: Arc<S>,
    rules: Arc<RulesSlot>,
    wake: Arc<Notify>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let listen = config.dashboard.listen.trim();
    if listen.is_empty() {
        return Ok(None);
    }
    let tls = server::tls_acceptor(config)?;
    let dash = Arc::new(Dashboard::new(config, state, rules, wake, tls.is_some())?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("dashboard.listen = {listen}: cannot bind"))?;
    let addr = listener
        .local_addr()
        .context("dashboard listener address")?;
    println!("dashboard={addr}");
    tracing::info!(%addr, tls = tls.is_some(), "dashboard listening");
    Ok(Some(tokio::spawn(server::serve(listener, dash, tls, stop))))
}
