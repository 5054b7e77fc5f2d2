//! The queue on sled: the on-disk layout, the in-memory index rebuilt from it at open, and every
//! queue operation as a plain (blocking) method.
//!
//! Layout, one sled database at `<data_dir>/queue`:
//! * `events`: event id (u64 big-endian) -> encoded [`Envelope`];
//! * `state`:  event id -> `Record` (status, attempts, retry time, status time, error);
//! * `dedup`:  `source \0 delivery id` -> event id + accepted-at, swept after the dedup window.
//!
//! Format 3 (the default for a new queue, see [`StoreOptions::segment_log`]): event bodies go to
//! the append-only [`super::segments`] log under `<queue>/segments/` instead of `events`, nothing
//! is written to `state` on append (no record = pending), and the dedup index is in memory
//! ([`super::dedup_index`]). A dead letter's body is copied into `events`, and an event removed
//! from a segment leaves a one-byte tombstone in `state` until its segment is deleted. A
//! format-1 queue opened this way keeps its events where they are and appends new ones to
//! segments.
//!
//! Invariant: [`SledStore::append_batch`] returns only after `flush()` **and** an `fdatasync` of
//! the database file (sled's own flush issues `sync_file_range`, which a drive's write cache can
//! still lose). Leases live only in memory: after a crash a leased event is pending again, with
//! the attempt already counted. This module never logs bodies.

use super::dedup_index::DedupIndex;
use super::segments::{Group, Segments};
use super::{
    AppendOutcome, DeadFilter, DeadLetter, Failure, Leased, NewEvent, QueueError, QueueStats,
};
use crate::durable::SledFiles;
use crate::envelope::{encode_parts_into, Envelope, EventId};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

#[path = "sled_segments.rs"]
mod sled_segments;

/// Status of an event in the `state` tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pending = 1,
    Acked = 2,
    Dead = 3,
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

/// What is deliverable, in memory. Rebuilt from `state` at open.
#[derive(Default)]
struct Index {
    /// Deliverable now, in arrival order, with the source (for per-source counts).
    ready: super::ready::ReadySet,
    /// Waiting for a retry time: (not_before, id).
    delayed: BTreeSet<(i64, u64)>,
    delayed_src: HashMap<u64, Arc<str>>,
    /// Leased: id -> (deadline, source).
    leased: HashMap<u64, (i64, Arc<str>)>,
    dead: BTreeMap<u64, Arc<str>>,
    /// Acked and retained: (acked_at, id).
    acked: BTreeSet<(i64, u64)>,
}

/// sled's page cache for the queue (its default is 1 GiB). The receiver writes events once and
/// the worker reads each back soon after, so a small cache of recent pages serves both; bounding
/// it is what keeps the receiver's RSS flat under load (it grew by ~2.3 KiB per appended event).
const CACHE_BYTES: u64 = 16 << 20;

/// Settings the store needs from config.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub max_attempts: u32,
    pub retention_ms: i64,
    pub dedup_window_ms: i64,
    pub max_queue_bytes: u64,
    /// Refuse appends when the filesystem has less than this free.
    pub min_free_bytes: u64,
    /// Bodies in the segment log (format 3) rather than sled's `events` tree (format 1). A
    /// queue that already has `segments/` always uses it, whatever this says.
    pub segment_log: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_attempts: 10,
            retention_ms: 7 * 86_400_000,
            dedup_window_ms: 48 * 3_600_000,
            max_queue_bytes: 4 << 30,
            min_free_bytes: 64 << 20,
            segment_log: true,
        }
    }
}

/// The sled-backed queue. Cheap to share behind an `Arc`.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    events: sled::Tree,
    state: sled::Tree,
    dedup: sled::Tree,
    /// The database's data file, kept open for the fdatasync after each group flush.
    data_file: File,
    /// The blob files, `conf` and directory entries sled never syncs itself.
    files: SledFiles,
    index: Mutex<Index>,
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
    /// Format 3: the bodies' log, the in-memory dedup index and the group buffer.
    segments: Option<Segments>,
    dedup_mem: Mutex<DedupIndex>,
    group: Mutex<Group>,
}

