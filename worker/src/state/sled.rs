//! The worker's own sled database (`<data_dir>/state`): catalog, inventory levels, alert arming,
//! last sales, processed event ids and the email outbox, all in one tree under key prefixes so a
//! single sled transaction covers everything one event changes.
//!
//! Invariant (exactly-once effects): [`StateStore::apply_batch`] records each event id as
//! processed in the same transaction that writes its state changes and outbox entries, then
//! flushes and fdatasyncs, and only then may the caller ack the events. A redelivered event finds
//! its id and changes nothing. Levels are ordered by the platform's event time: an older level
//! never overwrites a newer one.
//!
//! Key layout: `i/<source>\0<item>` item, `a/<source>\0<alias>` alias -> item,
//! `s/<source>\0<order>\0<line>` sale seen, `r/<event id>` facts refused, `K/<sku>` items
//! carrying a SKU, `c/<sku>` cross-channel arming, `p/<event id>` processed, `q/<source>\0<payload key>`
//! payload dedup, `o/<alert id>` outbox entry to send (or failed), `d/<alert id>` sent entry,
//! `P/<set id>` a planned set's members, `n/<created at><alert id>` outbox entries in creation
//! order, `m/<name>` counter.

use super::backend::{AlertCursor, AlertPage, ItemChanges};
use super::engine::{self, Mark, Member, Once, Step, Store, Token};
use super::recent::{RecentChunk, RecentPage, RECENT_READ_CHUNK};
use super::{counters, planned_sets, Applied, ItemState, Prepared, RuleConfig, StateError};
use crate::alert::{Alert, OutboxEntry, OutboxStatus, PlannedSet};
use crate::rules::Arming;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::future::Future;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use stockhook_shared::durable::SledFiles;

fn storage(ctx: &str) -> impl Fn(sled::Error) -> StateError + '_ {
    move |e| StateError::Storage {
        context: ctx.to_string(),
        message: e.to_string(),
    }
}

pub struct StateStore {
    path: PathBuf,
    db: sled::Db,
    tree: sled::Tree,
    data_file: File,
    /// Blob files, `conf` and directory entries sled never syncs itself.
    files: SledFiles,
    /// The item records committed since the dashboard last read them; `None` until it first
    /// asks ([`StateStore::item_changes_raw`]), so a worker without a dashboard keeps nothing.
    item_log: Mutex<Option<ItemLog>>,
}

/// The keys of the item records (`i/`) written or removed by committed transactions since the
/// last read, and which read that was.
///
/// Why it is correct: a key is noted after its transaction commits, and a read takes the set
/// (under the lock) before it reads the records. A commit noted before the take is read by
/// that read (its records were visible before the take); one noted after it is in the next
/// set. The first read enables the log before it scans, so what commits during the scan is
/// noted too. Aborted transactions (dry runs) note nothing; a transaction closure that runs
/// again returns only its last run's keys. The set holds at most one entry per item.
#[derive(Debug, Default)]
struct ItemLog {
    /// Which read took the previous set: a reader's cursor must name it.
    generation: u64,
    keys: HashSet<Vec<u8>>,
}

/// Item records as stored, read on the state's thread and decoded by the caller
/// ([`RawItems::decode`]), so the JSON decoding of a dashboard snapshot costs the event
/// runtime nothing.
#[derive(Debug)]
pub enum RawItems {
    /// Every item record.
    All(Vec<sled::IVec>),
    /// Changed item keys and their records now (`None`: removed).
    Changed(Vec<(Vec<u8>, Option<sled::IVec>)>),
}

/// The end (exclusive) of the item records' key range: `i/` with its last byte incremented.
const ITEMS_END: &[u8] = b"i0";

/// A read of changed item records under way ([`StateStore::begin_item_changes`]).
#[derive(Debug)]
pub struct ItemChangesRead {
    generation: u64,
    plan: ReadPlan,
    /// A full read's records, in key order.
    all: Vec<sled::IVec>,
    /// Changed keys and their records now.
    changed: Vec<(Vec<u8>, Option<sled::IVec>)>,
}

/// What a read of changed items has left to read.
#[derive(Debug)]
enum ReadPlan {
    /// Every item record, from after this key (`None`: from the first).
    Scan { after: Option<sled::IVec> },
    /// These changed keys (taken from the end).
    Keys(Vec<Vec<u8>>),
}

impl ItemChangesRead {
    /// This read's generation (the next read's `since`) and what it read.
    pub fn finish(self) -> (u64, RawItems) {
        let raw = match self.plan {
            ReadPlan::Scan { .. } => RawItems::All(self.all),
            ReadPlan::Keys(_) => RawItems::Changed(self.changed),
        };
        (self.generation, raw)
    }
}

impl RawItems {
    /// Decodes the records. An undecodable record counts as absent, as in
    /// [`StateStore::items`].
    pub fn decode(self) -> ItemChanges {
        match self {
            RawItems::All(values) => ItemChanges::All(decode_items(&values)),
            RawItems::Changed(records) => {
                let (mut items, mut gone) = (Vec::new(), Vec::new());
                for (key, value) in records {
                    match value.and_then(|v| serde_json::from_slice::<ItemState>(&v).ok()) {
                        Some(st) => items.push(st),
                        None => gone.extend(split_item_key(&key)),
                    }
                }
                ItemChanges::Changed { items, gone }
            }
        }
    }
}

/// Outbox entries decoded from their records ([`StateStore::open_alerts_raw`],
/// [`super::recent::RecentChunk`]) by the caller, like [`RawItems`]; planned sets not resolved
/// yet.
pub struct DecodedAlerts {
    entries: Vec<OutboxEntry>,
    /// The planned sets they refer to: [`StateStore::sets_raw`] reads them.
    pub sets: Vec<String>,
}

impl DecodedAlerts {
    /// The open entries of these records (an undecodable one is skipped, as in every outbox
    /// scan; sent ones are left out).
    pub fn decode(values: &[sled::IVec]) -> DecodedAlerts {
        DecodedAlerts::new(
            values
                .iter()
                .filter_map(|v| serde_json::from_slice::<OutboxEntry>(v).ok())
                .filter(|e| e.status != OutboxStatus::Sent)
                .collect(),
        )
    }

    /// These entries, with the planned sets they refer to.
    pub fn new(entries: Vec<OutboxEntry>) -> DecodedAlerts {
        let sets = planned_sets::references(&entries);
        DecodedAlerts { entries, sets }
    }

    /// The entries with their planned sets (`sets`: the records read), ordered by creation.
    /// One whose set is missing or unreadable is left out, as [`StateStore::outbox`] does.
    pub fn resolve(self, sets: &[(String, sled::IVec)]) -> Vec<OutboxEntry> {
        let mut known = HashMap::new();
        for (id, v) in sets {
            if let Ok(rec) = serde_json::from_slice::<planned_sets::SetRecord>(v) {
                known.insert(id.clone(), PlannedSet::from(rec.ids));
            }
        }
        let mut out: Vec<OutboxEntry> = self
            .entries
            .into_iter()
            .filter_map(|mut e| {
                if let Some(set) = planned_sets::to_read(&mut e, &known) {
                    tracing::warn!(alert = %e.alert.id, set = %set, "outbox entry skipped: its planned set cannot be read");
                    return None;
                }
                Some(e)
            })
            .collect();
        out.sort_by(|a, b| {
            (a.alert.created_at, &a.alert.id).cmp(&(b.alert.created_at, &b.alert.id))
        });
        out
    }
}

/// Decodes item records, skipping those that do not decode.
pub fn decode_items(values: &[sled::IVec]) -> Vec<ItemState> {
    values
        .iter()
        .filter_map(|v| serde_json::from_slice::<ItemState>(v).ok())
        .collect()
}

type Tx = ConflictableTransactionError<String>;

fn abort(e: impl std::fmt::Display) -> Tx {
    ConflictableTransactionError::Abort(e.to_string())
}

fn tx_get<T: for<'de> Deserialize<'de>>(
    tx: &TransactionalTree,
    key: &[u8],
) -> Result<Option<T>, Tx> {
    match tx.get(key)? {
        Some(v) => serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| abort(format!("corrupt record: {e}"))),
        None => Ok(None),
    }
}

fn tx_put<T: Serialize>(tx: &TransactionalTree, key: &[u8], v: &T) -> Result<(), Tx> {
    let bytes = serde_json::to_vec(v).map_err(abort)?;
    tx.insert(key, bytes)?;
    Ok(())
}

