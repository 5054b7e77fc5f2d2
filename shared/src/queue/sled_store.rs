//! The queue on sled: the on-disk layout, the in-memory index rebuilt from it at open, and every
//! queue operation as a plain (blocking) method.
//!
//! Layout (format 2), one sled database at `<data_dir>/queue`:
//! * `groups`: the events of each group commit, packed into one stream and cut into chunks
//!   ([`super::group_log`]): one group commit is a few inserts, and no record ever reaches
//!   sled's blob threshold, whatever the body size;
//! * `state`: event id -> [`Record`] (status, attempts, retry time, status time, error), written
//!   when an event is leased, acked, failed, replayed or purged; no record means pending;
//! * `meta`: `format` -> `2`.
//!
//! The dedup index lives in memory (a hash of each delivery id -> event id and time), rebuilt at
//! open from the events received inside the dedup window; a hit is confirmed against the stored
//! key. A database of format 1 (trees `events`, `state`, `dedup`: one record per event) is
//! migrated at open, in place, before anything is served.
//!
//! Invariant: [`SledStore::append_batch`] returns only after `flush()`, the fsync of anything
//! sled created ([`crate::durable::SledFiles`]) **and** an `fdatasync` of the database file
//! (sled's own flush issues `sync_file_range`, which a drive's write cache can still lose).
//! Leases live only in memory: after a crash a leased event is pending again, with the attempt
//! already counted. This module never logs bodies.

use super::group_log::{self, CHUNK, MAX_GROUP_BYTES};
use super::{
    AppendOutcome, DeadFilter, DeadLetter, Failure, Leased, NewEvent, QueueError, QueueStats,
};
use crate::durable::SledFiles;
use crate::envelope::{encode_parts_into, Envelope, EventId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Status of an event in the `state` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending = 1,
    Acked = 2,
    Dead = 3,
    /// Deleted while other events of its group remain on disk.
    Purged = 4,
}

/// One event's queue state, persisted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    status: Status,
    attempts: u32,
    /// Pending: not deliverable before this time (retry backoff).
    not_before_ms: i64,
    /// When it reached its status (acked or dead).
    at_ms: i64,
    error: String,
}

impl Record {
    fn pending() -> Record {
        Record {
            status: Status::Pending,
            attempts: 0,
            not_before_ms: 0,
            at_ms: 0,
            error: String::new(),
        }
    }
    fn purged() -> Record {
        Record {
            status: Status::Purged,
            ..Record::pending()
        }
    }
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(21 + self.error.len());
        v.push(self.status as u8);
        v.extend_from_slice(&self.attempts.to_be_bytes());
        v.extend_from_slice(&self.not_before_ms.to_be_bytes());
        v.extend_from_slice(&self.at_ms.to_be_bytes());
        v.extend_from_slice(self.error.as_bytes());
        v
    }
    fn decode(b: &[u8]) -> Option<Record> {
        if b.len() < 21 {
            return None;
        }
        let status = match b[0] {
            1 => Status::Pending,
            2 => Status::Acked,
            3 => Status::Dead,
            4 => Status::Purged,
            _ => return None,
        };
        Some(Record {
            status,
            attempts: u32::from_be_bytes(b[1..5].try_into().ok()?),
            not_before_ms: i64::from_be_bytes(b[5..13].try_into().ok()?),
            at_ms: i64::from_be_bytes(b[13..21].try_into().ok()?),
            error: String::from_utf8_lossy(&b[21..]).into_owned(),
        })
    }
}

/// Where one event's frame is in its group's stream.
#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u64,
    off: u32,
    len: u32,
    gone: bool,
}

/// One group commit's events on disk.
#[derive(Debug, Default)]
struct Group {
    /// In id order.
    slots: Vec<Slot>,
    /// Slots not yet deleted; at 0 the group's chunks are removed.
    live: u32,
    /// The stream's length.
    bytes: u32,
}

/// What is deliverable, in memory. Rebuilt from `groups` and `state` at open.
#[derive(Default)]
struct Index {
    /// Deliverable now, in arrival order, with the source (for per-source counts).
    ready: BTreeMap<u64, Arc<str>>,
    /// Waiting for a retry time: (not_before, id).
    delayed: BTreeSet<(i64, u64)>,
    delayed_src: HashMap<u64, Arc<str>>,
    /// Leased: id -> (deadline, source).
    leased: HashMap<u64, (i64, Arc<str>)>,
    dead: BTreeMap<u64, Arc<str>>,
    /// Acked and retained: (acked_at, id).
    acked: BTreeSet<(i64, u64)>,
    /// Every stored event's place: first event id of the group -> group.
    groups: BTreeMap<u64, Group>,
    /// Hash of `source \0 delivery id` -> (event id, received at), inside the dedup window.
    dedup: HashMap<u64, (u64, i64)>,
}

impl Index {
    /// The group holding event `id` and its slot there.
    fn locate(&self, id: u64) -> Option<(u64, Slot)> {
        let (g, group) = self.groups.range(..=id).next_back()?;
        let i = group.slots.binary_search_by_key(&id, |s| s.id).ok()?;
        let slot = group.slots[i];
        (!slot.gone).then_some((*g, slot))
    }
}

/// sled's page cache for the queue (its default is 1 GiB). The receiver writes events once and
/// the worker reads each back soon after, so a small cache of recent pages serves both; bounding
/// it is what keeps the receiver's RSS flat under load (it grew by ~2.3 KiB per appended event).
const CACHE_BYTES: u64 = 16 << 20;

/// The on-disk format this build writes (`meta` tree, key `format`).
const FORMAT: &[u8] = b"2";

/// Settings the store needs from config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_attempts: u32,
    pub retention_ms: i64,
    pub dedup_window_ms: i64,
    pub max_queue_bytes: u64,
    /// Refuse appends when the filesystem has less than this free.
    pub min_free_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_attempts: 10,
            retention_ms: 7 * 86_400_000,
            dedup_window_ms: 48 * 3_600_000,
            max_queue_bytes: 4 << 30,
            min_free_bytes: 64 << 20,
        }
    }
}

/// The sled-backed queue. Cheap to share behind an `Arc`.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    groups: sled::Tree,
    state: sled::Tree,
    /// The database's data file, kept open for the fdatasync after each group flush.
    data_file: File,
    /// The blob files, `conf` and directory entries sled never syncs itself.
    files: SledFiles,
    index: Mutex<Index>,
    /// Hashes delivery ids for the in-memory dedup index (keyed per process: the index is
    /// rebuilt at every open).
    hasher: std::collections::hash_map::RandomState,
    /// Woken by every append and every lease that returns events to `ready`.
    pub(crate) arrivals: Notify,
    opts: StoreOptions,
    last_event_at_ms: AtomicI64,
    disk_bytes: AtomicU64,
    /// Free bytes on the filesystem at the last refresh (u64::MAX when unknown).
    free_bytes: AtomicU64,
    /// Set when a write or sync failed: sled 0.34 cannot be trusted after an I/O error (it may
    /// hang or keep failing), so every later append is refused and the receiver restarts.
    failed: Mutex<Option<String>>,
}

