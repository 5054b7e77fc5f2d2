//! The newest-first alerts list (the alerts page, `/api/v1/alerts`) read from sled a chunk of
//! the creation-order index at a time, the records decoded by the caller.
//!
//! Why a module of its own: a page lists up to 500 alerts (the API's most; the alerts page
//! shows 100), and it used to be read and decoded in one call on the event runtime's blocking
//! pool, at the events' priority: a few milliseconds of JSON decoding per page that event
//! processing waited behind on a busy core (docs/PERFORMANCE.md, section 23). Now the state's
//! thread only walks [`RECENT_READ_CHUNK`] index keys and copies out their records
//! ([`RecentChunk`], sled's buffers, not decoded); [`RecentPage`] decodes and filters them
//! where it is called from (the dashboard's idle-class threads) and says where the next chunk
//! starts. The one-call version (`StateStore::recent_alerts`) runs the same two halves in a
//! loop.

use super::backend::{AlertCursor, AlertPage, RECENT_SCAN_MAX};
use super::planned_sets;
use super::sled::DecodedAlerts;
use crate::alert::OutboxEntry;

/// Index keys one read on the state's thread walks.
pub const RECENT_READ_CHUNK: usize = 64;

/// Index keys read newest first, each with its outbox record as stored.
#[derive(Debug, Default)]
pub struct RecentChunk {
    /// Every key looked at: its cursor, and the record (`None`: the scope refused its source,
    /// or the entry is gone).
    pub keys: Vec<(AlertCursor, Option<sled::IVec>)>,
    /// Whether the index holds older keys than the last one.
    pub more: bool,
}

/// A page being put together from [`RecentChunk`]s: stops at `limit` entries passing the
/// filter or [`RECENT_SCAN_MAX`] keys looked at, as the single read did.
#[derive(Debug)]
pub struct RecentPage {
    limit: usize,
    /// The exclusive upper bound of the next chunk: the last key looked at (or the caller's
    /// cursor before the first).
    from: Option<AlertCursor>,
    looked: usize,
    entries: Vec<OutboxEntry>,
    next: Option<AlertCursor>,
}

impl RecentPage {
    pub fn new(before: Option<AlertCursor>, limit: usize) -> RecentPage {
        RecentPage {
            limit,
            from: before,
            looked: 0,
            entries: Vec::new(),
            next: None,
        }
    }

    /// Where the next chunk starts (exclusive; `None`: at the newest key).
    pub fn from(&self) -> Option<&AlertCursor> {
        self.from.as_ref()
    }

    /// Decodes `chunk`'s records and keeps those that pass `keep` (one that does not decode is
    /// skipped, as in every outbox scan). True when the page is complete.
    pub fn take(&mut self, chunk: RecentChunk, keep: &dyn Fn(&OutboxEntry) -> bool) -> bool {
        for (cursor, record) in chunk.keys {
            if self.full() {
                // Another key follows the last one looked at: the next page starts there.
                self.next = self.from.clone();
                return true;
            }
            self.looked += 1;
            self.from = Some(cursor);
            let Some(v) = record else { continue };
            if let Ok(e) = serde_json::from_slice::<OutboxEntry>(&v) {
                if keep(&e) {
                    self.entries.push(e);
                }
            }
        }
        if !chunk.more {
            return true;
        }
        if self.full() {
            self.next = self.from.clone();
            return true;
        }
        false
    }

    fn full(&self) -> bool {
        self.entries.len() >= self.limit || self.looked >= RECENT_SCAN_MAX
    }

    /// The planned sets the entries refer to, to read ([`super::sled::StateStore::sets_raw`]).
    pub fn sets(&self) -> Vec<String> {
        planned_sets::references(&self.entries)
    }

    /// The page, planned sets resolved from `sets` (the records read), newest first. An entry
    /// whose set is missing is left out.
    pub fn finish(self, sets: &[(String, sled::IVec)]) -> AlertPage {
        let mut entries = DecodedAlerts::new(self.entries).resolve(sets);
        entries.reverse();
        AlertPage {
            entries,
            next: self.next,
        }
    }
}
