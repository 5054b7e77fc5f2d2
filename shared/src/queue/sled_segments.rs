//! The parts of [`super::SledStore`] that exist only for format 3 (bodies in the segment log):
//! rebuilding pending events from segments, copying a dead letter's body into sled, finding
//! bodies to erase, and deleting segments nothing needs any more.
//!
//! A child module of `sled_store` so the store's fields stay private, and kept apart so the
//! store's own file changes little.

use super::{Envelope, EventId, QueueError, SledStore};
use std::collections::HashSet;

impl SledStore {
    /// Format 3 writes nothing to sled on append, so sled's id generator is never persisted by
    /// the appends themselves. sled persists it only when it crosses a multiple of its persist
    /// interval and, after a crash, resumes at the last persisted value plus twice the interval:
    /// a database never flushed restarts at 0, and two crashes in a row without a crossing
    /// restart at the same value twice (found by the crash tests: the third start after two
    /// kill -9 would have reused ids 2000000..2000032). Ids must never be reused (the worker
    /// remembers processed ids), so at open the generator is moved past the newest id in the
    /// segments and past the floor written at the previous open, and the new floor is written
    /// and flushed.
    pub(super) fn guard_id_generator(&self, max_seg_id: u64) -> Result<(), QueueError> {
        const FLOOR: &[u8] = b"id_floor";
        let floor = self
            .db
            .get(FLOOR)
            .map_err(|e| QueueError::storage("reading the id floor", e))?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let must_exceed = max_seg_id.max(floor);
        let mut next = self
            .db
            .generate_id()
            .map_err(|e| QueueError::storage("generating event id", e))?;
        while next <= must_exceed {
            next = self
                .db
                .generate_id()
                .map_err(|e| QueueError::storage("generating event id", e))?;
        }
        self.db
            .insert(FLOOR, &next.to_be_bytes())
            .map_err(|e| QueueError::storage("writing the id floor", e))?;
        self.sync()
    }

    /// Calls `f` with every segment event not in `skip` and its envelope (None when its bytes
    /// do not decode).
    fn each_segment_event(
        &self,
        skip: impl Fn(u64) -> bool,
        mut f: impl FnMut(u64, Option<Envelope>),
    ) -> Result<(), QueueError> {
        let Some(segs) = &self.segments else {
            return Ok(());
        };
        for id in segs.ids() {
            if skip(id) {
                continue;
            }
            if let Some(bytes) = segs
                .read(id)
                .map_err(|e| QueueError::storage("reading event", e))?
            {
                f(id, Envelope::decode(&bytes).ok());
            }
        }
        Ok(())
    }

    /// (id, source, received_at) of every segment event without a state record: pending.
    pub(super) fn pending_in_segments(
        &self,
        with_state: &HashSet<u64>,
    ) -> Result<Vec<(u64, String, i64)>, QueueError> {
        let mut out = Vec::new();
        self.each_segment_event(
            |id| with_state.contains(&id),
            |id, env| match env {
                Some(env) => out.push((id, env.source, env.received_at_ms)),
                // Delivered as is; the lease dead-letters what cannot be decoded.
                None => out.push((id, "<corrupt>".to_string(), 0)),
            },
        )?;
        Ok(out)
    }

    /// A dead letter stays until replayed or purged, longer than its segment may live: its
    /// body is copied into `events` (a no-op for a format-1 event, already there).
    pub(super) fn copy_out_of_segment(&self, id: u64) -> Result<(), QueueError> {
        let Some(segs) = &self.segments else {
            return Ok(());
        };
        let k = id.to_be_bytes();
        if self
            .events
            .contains_key(k)
            .map_err(|e| QueueError::storage("reading event", e))?
        {
            return Ok(());
        }
        if let Some(bytes) = segs
            .read(id)
            .map_err(|e| QueueError::storage("reading event", e))?
        {
            self.events
                .insert(k, bytes)
                .map_err(|e| QueueError::storage("copying a dead letter's body", e))?;
        }
        Ok(())
    }