fn storage(ctx: &str) -> impl Fn(sled::Error) -> QueueError + '_ {
    move |e| QueueError::storage(ctx, e)
}

/// Source and receive time from an encoded envelope, without copying its body.
fn peek_envelope(b: &[u8]) -> Option<(&str, i64)> {
    // version u8, id u64, received_at i64, platform u8, source (u32 length + bytes), ...
    let received = i64::from_be_bytes(b.get(9..17)?.try_into().ok()?);
    let n = u32::from_be_bytes(b.get(18..22)?.try_into().ok()?) as usize;
    let source = std::str::from_utf8(b.get(22..22 + n)?).ok()?;
    Some((source, received))
}

impl SledStore {
    /// Opens (or creates) the queue database at `path`, migrating a format-1 database in place.
    /// Fails at once with [`QueueError::Locked`] when another process holds it.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<SledStore, QueueError> {
        crate::durable::create_dir_all(path)
            .map_err(|e| QueueError::storage(format!("creating {}", path.display()), e))?;
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(ref io)
                    if io.kind() == std::io::ErrorKind::WouldBlock
                        || io.raw_os_error() == Some(11)
                        || io.to_string().contains("lock") =>
                {
                    QueueError::Locked {
                        path: path.display().to_string(),
                    }
                }
                other => QueueError::storage(format!("opening {}", path.display()), other),
            })?;
        let data_path = path.join("db");
        let data_file = File::open(&data_path).map_err(|e| {
            QueueError::storage(format!("opening {} for fdatasync", data_path.display()), e)
        })?;
        let files = SledFiles::after_open(path)
            .map_err(|e| QueueError::storage("syncing the new queue's files", e))?;
        let groups = db
            .open_tree("groups")
            .map_err(storage("opening groups tree"))?;
        let state = db
            .open_tree("state")
            .map_err(storage("opening state tree"))?;
        let store = SledStore {
            path: path.to_path_buf(),
            db,
            groups,
            state,
            data_file,
            files,
            index: Mutex::new(Index::default()),
            hasher: Default::default(),
            arrivals: Notify::new(),
            opts,
            last_event_at_ms: AtomicI64::new(0),
            disk_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
            failed: Mutex::new(None),
        };
        store.migrate_format_1()?;
        store.rebuild_index()?;
        store.refresh_disk_usage();
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // A panic while holding the lock leaves a consistent-enough index (every mutation is a
        // single insert/remove); keep serving rather than poison every later call.
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dedup_hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Format 1 kept one `events` record per event and an on-disk `dedup` tree. Rewrites those
    /// events into `groups` (same ids, same envelopes, dedup keys carried in the frames; `state`
    /// is compatible as is), syncs, then drops the old trees. Safe to interrupt: the old trees
    /// go last, and a rerun starts `groups` afresh.
    fn migrate_format_1(&self) -> Result<(), QueueError> {
        let names = self.db.tree_names();
        if !names.iter().any(|n| n.as_ref() == b"events") {
            return self.mark_format();
        }
        let events = self
            .db
            .open_tree("events")
            .map_err(storage("opening the format-1 events tree"))?;
        let dedup = self
            .db
            .open_tree("dedup")
            .map_err(storage("opening the format-1 dedup tree"))?;
        self.groups
            .clear()
            .map_err(storage("clearing a partial migration"))?;
        let mut keys: HashMap<u64, String> = HashMap::new();
        for item in dedup.iter() {
            let (k, v) = item.map_err(storage("reading format-1 dedup keys"))?;
            if let (Some((id, _)), Ok(key)) = (decode_dedup(&v), std::str::from_utf8(&k)) {
                keys.insert(id, key.to_string());
            }
        }
        let mut stream = Vec::new();
        let mut first = None;
        let mut n = 0u64;
        for item in events.iter() {
            let (k, v) = item.map_err(storage("reading format-1 events"))?;
            let Some(id) = EventId::from_be_slice(&k) else {
                continue;
            };
            first.get_or_insert(id.0);
            group_log::push_frame(&mut stream, id.0, keys.get(&id.0).map(String::as_str), &v);
            n += 1;
            if stream.len() >= MAX_GROUP_BYTES {
                if let Some(g) = first.take() {
                    group_log::write_group(&self.groups, g, &stream)?;
                }
                stream.clear();
            }
        }
        if let Some(g) = first {
            group_log::write_group(&self.groups, g, &stream)?;
        }
        self.sync()?;
        self.db
            .drop_tree("events")
            .map_err(storage("dropping the format-1 events tree"))?;
        self.db
            .drop_tree("dedup")
            .map_err(storage("dropping the format-1 dedup tree"))?;
        self.mark_format()?;
        tracing::info!(
            events = n,
            path = %self.path.display(),
            "queue database migrated from format 1 (one record per event) to format 2 (group records)"
        );
        Ok(())
    }

    fn mark_format(&self) -> Result<(), QueueError> {
        let meta = self.db.open_tree("meta").map_err(storage("opening meta"))?;
        match meta.get("format").map_err(storage("reading format"))? {
            Some(v) if v.as_ref() == FORMAT => Ok(()),
            Some(v) => Err(QueueError::Storage {
                context: format!("queue database {}", self.path.display()),
                message: format!(
                    "it is in format {} and this build reads format 2: run the stockhook version that wrote it, or move the directory aside to start an empty queue",
                    String::from_utf8_lossy(&v)
                ),
            }),
            None => {
                meta.insert("format", FORMAT)
                    .map_err(storage("writing format"))?;
                self.sync()
            }
        }
    }

    fn rebuild_index(&self) -> Result<(), QueueError> {
        let mut records: HashMap<u64, Record> = HashMap::new();
        for item in self.state.iter() {
            let (k, v) = item.map_err(storage("scanning state"))?;
            if let (Some(id), Some(rec)) = (EventId::from_be_slice(&k), Record::decode(&v)) {
                records.insert(id.0, rec);
            }
        }
        let mut idx = Index::default();
        let mut sources: HashMap<String, Arc<str>> = HashMap::new();
        let mut last = 0i64;
        // (hash of the delivery id, event id, received at) of every event with one; those inside
        // the window (counted back from the newest event) make the dedup index.
        let mut keyed: Vec<(u64, u64, i64)> = Vec::new();
        group_log::for_each_group(&self.groups, |g, stream| {
            let mut group = Group {
                bytes: stream.len() as u32,
                ..Group::default()
            };
            let mut pos = 0;
            while let Some((frame, n)) = group_log::parse_frame(&stream[pos..]) {
                let id = frame.id;
                let rec = records.remove(&id).unwrap_or_else(Record::pending);
                let gone = rec.status == Status::Purged;
                group.slots.push(Slot {
                    id,
                    off: pos as u32,
                    len: n as u32,
                    gone,
                });
                pos += n;
                if gone {
                    continue;
                }
                group.live += 1;
                let (src, received) = peek_envelope(frame.envelope).unwrap_or(("<corrupt>", 0));
                last = last.max(received);
                let src = match sources.get(src) {
                    Some(s) => s.clone(),
                    None => sources
                        .entry(src.to_string())
                        .or_insert_with(|| Arc::from(src))
                        .clone(),
                };
                if !frame.dedup_key.is_empty() {
                    keyed.push((self.dedup_hash(frame.dedup_key), id, received));
                }
                match rec.status {
                    Status::Pending if rec.not_before_ms > 0 => {
                        idx.delayed.insert((rec.not_before_ms, id));
                        idx.delayed_src.insert(id, src);
                    }
                    Status::Pending => {
                        idx.ready.insert(id, src);
                    }
                    Status::Acked => {
                        idx.acked.insert((rec.at_ms, id));
                    }
                    Status::Dead => {
                        idx.dead.insert(id, src);
                    }
                    Status::Purged => {}
                }
            }
            idx.groups.insert(g, group);
            Ok(())
        })?;
        // Counted back from the newest event (the clock of the events, not of this open): an
        // idle queue keeps the keys its last window had.
        let window_start = last.saturating_sub(self.opts.dedup_window_ms);
        for (h, id, received) in keyed {
            if received >= window_start {
                idx.dedup.insert(h, (id, received));
            }
        }
        // Groups whose every event was deleted before a crash: finish removing them.
        let empty: Vec<(u64, u32, Vec<u64>)> = idx
            .groups
            .iter()
            .filter(|(_, g)| g.live == 0)
            .map(|(k, g)| (*k, g.bytes, g.slots.iter().map(|s| s.id).collect()))
            .collect();
        for (g, bytes, ids) in empty {
            idx.groups.remove(&g);
            self.remove_group_files(g, bytes, &ids)?;
        }
        self.last_event_at_ms.store(last, Ordering::Relaxed);
        *self.lock() = idx;
        Ok(())
    }

    /// Re-reads the database's size on disk and the filesystem's free space (for the budget
    /// check and stats). Called every second by the receiver, so the per-request check reads two
    /// atomics instead of walking the directory and calling statvfs.
    pub fn refresh_disk_usage(&self) -> u64 {
        let bytes = dir_size(&self.path);
        self.disk_bytes.store(bytes, Ordering::Relaxed);
        self.free_bytes.store(
            free_bytes(&self.path).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        bytes
    }

    /// The storage failure that made this store refuse appends, if any.
    pub fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn mark_failed(&self, why: &str) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_none() {
            *f = Some(why.to_string());
        }
    }

    /// Err when a new append must be refused: over budget, the filesystem nearly full, or the
    /// store failed earlier.
    pub fn check_budget(&self) -> Result<(), QueueError> {
        if let Some(why) = self.failure() {
            return Err(QueueError::Storage {
                context: "queue database".into(),
                message: format!("failed earlier ({why}); the receiver restarts to recover"),
            });
        }
        let used = self.disk_bytes.load(Ordering::Relaxed);
        if used > self.opts.max_queue_bytes {
            return Err(QueueError::OverBudget {
                used,
                budget: self.opts.max_queue_bytes,
            });
        }
        let free = self.free_bytes.load(Ordering::Relaxed);
        if free < self.opts.min_free_bytes {
            return Err(QueueError::Storage {
                context: format!("filesystem of {}", self.path.display()),
                message: format!(
                    "only {free} bytes free (need {}): free disk space",
                    self.opts.min_free_bytes
                ),
            });
        }
        Ok(())
    }

    /// The frame of a stored event, read back from its group.
    fn read_frame_bytes(
        &self,
        g: u64,
        slot: Slot,
        cache: &mut Option<(u64, u32, sled::IVec)>,
    ) -> Result<Option<Vec<u8>>, QueueError> {
        group_log::read_range(&self.groups, g, slot.off, slot.len, cache)
    }

    /// Whether `key` is what event `id` was stored with (a dedup hash hit is confirmed).
    fn stored_key_is(&self, id: u64, key: &str) -> Result<bool, QueueError> {
        let Some((g, slot)) = self.lock().locate(id) else {
            return Ok(false);
        };
        let Some(bytes) = self.read_frame_bytes(g, slot, &mut None)? else {
            return Ok(false);
        };
        Ok(group_log::parse_frame(&bytes).is_some_and(|(f, _)| f.dedup_key == key))
    }

    /// Stores a batch durably: a few inserts, one flush and one fdatasync for all of them. The
    /// outcomes are in the batch's order. On a storage error every event of the batch gets the
    /// error and none becomes deliverable.
    pub fn append_batch(&self, batch: &[NewEvent]) -> Vec<Result<AppendOutcome, QueueError>> {
        // A fresh look at free space per batch (one statvfs per group commit): sled must never
        // meet a full disk, after which it cannot be trusted. Room for twice the batch is kept.
        let batch_bytes: u64 = batch.iter().map(|e| e.body.len() as u64 + 512).sum();
        if let Some(free) = free_bytes(&self.path) {
            self.free_bytes.store(
                free.saturating_sub(batch_bytes.saturating_mul(2)),
                Ordering::Relaxed,
            );
        }
        if let Err(e) = self.check_budget() {
            let msg = e.to_string();
            return batch
                .iter()
                .map(|_| {
                    Err(match &e {
                        QueueError::OverBudget { used, budget } => QueueError::OverBudget {
                            used: *used,
                            budget: *budget,
                        },
                        _ => QueueError::storage("disk space", &msg),
                    })
                })
                .collect();
        }
        // Duplicates: earlier in this batch, or in the index (a hash hit, confirmed on disk).
        let hashes: Vec<Option<u64>> = batch
            .iter()
            .map(|e| e.dedup_key.as_deref().map(|k| self.dedup_hash(k)))
            .collect();
        let candidates: Vec<Option<u64>> = {
            let idx = self.lock();
            batch
                .iter()
                .zip(&hashes)
                .map(|(ev, h)| {
                    let (id, at) = idx.dedup.get(&(*h)?)?;
                    (ev.received_at_ms - at < self.opts.dedup_window_ms).then_some(*id)
                })
                .collect()
        };
        let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(batch.len());
        let mut in_batch: HashMap<&str, u64> = HashMap::new();
        // (group first id, stream, slots) of what this batch writes.
        let mut groups: Vec<(u64, Vec<u8>, Vec<Slot>)> = Vec::new();
        let mut envelope = Vec::new();
        let result = (|| -> Result<(), QueueError> {
            for (i, ev) in batch.iter().enumerate() {
                let key = ev.dedup_key.as_deref();
                if let Some(k) = key {
                    if let Some(first) = in_batch.get(k) {
                        outcomes.push(Some(AppendOutcome::Duplicate(EventId(*first))));
                        continue;
                    }
                    if let Some(id) = candidates[i] {
                        if self.stored_key_is(id, k)? {
                            outcomes.push(Some(AppendOutcome::Duplicate(EventId(id))));
                            continue;
                        }
                    }
                }
                let id = self
                    .db
                    .generate_id()
                    .map_err(storage("generating event id"))?;
                encode_parts_into(
                    &mut envelope,
                    EventId(id),
                    &ev.source,
                    ev.platform,
                    ev.received_at_ms,
                    &ev.headers,
                    &ev.body,
                );
                if groups
                    .last()
                    .is_none_or(|(_, s, _)| s.len() >= MAX_GROUP_BYTES)
                {
                    groups.push((id, Vec::with_capacity(CHUNK * 4), Vec::new()));
                }
                if let Some((_, stream, slots)) = groups.last_mut() {
                    let (off, len) = group_log::push_frame(stream, id, key, &envelope);
                    slots.push(Slot {
                        id,
                        off,
                        len,
                        gone: false,
                    });
                }
                if let Some(k) = key {
                    in_batch.insert(k, id);
                }
                outcomes.push(Some(AppendOutcome::Accepted(EventId(id))));
            }
            if groups.is_empty() {
                // Only duplicates: nothing new to make durable (the first copy already is).
                return Ok(());
            }
            for (g, stream, _) in &groups {
                group_log::write_group(&self.groups, *g, stream)?;
            }
            self.sync()
        })();
        if let Err(e) = result {
            self.mark_failed(&e.to_string());
            // Undo what this batch wrote, so a retry is not answered "duplicate" for an event
            // that was never made durable (the index was not touched). Best effort: the disk
            // may be failing.
            for (g, stream, _) in &groups {
                let _ = group_log::remove_group(&self.groups, *g, stream.len() as u32);
            }
            let msg = e.to_string();
            return batch
                .iter()
                .map(|_| Err(QueueError::storage("append", &msg)))
                .collect();
        }
        {
            let mut idx = self.lock();
            let mut last = 0;
            // One shared name per source, not one allocation per pending event.
            let mut src: Option<Arc<str>> = None;
            for ((ev, out), h) in batch.iter().zip(&outcomes).zip(&hashes) {
                if let Some(AppendOutcome::Accepted(id)) = out {
                    let name = match &src {
                        Some(s) if **s == *ev.source => s.clone(),
                        _ => src.insert(Arc::from(ev.source.as_str())).clone(),
                    };
                    idx.ready.insert(id.0, name);
                    if let Some(h) = h {
                        idx.dedup.insert(*h, (id.0, ev.received_at_ms));
                    }
                    last = last.max(ev.received_at_ms);
                }
            }
            for (g, stream, slots) in groups {
                idx.groups.insert(
                    g,
                    Group {
                        live: slots.len() as u32,
                        bytes: stream.len() as u32,
                        slots,
                    },
                );
            }
            self.last_event_at_ms.fetch_max(last, Ordering::Relaxed);
        }
        self.arrivals.notify_waiters();
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| QueueError::storage("append", "no outcome")))
            .collect()
    }

    /// sled's flush, then fsync of any blob file or entry it created, then fdatasync of the data
    /// file: what makes "200 means on disk" true.
    fn sync(&self) -> Result<(), QueueError> {
        self.db.flush().map_err(storage("flushing queue"))?;
        self.files
            .sync_new()
            .map_err(|e| QueueError::storage("syncing queue files", e))?;
        self.data_file.sync_data().map_err(|e| {
            QueueError::storage(format!("fdatasync {}", self.path.join("db").display()), e)
        })
    }

    /// Flushes and fdatasyncs everything written so far (shutdown, after operator commands).
    pub fn flush_all(&self) -> Result<(), QueueError> {
        self.sync()
    }

    /// The persisted state of a stored event: its record, or pending when it has none yet.
    /// `None` when no such event is stored.
    fn record(&self, id: u64) -> Result<Option<Record>, QueueError> {
        if let Some(rec) = self
            .state
            .get(id.to_be_bytes())
            .map_err(storage("reading event state"))?
            .and_then(|b| Record::decode(&b))
        {
            return Ok((rec.status != Status::Purged).then_some(rec));
        }
        Ok(self.lock().locate(id).map(|_| Record::pending()))
    }

    /// Takes up to `max` deliverable events, at most `max_bytes` of bodies (but always one when
    /// any is ready), and leases them until `now + lease_ms`.
    pub fn lease_now(
        &self,
        max: usize,
        lease_ms: u64,
        now: i64,
    ) -> Result<Vec<Leased>, QueueError> {
        self.lease_bytes(max, usize::MAX, lease_ms, now)
    }

    /// [`SledStore::lease_now`] with a cap on the bodies' total size.
    pub fn lease_bytes(
        &self,
        max: usize,
        max_bytes: usize,
        lease_ms: u64,
        now: i64,
    ) -> Result<Vec<Leased>, QueueError> {
        let picked: Vec<(u64, Option<(u64, Slot)>)> = {
            let mut idx = self.lock();
            promote_due(&mut idx, now);
            let mut bytes = 0usize;
            let mut ids = Vec::new();
            for id in idx.ready.keys().take(max) {
                let size = idx.locate(*id).map_or(0, |(_, s)| s.len as usize);
                if !ids.is_empty() && bytes.saturating_add(size) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(size);
                ids.push(*id);
            }
            let deadline = now + lease_ms as i64;
            ids.into_iter()
                .filter_map(|id| {
                    let src = idx.ready.remove(&id)?;
                    idx.leased.insert(id, (deadline, src));
                    Some((id, idx.locate(id)))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(picked.len());
        let mut cache = None;
        for (id, place) in picked {
            let k = id.to_be_bytes();
            let loaded = (|| -> Result<Option<Leased>, QueueError> {
                let Some((g, slot)) = place else {
                    return Ok(None);
                };
                let Some(bytes) = self.read_frame_bytes(g, slot, &mut cache)? else {
                    return Ok(None);
                };
                let mut rec = self
                    .state
                    .get(k)
                    .map_err(storage("reading event state"))?
                    .and_then(|b| Record::decode(&b))
                    .unwrap_or_else(Record::pending);
                rec.attempts += 1;
                self.state
                    .insert(k, rec.encode())
                    .map_err(storage("counting attempt"))?;
                let decoded = match group_log::parse_frame(&bytes) {
                    Some((frame, _)) => Envelope::decode(frame.envelope).map_err(|e| e.to_string()),
                    None => Err("unreadable event frame".to_string()),
                };
                match decoded {
                    Ok(envelope) => Ok(Some(Leased {
                        envelope,
                        attempts: rec.attempts,
                    })),
                    Err(e) => {
                        // Unreadable bytes can never be processed: dead-letter with the reason.
                        self.mark_dead(id, rec.attempts, &e, now)?;
                        Ok(None)
                    }
                }
            })();
            match loaded {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {
                    self.lock().leased.remove(&id);
                }
                Err(e) => {
                    // Put it back so it is not stuck leased, and report.
                    let mut idx = self.lock();
                    if let Some((_, src)) = idx.leased.remove(&id) {
                        idx.ready.insert(id, src);
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Returns expired leases to `ready`. Returns how many.
    pub fn expire_leases(&self, now: i64) -> usize {
        let mut idx = self.lock();
        let expired: Vec<u64> = idx
            .leased
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &expired {
            if let Some((_, src)) = idx.leased.remove(id) {
                idx.ready.insert(*id, src);
            }
        }
        drop(idx);
        if !expired.is_empty() {
            self.arrivals.notify_waiters();
        }
        expired.len()
    }

    /// The earliest time something becomes deliverable without a new append (a retry time or a
    /// lease deadline), for the long poll's timer.
    pub fn next_wakeup(&self) -> Option<i64> {
        let idx = self.lock();
        let retry = idx.delayed.iter().next().map(|(t, _)| *t);
        let lease = idx.leased.values().map(|(d, _)| *d).min();
        match (retry, lease) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn has_ready(&self, now: i64) -> bool {
        let mut idx = self.lock();
        promote_due(&mut idx, now);
        !idx.ready.is_empty()
    }

    pub fn ack(&self, ids: &[EventId], now: i64) -> Result<(), QueueError> {
        for id in ids {
            let Some(mut rec) = self.record(id.0)? else {
                continue;
            };
            rec.status = Status::Acked;
            rec.at_ms = now;
            rec.error.clear();
            self.state
                .insert(id.to_be_bytes(), rec.encode())
                .map_err(storage("acking"))?;
            let mut idx = self.lock();
            idx.leased.remove(&id.0);
            idx.ready.remove(&id.0);
            if let Some((t, _)) = idx.delayed.iter().find(|(_, i)| *i == id.0).copied() {
                idx.delayed.remove(&(t, id.0));
                idx.delayed_src.remove(&id.0);
            }
            idx.dead.remove(&id.0);
            idx.acked.insert((now, id.0));
        }
        Ok(())
    }

    pub fn fail(&self, id: EventId, failure: &Failure, now: i64) -> Result<(), QueueError> {
        let k = id.to_be_bytes();
        let rec = self.record(id.0)?.ok_or(QueueError::NotFound(id))?;
        match failure {
            Failure::Permanent { error } => self.mark_dead(id.0, rec.attempts, error, now),
            Failure::Transient { error, .. } if rec.attempts >= self.opts.max_attempts => self
                .mark_dead(
                    id.0,
                    rec.attempts,
                    &format!("gave up after {} attempts: {error}", rec.attempts),
                    now,
                ),
            Failure::Transient { error, retry_at_ms } => {
                let r = Record {
                    status: Status::Pending,
                    attempts: rec.attempts,
                    not_before_ms: (*retry_at_ms).max(1),
                    at_ms: now,
                    error: error.clone(),
                };
                self.state
                    .insert(k, r.encode())
                    .map_err(storage("scheduling retry"))?;
                let mut idx = self.lock();
                let src = idx
                    .leased
                    .remove(&id.0)
                    .map(|(_, s)| s)
                    .or_else(|| idx.ready.remove(&id.0))
                    .unwrap_or_else(|| Arc::from("?"));
                idx.delayed.insert((r.not_before_ms, id.0));
                idx.delayed_src.insert(id.0, src);
                Ok(())
            }
        }
    }

    fn mark_dead(&self, id: u64, attempts: u32, error: &str, now: i64) -> Result<(), QueueError> {
        let r = Record {
            status: Status::Dead,
            attempts,
            not_before_ms: 0,
            at_ms: now,
            error: error.to_string(),
        };
        self.state
            .insert(id.to_be_bytes(), r.encode())
            .map_err(storage("dead-lettering"))?;
        let mut idx = self.lock();
        let src = idx
            .leased
            .remove(&id)
            .map(|(_, s)| s)
            .or_else(|| idx.ready.remove(&id))
            .unwrap_or_else(|| Arc::from("?"));
        idx.dead.insert(id, src);
        Ok(())
    }

    /// A stored event, decoded; `None` when it is not stored (or deleted).
    fn read_event(&self, id: u64) -> Result<Option<Envelope>, QueueError> {
        let Some((g, slot)) = self.lock().locate(id) else {
            return Ok(None);
        };
        let Some(bytes) = self.read_frame_bytes(g, slot, &mut None)? else {
            return Ok(None);
        };
        let (frame, _) = group_log::parse_frame(&bytes).ok_or_else(|| {
            QueueError::storage(format!("decoding {}", EventId(id)), "unreadable frame")
        })?;
        Envelope::decode(frame.envelope)
            .map(Some)
            .map_err(|e| QueueError::storage(format!("decoding {}", EventId(id)), e))
    }

    fn dead_letter(&self, id: u64) -> Result<Option<(DeadLetter, Envelope)>, QueueError> {
        let Some(rec) = self.record(id)? else {
            return Ok(None);
        };
        if rec.status != Status::Dead {
            return Ok(None);
        }
        let Some(env) = self.read_event(id)? else {
            return Ok(None);
        };
        let dl = DeadLetter {
            id: EventId(id),
            source: env.source.clone(),
            platform: env.platform,
            topic: env.topic().map(str::to_string),
            error: rec.error,
            attempts: rec.attempts,
            received_at_ms: env.received_at_ms,
            dead_at_ms: rec.at_ms,
            size: env.body.len(),
        };
        Ok(Some((dl, env)))
    }

    pub fn dead_list(&self, filter: &DeadFilter) -> Result<Vec<DeadLetter>, QueueError> {
        let ids: Vec<u64> = self.lock().dead.keys().copied().collect();
        let mut out = Vec::new();
        for id in ids {
            if let Some((dl, _)) = self.dead_letter(id)? {
                if filter.matches(&dl) {
                    out.push(dl);
                    if filter.limit.is_some_and(|l| out.len() >= l) {
                        break;
                    }
                }
            }
        }
        for id in &filter.ids {
            if !out.iter().any(|d| d.id == *id) {
                return Err(QueueError::NotFound(*id));
            }
        }
        Ok(out)
    }

    pub fn dead_show(&self, id: EventId) -> Result<(DeadLetter, Envelope), QueueError> {
        self.dead_letter(id.0)?.ok_or(QueueError::NotFound(id))
    }

    pub fn dead_replay(
        &self,
        filter: &DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        let ids: Vec<EventId> = self.dead_list(filter)?.into_iter().map(|d| d.id).collect();
        if dry_run {
            return Ok(ids);
        }
        for id in &ids {
            self.state
                .insert(id.to_be_bytes(), Record::pending().encode())
                .map_err(storage("replaying"))?;
            let mut idx = self.lock();
            if let Some(src) = idx.dead.remove(&id.0) {
                idx.ready.insert(id.0, src);
            }
        }
        self.sync()?;
        self.arrivals.notify_waiters();
        Ok(ids)
    }

    pub fn dead_purge(
        &self,
        filter: &DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        let ids: Vec<EventId> = self.dead_list(filter)?.into_iter().map(|d| d.id).collect();
        if dry_run {
            return Ok(ids);
        }
        for id in &ids {
            self.remove_event(id.0)?;
            self.lock().dead.remove(&id.0);
        }
        self.sync()?;
        Ok(ids)
    }

    /// Any retained event by id (pending, acked or dead).
    pub fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        self.read_event(id.0)?.ok_or(QueueError::NotFound(id))
    }

    /// Deletes one event: a tombstone while others of its group remain, the group's chunks and
    /// records once it was the last.
    fn remove_event(&self, id: u64) -> Result<(), QueueError> {
        let emptied = {
            let mut idx = self.lock();
            let Some((g, _)) = idx.locate(id) else {
                return Ok(());
            };
            let Some(group) = idx.groups.get_mut(&g) else {
                return Ok(());
            };
            if let Ok(i) = group.slots.binary_search_by_key(&id, |s| s.id) {
                group.slots[i].gone = true;
                group.live = group.live.saturating_sub(1);
            }
            if group.live == 0 {
                idx.groups.remove(&g).map(|grp| {
                    (
                        g,
                        grp.bytes,
                        grp.slots.iter().map(|s| s.id).collect::<Vec<u64>>(),
                    )
                })
            } else {
                None
            }
        };
        match emptied {
            Some((g, bytes, ids)) => self.remove_group_files(g, bytes, &ids),
            None => self
                .state
                .insert(id.to_be_bytes(), Record::purged().encode())
                .map(|_| ())
                .map_err(storage("purging event")),
        }
    }

    /// Removes a group's chunks and the state records of its events.
    fn remove_group_files(&self, g: u64, bytes: u32, ids: &[u64]) -> Result<(), QueueError> {
        group_log::remove_group(&self.groups, g, bytes)?;
        for id in ids {
            self.state
                .remove(id.to_be_bytes())
                .map_err(storage("purging event state"))?;
        }
        Ok(())
    }

    /// Purges acked events past retention and dedup entries past the window. Returns how many
    /// events.
    pub fn sweep(&self, now: i64) -> Result<usize, QueueError> {
        let cutoff = now - self.opts.retention_ms;
        let old: Vec<(i64, u64)> = {
            let idx = self.lock();
            idx.acked
                .iter()
                .take_while(|(t, _)| *t < cutoff)
                .copied()
                .collect()
        };
        for (t, id) in &old {
            self.remove_event(*id)?;
            self.lock().acked.remove(&(*t, *id));
        }
        let window_start = now - self.opts.dedup_window_ms;
        self.lock().dedup.retain(|_, (_, at)| *at >= window_start);
        Ok(old.len())
    }

    /// Drops every event that names `needle` in its body (an eBay account deletion request):
    /// retained events and dead letters alike, their bytes blanked on disk. Returns how many.
    pub fn purge_matching(&self, source: &str, needle: &[u8]) -> Result<usize, QueueError> {
        if needle.is_empty() {
            return Ok(0);
        }
        // (group, where the envelope starts in the stream, its length, id)
        let mut hits: Vec<(u64, u32, u32, u64)> = Vec::new();
        group_log::for_each_group(&self.groups, |g, stream| {
            let mut pos = 0;
            while let Some((frame, n)) = group_log::parse_frame(&stream[pos..]) {
                if let Ok(env) = Envelope::decode(frame.envelope) {
                    if env.source == source && env.body.windows(needle.len()).any(|w| w == needle) {
                        hits.push((
                            g,
                            (pos + frame.envelope_at) as u32,
                            frame.envelope.len() as u32,
                            frame.id,
                        ));
                    }
                }
                pos += n;
            }
            Ok(())
        })?;
        let mut removed = 0;
        for (g, at, len, id) in hits {
            let deletable = {
                let idx = self.lock();
                idx.locate(id).is_some()
                    && !idx.ready.contains_key(&id)
                    && !idx.leased.contains_key(&id)
                    && !idx.delayed_src.contains_key(&id)
            };
            if deletable {
                group_log::blank_range(&self.groups, g, at, len)?;
                self.remove_event(id)?;
                let mut idx = self.lock();
                idx.dead.remove(&id);
                idx.acked.retain(|(_, i)| *i != id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn stats(&self) -> QueueStats {
        let idx = self.lock();
        let mut pending_by: BTreeMap<String, u64> = BTreeMap::new();
        for src in idx.ready.values().chain(idx.delayed_src.values()) {
            *pending_by.entry(src.to_string()).or_default() += 1;
        }
        let mut dead_by: BTreeMap<String, u64> = BTreeMap::new();
        for src in idx.dead.values() {
            *dead_by.entry(src.to_string()).or_default() += 1;
        }
        let last = self.last_event_at_ms.load(Ordering::Relaxed);
        QueueStats {
            pending: (idx.ready.len() + idx.delayed.len()) as u64,
            leased: idx.leased.len() as u64,
            dead: idx.dead.len() as u64,
            acked_retained: idx.acked.len() as u64,
            disk_bytes: self.disk_bytes.load(Ordering::Relaxed),
            last_event_at_ms: (last > 0).then_some(last),
            pending_by_source: pending_by.into_iter().collect(),
            dead_by_source: dead_by.into_iter().collect(),
        }
    }

    /// Copies every record into a fresh database at `to` (for `compact`). The source must not be
    /// in use by anyone else.
    pub fn export_to(&self, to: &Path) -> Result<u64, QueueError> {
        let fresh = sled::Config::new()
            .path(to)
            .open()
            .map_err(|e| QueueError::storage(format!("creating {}", to.display()), e))?;
        let mut n = 0;
        for name in ["groups", "state", "meta"] {
            let src = self.db.open_tree(name).map_err(storage("opening tree"))?;
            let dst = fresh
                .open_tree(name)
                .map_err(storage("opening tree in the copy"))?;
            for item in src.iter() {
                let (k, v) = item.map_err(storage("reading for compaction"))?;
                dst.insert(k, v).map_err(storage("writing the copy"))?;
                n += 1;
            }
        }
        // Carry the id generator forward so ids keep increasing after the swap.
        let floor = self
            .db
            .generate_id()
            .map_err(storage("reading id generator"))?;
        while fresh
            .generate_id()
            .map_err(storage("advancing id generator"))?
            < floor
        {}
        fresh.flush().map_err(storage("flushing the copy"))?;
        SledFiles::after_open(to)
            .map_err(|e| QueueError::storage("syncing the copy's files", e))?;
        File::open(to.join("db"))
            .and_then(|f| f.sync_all())
            .map_err(|e| QueueError::storage(format!("fsync {}", to.display()), e))?;
        Ok(n)
    }
}

/// Moves retry-delayed events whose time has come to `ready`.
fn promote_due(idx: &mut Index, now: i64) {
    while let Some(&(t, id)) = idx.delayed.iter().next() {
        if t > now {
            break;
        }
        idx.delayed.remove(&(t, id));
        let src = idx
            .delayed_src
            .remove(&id)
            .unwrap_or_else(|| Arc::from("?"));
        idx.ready.insert(id, src);
    }
}

/// A format-1 `dedup` value (the migration's tests write format-1 databases).
#[cfg(test)]
fn encode_dedup(id: u64, at: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&id.to_be_bytes());
    b[8..].copy_from_slice(&at.to_be_bytes());
    b
}

fn decode_dedup(b: &[u8]) -> Option<(u64, i64)> {
    if b.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(b[..8].try_into().ok()?),
        i64::from_be_bytes(b[8..].try_into().ok()?),
    ))
}

/// Total size of the files under `path` (sled's `size_on_disk` walks its own structures and
/// undercounts the log file's preallocated segments).
pub fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// Free bytes on the filesystem holding `path`, for `/healthz` and the disk-full guard.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Platform;

    fn ev(source: &str, dedup: Option<&str>, at: i64) -> NewEvent {
        NewEvent {
            source: source.into(),
            platform: Platform::Shopify,
            received_at_ms: at,
            headers: vec![("x-shopify-topic".into(), "products/update".into())],
            body: format!("{{\"at\":{at}}}").into_bytes().into(),
            dedup_key: dedup.map(|d| format!("{source}\0{d}")),
        }
    }

    fn opts() -> StoreOptions {
        StoreOptions {
            min_free_bytes: 0,
            max_attempts: 3,
            ..StoreOptions::default()
        }
    }

    fn accepted(o: &Result<AppendOutcome, QueueError>) -> EventId {
        match o {
            Ok(AppendOutcome::Accepted(id)) => *id,
            other => panic!("expected accepted, got {other:?}"),
        }
    }

    #[test]
    fn append_lease_ack_in_order_and_dedup() {
        let dir = tempfile::tempdir().unwrap();
        let q = SledStore::open(&dir.path().join("queue"), opts()).unwrap();
        let out = q.append_batch(&[
            ev("a", Some("d1"), 1000),
            ev("a", Some("d2"), 1001),
            ev("a", Some("d1"), 1002),
        ]);
        let first = accepted(&out[0]);
        let second = accepted(&out[1]);
        assert!(first < second);
        assert!(matches!(out[2], Ok(AppendOutcome::Duplicate(id)) if id == first));
        let leased = q.lease_now(10, 60_000, 2000).unwrap();
        assert_eq!(
            leased.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
            vec![first, second]
        );
        assert_eq!(leased[0].attempts, 1);
        assert_eq!(leased[0].envelope.body, b"{\"at\":1000}");
        assert!(
            q.lease_now(10, 60_000, 2000).unwrap().is_empty(),
            "leased events are not delivered twice"
        );
        q.ack(&[first, second], 3000).unwrap();
        let s = q.stats();
        assert_eq!((s.pending, s.leased, s.acked_retained), (0, 0, 2));
    }

    #[test]
    fn expired_lease_is_delivered_again_with_attempts_counted() {
        let dir = tempfile::tempdir().unwrap();
        let q = SledStore::open(&dir.path().join("queue"), opts()).unwrap();
        let id = accepted(&q.append_batch(&[ev("a", None, 1)])[0]);
        assert_eq!(q.lease_now(1, 100, 1000).unwrap().len(), 1);
        assert_eq!(q.expire_leases(1099), 0);
        assert_eq!(q.expire_leases(1100), 1);
        let again = q.lease_now(1, 100, 1200).unwrap();
        assert_eq!(again[0].envelope.id, id);
        assert_eq!(again[0].attempts, 2);
    }

    #[test]
    fn state_survives_reopen_and_leases_become_pending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        let (a, b, c);
        {
            let q = SledStore::open(&path, opts()).unwrap();
            let out = q.append_batch(&[ev("a", Some("x"), 1), ev("b", None, 2), ev("a", None, 3)]);
            a = accepted(&out[0]);
            b = accepted(&out[1]);
            c = accepted(&out[2]);
            q.lease_now(3, 60_000, 10).unwrap();
            q.ack(&[a], 20).unwrap();
            q.fail(
                b,
                &Failure::Permanent {
                    error: "topic x: missing field `id`".into(),
                },
                30,
            )
            .unwrap();
            q.sync().unwrap();
        }
        let q = SledStore::open(&path, opts()).unwrap();
        let s = q.stats();
        assert_eq!((s.pending, s.dead, s.acked_retained), (1, 1, 1));
        let again = q.lease_now(10, 60_000, 40).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].envelope.id, c);
        assert_eq!(
            again[0].attempts, 2,
            "the attempt before the restart counts"
        );
        // The dedup key survived too.
        let out = q.append_batch(&[ev("a", Some("x"), 50)]);
        assert!(matches!(out[0], Ok(AppendOutcome::Duplicate(id)) if id == a));
        // New ids keep increasing after reopen.
        let d = accepted(&q.append_batch(&[ev("a", None, 60)])[0]);
        assert!(d > c);
    }

    #[test]
    fn transient_failures_retry_later_then_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let q = SledStore::open(&dir.path().join("queue"), opts()).unwrap();
        let id = accepted(&q.append_batch(&[ev("a", None, 1)])[0]);
        for attempt in 1..=3 {
            let l = q.lease_now(1, 60_000, attempt * 1000).unwrap();
            assert_eq!(l.len(), 1, "attempt {attempt}");
            q.fail(
                id,
                &Failure::Transient {
                    error: "smtp down".into(),
                    retry_at_ms: attempt * 1000 + 500,
                },
                attempt * 1000,
            )
            .unwrap();
            assert!(
                q.lease_now(1, 60_000, attempt * 1000 + 499)
                    .unwrap()
                    .is_empty(),
                "not before its retry time"
            );
        }
        let dead = q.dead_list(&DeadFilter::default()).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 3);
        assert!(
            dead[0]
                .error
                .contains("gave up after 3 attempts: smtp down"),
            "{}",
            dead[0].error
        );
        assert_eq!(dead[0].topic.as_deref(), Some("products/update"));
        // Replay makes it deliverable again with attempts reset.
        assert_eq!(
            q.dead_replay(&DeadFilter::default(), true).unwrap(),
            vec![id]
        );
        assert_eq!(q.stats().dead, 1, "dry run changes nothing");
        assert_eq!(
            q.dead_replay(&DeadFilter::default(), false).unwrap(),
            vec![id]
        );
        let l = q.lease_now(1, 60_000, 10_000).unwrap();
        assert_eq!(l[0].attempts, 1);
    }

    #[test]
    fn purge_and_retention_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let q = SledStore::open(
            &dir.path().join("queue"),
            StoreOptions {
                retention_ms: 1000,
                dedup_window_ms: 500,
                ..opts()
            },
        )
        .unwrap();
        let out = q.append_batch(&[ev("a", Some("k"), 1), ev("b", None, 2)]);
        let (a, b) = (accepted(&out[0]), accepted(&out[1]));
        q.lease_now(2, 60_000, 10).unwrap();
        q.ack(&[a], 100).unwrap();
        q.fail(
            b,
            &Failure::Permanent {
                error: "bad".into(),
            },
            100,
        )
        .unwrap();
        assert!(matches!(
            q.dead_purge(
                &DeadFilter {
                    source: Some("zzz".into()),
                    ..Default::default()
                },
                false
            )
            .unwrap()
            .as_slice(),
            []
        ));
        assert_eq!(
            q.dead_purge(
                &DeadFilter {
                    source: Some("b".into()),
                    ..Default::default()
                },
                false
            )
            .unwrap(),
            vec![b]
        );
        assert!(matches!(q.get(b), Err(QueueError::NotFound(_))));
        assert_eq!(q.sweep(1099).unwrap(), 0);
        assert_eq!(q.sweep(1101).unwrap(), 1);
        assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
        // Dedup key expired with the window: the same delivery id is new again.
        assert!(matches!(
            q.append_batch(&[ev("a", Some("k"), 2000)])[0],
            Ok(AppendOutcome::Accepted(_))
        ));
    }

    #[test]
    fn over_budget_refuses_and_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let q = SledStore::open(
            &dir.path().join("queue"),
            StoreOptions {
                max_queue_bytes: 1,
                ..opts()
            },
        )
        .unwrap();
        q.refresh_disk_usage();
        let out = q.append_batch(&[ev("a", None, 1)]);
        assert!(matches!(out[0], Err(QueueError::OverBudget { .. })));
        assert_eq!(q.stats().pending, 0);
    }

    #[test]
    fn a_format_1_database_is_migrated_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        {
            // What format 1 wrote: one `events` record per event, `state`, on-disk `dedup`.
            let db = sled::Config::new().path(&path).open().unwrap();
            let (events, state, dedup) = (
                db.open_tree("events").unwrap(),
                db.open_tree("state").unwrap(),
                db.open_tree("dedup").unwrap(),
            );
            for (at, key) in [(1000, Some("a\0d1")), (1001, None), (1002, Some("a\0d3"))] {
                let id = db.generate_id().unwrap();
                let e = ev("a", None, at);
                let env = crate::envelope::encode_parts(
                    EventId(id),
                    &e.source,
                    e.platform,
                    at,
                    &e.headers,
                    &e.body,
                );
                events.insert(id.to_be_bytes(), env).unwrap();
                let mut rec = Record::pending();
                if at == 1000 {
                    rec.status = Status::Acked;
                    rec.at_ms = 1500;
                }
                state.insert(id.to_be_bytes(), rec.encode()).unwrap();
                if let Some(k) = key {
                    dedup
                        .insert(k.as_bytes(), &encode_dedup(id, at)[..])
                        .unwrap();
                }
            }
            db.flush().unwrap();
        }
        let q = SledStore::open(&path, opts()).unwrap();
        let s = q.stats();
        assert_eq!((s.pending, s.acked_retained), (2, 1));
        assert!(!q.db.tree_names().iter().any(|n| n.as_ref() == b"events"));
        let leased = q.lease_now(10, 60_000, 2000).unwrap();
        assert_eq!(leased.len(), 2);
        assert_eq!(leased[0].envelope.body, b"{\"at\":1001}");
        assert_eq!(leased[1].envelope.received_at_ms, 1002);
        // The dedup keys came along.
        let out = q.append_batch(&[ev("a", Some("d1"), 3000), ev("a", Some("d3"), 3000)]);
        assert!(
            matches!(out[0], Ok(AppendOutcome::Duplicate(EventId(0)))),
            "{out:?}"
        );
        assert!(
            matches!(out[1], Ok(AppendOutcome::Duplicate(EventId(2)))),
            "{out:?}"
        );
        drop(q);
        // And it opens again as format 2.
        let q = SledStore::open(&path, opts()).unwrap();
        assert_eq!(q.stats().pending, 2);
    }

    #[test]
    fn no_body_size_makes_sled_write_a_blob_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        let q = SledStore::open(&path, opts()).unwrap();
        let body = |n: usize| -> bytes::Bytes { vec![b'x'; n].into() };
        let mut batch: Vec<NewEvent> = (0..60)
            .map(|i| NewEvent {
                body: body(30 << 10),
                ..ev("a", None, i)
            })
            .collect();
        batch.push(NewEvent {
            body: body(2 << 20),
            ..ev("a", None, 99)
        });
        for e in &batch {
            assert!(q.append_batch(std::slice::from_ref(e))[0].is_ok());
        }
        let out = q.append_batch(&batch);
        assert!(out.iter().all(|o| o.is_ok()));
        let blobs: Vec<_> = std::fs::read_dir(path.join("blobs"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(blobs.is_empty(), "sled wrote blob files: {blobs:?}");
        let all = q.lease_now(1000, 60_000, 100).unwrap();
        assert_eq!(all.len(), 122);
        assert_eq!(all[60].envelope.body.len(), 2 << 20);
    }

    #[test]
    fn a_purged_event_stays_gone_while_its_group_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        let (a, b);
        {
            let q = SledStore::open(&path, opts()).unwrap();
            let out = q.append_batch(&[
                NewEvent {
                    body: b"user-42 deleted".to_vec().into(),
                    ..ev("e", None, 1)
                },
                ev("e", None, 2),
            ]);
            a = accepted(&out[0]);
            b = accepted(&out[1]);
            q.lease_now(2, 60_000, 10).unwrap();
            q.ack(&[a, b], 20).unwrap();
            assert_eq!(q.purge_matching("e", b"user-42").unwrap(), 1);
            assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
            q.sync().unwrap();
        }
        let q = SledStore::open(&path, opts()).unwrap();
        assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
        assert_eq!(q.get(b).unwrap().body, b"{\"at\":2}");
        assert_eq!(q.stats().acked_retained, 1);
        let mut raw = Vec::new();
        group_log::for_each_group(&q.groups, |_, s| {
            raw.extend_from_slice(s);
            Ok(())
        })
        .unwrap();
        assert!(
            !raw.windows(7).any(|w| w == b"user-42"),
            "the body is blanked on disk"
        );
    }

    #[test]
    fn second_open_fails_at_once_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _q = SledStore::open(&dir.path().join("queue"), opts()).unwrap();
        match SledStore::open(&dir.path().join("queue"), opts()) {
            Err(QueueError::Locked { .. }) => {}
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("expected Locked, opened twice"),
        }
    }
}
