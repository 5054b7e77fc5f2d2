//! Planned sets stored once per set, not once per member.
//!
//! Every outbox entry carries the alert ids of the email it was planned into
//! ([`OutboxEntry::planned`]). Written into each member, a set of 200 alerts costs 200 copies of
//! 200 ids (~7 KB per entry, ~1.4 MB per claim or write-down of one set), so the cost of sending
//! one alert grew with the size of its set, and a sender that fell behind (bigger sets) fell
//! further behind. The backends store a set of more than [`INLINE_MAX`] members once, as a
//! [`SetRecord`] under its set id, and each member keeps only a reference to it
//! ([`reference`]); reading an entry resolves the reference, so code above the backends sees
//! `planned` as before.

use crate::alert::{OutboxEntry, PlannedSet};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Sets this small stay inline in each member (cheaper than one more record).
pub const INLINE_MAX: usize = 4;

/// Marks a stored `planned` that holds a reference (`@<set id>`) and not the members (alert ids
/// are hex, so no member starts with it).
const REF: char = '@';

/// A planned set's members, stored once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetRecord {
    /// When the set was written down (ms): sweeps keep it as long as a member may be read.
    pub at: i64,
    pub ids: Vec<String>,
}

/// The set id a stored entry refers to instead of listing its members, if it does.
pub fn reference(stored: &OutboxEntry) -> Option<&str> {
    match &stored.planned[..] {
        [one] => one.strip_prefix(REF),
        _ => None,
    }
}

/// The sets these stored entries refer to, each once, sorted: the ones to read.
pub fn references(stored: &[OutboxEntry]) -> Vec<String> {
    let mut sets: Vec<String> = stored
        .iter()
        .filter_map(|e| reference(e).map(str::to_string))
        .collect();
    sets.sort();
    sets.dedup();
    sets
}

/// The set `stored` refers to that still has to be read: `None` when it lists its members, or
/// when `sets` (those read so far in this call) holds the set, whose members it then takes.
pub fn to_read(stored: &mut OutboxEntry, sets: &HashMap<String, PlannedSet>) -> Option<String> {
    let set = reference(stored)?.to_string();
    match sets.get(&set) {
        Some(ids) => {
            stored.planned = ids.clone();
            None
        }
        None => Some(set),
    }
}

/// `rec`, just read for `set`, resolves `stored` and joins `sets` for the entries after it
/// (which then share its members).
pub fn resolved(
    stored: &mut OutboxEntry,
    sets: &mut HashMap<String, PlannedSet>,
    set: String,
    rec: SetRecord,
) {
    let ids = PlannedSet::from(rec.ids);
    sets.insert(set, ids.clone());
    stored.planned = ids;
}

/// Turns `entry` into its stored form: a set larger than [`INLINE_MAX`] is replaced by a
/// reference, and its id and record are handed back to be stored (if not already) with it.
///
/// `known` holds the sets read so far in this call (set id to members): an entry whose members
/// are one of them takes that id without hashing its members again (a claim or write-down of one
/// set of k members would otherwise hash k² ids). The members an entry read in this call holds
/// are the same allocation as `known`'s, so finding them costs a pointer comparison per set.
pub fn split(
    entry: &mut OutboxEntry,
    now: i64,
    known: &HashMap<String, PlannedSet>,
) -> Option<(String, SetRecord)> {
    if entry.planned.len() <= INLINE_MAX || reference(entry).is_some() {
        return None;
    }
    let ids = std::mem::take(&mut entry.planned);
    let set = match known.iter().find(|(_, members)| **members == ids) {
        Some((set, _)) => set.clone(),
        None => crate::alert::set_id(&ids),
    };
    entry.planned = vec![format!("{REF}{set}")].into();
    Some((
        set,
        SetRecord {
            at: now,
            ids: ids.to_vec(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alert::{test_alert, Rule};

    #[test]
    fn large_sets_become_a_reference_small_ones_stay() {
        let mut e = OutboxEntry::new(test_alert(Rule::LowStock, "s", "1"), 0);
        e.planned = (0..3)
            .map(|i| format!("{i:032x}"))
            .collect::<Vec<_>>()
            .into();
        let none = HashMap::new();
        assert!(split(&mut e, 5, &none).is_none());
        assert_eq!(e.planned.len(), 3);
        let ids: Vec<String> = (0..200).map(|i| format!("{i:032x}")).collect();
        e.planned = ids.clone().into();
        let (set, rec) = split(&mut e, 5, &none).expect("a reference");
        assert_eq!(set, crate::alert::set_id(&ids));
        assert_eq!((rec.at, &rec.ids), (5, &ids));
        assert_eq!(reference(&e), Some(set.as_str()));
        // Already a reference: nothing more to store.
        assert!(split(&mut e, 6, &none).is_none());
        // A set read in this call gives its id without hashing; another set is hashed.
        let known = HashMap::from([(set.clone(), PlannedSet::from(ids.clone()))]);
        e.planned = ids.clone().into();
        assert_eq!(split(&mut e, 7, &known).map(|(s, _)| s), Some(set.clone()));
        let other: Vec<String> = (1..201).map(|i| format!("{i:032x}")).collect();
        e.planned = other.clone().into();
        let (s2, _) = split(&mut e, 8, &known).expect("a reference");
        assert_eq!(s2, crate::alert::set_id(&other));
    }
}
