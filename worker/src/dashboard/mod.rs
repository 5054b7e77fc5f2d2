//! The worker's web dashboard and JSON read API (issue 16): stock, alerts and failed events in
//! a browser, one view per client. The worker serves it because it owns the state; the
//! receiver stays minimal.
//!
//! Pages and the API read a [`view::Snapshot`] of the state taken at most once per
//! [`SNAPSHOT_MAX_AGE`] (and at most 1/[`SNAPSHOT_COST_FACTOR`] of the time) and shared by
//! every request meanwhile, so browsing never holds the
//! state store for a page's rendering and a burst of page loads costs one read of the state.
//! That read is incremental: the dashboard keeps its copy of every item and reads only those
//! changed since the last snapshot ([`StateBackend::item_changes`]); the records read are
//! decoded here, at the dashboard's priority, not where the state is read.
//! Pages are served and snapshots taken on a runtime of their own in the idle scheduling class
//! (`background`), so page loads only take CPU time event processing leaves.
//! Modules: [`server`] (HTTP, routing, headers), [`auth`] (users, sessions, CSRF), [`pages`]
//! (maud templates), [`api`] (`/api/v1/`), [`alerts`] (the alerts shown, read bounded),
//! [`chart`] (SVG), [`assets`] (embedded CSS), [`view`] (rows, filters, scoping).

pub mod alerts;
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
use crate::state::backend::{ItemChanges, ItemsCursor};
use crate::state::{ItemState, StateBackend};
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockhook_shared::config::Config;
use stockhook_shared::queue::now_ms;
use tokio::sync::{watch, Mutex, Notify};
use view::Snapshot;

/// A snapshot younger than this is reused as it is.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(1);

/// A snapshot is also reused while younger than this many times what taking it cost, so that
/// however hard the pages are loaded, snapshots take at most 1/5 of one core's time away from
/// event processing (50,000 items cost ~0.25 s to read: one every ~1.25 s).
pub const SNAPSHOT_COST_FACTOR: u32 = 5;

/// A snapshot older than this is not shown while a new one is taken: the page waits for it.
pub const SNAPSHOT_STALE_LIMIT: Duration = Duration::from_secs(30);

/// The dashboard's own copy of every item, kept between snapshots so that a snapshot reads
/// only the items changed since the last one ([`StateBackend::item_changes`]).
#[derive(Default)]
struct ItemCopy {
    /// Where the last read left off; `None`: the next read reads every item.
    cursor: Option<ItemsCursor>,
    /// By (source, item): the snapshot's order.
    items: BTreeMap<(String, String), Arc<ItemState>>,
}

impl ItemCopy {
    fn apply(&mut self, changes: ItemChanges) {
        let entry = |st: ItemState| ((st.source.clone(), st.item.clone()), Arc::new(st));
        match changes {
            ItemChanges::All(items) => self.items = items.into_iter().map(entry).collect(),
            ItemChanges::Changed { items, gone } => {
                for key in gone {
                    self.items.remove(&key);
                }
                self.items.extend(items.into_iter().map(entry));
            }
        }
    }
}

/// Reads everything the pages show from the state, once: the items changed since the last
/// snapshot (`copy` keeps the rest), the open alerts (not the sent ones: [`alerts`] reads
/// those a page at a time) and the counters. Runs on [`background`], never on the runtime that
/// processes events.
async fn take_snapshot<S: StateBackend>(
    state: Arc<S>,
    rules: Arc<RulesSlot>,
    copy: Arc<Mutex<ItemCopy>>,
) -> anyhow::Result<Arc<Snapshot>> {
    let build = async move {
        let open = state.open_alerts().await.context("reading open alerts")?;
        let counters = state.counters().await.context("reading counters")?;
        let rules = rules.current();
        let mut slot = copy.lock().await;
        // Taken out: if anything below fails, the copy left is empty with no cursor, and the
        // next snapshot reads every item again (the changes read here may be gone from the
        // state's log).
        let mut mine = std::mem::take(&mut *slot);
        let read = state
            .item_changes(mine.cursor.take())
            .await
            .context("reading items")?;
        // Applying the changes, sorting and the per-item figures are CPU work: on the
        // background runtime's blocking threads.
        let (mine, snap) = tokio::task::spawn_blocking(move || {
            mine.apply(read.changes);
            mine.cursor = read.cursor;
            let items = mine.items.values().cloned().collect();
            let snap = Snapshot::new(now_ms(), items, open, counters, rules);
            (mine, snap)
        })
        .await
        .context("building the dashboard snapshot")?;
        *slot = mine;
        Ok(Arc::new(snap))
    };
    background()?
        .spawn(build)
        .await
        .context("the dashboard's background runtime")?
}