fn tx_add(tx: &TransactionalTree, name: &str, n: i64) -> Result<(), Tx> {
    let key = [b"m/", name.as_bytes()].concat();
    let cur = tx
        .get(&key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map(i64::from_be_bytes)
        .unwrap_or(0);
    tx.insert(key, &(cur + n).to_be_bytes()[..])?;
    Ok(())
}

fn key2(prefix: &str, a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + a.len() + b.len() + 1);
    k.extend_from_slice(prefix.as_bytes());
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

fn item_key(source: &str, item: &str) -> Vec<u8> {
    key2("i/", source, item)
}

/// `(source, item)` of an [`item_key`].
fn split_item_key(key: &[u8]) -> Option<(String, String)> {
    let rest = key.strip_prefix(b"i/")?;
    let nul = rest.iter().position(|&b| b == 0)?;
    Some((
        String::from_utf8_lossy(&rest[..nul]).into_owned(),
        String::from_utf8_lossy(&rest[nul + 1..]).into_owned(),
    ))
}

/// Active outbox entries (pending or failed): what the sender scans.
fn outbox_key(id: &str) -> Vec<u8> {
    [b"o/", id.as_bytes()].concat()
}

/// Sent entries move here, so the sender's scan stays the size of what is still to do.
fn sent_key(id: &str) -> Vec<u8> {
    [b"d/", id.as_bytes()].concat()
}

/// `P/<set id>`: a planned set's members, once per set ([`planned_sets`]).
fn set_key(set: &str) -> Vec<u8> {
    [b"P/", set.as_bytes()].concat()
}

/// `n/<created_at, 8 bytes BE><alert id>` -> the alert's source: every outbox entry in creation
/// order, so the newest are read by key range (the alerts page) and a scope is applied without
/// reading the entries.
fn newest_key(created_at: i64, id: &str) -> Vec<u8> {
    [
        b"n/".as_slice(),
        &(created_at.max(0) as u64).to_be_bytes(),
        id.as_bytes(),
    ]
    .concat()
}

/// Set once `n/` lists every entry (written by [`StateStore::index_newest`] for a state from
/// before the index existed).
const NEWEST_INDEXED: &[u8] = b"x/newest-indexed";

/// Reads the outbox entry at `key` in `tx`, its planned set resolved (`sets`: those already read
/// in this transaction).
fn tx_get_entry(
    tx: &TransactionalTree,
    key: &[u8],
    sets: &mut HashMap<String, PlannedSet>,
) -> Result<Option<OutboxEntry>, Tx> {
    let Some(mut e) = tx_get::<OutboxEntry>(tx, key)? else {
        return Ok(None);
    };
    if let Some(set) = planned_sets::reference(&e).map(str::to_string) {
        let ids = match sets.get(&set) {
            Some(ids) => ids.clone(),
            None => {
                let rec: planned_sets::SetRecord = tx_get(tx, &set_key(&set))?
                    .ok_or_else(|| abort(format!("planned set {set} missing")))?;
                let ids = PlannedSet::from(rec.ids);
                sets.insert(set, ids.clone());
                ids
            }
        };
        e.planned = ids;
    }
    Ok(Some(e))
}

/// Writes `e` at `key` in `tx`, its planned set stored once (`known`: the sets read in this
/// transaction; `written`: the sets known stored in it).
fn tx_put_entry(
    tx: &TransactionalTree,
    key: &[u8],
    mut e: OutboxEntry,
    now: i64,
    known: &HashMap<String, PlannedSet>,
    written: &mut std::collections::HashSet<String>,
) -> Result<(), Tx> {
    if let Some((set, rec)) = planned_sets::split(&mut e, now, known) {
        if !written.contains(&set) {
            let k = set_key(&set);
            if tx.get(&k)?.is_none() {
                tx_put(tx, &k, &rec)?;
            }
            written.insert(set);
        }
    }
    tx_put(tx, key, &e)
}

fn tx_err(e: TransactionError<String>) -> StateError {
    match e {
        TransactionError::Abort(m) => StateError::Storage {
            context: "applying events".into(),
            message: m,
        },
        TransactionError::Storage(e) => StateError::Storage {
            context: "applying events".into(),
            message: e.to_string(),
        },
    }
}

impl StateStore {
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        stockhook_shared::durable::create_dir_all(path).map_err(|e| StateError::Storage {
            context: format!("creating {}", path.display()),
            message: e.to_string(),
        })?;
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            // sled's default page cache is 1 GiB; the worker's working set is far smaller.
            .cache_capacity(32 * 1024 * 1024)
            .open()
            .map_err(|e| {
                let text = e.to_string();
                if text.contains("lock")
                    || text.contains("WouldBlock")
                    || text.contains("Resource temporarily unavailable")
                {
                    StateError::Locked {
                        path: path.display().to_string(),
                    }
                } else {
                    StateError::Storage {
                        context: format!("opening {}", path.display()),
                        message: text,
                    }
                }
            })?;
        let files = SledFiles::after_open(path).map_err(|e| StateError::Storage {
            context: "syncing the state database's files".into(),
            message: e.to_string(),
        })?;
        let tree = db
            .open_tree("state")
            .map_err(storage("opening state tree"))?;
        let data_file = File::open(path.join("db")).map_err(|e| StateError::Storage {
            context: format!("opening {} for fdatasync", path.join("db").display()),
            message: e.to_string(),
        })?;
        let store = StateStore {
            path: path.to_path_buf(),
            db,
            tree,
            data_file,
            files,
            item_log: Mutex::new(None),
        };
        // Here, before events flow, not at the first alerts page: there it wrote the index of a
        // fresh state's whole outbox (no mark yet) while events waited (PERFORMANCE.md, 16).
        store.index_newest()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flush and fdatasync: after this, what was applied survives a crash or power loss.
    pub fn sync(&self) -> Result<(), StateError> {
        self.db.flush().map_err(storage("flushing state"))?;
        self.files.sync_new().map_err(|e| StateError::Storage {
            context: "syncing state files".into(),
            message: e.to_string(),
        })?;
        self.data_file.sync_data().map_err(|e| StateError::Storage {
            context: format!("fdatasync {}", self.path.join("db").display()),
            message: e.to_string(),
        })
    }

    /// Applies a batch of events in one transaction, then syncs. `dry_run` computes the same
    /// result and writes nothing (for `failed replay --dry-run`).
    pub fn apply_batch(
        &self,
        events: &[Prepared],
        rules: &RuleConfig,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Applied>, StateError> {
        let result = self.tree.transaction(|tx| {
            let mut out = Vec::with_capacity(events.len());
            let store = SledTx::new(tx);
            for ev in events {
                out.push(run_ready(engine::apply_event(&store, ev, rules, now))?);
            }
            let written = store.flush()?;
            if dry_run {
                // Abort to discard every write, carrying the result out.
                return Err(ConflictableTransactionError::Abort(
                    serde_json::to_string(&DryRun(summarize(&out))).unwrap_or_default(),
                ));
            }
            Ok((out, written))
        });
        match result {
            Ok((out, written)) => {
                self.note_items(written);
                self.sync()?;
                Ok(out)
            }
            Err(TransactionError::Abort(m)) if dry_run => {
                let DryRun(alerts) = serde_json::from_str(&m).map_err(|e| StateError::Storage {
                    context: "dry run".into(),
                    message: e.to_string(),
                })?;
                Ok(alerts
                    .into_iter()
                    .map(|a| match a {
                        Some(alerts) => Applied::Done { alerts },
                        None => Applied::AlreadyProcessed,
                    })
                    .collect())
            }
            Err(e) => Err(tx_err(e)),
        }
    }

    /// The scheduled pass: evaluates the no-sales and cover rules for every item
    /// ([`ItemState::take_scheduled`]); new alerts go to the outbox. `dry_run` runs the same
    /// transaction and aborts it, handing back the alerts.
    pub fn run_no_sales(
        &self,
        rules: &RuleConfig,
        now: i64,
        dry_run: bool,
    ) -> Result<Vec<Alert>, StateError> {
        let mut due = Vec::new();
        for item in self.tree.scan_prefix(b"i/") {
            let (k, v) = item.map_err(storage("scanning items"))?;
            if let Ok(mut st) = serde_json::from_slice::<ItemState>(&v) {
                if !st.take_scheduled(rules, now).is_empty() {
                    due.push(k);
                }
            }
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let alerts = self.tree.transaction(|tx| {
            let store = SledTx::new(tx);
            let mut alerts = Vec::new();
            let mut written = Vec::new();
            for k in &due {
                let Some(mut st): Option<ItemState> = tx_get(tx, k)? else {
                    continue;
                };
                let raised = st.take_scheduled(rules, now);
                if raised.is_empty() {
                    continue;
                }
                tx_put(tx, k, &st)?;
                written.push(k.to_vec());
                for alert in raised {
                    let entry = OutboxEntry::new(alert.clone(), now + rules.digest_window_ms);
                    if run_ready(store.enqueue(entry))? {
                        tx_add(tx, counters::ALERTS_CREATED, 1)?;
                        alerts.push(alert);
                    }
                }
            }
            if dry_run {
                // Abort to discard every write, carrying the alerts out.
                return Err(ConflictableTransactionError::Abort(
                    serde_json::to_string(&alerts).unwrap_or_default(),
                ));
            }
            Ok((alerts, written))
        });
        let alerts = match alerts {
            Ok((a, written)) => {
                self.note_items(written);
                a
            }
            Err(TransactionError::Abort(m)) if dry_run => {
                return serde_json::from_str(&m).map_err(|e| StateError::Storage {
                    context: "dry run of the scheduled pass".into(),
                    message: e.to_string(),
                });
            }
            Err(e) => return Err(tx_err(e)),
        };
        self.sync()?;
        Ok(alerts)
    }

    /// Pending outbox entries due at `now`, oldest first.
    pub fn due_alerts(&self, now: i64) -> Result<Vec<OutboxEntry>, StateError> {
        self.scan_outbox(&[b"o/"], |e| {
            e.status == OutboxStatus::Pending && e.next_attempt_at <= now
        })
    }

    /// The earliest `next_attempt_at` of a pending entry.
    pub fn next_due(&self) -> Result<Option<i64>, StateError> {
        /// What the answer needs of an entry (not its alert, not its planned set).
        #[derive(Deserialize)]
        struct Due {
            status: OutboxStatus,
            next_attempt_at: i64,
        }
        let mut min = None;
        for item in self.tree.scan_prefix(b"o/") {
            let (_, v) = item.map_err(storage("scanning outbox"))?;
            if let Ok(d) = serde_json::from_slice::<Due>(&v) {
                if d.status == OutboxStatus::Pending {
                    let at = d.next_attempt_at;
                    min = Some(min.map_or(at, |m: i64| m.min(at)));
                }
            }
        }
        Ok(min)
    }

    /// Every outbox entry matching `keep` (sent ones included), ordered by creation.
    pub fn outbox(
        &self,
        keep: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        self.scan_outbox(&[b"o/", b"d/"], keep)
    }

    /// Pending and failed entries only (not those sent): what is still owed or needs the
    /// operator, read by key range (`o/`), ordered by creation.
    pub fn open_alerts(&self) -> Result<Vec<OutboxEntry>, StateError> {
        let open = DecodedAlerts::decode(&self.open_alerts_raw()?);
        let sets = self.sets_raw(&open.sets)?;
        Ok(open.resolve(&sets))
    }

    /// The records behind [`StateStore::open_alerts`], not decoded ([`DecodedAlerts::decode`]).
    pub fn open_alerts_raw(&self) -> Result<Vec<sled::IVec>, StateError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"o/") {
            out.push(item.map_err(storage("scanning outbox"))?.1);
        }
        Ok(out)
    }

    /// The planned set records of these ids as stored (those missing left out).
    pub fn sets_raw(&self, ids: &[String]) -> Result<Vec<(String, sled::IVec)>, StateError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(v) = self
                .tree
                .get(set_key(id))
                .map_err(storage("reading a planned set"))?
            {
                out.push((id.clone(), v));
            }
        }
        Ok(out)
    }

    fn scan_outbox(
        &self,
        prefixes: &[&[u8]],
        keep: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<Vec<OutboxEntry>, StateError> {
        let mut out = Vec::new();
        let mut sets = HashMap::new();
        for prefix in prefixes {
            for item in self.tree.scan_prefix(prefix) {
                let (_, v) = item.map_err(storage("scanning outbox"))?;
                if let Ok(mut e) = serde_json::from_slice::<OutboxEntry>(&v) {
                    if keep(&e) {
                        match self.resolve(&mut e, &mut sets) {
                            Ok(()) => out.push(e),
                            Err(err) => {
                                tracing::warn!(alert = %e.alert.id, error = %err, "outbox entry skipped: its planned set cannot be read")
                            }
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| {
            (a.alert.created_at, &a.alert.id).cmp(&(b.alert.created_at, &b.alert.id))
        });
        Ok(out)
    }

    /// Replaces a stored reference to a planned set by its members (`sets`: those read so far).
    fn resolve(
        &self,
        e: &mut OutboxEntry,
        sets: &mut HashMap<String, PlannedSet>,
    ) -> Result<(), StateError> {
        let Some(set) = planned_sets::to_read(e, sets) else {
            return Ok(());
        };
        let v = self
            .tree
            .get(set_key(&set))
            .map_err(storage("reading a planned set"))?
            .ok_or_else(|| StateError::Storage {
                context: format!("reading planned set {set} of alert {}", e.alert.id),
                message: "missing".into(),
            })?;
        let rec: planned_sets::SetRecord =
            serde_json::from_slice(&v).map_err(|err| StateError::Storage {
                context: format!("decoding planned set {set}"),
                message: err.to_string(),
            })?;
        planned_sets::resolved(e, sets, set, rec);
        Ok(())
    }

    /// Up to `limit` outbox entries of any status, newest (by creation) first, created before
    /// the `before` cursor if given, whose source `scope` accepts and that pass `keep`: a
    /// reverse walk of the `n/` index, stopping after `limit` found or [`RECENT_SCAN_MAX`]
    /// index keys looked at. The cursor of the next page comes back when there may be more.
    /// In one call; the dashboard reads the same a chunk at a time
    /// ([`StateStore::recent_alerts_raw`], [`RecentPage`]).
    pub fn recent_alerts(
        &self,
        before: Option<&AlertCursor>,
        limit: usize,
        scope: impl Fn(&str) -> bool,
        keep: impl Fn(&OutboxEntry) -> bool,
    ) -> Result<AlertPage, StateError> {
        let mut page = RecentPage::new(before.cloned(), limit);
        loop {
            let chunk = self.recent_alerts_raw(page.from(), RECENT_READ_CHUNK, &scope)?;
            if page.take(chunk, &keep) {
                break;
            }
        }
        let sets = self.sets_raw(&page.sets())?;
        Ok(page.finish(&sets))
    }

    /// Up to `max` keys of the `n/` index older than `before` (all when `None`), newest first,
    /// each with its outbox record as stored when `scope` accepts its source: the part of
    /// [`StateStore::recent_alerts`] that reads, with nothing decoded.
    pub fn recent_alerts_raw(
        &self,
        before: Option<&AlertCursor>,
        max: usize,
        scope: &dyn Fn(&str) -> bool,
    ) -> Result<RecentChunk, StateError> {
        self.index_newest()?;
        let end = match before {
            Some(c) => newest_key(c.created_at, &c.id),
            None => b"n0".to_vec(), // just past every `n/` key
        };
        let mut chunk = RecentChunk::default();
        for item in self.tree.range(b"n/".to_vec()..end).rev() {
            let (k, v) = item.map_err(storage("reading the alerts index"))?;
            let (Some(at), Some(id)) = (
                k.get(2..10)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(|b| u64::from_be_bytes(b) as i64),
                k.get(10..).map(|b| String::from_utf8_lossy(b).into_owned()),
            ) else {
                continue;
            };
            if chunk.keys.len() >= max {
                chunk.more = true;
                break;
            }
            let record = match scope(&String::from_utf8_lossy(&v)) {
                true => self.alert_record(&id)?,
                false => None,
            };
            chunk
                .keys
                .push((AlertCursor { created_at: at, id }, record));
        }
        Ok(chunk)
    }

    /// Writes the `n/` index of every outbox entry once, for a state written before it existed
    /// (at open; a fresh state has nothing to index and is marked at once).
    fn index_newest(&self) -> Result<(), StateError> {
        if self
            .tree
            .contains_key(NEWEST_INDEXED)
            .map_err(storage("reading the alerts index mark"))?
        {
            return Ok(());
        }
        /// What the index needs of an entry.
        #[derive(Deserialize)]
        struct Head {
            alert: AlertHead,
        }
        #[derive(Deserialize)]
        struct AlertHead {
            id: String,
            source: String,
            created_at: i64,
        }
        for prefix in [&b"o/"[..], &b"d/"[..]] {
            for item in self.tree.scan_prefix(prefix) {
                let (_, v) = item.map_err(storage("indexing the outbox"))?;
                if let Ok(h) = serde_json::from_slice::<Head>(&v) {
                    self.tree
                        .insert(
                            newest_key(h.alert.created_at, &h.alert.id),
                            h.alert.source.as_bytes(),
                        )
                        .map_err(storage("indexing the outbox"))?;
                }
            }
        }
        self.tree
            .insert(NEWEST_INDEXED, &[][..])
            .map_err(storage("marking the outbox indexed"))?;
        Ok(())
    }

    /// Forgets sent alerts older than `cutoff` (their ids can no longer recur: the events that
    /// raised them are past the queue's retention too), their index keys, and the planned sets
    /// older than `cutoff` that no entry kept refers to.
    pub fn sweep_sent(&self, cutoff: i64) -> Result<usize, StateError> {
        let mut gone = Vec::new();
        // The sets an entry kept refers to.
        let mut kept = std::collections::HashSet::new();
        for prefix in [&b"d/"[..], &b"o/"[..]] {
            for item in self.tree.scan_prefix(prefix) {
                let (k, v) = item.map_err(storage("scanning the outbox"))?;
                if let Ok(e) = serde_json::from_slice::<OutboxEntry>(&v) {
                    if prefix == b"d/" && e.sent_at.unwrap_or(0) < cutoff {
                        gone.push((k, newest_key(e.alert.created_at, &e.alert.id)));
                    } else if let Some(set) = planned_sets::reference(&e) {
                        kept.insert(set_key(set));
                    }
                }
            }
        }
        for (k, n) in &gone {
            self.tree
                .remove(k)
                .map_err(storage("sweeping sent alerts"))?;
            self.tree
                .remove(n)
                .map_err(storage("sweeping sent alerts"))?;
        }
        // A set is written in the transaction that writes its first member, before it is
        // sent: one older than `cutoff` and referred to by no entry is no longer read.
        self.sweep(b"P/", "planned sets", |k, v| {
            !kept.contains(k)
                && serde_json::from_slice::<planned_sets::SetRecord>(v).is_ok_and(|r| r.at < cutoff)
        })?;
        Ok(gone.len())
    }

    /// Forgets the hourly event counters of hours before `cutoff` (the dashboard charts 24 h).
    pub fn sweep_hourly(&self, cutoff: i64) -> Result<usize, StateError> {
        self.sweep(b"m/source.", "hourly counters", |k, _| {
            counters::is_stale_hour(&String::from_utf8_lossy(&k[2..]), cutoff)
        })
    }

    /// Removes the records under `prefix` that `stale(key, value)` picks; how many.
    fn sweep(
        &self,
        prefix: &[u8],
        what: &str,
        stale: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<usize, StateError> {
        let mut gone = Vec::new();
        for item in self.tree.scan_prefix(prefix) {
            let (k, v) = item.map_err(|e| storage(&format!("scanning {what}"))(e))?;
            if stale(&k, &v) {
                gone.push(k);
            }
        }
        for k in &gone {
            self.tree
                .remove(k)
                .map_err(|e| storage(&format!("sweeping {what}"))(e))?;
        }
        Ok(gone.len())
    }

    /// The record of the entry with this id, open (`o/`) or sent (`d/`), not decoded.
    fn alert_record(&self, id: &str) -> Result<Option<sled::IVec>, StateError> {
        match self
            .tree
            .get(outbox_key(id))
            .map_err(storage("reading alert"))?
        {
            Some(v) => Ok(Some(v)),
            None => self
                .tree
                .get(sent_key(id))
                .map_err(storage("reading alert")),
        }
    }

    /// The entry with this id as stored (its planned set not resolved), if any.
    fn alert_raw(&self, id: &str) -> Result<Option<OutboxEntry>, StateError> {
        let v = self.alert_record(id)?;
        v.map(|v| {
            serde_json::from_slice(&v).map_err(|e| StateError::Storage {
                context: format!("decoding alert {id}"),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    pub fn alert(&self, id: &str) -> Result<OutboxEntry, StateError> {
        let mut e = self
            .alert_raw(id)?
            .ok_or_else(|| StateError::NotFound(id.to_string()))?;
        self.resolve(&mut e, &mut HashMap::new())?;
        Ok(e)
    }

    /// Updates outbox entries and adds to counters in one transaction, then syncs.
    pub fn update_alerts(
        &self,
        ids: &[String],
        f: impl Fn(&mut OutboxEntry),
        counters: &[(String, i64)],
    ) -> Result<(), StateError> {
        let now = stockhook_shared::queue::now_ms();
        self.tree
            .transaction(|tx| {
                let (mut sets, mut written) = (HashMap::new(), std::collections::HashSet::new());
                for id in ids {
                    let (active, sent) = (outbox_key(id), sent_key(id));
                    let found = match tx_get_entry(tx, &active, &mut sets)? {
                        Some(e) => Some(e),
                        None => tx_get_entry(tx, &sent, &mut sets)?,
                    };
                    if let Some(mut e) = found {
                        // Called by reference: a claim's closure owns every planned set, and
                        // cloning it per entry cost k² strings for a set of k.
                        f(&mut e);
                        // Sent entries live under d/, the rest under o/.
                        let (to, from) = if e.status == OutboxStatus::Sent {
                            (&sent, &active)
                        } else {
                            (&active, &sent)
                        };
                        tx.remove(from.as_slice())?;
                        tx_put_entry(tx, to, e, now, &sets, &mut written)?;
                    }
                }
                for (name, n) in counters {
                    tx_add(tx, name, *n)?;
                }
                Ok(())
            })
            .map_err(tx_err)?;
        self.sync()
    }

    /// Removes outbox entries.
    pub fn purge_alerts(&self, ids: &[String]) -> Result<(), StateError> {
        for id in ids {
            if let Some(e) = self.alert_raw(id)? {
                self.tree
                    .remove(newest_key(e.alert.created_at, id))
                    .map_err(storage("purging alert"))?;
            }
            for k in [outbox_key(id), sent_key(id)] {
                self.tree.remove(k).map_err(storage("purging alert"))?;
            }
        }
        self.sync()
    }

    pub fn counter(&self, name: &str) -> Result<i64, StateError> {
        Ok(self
            .tree
            .get([b"m/", name.as_bytes()].concat())
            .map_err(storage("reading counter"))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(i64::from_be_bytes)
            .unwrap_or(0))
    }

    /// Every counter, by name.
    pub fn counters(&self) -> Result<BTreeMap<String, i64>, StateError> {
        let mut out = BTreeMap::new();
        for item in self.tree.scan_prefix(b"m/") {
            let (k, v) = item.map_err(storage("reading counters"))?;
            if let Ok(a) = <[u8; 8]>::try_from(v.as_ref()) {
                out.insert(
                    String::from_utf8_lossy(&k[2..]).into_owned(),
                    i64::from_be_bytes(a),
                );
            }
        }
        Ok(out)
    }

    /// Every item, ordered by source and item id.
    pub fn items(&self) -> Result<Vec<ItemState>, StateError> {
        Ok(decode_items(&self.items_raw()?))
    }

    /// Every item record as stored, ordered by source and item id (not decoded: cheap clones
    /// of sled's buffers).
    pub fn items_raw(&self) -> Result<Vec<sled::IVec>, StateError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"i/") {
            let (_, v) = item.map_err(storage("scanning items"))?;
            out.push(v);
        }
        Ok(out)
    }

    fn item_log(&self) -> std::sync::MutexGuard<'_, Option<ItemLog>> {
        // The log is a set of keys: one left by a panic mid-insert is still a valid set.
        self.item_log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes item keys written by a transaction that committed, if the log is on.
    fn note_items(&self, keys: Vec<Vec<u8>>) {
        if keys.is_empty() {
            return;
        }
        if let Some(log) = self.item_log().as_mut() {
            log.keys.extend(keys);
        }
    }

    /// The item records changed since the read `since` (the generation it returned), with
    /// this read's generation; every record when `since` is not the last read's (or this is
    /// the first: it turns the log on, before scanning). Not decoded ([`RawItems::decode`]).
    /// One reader at a time follows the log: a second one gets full reads, and makes the
    /// first one's next read a full one too. In one call; the dashboard reads the same a
    /// chunk at a time ([`StateStore::begin_item_changes`]).
    pub fn item_changes_raw(&self, since: Option<u64>) -> Result<(u64, RawItems), StateError> {
        let mut read = self.begin_item_changes(since);
        while !self.read_item_changes(&mut read, usize::MAX)? {}
        Ok(read.finish())
    }

    /// Starts a read of the item records changed since the read `since`, as
    /// [`StateStore::item_changes_raw`] does in one call: this takes the changed keys (or turns
    /// the log on, for a full read); [`StateStore::read_item_changes`] then reads the records
    /// a chunk at a time.
    pub fn begin_item_changes(&self, since: Option<u64>) -> ItemChangesRead {
        let (generation, keys) = self.take_item_changes(since);
        let plan = match keys {
            Some(keys) => ReadPlan::Keys(keys.into_iter().collect()),
            None => ReadPlan::Scan { after: None },
        };
        ItemChangesRead {
            generation,
            plan,
            all: Vec::new(),
            changed: Vec::new(),
        }
    }

    /// Reads up to `max` more records of `read`; true when it has read them all.
    ///
    /// Why in chunks: the first read after a start scans every item (35,000 records take tens
    /// of milliseconds), and a scan runs where every sled call runs, on the event runtime's
    /// blocking pool at the events' priority. Read in one call it took the core from event
    /// processing for that long; a chunk at a time, asked for by the dashboard's idle-class
    /// thread (which asks for the next chunk only when the core has time), it takes at most a
    /// chunk's worth at once. A full scan read in chunks sees each item as it is when its chunk
    /// is read; what changes meanwhile is in the log, for the next read.
    pub fn read_item_changes(
        &self,
        read: &mut ItemChangesRead,
        max: usize,
    ) -> Result<bool, StateError> {
        match &mut read.plan {
            ReadPlan::Scan { after } => {
                let from = match after.take() {
                    Some(k) => Bound::Excluded(k),
                    None => Bound::Included(sled::IVec::from(&b"i/"[..])),
                };
                let end = Bound::Excluded(sled::IVec::from(ITEMS_END));
                let mut n = 0;
                for item in self.tree.range((from, end)) {
                    let (k, v) = item.map_err(storage("scanning items"))?;
                    read.all.push(v);
                    n += 1;
                    if n == max {
                        *after = Some(k);
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            ReadPlan::Keys(keys) => {
                let take = keys.len().saturating_sub(max);
                for k in keys.drain(take..) {
                    let v = self
                        .tree
                        .get(&k)
                        .map_err(storage("reading changed items"))?;
                    read.changed.push((k, v));
                }
                Ok(keys.is_empty())
            }
        }
    }

    /// The first half of [`StateStore::item_changes_raw`]: this read's generation and the keys
    /// noted since the read `since` (`None`: read everything; the log is on from here).
    fn take_item_changes(&self, since: Option<u64>) -> (u64, Option<HashSet<Vec<u8>>>) {
        let mut guard = self.item_log();
        let log = guard.get_or_insert_with(ItemLog::default);
        let follows = since == Some(log.generation) && log.generation != 0;
        log.generation += 1;
        let keys = std::mem::take(&mut log.keys);
        (log.generation, follows.then_some(keys))
    }

    /// The ids of `source`'s live items, read one record at a time (only the removal mark is
    /// decoded).
    pub fn live_item_ids(&self, source: &str) -> Result<Vec<String>, StateError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(key2("i/", source, "")) {
            let (_, v) = item.map_err(storage("scanning items"))?;
            if let Ok(h) = serde_json::from_slice::<super::ItemHead>(&v) {
                if h.removed.is_none() {
                    out.push(h.item);
                }
            }
        }
        Ok(out)
    }

    /// Forgets processed-event marks older than `cutoff` (they can no longer be redelivered).
    pub fn sweep_processed(&self, cutoff: i64) -> Result<usize, StateError> {
        let mut stale = Vec::new();
        for prefix in [&b"p/"[..], &b"q/"[..]] {
            for item in self.tree.scan_prefix(prefix) {
                let (k, v) = item.map_err(storage("scanning processed ids"))?;
                let at = <[u8; 8]>::try_from(v.as_ref())
                    .map(i64::from_be_bytes)
                    .unwrap_or(0);
                if at < cutoff {
                    stale.push(k);
                }
            }
        }
        for k in &stale {
            self.tree
                .remove(k)
                .map_err(storage("sweeping processed ids"))?;
        }
        Ok(stale.len())
    }
}

#[derive(Serialize, Deserialize)]
struct DryRun(Vec<Option<Vec<Alert>>>);

fn summarize(out: &[Applied]) -> Vec<Option<Vec<Alert>>> {
    out.iter()
        .map(|a| match a {
            Applied::Done { alerts } => Some(alerts.clone()),
            Applied::AlreadyProcessed => None,
        })
        .collect()
}

/// Runs a [`Store`] future of the sled backend to completion. sled transactions are synchronous
/// closures; the engine is async for the NATS backend, and every [`SledTx`] operation finishes
/// without waiting, so the first poll completes. A future that does wait is a bug: an error.
fn run_ready<T>(f: impl Future<Output = Result<T, Tx>>) -> Result<T, Tx> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => Err(abort("bug: a sled state operation waited")),
    }
}

/// The engine's records inside one sled transaction.
///
/// Item records are read and decoded once per transaction and written back once, by
/// [`SledTx::flush`]: a catalog chunk of 500 items, each with an entry, location names and
/// levels (three updates of the same record), is one decode and one encode per item, not three.
/// Counters likewise: every event of a batch adds to the same few (`events.processed`, its
/// source's total and hour), summed here and written once each.
struct SledTx<'a> {
    tx: &'a TransactionalTree,
    items: RefCell<HashMap<Vec<u8>, Cached>>,
    counts: RefCell<HashMap<String, i64>>,
}

/// An item record as this transaction sees it; `dirty`: to be written by [`SledTx::flush`].
struct Cached {
    state: Option<ItemState>,
    dirty: bool,
}

impl<'a> SledTx<'a> {
    fn new(tx: &'a TransactionalTree) -> SledTx<'a> {
        SledTx {
            tx,
            items: RefCell::new(HashMap::new()),
            counts: RefCell::new(HashMap::new()),
        }
    }

    /// The record at `key` as this transaction sees it.
    fn cached_item(&self, key: &[u8]) -> Result<Option<ItemState>, Tx> {
        if let Some(c) = self.items.borrow().get(key) {
            return Ok(c.state.clone());
        }
        let state: Option<ItemState> = tx_get(self.tx, key)?;
        self.items.borrow_mut().insert(
            key.to_vec(),
            Cached {
                state: state.clone(),
                dirty: false,
            },
        );
        Ok(state)
    }

    fn set_item(&self, key: Vec<u8>, state: Option<ItemState>) {
        self.items
            .borrow_mut()
            .insert(key, Cached { state, dirty: true });
    }

    /// Writes the item records and counters changed in this transaction, each once, and
    /// returns the item keys written (for [`StateStore::note_items`] once it commits). Must run
    /// before the transaction commits.
    fn flush(&self) -> Result<Vec<Vec<u8>>, Tx> {
        let mut written = Vec::new();
        for (name, n) in self.counts.borrow_mut().drain() {
            if n != 0 {
                tx_add(self.tx, &name, n)?;
            }
        }
        for (key, c) in self.items.borrow_mut().iter_mut() {
            if !c.dirty {
                continue;
            }
            match &c.state {
                Some(st) => tx_put(self.tx, key, st)?,
                None => {
                    self.tx.remove(key.as_slice())?;
                }
            }
            c.dirty = false;
            written.push(key.clone());
        }
        Ok(written)
    }
}

/// `K/<sku>`: every (source, item) that carries this SKU, for the cross-channel rule (sled
/// transactions cannot scan, so the members are one record).
fn members_key(sku: &str) -> Vec<u8> {
    [b"K/", sku.as_bytes()].concat()
}

/// `r/<event id>`: the facts of a processed event refused as implausible.
fn refused_key(id: u64) -> Vec<u8> {
    [b"r/".as_slice(), &id.to_be_bytes()].concat()
}

fn processed_key(id: u64) -> Vec<u8> {
    [b"p/".as_slice(), &id.to_be_bytes()].concat()
}

impl Store for SledTx<'_> {
    type Error = Tx;

    async fn processed(&self, id: u64) -> Result<bool, Tx> {
        Ok(self.tx.get(processed_key(id))?.is_some())
    }

    async fn mark_processed(&self, id: u64, now: i64) -> Result<bool, Tx> {
        let old = self.tx.insert(processed_key(id), &now.to_be_bytes()[..])?;
        Ok(old.is_none())
    }

    async fn refused(&self, id: u64) -> Result<Vec<u32>, Tx> {
        Ok(tx_get(self.tx, &refused_key(id))?.unwrap_or_default())
    }

    async fn set_refused(&self, id: u64, facts: &[u32]) -> Result<(), Tx> {
        if facts.is_empty() {
            self.tx.remove(refused_key(id))?;
            return Ok(());
        }
        tx_put(self.tx, &refused_key(id), &facts)
    }

    async fn claim(&self, mark: Mark<'_>, _tok: Token, now: i64) -> Result<bool, Tx> {
        // The whole event is one transaction: a mark found is never this event's own.
        let key = match mark {
            // Swept with the processed marks: the value is the time.
            Mark::Payload { source, key } => key2("q/", source, key),
            Mark::Sale {
                source,
                order,
                line,
            } => [key2("s/", source, order).as_slice(), b"\0", line.as_bytes()].concat(),
        };
        if self.tx.get(&key)?.is_some() {
            return Ok(false);
        }
        self.tx.insert(key, &now.to_be_bytes()[..])?;
        Ok(true)
    }

    async fn alias(&self, source: &str, alias: &str) -> Result<Option<String>, Tx> {
        Ok(self
            .tx
            .get(key2("a/", source, alias))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn set_alias(&self, source: &str, alias: &str, item: &str) -> Result<(), Tx> {
        self.tx.insert(key2("a/", source, alias), item.as_bytes())?;
        Ok(())
    }

    async fn item(&self, source: &str, item: &str) -> Result<Option<ItemState>, Tx> {
        self.cached_item(&item_key(source, item))
    }

    async fn remove_item(&self, source: &str, item: &str) -> Result<(), Tx> {
        self.set_item(item_key(source, item), None);
        Ok(())
    }

    async fn update_item(
        &self,
        source: &str,
        item: &str,
        _tok: Token,
        f: &mut (dyn FnMut(Option<ItemState>) -> Step<ItemState> + Send),
    ) -> Result<Once<ItemState>, Tx> {
        let key = item_key(source, item);
        let cur = self.cached_item(&key)?;
        let step = f(cur.clone());
        if let Some(next) = &step.next {
            self.set_item(key, Some(next.clone()));
        }
        Ok(Once {
            current: step.next.or(cur),
            alerts: step.alerts,
            fresh: true,
        })
    }

    async fn members(&self, sku: &str) -> Result<Vec<Member>, Tx> {
        Ok(tx_get(self.tx, &members_key(sku))?.unwrap_or_default())
    }

    async fn update_members(
        &self,
        sku: &str,
        f: &mut (dyn FnMut(&mut Vec<Member>) + Send),
    ) -> Result<(), Tx> {
        let k = members_key(sku);
        let mut members: Vec<Member> = tx_get(self.tx, &k)?.unwrap_or_default();
        f(&mut members);
        if members.is_empty() {
            self.tx.remove(k)?;
        } else {
            tx_put(self.tx, &k, &members)?;
        }
        Ok(())
    }

    async fn update_combined(
        &self,
        sku: &str,
        _tok: Token,
        f: &mut (dyn FnMut(Arming) -> Step<Arming> + Send),
    ) -> Result<Once<Arming>, Tx> {
        let key = [b"c/", sku.as_bytes()].concat();
        let cur: Option<Arming> = tx_get(self.tx, &key)?;
        let step = f(cur.unwrap_or_default());
        if let Some(next) = &step.next {
            tx_put(self.tx, &key, next)?;
        }
        Ok(Once {
            current: step.next.or(cur),
            alerts: step.alerts,
            fresh: true,
        })
    }

    async fn cancel(&self, alert_id: &str) -> Result<bool, Tx> {
        let k = outbox_key(alert_id);
        // As stored: a planned set may be a reference, which is enough to say it is planned.
        let Some(mut e): Option<OutboxEntry> = tx_get(self.tx, &k)? else {
            return Ok(false);
        };
        if e.status != OutboxStatus::Pending || !e.planned.is_empty() {
            return Ok(false);
        }
        e.status = OutboxStatus::Cancelled;
        e.last_error = Some("cancelled: the item left the catalog".into());
        tx_put(self.tx, &k, &e)?;
        Ok(true)
    }

    async fn enqueue(&self, entry: OutboxEntry) -> Result<bool, Tx> {
        let k = outbox_key(&entry.alert.id);
        if self.tx.get(&k)?.is_some() || self.tx.get(sent_key(&entry.alert.id))?.is_some() {
            return Ok(false);
        }
        self.tx.insert(
            newest_key(entry.alert.created_at, &entry.alert.id),
            entry.alert.source.as_bytes(),
        )?;
        tx_put(self.tx, &k, &entry)?;
        Ok(true)
    }

    async fn count(&self, name: &str, n: i64) -> Result<(), Tx> {
        let mut counts = self.counts.borrow_mut();
        match counts.get_mut(name) {
            Some(sum) => *sum += n,
            None => {
                counts.insert(name.to_string(), n);
            }
        }
        Ok(())
    }
}

/// The rules themselves are tested once for both backends in `worker/tests/state.rs`; these are
/// what only the sled layout has.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::Rule;
    use crate::facts::Fact;
    use stockhook_shared::envelope::EventId;

    fn rules() -> RuleConfig {
        RuleConfig::example()
    }

    fn low(id: u64, item: &str) -> Prepared {
        level(id, item, 1, 1)
    }

    #[test]
    fn dry_run_aborts_the_transaction_and_hands_back_the_alerts() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let a = s.apply_batch(&[low(1, "x")], &rules(), 0, true).unwrap();
        let Applied::Done { alerts } = &a[0] else {
            panic!("{a:?}")
        };
        assert_eq!(alerts[0].rule, Rule::LowStock);
        assert!(s.items().unwrap().is_empty());
        assert!(s.due_alerts(10).unwrap().is_empty());
        assert!(s.counters().unwrap().is_empty());
    }

    #[test]
    fn sent_alerts_leave_the_active_outbox_and_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        s.apply_batch(&[low(1, "x")], &rules(), 100, false).unwrap();
        let id = s.due_alerts(100).unwrap()[0].alert.id.clone();
        s.update_alerts(
            std::slice::from_ref(&id),
            |e| {
                e.status = OutboxStatus::Sent;
                e.sent_at = Some(200);
            },
            &[(counters::ALERTS_SENT.to_string(), 1)],
        )
        .unwrap();
        assert!(s.due_alerts(1_000).unwrap().is_empty());
        assert_eq!(s.next_due().unwrap(), None);
        assert_eq!(s.alert(&id).unwrap().status, OutboxStatus::Sent);
        assert_eq!(
            s.outbox(|_| true).unwrap().len(),
            1,
            "the full view still lists it"
        );
        // The same alert id cannot be enqueued again once sent.
        let entry = s.alert(&id).unwrap();
        let again: Result<bool, TransactionError<String>> = s
            .tree
            .transaction(|tx| run_ready(SledTx::new(tx).enqueue(entry.clone())));
        assert!(!again.unwrap(), "already sent: not enqueued");
        assert!(s.due_alerts(1_000).unwrap().is_empty());
        assert_eq!(s.sweep_sent(150).unwrap(), 0);
        assert_eq!(s.sweep_sent(201).unwrap(), 1);
        assert!(matches!(s.alert(&id), Err(StateError::NotFound(_))));
    }

    /// A level of `n` units of `item` (at time `at`) in event `id`.
    fn level(id: u64, item: &str, n: i64, at: i64) -> Prepared {
        event(
            id,
            Fact::InventoryLevel {
                item: item.into(),
                location: "l".into(),
                available: Some(n),
                at,
            },
        )
    }

    fn event(id: u64, fact: Fact) -> Prepared {
        Prepared::synthetic(
            EventId(id),
            i64::MAX / 2,
            "shop",
            "shopify",
            "t",
            vec![fact],
        )
    }

    /// The dashboard's side of [`StateStore::item_changes_raw`]: a copy of every item, by
    /// (source, item), and the generation to read on from.
    #[derive(Default)]
    struct Copy {
        generation: Option<u64>,
        items: BTreeMap<(String, String), ItemState>,
    }

    impl Copy {
        /// Reads on from the last read; whether that was a full read.
        fn read(&mut self, s: &StateStore) -> bool {
            let (generation, raw) = s.item_changes_raw(self.generation).unwrap();
            self.apply(generation, raw)
        }

        /// Applies a read's records; whether it was a full read.
        fn apply(&mut self, generation: u64, raw: RawItems) -> bool {
            self.generation = Some(generation);
            let full = matches!(raw, RawItems::All(_));
            let key = |st: &ItemState| (st.source.clone(), st.item.clone());
            match raw.decode() {
                ItemChanges::All(items) => {
                    self.items = items.into_iter().map(|st| (key(&st), st)).collect()
                }
                ItemChanges::Changed { items, gone } => {
                    for k in gone {
                        self.items.remove(&k);
                    }
                    self.items
                        .extend(items.into_iter().map(|st| (key(&st), st)));
                }
            }
            full
        }

        fn is_full_read_of(&self, s: &StateStore) -> bool {
            self.items.values().cloned().collect::<Vec<_>>() == s.items().unwrap()
        }
    }

    /// How many item keys the log holds (`None`: off).
    fn logged(s: &StateStore) -> Option<usize> {
        s.item_log().as_ref().map(|l| l.keys.len())
    }

    fn changed_items(s: &StateStore, generation: u64) -> (u64, Vec<String>, Vec<String>) {
        let (g, raw) = s.item_changes_raw(Some(generation)).unwrap();
        let ItemChanges::Changed { items, gone } = raw.decode() else {
            panic!("a full read after generation {generation}")
        };
        (
            g,
            items.into_iter().map(|st| st.item).collect(),
            gone.into_iter().map(|(_, item)| item).collect(),
        )
    }

    #[test]
    fn item_changes_read_only_what_committed_since_the_last_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        s.apply_batch(
            &[level(1, "x", 5, 1), level(2, "y", 5, 1)],
            &rules(),
            100,
            false,
        )
        .unwrap();
        assert_eq!(logged(&s), None, "nothing kept before a reader asks");
        let mut copy = Copy::default();
        assert!(copy.read(&s), "the first read reads everything");
        assert_eq!(copy.items.len(), 2);
        // One changed, one new.
        s.apply_batch(
            &[level(3, "x", 4, 2), level(4, "z", 5, 2)],
            &rules(),
            100,
            false,
        )
        .unwrap();
        let g = copy.generation.unwrap();
        let (g, mut items, gone) = changed_items(&s, g);
        items.sort();
        assert_eq!((items, gone), (vec!["x".to_string(), "z".into()], vec![]));
        // Nothing since.
        let (g, items, gone) = changed_items(&s, g);
        assert!(items.is_empty() && gone.is_empty(), "{items:?} {gone:?}");
        // A removed record: `x` becomes an alias of `v`, its record merged into v's and gone.
        let ev = event(
            5,
            Fact::CatalogEntry {
                item: "v".into(),
                aliases: vec!["x".into()],
                sku: None,
                title: None,
                at: 3,
            },
        );
        s.apply_batch(&[ev], &rules(), 100, false).unwrap();
        let (g, items, gone) = changed_items(&s, g);
        assert_eq!(
            (items, gone),
            (vec!["v".to_string()], vec!["x".to_string()])
        );
        // A dry run, of a batch and of the scheduled pass, notes nothing.
        s.apply_batch(&[level(6, "y", 1, 9)], &rules(), 100, true)
            .unwrap();
        let day = 86_400_000;
        assert!(!s
            .run_no_sales(&rules(), 100 * day, true)
            .unwrap()
            .is_empty());
        assert_eq!(logged(&s), Some(0));
        let (g, items, _) = changed_items(&s, g);
        assert!(items.is_empty(), "{items:?}");
        // The scheduled pass writes the items it fires for.
        assert!(!s
            .run_no_sales(&rules(), 100 * day, false)
            .unwrap()
            .is_empty());
        let (_, items, _) = changed_items(&s, g);
        assert!(!items.is_empty(), "the scheduled pass's writes are noted");
        copy.generation = None;
        copy.read(&s);
        assert!(copy.is_full_read_of(&s));
    }

    /// A transaction that commits after a read took the log, but before it read the records,
    /// is read again next time: nothing is lost between the take and the reads.
    #[test]
    fn a_commit_between_the_take_and_the_reads_is_read_next_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let (g, _) = s.item_changes_raw(None).unwrap();
        s.apply_batch(&[level(1, "x", 5, 1)], &rules(), 100, false)
            .unwrap();
        let (g, keys) = s.take_item_changes(Some(g));
        assert_eq!(keys.map(|k| k.len()), Some(1));
        // Commits now, before the taken keys would be read.
        s.apply_batch(
            &[level(2, "x", 3, 2), level(3, "y", 3, 2)],
            &rules(),
            100,
            false,
        )
        .unwrap();
        let (_, mut items, _) = changed_items(&s, g);
        items.sort();
        assert_eq!(items, ["x", "y"]);
    }

    /// A reader whose cursor is not the last read's (a second reader, or one that lost its
    /// copy) reads everything, and so does the reader it overtook.
    #[test]
    fn a_stale_cursor_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        s.apply_batch(&[level(1, "x", 5, 1)], &rules(), 100, false)
            .unwrap();
        let (mut a, mut b) = (Copy::default(), Copy::default());
        assert!(a.read(&s));
        assert!(!a.read(&s));
        assert!(b.read(&s), "a second reader");
        assert!(a.read(&s), "the first one after the second");
        assert!(a.is_full_read_of(&s));
        assert!(matches!(
            s.item_changes_raw(Some(0)).unwrap().1,
            RawItems::All(_)
        ));
    }

    /// Many batches of changes and removals, read incrementally between them, give the same
    /// items as a full read.
    /// `len` events on items `i0`..`i{items}`: level reports, and one in ten a catalog entry
    /// that adopts another item as its alias (that one's record goes).
    fn random_batch(
        rng: &mut rand::rngs::StdRng,
        id: &mut u64,
        len: usize,
        items: u32,
    ) -> Vec<Prepared> {
        use rand::Rng;
        (0..len)
            .map(|_| {
                *id += 1;
                let id = *id;
                let item = format!("i{}", rng.gen_range(0..items));
                if rng.gen_bool(0.1) {
                    event(
                        id,
                        Fact::CatalogEntry {
                            item: item.clone(),
                            aliases: vec![format!("i{}", rng.gen_range(0..items))],
                            sku: None,
                            title: Some(format!("t{id}")),
                            at: id as i64,
                        },
                    )
                } else {
                    level(id, &item, rng.gen_range(0..20), id as i64)
                }
            })
            .collect()
    }

    #[test]
    fn incremental_reads_after_many_changes_equal_a_full_read() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(16);
        let mut copy = Copy::default();
        let mut id = 0;
        for round in 0..40 {
            let len = rng.gen_range(1..30);
            let batch = random_batch(&mut rng, &mut id, len, 60);
            s.apply_batch(&batch, &rules(), 100, rng.gen_bool(0.1))
                .unwrap();
            if round % 3 != 0 {
                let full = copy.read(&s);
                assert_eq!(full, copy.generation == Some(1), "round {round}");
                assert!(copy.is_full_read_of(&s), "round {round}");
            }
        }
        assert!(copy.items.len() > 20, "{}", copy.items.len());
    }

    /// The dashboard's reads a chunk at a time (`read_item_changes`), with batches committed
    /// between the chunks: what a chunk missed is in the log, so the next read (in one call,
    /// nothing committing meanwhile) leaves the copy equal to a full read. Keys of the records
    /// next to the items' range (`c/`, `K/`, `n/`, `o/`, `P/`...) are never read as items.
    #[test]
    fn reads_a_chunk_at_a_time_with_commits_between_chunks_equal_a_full_read() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1616);
        let mut copy = Copy::default();
        let mut id = 0;
        let mut commit = |s: &StateStore, rng: &mut rand::rngs::StdRng| {
            let len = rng.gen_range(1..8);
            let batch = random_batch(rng, &mut id, len, 80);
            s.apply_batch(&batch, &rules(), 100, false).unwrap();
        };
        for _ in 0..5 {
            commit(&s, &mut rng);
        }
        let mut full_reads = 0;
        for round in 0..30 {
            let chunk = rng.gen_range(1..7);
            let mut read = s.begin_item_changes(copy.generation);
            let mut chunks = 0;
            while !s.read_item_changes(&mut read, chunk).unwrap() {
                chunks += 1;
                commit(&s, &mut rng);
            }
            let (generation, raw) = read.finish();
            full_reads += matches!(raw, RawItems::All(_)) as u32;
            copy.apply(generation, raw);
            assert!(
                chunks > 0 || round > 0,
                "the first read took more than one chunk"
            );
            // Nothing commits during this one: it must catch up with everything.
            copy.read(&s);
            assert!(copy.is_full_read_of(&s), "round {round}, chunk {chunk}");
        }
        assert_eq!(full_reads, 1, "only the first read scans everything");
        assert!(copy.items.len() > 15, "{}", copy.items.len());
        let scanned = s.items().unwrap().len();
        assert_eq!(
            copy.items.len(),
            scanned,
            "no record of another kind read as an item"
        );
    }

    fn keys(s: &StateStore, prefix: &[u8]) -> Vec<(sled::IVec, sled::IVec)> {
        s.tree.scan_prefix(prefix).map(Result::unwrap).collect()
    }

    /// A planned set is stored once (`P/`), each member holding a reference, and every read
    /// (the sender's scan, by id, inside an update, after it moved to `d/`) gives the members.
    #[test]
    fn a_planned_set_is_stored_once_and_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let batch: Vec<Prepared> = (0..50).map(|i| low(i + 1, &format!("x{i}"))).collect();
        s.apply_batch(&batch, &rules(), 100, false).unwrap();
        let mut ids: Vec<String> = s
            .due_alerts(100)
            .unwrap()
            .into_iter()
            .map(|e| e.alert.id)
            .collect();
        ids.sort();
        assert_eq!(ids.len(), 50);
        let set = ids.clone();
        s.update_alerts(&ids, move |e| e.planned = set.clone().into(), &[])
            .unwrap();
        assert_eq!(keys(&s, b"P/").len(), 1, "one record for the set");
        for (_, v) in keys(&s, b"o/") {
            assert!(
                v.len() < 1_000,
                "a member holds a reference: {} bytes",
                v.len()
            );
        }
        assert!(s.due_alerts(100).unwrap().iter().all(|e| e.planned == ids));
        let open = s.open_alerts().unwrap();
        assert_eq!(open.len(), 50);
        assert!(
            open.iter().all(|e| e.planned == ids),
            "open entries resolved"
        );
        assert_eq!(s.alert(&ids[7]).unwrap().planned, ids);
        // An update sees the members, and keeps them; sent, they are still whole.
        let want = ids.clone();
        let sent_at = stockhook_shared::queue::now_ms();
        s.update_alerts(
            &ids,
            move |e| {
                assert_eq!(e.planned, want);
                e.status = OutboxStatus::Sent;
                e.sent_at = Some(sent_at);
            },
            &[],
        )
        .unwrap();
        assert!(s.due_alerts(1_000).unwrap().is_empty());
        assert!(s.open_alerts().unwrap().is_empty(), "sent: not open");
        assert_eq!(s.alert(&ids[3]).unwrap().planned, ids);
        assert!(s.outbox(|_| true).unwrap().iter().all(|e| e.planned == ids));
        assert_eq!(keys(&s, b"P/").len(), 1);
        // Kept while a member is; swept with its members (the set was written before they
        // were sent).
        assert_eq!(s.sweep_sent(sent_at).unwrap(), 0);
        assert_eq!(keys(&s, b"P/").len(), 1);
        assert_eq!(s.sweep_sent(sent_at + 1).unwrap(), 50);
        assert!(keys(&s, b"P/").is_empty());
        assert!(keys(&s, b"n/").is_empty(), "index keys swept too");
    }

    /// The alerts list is read newest first by key range, a page at a time, scoped by source.
    #[test]
    fn the_alerts_index_is_written_at_open_never_by_the_first_alerts_page() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        {
            let s = StateStore::open(&path).unwrap();
            // Fresh: marked at open, so the first alerts page has nothing to write.
            assert!(s.tree.contains_key(NEWEST_INDEXED).unwrap());
            for i in 0..5u64 {
                s.apply_batch(
                    &[low(i + 1, &format!("x{i}"))],
                    &rules(),
                    1_000 + i as i64,
                    false,
                )
                .unwrap();
            }
            // As a state written before the index existed.
            s.tree.remove(NEWEST_INDEXED).unwrap();
            for (k, _) in keys(&s, b"n/") {
                s.tree.remove(k).unwrap();
            }
            s.sync().unwrap();
        }
        let s = StateStore::open(&path).unwrap();
        assert!(s.tree.contains_key(NEWEST_INDEXED).unwrap());
        assert_eq!(keys(&s, b"n/").len(), 5, "indexed at open");
    }

    /// Pages walked to the end, at limits on both sides of a chunk's size, list exactly the
    /// outbox newest first (scoped or not), each page at most `limit` long and only the last
    /// without a cursor.
    #[test]
    fn recent_alerts_pages_across_read_chunks_list_the_whole_outbox_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        let n = 2 * RECENT_READ_CHUNK as u64 + 22;
        for b in 0..n / 10 + 1 {
            let evs: Vec<Prepared> = (b * 10..(b * 10 + 10).min(n))
                .map(|i| {
                    let mut ev = low(i + 1, &format!("x{i}"));
                    if i % 4 == 0 {
                        ev.source = "other".into();
                    }
                    ev
                })
                .collect();
            s.apply_batch(&evs, &rules(), 1_000 + b as i64, false)
                .unwrap();
        }
        let newest_first = |keep: &dyn Fn(&str) -> bool| {
            let mut v: Vec<String> = s
                .outbox(|e| keep(&e.alert.source))
                .unwrap()
                .into_iter()
                .map(|e| e.alert.id)
                .collect();
            v.reverse();
            v
        };
        let c = RECENT_READ_CHUNK;
        for scope in [None, Some("shop")] {
            let accepts = |src: &str| scope.is_none_or(|x| x == src);
            let want = newest_first(&accepts);
            let shop = (0..n).filter(|i| i % 4 != 0).count();
            assert_eq!(want.len(), if scope.is_none() { n as usize } else { shop });
            for limit in [1, c - 1, c, c + 1, 2 * c, want.len(), 1_000] {
                let (mut got, mut before, mut pages) = (Vec::new(), None, 0);
                loop {
                    let page = s
                        .recent_alerts(before.as_ref(), limit, accepts, |_| true)
                        .unwrap();
                    assert!(page.entries.len() <= limit);
                    got.extend(page.entries.into_iter().map(|e| e.alert.id));
                    pages += 1;
                    match page.next {
                        Some(next) => before = Some(next),
                        None => break,
                    }
                }
                assert_eq!(got, want, "scope {scope:?}, limit {limit}");
                assert!(
                    pages >= want.len().div_ceil(limit),
                    "limit {limit}: {pages} pages"
                );
            }
        }
    }

    #[test]
    fn recent_alerts_page_newest_first_by_key_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(&dir.path().join("state")).unwrap();
        for i in 0..30u64 {
            let mut ev = low(i + 1, &format!("x{i}"));
            if i % 3 == 0 {
                ev.source = "other".into();
            }
            s.apply_batch(&[ev], &rules(), 1_000 + i as i64, false)
                .unwrap();
        }
        let all = |_: &str| true;
        let first = s.recent_alerts(None, 12, all, |_| true).unwrap();
        let items: Vec<&str> = first
            .entries
            .iter()
            .map(|e| e.alert.item.as_str())
            .collect();
        assert_eq!(items[..3], ["x29", "x28", "x27"]);
        assert_eq!(items.len(), 12);
        let second = s
            .recent_alerts(first.next.as_ref(), 12, all, |_| true)
            .unwrap();
        assert_eq!(second.entries[0].alert.item, "x17");
        let third = s
            .recent_alerts(second.next.as_ref(), 12, all, |_| true)
            .unwrap();
        assert_eq!(third.entries.len(), 6);
        assert!(third.next.is_none());
        // A scope keeps its sources only, newest first.
        let shop = s
            .recent_alerts(None, 100, |src: &str| src == "shop", |_| true)
            .unwrap();
        assert_eq!(shop.entries.len(), 20);
        assert!(shop.entries.iter().all(|e| e.alert.source == "shop"));
        assert_eq!(shop.entries[0].alert.item, "x29");
        // A state written before the index: it is built on first use.
        s.tree.remove(NEWEST_INDEXED).unwrap();
        for (k, _) in keys(&s, b"n/") {
            s.tree.remove(k).unwrap();
        }
        assert_eq!(
            s.recent_alerts(None, 100, all, |_| true)
                .unwrap()
                .entries
                .len(),
            30
        );
    }
}
