//! The seam between the worker's pipeline, sender, control API and ops CLI on one side and where
//! its state lives on the other: the sled [`StateStore`] (one worker per data dir) or JetStream
//! KV buckets ([`super::nats`], any number of workers). Code above this trait never asks
//! which one it has.
//!
//! The methods are async (the NATS implementation talks to a server); the sled one runs each
//! call on tokio's blocking pool, exactly as the callers did before the trait existed, so its
//! behaviour is unchanged.

use super::sled::ItemChangesRead;
use super::{Applied, ItemState, Prepared, RuleConfig, StateError, StateStore};
use crate::alert::{Alert, OutboxEntry, OutboxStatus};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

/// How many item records one blocking call of a dashboard read takes at most (the first full
/// read after a start takes 35,000 in ~140 calls; a call is well under a millisecond).
pub const ITEM_READ_CHUNK: usize = 256;

/// Where a page of the newest-first alerts list ended: the next page holds the entries created
/// before it (in (creation time, id) order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertCursor {
    pub created_at: i64,
    pub id: String,
}

impl AlertCursor {
    /// The cursor as a query parameter: `<created_at>.<alert id>`.
    pub fn to_param(&self) -> String {
        format!("{}.{}", self.created_at, self.id)
    }

    pub fn parse(s: &str) -> Option<AlertCursor> {
        let (at, id) = s.split_once('.')?;
        Some(AlertCursor {
            created_at: at.parse().ok()?,
            id: id.to_string(),
        })
    }
}

/// One page of the newest-first alerts list.
#[derive(Debug, Clone, Default)]
pub struct AlertPage {
    pub entries: Vec<OutboxEntry>,
    /// Where the next page starts; `None`: nothing older.
    pub next: Option<AlertCursor>,
}

/// Where an incremental read of the items ([`StateBackend::item_changes`]) left off: handed
/// back on the next call. Opaque to the reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemsCursor(pub(crate) u64);

/// What one [`StateBackend::item_changes`] call read.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemChanges {
    /// Every item (in no particular order): the reader's copy is replaced by these.
    All(Vec<ItemState>),
    /// The items changed since the cursor, as they are now, and the `(source, item)` of those
    /// changed that are no longer stored. Items not listed are as the reader last read them.
    Changed {
        items: Vec<ItemState>,
        gone: Vec<(String, String)>,
    },
}

/// [`ItemChanges`] and the cursor to read on from (`None`: the next call reads everything).
#[derive(Debug, Clone, PartialEq)]
pub struct ItemRead {
    pub changes: ItemChanges,
    pub cursor: Option<ItemsCursor>,
}

/// Most index entries one [`StateBackend::recent_alerts`] call looks at (a scope or a status
/// filter that matches little then ends the page early, with a cursor to go on from).
pub const RECENT_SCAN_MAX: usize = 20_000;