    /// Segment events of `source` (retained or waiting for a retry; not in `skip`) whose body
    /// contains `needle`.
    pub(super) fn segment_hits(
        &self,
        source: &str,
        needle: &[u8],
        skip: &[u64],
    ) -> Result<Vec<u64>, QueueError> {
        let mut hits = Vec::new();
        self.each_segment_event(
            |id| skip.contains(&id),
            |id, env| {
                if env.is_some_and(|env| {
                    env.source == source && env.body.windows(needle.len()).any(|w| w == needle)
                }) {
                    hits.push(id);
                }
            },
        )?;
        Ok(hits)
    }

    /// Deletes the segments whose events are all gone from the queue (acked and past retention,
    /// purged, or dead with their body copied) and older than the dedup window; then their
    /// tombstones and state. Also forgets in-memory dedup keys older than the window.
    pub(super) fn sweep_segments(&self, window_start_ms: i64) -> Result<(), QueueError> {
        let Some(segs) = &self.segments else {
            return Ok(());
        };
        self.dedup_mem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sweep(window_start_ms);
        let removed = {
            let idx = self.lock();
            let acked: HashSet<u64> = idx.acked.iter().map(|(_, id)| *id).collect();
            segs.delete_done(window_start_ms, |id| {
                !idx.ready.contains_key(&id)
                    && !idx.delayed_src.contains_key(&id)
                    && !idx.leased.contains_key(&id)
                    && !acked.contains(&id)
            })
            .map_err(|e| QueueError::storage("deleting done segments", e))?
        };
        for id in removed {
            let k = EventId(id).to_be_bytes();
            // A dead letter keeps its state (its body is in `events`); the rest had tombstones.
            let dead = self.lock().dead.contains_key(&id);
            if !dead {
                self.state
                    .remove(k)
                    .map_err(|e| QueueError::storage("purging event state", e))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{accepted, ev};
    use super::super::{AppendOutcome, DeadFilter, Failure, StoreOptions};
    use super::*;
    use std::path::Path;

    fn opts(segment_log: bool) -> StoreOptions {
        StoreOptions {
            min_free_bytes: 0,
            segment_log,
            ..StoreOptions::default()
        }
    }

    /// Writes events a, b and c to a queue at `path` and closes it: `leased` of them leased, a
    /// acked, b dead-lettered ("bad"), c still open (pending, or leased and never acked).
    fn acked_dead_and_open(
        path: &Path,
        segment_log: bool,
        leased: usize,
    ) -> (EventId, EventId, EventId) {
        let q = SledStore::open(path, opts(segment_log)).unwrap();
        let out = q.append_batch(&[
            ev("shop", Some("a"), 1),
            ev("shop", Some("b"), 2),
            ev("shop", Some("c"), 3),
        ]);
        let (a, b, c) = (accepted(&out[0]), accepted(&out[1]), accepted(&out[2]));
        q.lease_now(leased, 60_000, 10).unwrap();
        q.ack(&[a], 20).unwrap();
        let bad = Failure::Permanent {
            error: "bad".into(),
        };
        q.fail(b, &bad, 30).unwrap();
        q.flush_all().unwrap();
        (a, b, c)
    }

    #[test]
    fn a_format_1_queue_keeps_its_pending_events_dead_letters_and_dedup_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        let (acked, dead, pending) = acked_dead_and_open(&path, false, 2);
        assert!(!path.join("segments").exists(), "format 1 wrote no segment");
        let q = crate::queue::sled_store::reopen_after_drop(&path, opts(true));
        let s = q.stats();
        assert_eq!((s.pending, s.dead, s.acked_retained), (1, 1, 1));
        assert!(matches!(
            q.append_batch(&[ev("shop", Some("a"), 40)])[0],
            Ok(AppendOutcome::Duplicate(first)) if first == acked
        ));
        let new = accepted(&q.append_batch(&[ev("shop", Some("d"), 50)])[0]);
        assert!(path.join("segments").exists());
        let leased = q.lease_now(10, 60_000, 60).unwrap();
        assert_eq!(
            leased.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
            vec![pending, new],
            "old then new, in arrival order"
        );
        assert_eq!(leased[1].envelope.body, b"{\"at\":50}");
        let (dl, env) = q.dead_show(dead).unwrap();
        assert_eq!(
            (dl.error.as_str(), &env.body[..]),
            ("bad", &b"{\"at\":2}"[..])
        );
        // Once segments exist, they are used even if the option says otherwise.
        q.ack(&[pending], 70).unwrap();
        q.flush_all().unwrap();
        drop(q);
        let q = crate::queue::sled_store::reopen_after_drop(&path, opts(false));
        assert_eq!(q.get(new).unwrap().body, b"{\"at\":50}");
        assert_eq!(q.stats().leased, 0);
        assert_eq!(
            q.stats().pending,
            1,
            "the leased new event is pending again"
        );
    }

    #[test]
    fn segment_events_dead_letter_replay_purge_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        // c: leased, never acked.
        let (a, b, c) = acked_dead_and_open(&path, true, 3);
        let q = crate::queue::sled_store::reopen_after_drop(&path, opts(true));
        let s = q.stats();
        assert_eq!((s.pending, s.dead, s.acked_retained), (1, 1, 1));
        assert_eq!(q.lease_now(10, 60_000, 40).unwrap()[0].envelope.id, c);
        assert!(matches!(
            q.append_batch(&[ev("shop", Some("b"), 50)])[0],
            Ok(AppendOutcome::Duplicate(first)) if first == b
        ));
        // The dead letter's body is in sled, so it outlives its segment.
        assert!(q.events.contains_key(b.to_be_bytes()).unwrap());
        // Purging the acked event's body by content erases it from the segment file.
        assert_eq!(q.purge_matching("shop", b"\"at\":1}").unwrap(), 1);
        assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
        let seg = std::fs::read(path.join("segments").join("00000001.seg")).unwrap();
        assert!(!seg.windows(7).any(|w| w == b"\"at\":1}"));
        assert_eq!(
            q.dead_purge(&DeadFilter::default(), false).unwrap(),
            vec![b]
        );
        q.flush_all().unwrap();
        drop(q);
        let q = crate::queue::sled_store::reopen_after_drop(&path, opts(true));
        let s = q.stats();
        assert_eq!((s.pending, s.dead, s.acked_retained), (1, 0, 0));
        assert!(matches!(q.get(a), Err(QueueError::NotFound(_))));
        assert!(matches!(q.get(b), Err(QueueError::NotFound(_))));
    }

    /// The in-memory dedup index is rebuilt at open from the segments: keys inside the window
    /// (measured back from the newest event) answer Duplicate with the first event's id, keys
    /// older than it were swept at open, so they are new again even at a time (10,998) the
    /// window check alone would still count as a duplicate; whatever shard they landed in.
    #[test]
    fn the_dedup_index_is_rebuilt_at_open_inside_the_window_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("queue");
        let o = StoreOptions {
            dedup_window_ms: 10_000,
            ..opts(true)
        };
        let (mut old, mut new) = (Vec::new(), Vec::new());
        {
            let q = SledStore::open(&path, o.clone()).unwrap();
            let batch: Vec<_> = (0..2000)
                .map(|i| ev("shop", Some(&format!("old{i}")), 999))
                .collect();
            old.extend(q.append_batch(&batch).iter().map(accepted));
            let batch: Vec<_> = (0..2000)
                .map(|i| ev("shop", Some(&format!("new{i}")), 1000 + i))
                .collect();
            new.extend(q.append_batch(&batch).iter().map(accepted));
            // One more so the newest event is at 11,000: the window starts at 1,000.
            accepted(&q.append_batch(&[ev("shop", None, 11_000)])[0]);
        }
        let q = crate::queue::sled_store::reopen_after_drop(&path, o);
        let again: Vec<_> = (0..2000)
            .flat_map(|i| {
                [
                    ev("shop", Some(&format!("old{i}")), 10_998),
                    ev("shop", Some(&format!("new{i}")), 10_999),
                ]
            })
            .collect();
        let out = q.append_batch(&again);
        for i in 0..2000 {
            let o = &out[2 * i];
            assert!(
                matches!(o, Ok(AppendOutcome::Accepted(id)) if !old.contains(id)),
                "old{i}: {o:?}"
            );
            assert!(
                matches!(out[2 * i + 1], Ok(AppendOutcome::Duplicate(id)) if id == new[i]),
                "new{i}: {:?}",
                out[2 * i + 1]
            );
        }
    }
}