/// The runtime the dashboard runs on, pages and snapshots: one worker thread and two blocking
/// threads, all in the idle scheduling class ([`crate::lowered`]), so when a page or a
/// snapshot (sorting 50,000 items) and event processing want the same core, the events get it. With the snapshot
/// lock in [`Dashboard::snapshot`], at most one snapshot is taken at a time; the second
/// blocking thread lets a page's state read go on meanwhile.
fn background() -> anyhow::Result<&'static tokio::runtime::Handle> {
    static RT: std::sync::OnceLock<Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .thread_name("dashboard")
            .on_thread_start(crate::lowered::lower_this_thread)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map(tokio::runtime::Runtime::handle)
    .map_err(|e| anyhow::anyhow!("starting the dashboard's background runtime: {e}"))
}

/// The snapshot held: when it was taken, it, and what taking it cost.
type Held = Option<(Instant, Arc<Snapshot>, Duration)>;

/// How long a snapshot that cost `cost` to take is reused.
fn reuse_for(cost: Duration) -> Duration {
    SNAPSHOT_MAX_AGE.max(cost * SNAPSHOT_COST_FACTOR)
}

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
    snapshot: Arc<Mutex<Held>>,
    /// Held while a snapshot is being taken.
    refreshing: Arc<Mutex<()>>,
    /// Every item as the last snapshot read it.
    items: Arc<Mutex<ItemCopy>>,
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
            snapshot: Arc::new(Mutex::new(None)),
            refreshing: Arc::new(Mutex::new(())),
            items: Arc::new(Mutex::new(ItemCopy::default())),
            queue: Mutex::new(None),
        })
    }

    /// The current snapshot. Younger than [`SNAPSHOT_MAX_AGE`] (or [`SNAPSHOT_COST_FACTOR`]
    /// times what it cost): as it is. Older, but younger
    /// than [`SNAPSHOT_STALE_LIMIT`]: as it is, while a new one is taken in the background (a
    /// page never waits for the state read then). Older still, or none: a new one, waited for
    /// (one reader at a time; the others share it).
    pub async fn snapshot(&self) -> anyhow::Result<Arc<Snapshot>> {
        let held = self.snapshot.lock().await.clone();
        if let Some((at, snap, cost)) = held {
            let age = at.elapsed();
            if age < reuse_for(cost) {
                return Ok(snap);
            }
            if age < SNAPSHOT_STALE_LIMIT {
                self.refresh_in_background();
                return Ok(snap);
            }
        }
        let _one = self.refreshing.lock().await;
        if let Some((at, snap, cost)) = self.snapshot.lock().await.clone() {
            if at.elapsed() < reuse_for(cost) {
                return Ok(snap);
            }
        }
        let started = Instant::now();
        let snap =
            take_snapshot(self.state.clone(), self.rules.clone(), self.items.clone()).await?;
        *self.snapshot.lock().await = Some((Instant::now(), snap.clone(), started.elapsed()));
        Ok(snap)
    }

    fn refresh_in_background(&self) {
        let Ok(guard) = self.refreshing.clone().try_lock_owned() else {
            return; // one is being taken
        };
        let state = self.state.clone();
        let rules = self.rules.clone();
        let slot = self.snapshot.clone();
        let items = self.items.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let started = Instant::now();
            match take_snapshot(state, rules, items).await {
                Ok(snap) => *slot.lock().await = Some((Instant::now(), snap, started.elapsed())),
                Err(e) => tracing::warn!(error = %e, "dashboard snapshot failed"),
            }
        });
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
    // Pages are served on the background runtime too: filtering and sorting 50,000 rows for a
    // page is CPU work like a snapshot, and on the event runtime it delayed alert emails by
    // hundreds of milliseconds while a script loaded pages (docs/PERFORMANCE.md, section 14).
    let bg = background()?;
    let listener = {
        let std = listener
            .into_std()
            .context("dashboard listener: moving it to the background runtime")?;
        let _in = bg.enter();
        tokio::net::TcpListener::from_std(std)
            .context("dashboard listener: registering it on the background runtime")?
    };
    println!("dashboard={addr}");
    tracing::info!(%addr, tls = tls.is_some(), "dashboard listening");
    Ok(Some(bg.spawn(server::serve(listener, dash, tls, stop))))
}
