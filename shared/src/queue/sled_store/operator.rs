//! What the operator and the maintenance task ask of the sled queue beyond the append/lease
//! path: dead letters (list, show, replay, purge), reading one event, the retention sweep,
//! purging events that name a user, counters, and the export `compact` rewrites into. Split
//! from [`super`] so the hot path reads on its own; same invariants.

use super::*;

impl SledStore {
    pub(super) fn mark_dead(
        &self,
        id: u64,
        attempts: u32,
        error: &str,
        now: i64,
    ) -> Result<(), QueueError> {
        let r = Record {
            status: Status::Dead,
            attempts,
            not_before_ms: 0,
            at_ms: now,
            error: error.to_string(),
        };
        self.copy_out_of_segment(id)?;
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

    fn dead_letter(&self, id: u64) -> Result<Option<(DeadLetter, Envelope)>, QueueError> {
        let k = id.to_be_bytes();
        let Some(rec) = self
            .state
            .get(k)
            .map_err(storage("reading event state"))?
            .and_then(|b| Record::decode(&b))
        else {
            return Ok(None);
        };
        if rec.status != Status::Dead {
            return Ok(None);
        }
        let Some(bytes) = self.event_bytes(id)? else {
            return Ok(None);
        };
        let env = Envelope::decode(&bytes)
            .map_err(|e| QueueError::storage(format!("decoding {}", EventId(id)), e))?;
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
        let ids = self.each_dead(filter, dry_run, |id| {
            self.state
                .insert(id.to_be_bytes(), Record::pending().encode())
                .map_err(storage("replaying"))?;
            let mut idx = self.lock();
            if let Some(src) = idx.dead.remove(&id.0) {
                idx.ready.insert(id.0, src);
            }
            Ok(())
        })?;
        self.arrivals.notify_waiters();
        Ok(ids)
    }

    pub fn dead_purge(
        &self,
        filter: &DeadFilter,
        dry_run: bool,
    ) -> Result<Vec<EventId>, QueueError> {
        self.each_dead(filter, dry_run, |id| {
            self.remove_event(id.0)?;
            self.lock().dead.remove(&id.0);
            Ok(())
        })
    }

    /// The dead letters `filter` selects; unless `dry_run`, `act` is applied to each and the
    /// store synced before they are returned.
    fn each_dead(
        &self,
        filter: &DeadFilter,
        dry_run: bool,
        mut act: impl FnMut(EventId) -> Result<(), QueueError>,
    ) -> Result<Vec<EventId>, QueueError> {
        let ids: Vec<EventId> = self.dead_list(filter)?.into_iter().map(|d| d.id).collect();
        if dry_run {
            return Ok(ids);
        }
        for id in &ids {
            act(*id)?;
        }
        self.sync()?;
        Ok(ids)
    }

    /// Any retained event by id (pending, acked or dead).
    pub fn get(&self, id: EventId) -> Result<Envelope, QueueError> {
        let bytes = self.event_bytes(id.0)?.ok_or(QueueError::NotFound(id))?;
        Envelope::decode(&bytes).map_err(|e| QueueError::storage(format!("decoding {id}"), e))
    }

    fn remove_event(&self, id: u64) -> Result<(), QueueError> {
        let k = id.to_be_bytes();
        self.events.remove(k).map_err(storage("purging event"))?;
        if self.segments.as_ref().is_some_and(|s| s.contains(id)) {
            // The record stays in its segment until the segment goes: remember it is gone.
            self.state
                .insert(k, &TOMBSTONE)
                .map_err(storage("purging event state"))?;
            if let Some(segs) = &self.segments {
                segs.forget(id);
            }
            return Ok(());
        }
        self.state
            .remove(k)
            .map_err(storage("purging event state"))?;
        Ok(())
    }

    /// Purges acked events past retention and dedup keys past the window. Returns how many events.
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
        let mut stale = Vec::new();
        for item in self.dedup.iter() {
            let (k, v) = item.map_err(storage("scanning dedup keys"))?;
            if decode_dedup(&v).is_none_or(|(_, at)| at < window_start) {
                stale.push(k);
            }
        }
        for k in stale {
            self.dedup.remove(k).map_err(storage("purging dedup key"))?;
        }
        self.sweep_segments(window_start)?;
        Ok(old.len())
    }

    /// Drops every event that names `needle` in its body (an eBay account deletion request):
    /// retained events and dead letters alike. Returns how many.
    pub fn purge_matching(&self, source: &str, needle: &[u8]) -> Result<usize, QueueError> {
        if needle.is_empty() {
            return Ok(0);
        }
        let mut hits = Vec::new();
        for item in self.events.iter() {
            let (k, v) = item.map_err(storage("scanning events"))?;
            if let (Some(id), Ok(env)) = (EventId::from_be_slice(&k), Envelope::decode(&v)) {
                if env.source == source && env.body.windows(needle.len()).any(|w| w == needle) {
                    hits.push(id.0);
                }
            }
        }
        hits.extend(self.segment_hits(source, needle, &hits)?);
        let mut removed = 0;
        for id in hits {
            let deletable = {
                let idx = self.lock();
                !idx.ready.contains_key(&id) && !idx.leased.contains_key(&id)
            };
            if deletable {
                if let Some(segs) = &self.segments {
                    segs.blank(id)
                        .map_err(|e| QueueError::storage("erasing a purged body", e))?;
                }
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
        for name in ["events", "state", "dedup"] {
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
        if let Some(segs) = &self.segments {
            segs.copy_to(&to.join("segments"))
                .map_err(|e| QueueError::storage("copying the segment log", e))?;
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
