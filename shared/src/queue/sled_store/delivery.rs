//! The delivery side of the sled queue: leasing (capped by count and by bytes), lease expiry,
//! ack and fail. Split from [`super`] so the append path and the delivery path each read on
//! their own; same invariants (leases live only in memory, attempts are persisted).

use super::super::protocol::MAX_LEASE_BYTES;
use super::*;

/// What leasing one picked event came to.
enum Load {
    Got(Leased),
    /// Gone from the store, or dead-lettered as unreadable.
    Gone,
    /// Over the lease's byte cap: back to ready.
    Full,
}

impl SledStore {
    /// Takes up to `max` deliverable events, and at most [`MAX_LEASE_BYTES`] of them, and
    /// leases them until `now + lease_ms`.
    pub fn lease_now(
        &self,
        max: usize,
        lease_ms: u64,
        now: i64,
    ) -> Result<Vec<Leased>, QueueError> {
        self.lease_capped(max, MAX_LEASE_BYTES, lease_ms, now)
    }

    /// Takes up to `max` deliverable events whose encoded envelopes add up to at most
    /// `max_bytes`, but always the first one however big (a lease that could carry nothing would
    /// stall the queue), and leases them until `now + lease_ms`. What the cap leaves out stays
    /// ready, in order, with no attempt counted.
    pub fn lease_capped(
        &self,
        max: usize,
        max_bytes: usize,
        lease_ms: u64,
        now: i64,
    ) -> Result<Vec<Leased>, QueueError> {
        let picked: Vec<(u64, Arc<str>)> = {
            let mut idx = self.lock();
            promote_due(&mut idx, now);
            let ids: Vec<u64> = idx.ready.keys().take(max).copied().collect();
            let deadline = now + lease_ms as i64;
            ids.into_iter()
                .filter_map(|id| {
                    let src = idx.ready.remove(&id)?;
                    idx.leased.insert(id, (deadline, src.clone()));
                    Some((id, src))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(picked.len());
        let mut out_bytes = 0usize;
        let mut picked = picked.into_iter();
        while let Some((id, _)) = picked.next() {
            let k = id.to_be_bytes();
            let loaded = (|| -> Result<Load, QueueError> {
                let Some(bytes) = self.event_bytes(id)? else {
                    return Ok(Load::Gone);
                };
                if !out.is_empty() && out_bytes + bytes.len() > max_bytes {
                    return Ok(Load::Full);
                }
                out_bytes += bytes.len();
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
                match Envelope::decode(&bytes) {
                    Ok(envelope) => Ok(Load::Got(Leased {
                        envelope,
                        attempts: rec.attempts,
                    })),
                    Err(e) => {
                        // Unreadable bytes can never be processed: dead-letter with the reason.
                        self.mark_dead(id, rec.attempts, &e.to_string(), now)?;
                        Ok(Load::Gone)
                    }
                }
            })();
            match loaded {
                Ok(Load::Got(l)) => out.push(l),
                Ok(Load::Gone) => {
                    self.lock().leased.remove(&id);
                }
                Ok(Load::Full) => {
                    // The byte cap: this one and the rest go back to ready, untouched.
                    let mut idx = self.lock();
                    for id in std::iter::once(id).chain(picked.map(|(id, _)| id)) {
                        if let Some((_, src)) = idx.leased.remove(&id) {
                            idx.ready.insert(id, src);
                        }
                    }
                    break;
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

    pub fn ack(&self, ids: &[EventId], now: i64) -> Result<(), QueueError> {
        for id in ids {
            let k = id.to_be_bytes();
            let Some(mut rec) = self
                .state
                .get(k)
                .map_err(storage("reading event state"))?
                .and_then(|b| Record::decode(&b))
            else {
                continue;
            };
            rec.status = Status::Acked;
            rec.at_ms = now;
            rec.error.clear();
            self.state
                .insert(k, rec.encode())
                .map_err(storage("acking"))?;
            let mut idx = self.lock();
            idx.leased.remove(&id.0);
            idx.ready.remove(&id.0);
            if let Some((t, _)) = idx.delayed.iter().find(|(_, i)| *i == id.0).copied() {
                idx.delayed.remove(&(t, id.0));
            }
            idx.acked.insert((now, id.0));
        }
        Ok(())
    }

    pub fn fail(&self, id: EventId, failure: &Failure, now: i64) -> Result<(), QueueError> {
        let k = id.to_be_bytes();
        let rec = self
            .state
            .get(k)
            .map_err(storage("reading event state"))?
            .and_then(|b| Record::decode(&b))
            .ok_or(QueueError::NotFound(id))?;
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