/// The `state` value that marks an event removed from a segment (it cannot be deleted there).
const TOMBSTONE: [u8; 1] = [4];

/// Reopens a store a test has just dropped. sled's flusher thread (`flush_every_ms`) lets go of
/// the file lock at its next tick, so an in-process reopen can find it still held: wait for
/// that, with a deadline.
#[cfg(test)]
pub(crate) fn reopen_after_drop(path: &Path, opts: StoreOptions) -> SledStore {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SledStore::open(path, opts.clone()) {
            Ok(q) => return q,
            Err(QueueError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("reopening {}: {e}", path.display()),
        }
    }
}

fn storage(ctx: &str) -> impl Fn(sled::Error) -> QueueError + '_ {
    move |e| QueueError::storage(ctx, e)
}

impl SledStore {
    /// Opens (or creates) the queue database at `path`. Fails at once with
    /// [`QueueError::Locked`] when another process holds it.
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
        let events = db
            .open_tree("events")
            .map_err(storage("opening events tree"))?;
        let state = db
            .open_tree("state")
            .map_err(storage("opening state tree"))?;
        let dedup = db
            .open_tree("dedup")
            .map_err(storage("opening dedup tree"))?;
        let seg_dir = path.join("segments");
        let mut max_seg_id = 0u64;
        let mut dedup_mem = DedupIndex::default();
        let segments = if opts.segment_log || seg_dir.exists() {
            let mut newest = i64::MIN;
            let segs = Segments::open(&seg_dir, |r| {
                newest = newest.max(r.received_at_ms);
                max_seg_id = max_seg_id.max(r.id);
                if let Some(k) = r.dedup_key {
                    dedup_mem.insert(k, r.id, r.received_at_ms);
                }
            })
            .map_err(|e| QueueError::storage("opening the queue's segment log", e))?;
            // Keep the keys inside the window (measured from now, or from the newest event if
            // the clock is behind it).
            dedup_mem.sweep(
                super::now_ms()
                    .min(newest)
                    .saturating_sub(opts.dedup_window_ms),
            );
            // A format-1 queue's dedup keys move into memory; the tree is swept as before.
            for item in dedup.iter() {
                let (k, v) = item.map_err(storage("reading dedup keys"))?;
                if let (Ok(k), Some((id, at))) = (std::str::from_utf8(&k), decode_dedup(&v)) {
                    dedup_mem.insert(k, id, at);
                }
            }
            Some(segs)
        } else {
            None
        };
        let store = SledStore {
            path: path.to_path_buf(),
            db,
            events,
            state,
            dedup,
            data_file,
            files,
            index: Mutex::new(Index::default()),
            arrivals: Notify::new(),
            opts,
            last_event_at_ms: AtomicI64::new(0),
            disk_bytes: AtomicU64::new(0),
            free_bytes: AtomicU64::new(u64::MAX),
            failed: Mutex::new(None),
            segments,
            dedup_mem: Mutex::new(dedup_mem),
            group: Mutex::new(Group::default()),
        };
        if store.segments.is_some() {
            store.guard_id_generator(max_seg_id)?;
        }
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

