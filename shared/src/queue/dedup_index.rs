//! The dedup index in memory (queue format 3): a hash of each delivery id inside the dedup
//! window -> the first event's id and its arrival time.
//!
//! Why this exists: a sled lookup and insert per event cost more than the rest of the append
//! (issue 12). The index is rebuilt at open from the segment records inside the window (and from
//! a format-1 `dedup` tree, if any), so nothing of it is written on the append path. Keys are
//! hashed with a per-process random key: 16 bytes an entry whatever the delivery id's length, and
//! no delivery id can be crafted to collide with another.
//!
//! The entries are spread over [`SHARDS`] tables of unequal shares (shard `i` takes a share
//! proportional to 2^(i/SHARDS)), so the tables double one at a time as the index grows, each at
//! its own size, instead of all at once: one `HashMap` doubled near 458k entries from 12.5 to
//! 25 MiB, and held both (~38 MiB) while it copied; here no step is more than one shard's, and the
//! bytes per entry stay near their mean (~41 B: 25 B a slot, tables 7/8 to 7/16 full) instead of
//! climbing to 57 B after each doubling. Measured in docs/PERFORMANCE.md section 15.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher as _;

/// How many tables the index is split over.
pub const SHARDS: usize = 64;
/// A key's table is picked by the top `ROUTE_BITS` of its hash, through a table of that size.
const ROUTE_BITS: u32 = 12;

type Entry = (u64, (u64, i64));

pub struct DedupIndex {
    hasher: RandomState,
    /// Top bits of a key's hash -> its shard; shard `i` owns ~2^(i/SHARDS) of the slots.
    route: Box<[u8; 1 << ROUTE_BITS]>,
    shards: Vec<HashMap<u64, (u64, i64)>>,
}

impl Default for DedupIndex {
    fn default() -> Self {
        let weight = |i: usize| (i as f64 / SHARDS as f64).exp2();
        let total: f64 = (0..SHARDS).map(weight).sum();
        let mut route = Box::new([0u8; 1 << ROUTE_BITS]);
        let (mut cum, mut start, slots) = (0.0, 0usize, 1usize << ROUTE_BITS);
        for i in 0..SHARDS {
            cum += weight(i);
            let end = (((cum / total) * slots as f64).round() as usize).min(slots);
            route[start..end].fill(i as u8);
            start = end;
        }
        DedupIndex {
            hasher: RandomState::new(),
            route,
            shards: (0..SHARDS).map(|_| HashMap::new()).collect(),
        }
    }
}

impl DedupIndex {
    /// The key's hash and the table it goes in.
    fn slot(&self, key: &str) -> (u64, usize) {
        let h = self.hasher.hash_one(key);
        (h, self.route[(h >> (64 - ROUTE_BITS)) as usize] as usize)
    }

    /// The first event with `key` if it arrived less than `window_ms` before `at_ms`.
    pub fn get(&self, key: &str, at_ms: i64, window_ms: i64) -> Option<u64> {
        let (h, s) = self.slot(key);
        self.shards[s]
            .get(&h)
            .filter(|(_, first)| at_ms - first < window_ms)
            .map(|(id, _)| *id)
    }

    /// Records `key` as first seen in event `id` at `at_ms` (a later record replaces an older).
    pub fn insert(&mut self, key: &str, id: u64, at_ms: i64) {
        let (h, s) = self.slot(key);
        let shard = &mut self.shards[s];
        match shard.get(&h) {
            Some((_, first)) if *first > at_ms => {}
            _ => {
                shard.insert(h, (id, at_ms));
            }
        }
    }

    /// Forgets `key` (an append that did not reach the disk).
    pub fn remove(&mut self, key: &str) {
        let (h, s) = self.slot(key);
        self.shards[s].remove(&h);
    }