/// What the worker keeps: items, alert arming, processed ids, the outbox, counters.
pub trait StateBackend: Send + Sync + 'static {
    /// Where the state lives, for the `ready` line and logs.
    fn describe(&self) -> String;

    /// Applies a batch of events; every effect exactly once per event id. `dry_run` computes
    /// the same result and writes nothing.
    fn apply_batch(
        &self,
        events: Vec<Prepared>,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Applied>, StateError>> + Send;

    /// The scheduled pass: evaluates the time-based rules (no sales, cover;
    /// [`super::ItemState::take_scheduled`]) for every item at `now`; new alerts go to the
    /// outbox. `dry_run` returns the alerts it would raise and writes nothing (`preview --at`).
    fn run_no_sales(
        &self,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> impl Future<Output = Result<Vec<Alert>, StateError>> + Send;

    /// Pending outbox entries due at `now`, oldest first.
    fn due_alerts(
        &self,
        now: i64,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StateError>> + Send;

    /// The earliest `next_attempt_at` of a pending entry.
    fn next_due(&self) -> impl Future<Output = Result<Option<i64>, StateError>> + Send;

    /// Every outbox entry matching `keep`, ordered by creation.
    fn outbox<F>(
        &self,
        keep: F,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StateError>> + Send
    where
        F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static;

    /// The entries still open (pending or failed, not sent), ordered by creation: the
    /// overview's counts. Sent entries are not read, so this stays the size of what is owed.
    fn open_alerts(&self) -> impl Future<Output = Result<Vec<OutboxEntry>, StateError>> + Send {
        self.outbox(|e| e.status != OutboxStatus::Sent)
    }

    /// Up to `limit` outbox entries, newest first, created before `before`, whose source
    /// `scope` accepts and that pass `keep` (the alerts page and `/api/v1/alerts`). The default
    /// reads the whole outbox; sled reads a key range of its creation-order index.
    fn recent_alerts<S, F>(
        &self,
        before: Option<AlertCursor>,
        limit: usize,
        scope: S,
        keep: F,
    ) -> impl Future<Output = Result<AlertPage, StateError>> + Send
    where
        S: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static,
    {
        let all = self.outbox(move |e| scope(&e.alert.source) && keep(e));
        async move {
            let mut all = all.await?;
            all.reverse();
            let key = |e: &OutboxEntry| (e.alert.created_at, e.alert.id.clone());
            let older: Vec<OutboxEntry> = all
                .into_iter()
                .filter(|e| {
                    before
                        .as_ref()
                        .is_none_or(|c| key(e) < (c.created_at, c.id.clone()))
                })
                .collect();
            let next = (older.len() > limit).then(|| {
                let e = &older[limit - 1];
                AlertCursor {
                    created_at: e.alert.created_at,
                    id: e.alert.id.clone(),
                }
            });
            Ok(AlertPage {
                entries: older.into_iter().take(limit).collect(),
                next,
            })
        }
    }

    /// The outbox entries with these ids as stored now, in any status (those not found are
    /// left out): the sender reads the other members of a planned set with it.
    fn alerts(
        &self,
        ids: Vec<String>,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StateError>> + Send;

    /// Takes the right to send these due entries until `until_ms`: returns those this process
    /// may send now. With one worker per state (sled) that is all of them; with several, each
    /// entry goes to exactly one claimer, so two workers never send the same alert. Each claimed
    /// entry's `planned` set (the email it goes into) is written down with the claim, unless it
    /// has one already: a set once planned keeps its members (the returned entries carry the
    /// stored set).
    fn claim_alerts(
        &self,
        entries: Vec<OutboxEntry>,
        until_ms: i64,
    ) -> impl Future<Output = Result<Vec<OutboxEntry>, StateError>> + Send;

    /// Extends this process's claims on `ids` to `until_ms` while it is still sending them.
    /// `false` when one is no longer its own (another worker took it over after it lapsed).
    /// With one worker per state (sled) claims never lapse: the default.
    fn renew_claims(
        &self,
        ids: Vec<String>,
        until_ms: i64,
    ) -> impl Future<Output = Result<bool, StateError>> + Send {
        let _ = (ids, until_ms);
        async { Ok(true) }
    }

    /// Updates outbox entries and adds to counters, durably and together (one commit on
    /// sled); releases any claim on them.
    fn update_alerts<F>(
        &self,
        ids: Vec<String>,
        f: F,
        counters: Vec<(String, i64)>,
    ) -> impl Future<Output = Result<(), StateError>> + Send
    where
        F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static;

    /// Adds `delta` to the counter `name`, durably (no outbox entry touched).
    fn add_counter(
        &self,
        name: String,
        delta: i64,
    ) -> impl Future<Output = Result<(), StateError>> + Send {
        self.update_alerts(Vec::new(), |_| {}, vec![(name, delta)])
    }

    /// Removes outbox entries.
    fn purge_alerts(&self, ids: Vec<String>)
        -> impl Future<Output = Result<(), StateError>> + Send;

    /// Every counter, by name.
    fn counters(&self) -> impl Future<Output = Result<BTreeMap<String, i64>, StateError>> + Send;

    /// Every item, ordered by source and item id.
    fn items(&self) -> impl Future<Output = Result<Vec<ItemState>, StateError>> + Send;

    /// The items changed since `since` (a cursor from the previous call), for a reader that
    /// keeps its own copy of every item (the dashboard's snapshot). Without a cursor, or with
    /// one the backend no longer follows, every item. A change committed before this call
    /// returns is in this answer or the next one. The default reads every item every time.
    fn item_changes(
        &self,
        since: Option<ItemsCursor>,
    ) -> impl Future<Output = Result<ItemRead, StateError>> + Send {
        let _ = since;
        async move {
            Ok(ItemRead {
                changes: ItemChanges::All(self.items().await?),
                cursor: None,
            })
        }
    }

    /// The ids of `source`'s live (not removed) items: what a complete catalog batch is
    /// compared with to find what it misses, without holding every item's record at once.
    fn live_item_ids(
        &self,
        source: String,
    ) -> impl Future<Output = Result<Vec<String>, StateError>> + Send;

    /// Makes everything applied so far durable.
    fn sync(&self) -> impl Future<Output = Result<(), StateError>> + Send;

    /// Forgets what can no longer matter: processed-event marks and sent alerts older than
    /// `cutoff`, and hourly event counters older than [`super::counters::HOURLY_KEEP_MS`].
    /// Returns how many records. A backend whose storage expires records by itself
    /// keeps the default.
    fn housekeeping(&self, cutoff: i64) -> impl Future<Output = Result<usize, StateError>> + Send {
        let _ = cutoff;
        async { Ok(0) }
    }
}

/// The sled [`StateStore`] behind the trait: each call on the blocking pool of the runtime
/// that opened it (the one that processes events, at its priority), whichever runtime calls.
///
/// Why: once transactions run, every sled read holds a process-wide lock (sled's concurrency
/// control) that every transaction takes exclusively. Read on the dashboard's lower-priority
/// runtime, a preempted snapshot held it for a time slice of that priority, and the event
/// path's transactions waited (docs/PERFORMANCE.md, section 14). Asked for from a lowered
/// thread, a call is first handed to the event runtime, so that no pool thread is ever created
/// from a lowered one ([`crate::lowered`], docs/PERFORMANCE.md, section 21).
#[derive(Clone)]
pub struct SledState(pub Arc<StateStore>, Option<tokio::runtime::Handle>);

impl SledState {
    pub fn open(path: &std::path::Path) -> Result<SledState, StateError> {
        Ok(SledState(
            Arc::new(StateStore::open(path)?),
            tokio::runtime::Handle::try_current().ok(),
        ))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&StateStore) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let store = self.0.clone();
        let failed = |e: tokio::task::JoinError| StateError::Storage {
            context: "state task".into(),
            message: e.to_string(),
        };
        match &self.1 {
            // A lowered thread hands the work to one of the event runtime's own threads, which
            // hands it to the blocking pool: a pool thread created from the lowered thread would
            // inherit its idle class for good (`crate::lowered` says why that stalls events).
            Some(opener) if crate::lowered::this_thread_is_lowered() => opener
                .spawn(async move { tokio::task::spawn_blocking(move || f(&store)).await })
                .await
                .map_err(failed)?
                .map_err(failed)?,
            Some(opener) => opener
                .spawn_blocking(move || f(&store))
                .await
                .map_err(failed)?,
            None => tokio::task::spawn_blocking(move || f(&store))
                .await
                .map_err(failed)?,
        }
    }
}

impl SledState {
    /// The planned set records of these ids, as stored (none read when there are none).
    async fn sets_raw(&self, wanted: Vec<String>) -> Result<Vec<(String, sled::IVec)>, StateError> {
        match wanted.is_empty() {
            true => Ok(Vec::new()),
            false => self.blocking(move |s| s.sets_raw(&wanted)).await,
        }
    }
}

/// Runs `f` (decoding records read by [`SledState::blocking`]) on the blocking pool of the
/// runtime that awaits it: the dashboard's decodes its snapshots' items at its own lower
/// priority, not at the event runtime's.
async fn decode_here<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Storage {
            context: "decoding records".into(),
            message: e.to_string(),
        })
}

impl StateBackend for SledState {
    fn describe(&self) -> String {
        self.0.path().display().to_string()
    }

    async fn apply_batch(
        &self,
        events: Vec<Prepared>,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StateError> {
        self.blocking(move |s| s.apply_batch(&events, &rules, now, dry_run))
            .await
    }

    async fn run_no_sales(
        &self,
        rules: Arc<RuleConfig>,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Alert>, StateError> {
        self.blocking(move |s| s.run_no_sales(&rules, now, dry_run))
            .await
    }

    async fn due_alerts(&self, now: i64) -> Result<Vec<OutboxEntry>, StateError> {
        self.blocking(move |s| s.due_alerts(now)).await
    }

    async fn next_due(&self) -> Result<Option<i64>, StateError> {
        self.blocking(|s| s.next_due()).await
    }

    async fn outbox<F>(&self, keep: F) -> Result<Vec<OutboxEntry>, StateError>
    where
        F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static,
    {
        self.blocking(move |s| s.outbox(keep)).await
    }

    /// Read on the state's blocking pool (the entries, then the planned sets they refer to),
    /// decoded on the caller's: the dashboard's snapshot reads them.
    async fn open_alerts(&self) -> Result<Vec<OutboxEntry>, StateError> {
        use super::sled::DecodedAlerts;
        let raw = self.blocking(|s| s.open_alerts_raw()).await?;
        let open = decode_here(move || DecodedAlerts::decode(&raw)).await?;
        let sets = self.sets_raw(open.sets.clone()).await?;
        decode_here(move || open.resolve(&sets)).await
    }

    /// The index walked and the records read on the state's blocking pool
    /// [`super::recent::RECENT_READ_CHUNK`] keys per call, decoded and filtered on the
    /// caller's ([`super::recent`] says why).
    async fn recent_alerts<Sc, F>(
        &self,
        before: Option<AlertCursor>,
        limit: usize,
        scope: Sc,
        keep: F,
    ) -> Result<AlertPage, StateError>
    where
        Sc: Fn(&str) -> bool + Send + Sync + 'static,
        F: Fn(&OutboxEntry) -> bool + Send + Sync + 'static,
    {
        use super::recent::{RecentPage, RECENT_READ_CHUNK};
        let (scope, keep) = (Arc::new(scope), Arc::new(keep));
        let mut page = RecentPage::new(before, limit);
        loop {
            let (from, scope) = (page.from().cloned(), scope.clone());
            let chunk = self
                .blocking(move |s| s.recent_alerts_raw(from.as_ref(), RECENT_READ_CHUNK, &*scope))
                .await?;
            let keep = keep.clone();
            let done;
            (page, done) = decode_here(move || {
                let done = page.take(chunk, &*keep);
                (page, done)
            })
            .await?;
            if done {
                break;
            }
        }
        let sets = self.sets_raw(page.sets()).await?;
        decode_here(move || page.finish(&sets)).await
    }

    async fn alerts(&self, ids: Vec<String>) -> Result<Vec<OutboxEntry>, StateError> {
        self.blocking(move |s| {
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                match s.alert(id) {
                    Ok(e) => out.push(e),
                    Err(StateError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(out)
        })
        .await
    }

    async fn claim_alerts(
        &self,
        entries: Vec<OutboxEntry>,
        _until_ms: i64,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        // One worker holds the database: nobody else can send them. The claim only writes down
        // the email each entry is planned into (before it is sent), unless it has one: a set
        // once planned keeps its members, as on NATS. (The sender's snapshot is the stored
        // truth here, so an entry planned before still carries that set.)
        let mine: Vec<OutboxEntry> = entries
            .into_iter()
            .filter(|e| e.status == OutboxStatus::Pending)
            .collect();
        let plans: std::collections::HashMap<String, crate::alert::PlannedSet> = mine
            .iter()
            .filter(|e| !e.planned.is_empty())
            .map(|e| (e.alert.id.clone(), e.planned.clone()))
            .collect();
        if !plans.is_empty() {
            let ids: Vec<String> = plans.keys().cloned().collect();
            self.blocking(move |s| {
                s.update_alerts(
                    &ids,
                    move |e| {
                        if let Some(p) = plans.get(&e.alert.id).filter(|_| e.planned.is_empty()) {
                            e.planned = p.clone();
                        }
                    },
                    &[],
                )
            })
            .await?;
        }
        Ok(mine)
    }

    async fn update_alerts<F>(
        &self,
        ids: Vec<String>,
        f: F,
        counters: Vec<(String, i64)>,
    ) -> Result<(), StateError>
    where
        F: Fn(&mut OutboxEntry) + Clone + Send + Sync + 'static,
    {
        self.blocking(move |s| s.update_alerts(&ids, f, &counters))
            .await
    }

    async fn purge_alerts(&self, ids: Vec<String>) -> Result<(), StateError> {
        self.blocking(move |s| s.purge_alerts(&ids)).await
    }

    async fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        self.blocking(|s| s.counters()).await
    }

    /// Read on the state's blocking pool, decoded on the caller's ([`decode_here`]).
    async fn items(&self) -> Result<Vec<ItemState>, StateError> {
        let raw = self.blocking(|s| s.items_raw()).await?;
        decode_here(move || super::sled::decode_items(&raw)).await
    }

    /// The records noted changed since the last read ([`StateStore::item_changes_raw`]), read
    /// on the state's blocking pool [`ITEM_READ_CHUNK`] records per call (each call asked for
    /// by the caller's task, so the dashboard's idle-class thread paces them:
    /// [`StateStore::read_item_changes`] says why), decoded on the caller's.
    async fn item_changes(&self, since: Option<ItemsCursor>) -> Result<ItemRead, StateError> {
        let mut read: Option<ItemChangesRead> = None;
        let read = loop {
            let (r, done) = self
                .blocking(move |s| {
                    let mut r = read.unwrap_or_else(|| s.begin_item_changes(since.map(|c| c.0)));
                    let done = s.read_item_changes(&mut r, ITEM_READ_CHUNK)?;
                    Ok((r, done))
                })
                .await?;
            if done {
                break r;
            }
            read = Some(r);
        };
        let (generation, raw) = read.finish();
        let changes = decode_here(move || raw.decode()).await?;
        Ok(ItemRead {
            changes,
            cursor: Some(ItemsCursor(generation)),
        })
    }

    async fn live_item_ids(&self, source: String) -> Result<Vec<String>, StateError> {
        self.blocking(move |s| s.live_item_ids(&source)).await
    }

    async fn sync(&self) -> Result<(), StateError> {
        self.blocking(|s| s.sync()).await
    }

    async fn housekeeping(&self, cutoff: i64) -> Result<usize, StateError> {
        let hourly = stockhook_shared::queue::now_ms() - super::counters::HOURLY_KEEP_MS;
        self.blocking(move |s| {
            Ok(s.sweep_processed(cutoff)? + s.sweep_sent(cutoff)? + s.sweep_hourly(hourly)?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling policy.
    fn policy() -> i32 {
        // SAFETY: a plain system call on the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// A sled call asked for by a lowered (idle-class) thread runs on an event-runtime thread
    /// of the events' class, even when the event runtime's blocking pool has no thread yet and
    /// creates one for it (threads inherit their creator's class: `crate::lowered`).
    #[test]
    fn a_state_call_from_a_lowered_thread_runs_at_the_events_priority() {
        let (events, lowered) = events_and_lowered_runtimes();
        let dir = tempfile::tempdir().unwrap();
        let state = events
            .block_on(async { SledState::open(&dir.path().join("state")) })
            .unwrap();
        let (asker, ran_on) = lowered.block_on(async move {
            lowered_spawn(async move {
                let asker = policy();
                let ran_on = state.blocking(|_| Ok(policy())).await.unwrap();
                (asker, ran_on)
            })
            .await
        });
        assert_eq!(asker, libc::SCHED_IDLE, "the asking thread is not lowered");
        assert_eq!(
            ran_on,
            libc::SCHED_OTHER,
            "the state call ran in the idle class"
        );
    }

    /// The alerts page asked for by a lowered (dashboard) thread decodes and filters its
    /// records at the asker's priority, not the events' (`crate::state::recent` says why), and
    /// lists what the one-call read lists.
    #[test]
    fn the_alerts_page_is_decoded_at_the_askers_priority() {
        let (events, lowered) = events_and_lowered_runtimes();
        let dir = tempfile::tempdir().unwrap();
        let state = events
            .block_on(async { SledState::open(&dir.path().join("state")) })
            .unwrap();
        let rules = Arc::new(RuleConfig::example());
        let low = |i: u64| {
            let fact = crate::facts::Fact::InventoryLevel {
                item: format!("x{i}"),
                location: "l".into(),
                available: Some(1),
                at: 1,
            };
            let id = stockhook_shared::envelope::EventId(i + 1);
            Prepared::synthetic(id, i64::MAX / 2, "shop", "shopify", "t", vec![fact])
        };
        let batch: Vec<Prepared> = (0..100).map(low).collect();
        events
            .block_on(state.apply_batch(batch, rules, 1_000, false))
            .unwrap();
        let one_call = state.0.recent_alerts(None, 70, |_| true, |_| true).unwrap();
        let policies = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = policies.clone();
        let page = lowered
            .block_on(lowered_spawn(async move {
                state
                    .recent_alerts(
                        None,
                        70,
                        |_| true,
                        move |_| {
                            seen.lock().unwrap().push(policy());
                            true
                        },
                    )
                    .await
            }))
            .unwrap();
        let ids = |p: &AlertPage| {
            p.entries
                .iter()
                .map(|e| e.alert.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&page), ids(&one_call));
        assert_eq!(page.next, one_call.next);
        let policies = policies.lock().unwrap();
        assert_eq!(policies.len(), 70);
        assert!(
            policies.iter().all(|p| *p == libc::SCHED_IDLE),
            "alerts decoded at the events' priority: {policies:?}"
        );
    }

    /// A runtime like the event runtime, and one whose threads are lowered like the
    /// dashboard's.
    fn events_and_lowered_runtimes() -> (tokio::runtime::Runtime, tokio::runtime::Runtime) {
        let events = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let lowered = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .on_thread_start(crate::lowered::lower_this_thread)
            .enable_all()
            .build()
            .unwrap();
        (events, lowered)
    }

    /// Runs `f` on one of the current runtime's worker threads (`block_on` runs it on the
    /// caller's, which was not started by the runtime and so not lowered).
    async fn lowered_spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
        tokio::spawn(f).await.unwrap()
    }
}