    fn rebuild_index(&self) -> Result<(), QueueError> {
        let mut idx = Index::default();
        let mut sources: HashMap<String, Arc<str>> = HashMap::new();
        let mut last = 0i64;
        let mut with_state = std::collections::HashSet::new();
        for item in self.state.iter() {
            let (k, v) = item.map_err(storage("scanning state"))?;
            let Some(id) = EventId::from_be_slice(&k) else {
                continue;
            };
            with_state.insert(id.0);
            if *v == TOMBSTONE {
                if let Some(segs) = &self.segments {
                    segs.forget(id.0);
                }
                continue;
            }
            let Some(rec) = Record::decode(&v) else {
                continue;
            };
            let (src, received) = match self.event_bytes(id.0)? {
                Some(bytes) => match Envelope::decode(&bytes) {
                    Ok(env) => (env.source, env.received_at_ms),
                    Err(_) => ("<corrupt>".to_string(), 0),
                },
                None => continue,
            };
            last = last.max(received);
            let src = sources
                .entry(src.clone())
                .or_insert_with(|| Arc::from(src.as_str()))
                .clone();
            match rec.status {
                Status::Pending if rec.not_before_ms > 0 => {
                    idx.delayed.insert((rec.not_before_ms, id.0));
                    idx.delayed_src.insert(id.0, src);
                }
                Status::Pending => {
                    idx.ready.insert(id.0, src);
                }
                Status::Acked => {
                    idx.acked.insert((rec.at_ms, id.0));
                }
                Status::Dead => {
                    idx.dead.insert(id.0, src);
                }
            }
        }
        if self.segments.is_some() {
            // Format 3: a segment record without a state record is pending.
            for (id, src, received) in self.pending_in_segments(&with_state)? {
                last = last.max(received);
                let src = sources
                    .entry(src.clone())
                    .or_insert_with(|| Arc::from(src.as_str()))
                    .clone();
                idx.ready.insert(id, src);
            }
        }
        self.last_event_at_ms.store(last, Ordering::Relaxed);
        *self.lock() = idx;
        Ok(())
    }

    /// A new event id, and `ev`'s envelope with it encoded into `out` (cleared first).
    fn encode_new(&self, ev: &NewEvent, out: &mut Vec<u8>) -> Result<u64, QueueError> {
        let id = self.new_id()?;
        out.clear();
        encode_event(out, id, ev);
        Ok(id)
    }

    fn new_id(&self) -> Result<u64, QueueError> {
        self.db
            .generate_id()
            .map_err(storage("generating event id"))
    }

    /// An event's encoded envelope, from its segment or from the `events` tree.
    fn event_bytes(&self, id: u64) -> Result<Option<Vec<u8>>, QueueError> {
        if let Some(segs) = &self.segments {
            if let Some(b) = segs
                .read(id)
                .map_err(|e| QueueError::storage("reading event", e))?
            {
                return Ok(Some(b));
            }
        }
        Ok(self
            .events
            .get(id.to_be_bytes())
            .map_err(storage("reading event"))?
            .map(|v| v.to_vec()))
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

    /// Stores a batch durably: one flush and one fdatasync for all of them. The outcomes are in
    /// the batch's order. On a storage error every event of the batch gets the error and none
    /// becomes deliverable.
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
        let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(batch.len());
        // (event id, index in the batch) of what this batch wrote, to undo it on failure.
        let mut written: Vec<(u64, usize)> = Vec::with_capacity(batch.len());
        // Every record of the batch is encoded into this one buffer: sled copies it into its own
        // allocation, so the body is not allocated twice per event.
        let mut record = Vec::new();
        if let Some(segs) = &self.segments {
            return self.append_segments(segs, batch);
        }
        let result = (|| -> Result<(), QueueError> {
            for (i, ev) in batch.iter().enumerate() {
                if let Some(key) = &ev.dedup_key {
                    if let Some(prev) = self
                        .dedup
                        .get(key.as_bytes())
                        .map_err(storage("reading dedup"))?
                    {
                        if let Some((id, at)) = decode_dedup(&prev) {
                            if ev.received_at_ms - at < self.opts.dedup_window_ms {
                                outcomes.push(Some(AppendOutcome::Duplicate(EventId(id))));
                                continue;
                            }
                        }
                    }
                }
                let id = self.encode_new(ev, &mut record)?;
                let k = id.to_be_bytes();
                written.push((id, i));
                self.events
                    .insert(k, &record[..])
                    .map_err(storage("writing event"))?;
                self.state
                    .insert(k, Record::pending().encode())
                    .map_err(storage("writing event state"))?;
                if let Some(key) = &ev.dedup_key {
                    self.dedup
                        .insert(key.as_bytes(), &encode_dedup(id, ev.received_at_ms)[..])
                        .map_err(storage("writing dedup key"))?;
                }
                outcomes.push(Some(AppendOutcome::Accepted(EventId(id))));
            }
            if written.is_empty() {
                // Only duplicates: nothing new to make durable (the first copy already is).
                return Ok(());
            }
            self.sync()
        })();
        if let Err(e) = result {
            self.mark_failed(&e.to_string());
            // Undo what this batch wrote, so a retry is not answered "duplicate" for an event
            // that was never made durable. Best effort: the disk may be failing.
            for &(id, i) in &written {
                let k = id.to_be_bytes();
                let _ = self.events.remove(k);
                let _ = self.state.remove(k);
                if let Some(key) = &batch[i].dedup_key {
                    let _ = self.dedup.remove(key.as_bytes());
                }
            }
            let msg = e.to_string();
            return batch
                .iter()
                .map(|_| Err(QueueError::storage("append", &msg)))
                .collect();
        }
        self.publish(batch, &outcomes)
    }

