//! The dedup index in memory (queue format 3): a hash of each delivery id inside the dedup
//! window -> the first event's id and its arrival time.
//!
//! Why this exists: a sled lookup and insert per event cost more than the rest of the append
//! (issue 12). The index is rebuilt at open from the segment records inside the window (and from
//! a format-1 `dedup` tree, if any), so nothing of it is written on the append path. Keys are
//! hashed with a per-process random key: 16 bytes an entry whatever the delivery id's length, and
//! no delivery id can be crafted to collide with another.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher as _;

#[derive(Default)]
pub struct DedupIndex {
    hasher: RandomState,
    map: HashMap<u64, (u64, i64)>,
}

impl DedupIndex {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The first event with `key` if it arrived less than `window_ms` before `at_ms`.
    pub fn get(&self, key: &str, at_ms: i64, window_ms: i64) -> Option<u64> {
        self.map
            .get(&self.hash(key))
            .filter(|(_, first)| at_ms - first < window_ms)
            .map(|(id, _)| *id)
    }

    /// Records `key` as first seen in event `id` at `at_ms` (a later record replaces an older).
    pub fn insert(&mut self, key: &str, id: u64, at_ms: i64) {
        let h = self.hash(key);
        match self.map.get(&h) {
            Some((_, first)) if *first > at_ms => {}
            _ => {
                self.map.insert(h, (id, at_ms));
            }
        }
    }

    /// Forgets `key` (an append that did not reach the disk).
    pub fn remove(&mut self, key: &str) {
        let h = self.hash(key);
        self.map.remove(&h);
    }

    /// Drops every entry older than `window_start_ms`.
    pub fn sweep(&mut self, window_start_ms: i64) {
        self.map.retain(|_, (_, at)| *at >= window_start_ms);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hits_inside_the_window_only_and_sweeps() {
        let mut d = DedupIndex::default();
        d.insert("shop\0abc", 7, 1000);
        assert_eq!(d.get("shop\0abc", 1499, 500), Some(7));
        assert_eq!(d.get("shop\0abc", 1500, 500), None, "window is half-open");
        assert_eq!(d.get("shop\0abd", 1001, 500), None);
        d.sweep(1001);
        assert!(d.is_empty());
    }
}