    /// Drops every entry older than `window_start_ms`.
    pub fn sweep(&mut self, window_start_ms: i64) {
        for shard in &mut self.shards {
            shard.retain(|_, (_, at)| *at >= window_start_ms);
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// The bytes the tables hold (hashbrown's layout: a slot and a control byte per bucket).
    pub fn heap_bytes(&self) -> usize {
        self.shards.iter().map(|m| table_bytes(m.capacity())).sum()
    }
}

/// The heap bytes of a `HashMap<u64, (u64, i64)>` whose `capacity()` is `cap` (hashbrown: a
/// power-of-two number of buckets, 7/8 of them usable from 8 up; 16 extra control bytes).
pub fn table_bytes(cap: usize) -> usize {
    let buckets = match cap {
        0 => return 0,
        1..=3 => 4,
        4..=7 => 8,
        _ => cap / 7 * 8,
    };
    buckets * (std::mem::size_of::<Entry>() + 1) + 16
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
        d.sweep(1000);
        assert_eq!(d.len(), 1, "an entry at the window's start stays");
        d.sweep(1001);
        assert!(d.is_empty());
    }

    #[test]
    fn the_newest_record_wins_and_a_removed_key_is_new_again() {
        let mut d = DedupIndex::default();
        d.insert("k", 2, 2000);
        d.insert("k", 1, 1000);
        assert_eq!(
            d.get("k", 2500, 10_000),
            Some(2),
            "an older record leaves a newer"
        );
        d.insert("k", 3, 3000);
        assert_eq!(
            d.get("k", 3500, 10_000),
            Some(3),
            "a later record replaces an older"
        );
        d.remove("k");
        assert_eq!(d.get("k", 3500, 10_000), None);
        assert!(d.is_empty());
    }

    #[test]
    fn every_shard_gets_a_share_and_the_shares_differ() {
        let d = DedupIndex::default();
        let mut share = [0usize; SHARDS];
        for s in d.route.iter() {
            share[*s as usize] += 1;
        }
        assert!(share.iter().all(|n| *n > 0));
        assert!(share[SHARDS - 1] > share[0] * 3 / 2, "{share:?}");
    }

    /// Sweeps keep what is inside the window across many shards, and drop the rest.
    #[test]
    fn sweep_keeps_exactly_the_window() {
        let mut d = DedupIndex::default();
        for i in 0..10_000u64 {
            d.insert(&format!("key{i}"), i, i as i64);
        }
        d.sweep(4_000);
        assert_eq!(d.len(), 6_000);
        assert_eq!(d.get("key3999", 4_000, 1_000_000), None);
        assert_eq!(d.get("key4000", 4_000, 1_000_000), Some(4_000));
        assert_eq!(d.get("key9999", 4_000, 1_000_000), Some(9_999));
    }

    /// Growth: the tables never hold more than ~45 B an entry past the first few thousand,
    /// where one `HashMap` holds 25 B / (7/16) = 57 B right after each doubling; and no single
    /// insert makes the index grow by more than a few % (one shard doubling), where one
    /// `HashMap` doubles whole. Prints the bytes per entry of both, for PERFORMANCE.md.
    #[test]
    fn grows_without_a_doubling_step() {
        let mut d = DedupIndex::default();
        let mut one: HashMap<u64, (u64, i64)> = HashMap::new();
        let (mut worst, mut worst_one, mut sum, mut sum_one, mut n) = (0f64, 0f64, 0f64, 0f64, 0);
        let mut prev = 0usize;
        let mut biggest_step = 0f64;
        for i in 0..600_000u64 {
            d.insert(&format!("shop\0{i}"), i, 0);
            one.insert(i, (i, 0));
            let bytes = d.heap_bytes();
            if i >= 20_000 {
                biggest_step = biggest_step.max((bytes - prev) as f64 / prev as f64);
            }
            prev = bytes;
            if i >= 20_000 && i % 1000 == 0 {
                let (per, per_one) = (
                    bytes as f64 / d.len() as f64,
                    table_bytes(one.capacity()) as f64 / one.len() as f64,
                );
                worst = worst.max(per);
                worst_one = worst_one.max(per_one);
                sum += per;
                sum_one += per_one;
                n += 1;
            }
        }
        println!(
            "dedup index, 20k..600k entries: bytes/entry mean {:.1} worst {:.1}; \
             one HashMap: mean {:.1} worst {:.1}; biggest step {:.1} %",
            sum / n as f64,
            worst,
            sum_one / n as f64,
            worst_one,
            biggest_step * 100.0
        );
        assert!(worst < 46.0, "worst {worst:.1} B/entry");
        assert!(worst_one > 55.0, "the baseline is what it is said to be");
        assert!(biggest_step < 0.05, "a step of {biggest_step}");
    }
}