    /// Format 3's append: dedup in memory, every record of the batch in one segment write and
    /// one fdatasync, nothing in sled.
    fn append_segments(
        &self,
        segs: &Segments,
        batch: &[NewEvent],
    ) -> Vec<Result<AppendOutcome, QueueError>> {
        let mut outcomes: Vec<Option<AppendOutcome>> = Vec::with_capacity(batch.len());
        let mut group = self.group.lock().unwrap_or_else(|p| p.into_inner());
        group.clear();
        let mut dedup = self.dedup_mem.lock().unwrap_or_else(|p| p.into_inner());
        let mut keyed = Vec::new();
        let result = (|| -> Result<(), QueueError> {
            for ev in batch {
                if let Some(key) = &ev.dedup_key {
                    if let Some(first) =
                        dedup.get(key, ev.received_at_ms, self.opts.dedup_window_ms)
                    {
                        outcomes.push(Some(AppendOutcome::Duplicate(EventId(first))));
                        continue;
                    }
                }
                let id = self.new_id()?;
                group.push(id, ev.received_at_ms, ev.dedup_key.as_deref(), |buf| {
                    encode_event(buf, id, ev)
                });
                if let Some(key) = &ev.dedup_key {
                    dedup.insert(key, id, ev.received_at_ms);
                    keyed.push(key.as_str());
                }
                outcomes.push(Some(AppendOutcome::Accepted(EventId(id))));
            }
            segs.append(&group)
                .map_err(|e| QueueError::storage("appending to the segment log", e))
        })();
        if let Err(e) = result {
            self.mark_failed(&e.to_string());
            for key in keyed {
                dedup.remove(key);
            }
            let msg = e.to_string();
            return batch
                .iter()
                .map(|_| Err(QueueError::storage("append", &msg)))
                .collect();
        }
        drop(dedup);
        drop(group);
        self.publish(batch, &outcomes)
    }

    /// Makes a stored batch deliverable and returns its outcomes.
    fn publish(
        &self,
        batch: &[NewEvent],
        outcomes: &[Option<AppendOutcome>],
    ) -> Vec<Result<AppendOutcome, QueueError>> {
        {
            let mut idx = self.lock();
            let mut last = 0;
            // One shared name per source, not one allocation per pending event.
            let mut src: Option<Arc<str>> = None;
            for (ev, out) in batch.iter().zip(outcomes) {
                if let Some(AppendOutcome::Accepted(id)) = out {
                    let name = match &src {
                        Some(s) if **s == *ev.source => s.clone(),
                        _ => src.insert(ev.source.clone()).clone(),
                    };
                    idx.ready.insert(id.0, name);
                    last = last.max(ev.received_at_ms);
                }
            }
            self.last_event_at_ms.fetch_max(last, Ordering::Relaxed);
        }
        self.arrivals.notify_waiters();
        outcomes
            .iter()
            .map(|o| (*o).ok_or_else(|| QueueError::storage("append", "no outcome")))
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
}

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
/// Appends `ev`'s envelope, as event `id`, to `out`.
fn encode_event(out: &mut Vec<u8>, id: u64, ev: &NewEvent) {
    encode_parts_into(
        out,
        EventId(id),
        &ev.source,
        ev.platform,
        ev.received_at_ms,
        &ev.headers,
        &ev.body,
    );
}

pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

mod delivery;
mod operator;

#[cfg(test)]
mod tests;
