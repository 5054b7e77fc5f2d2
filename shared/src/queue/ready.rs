//! The deliverable events in memory, in arrival (id) order, each with its source.
//!
//! Why this exists: every pending event sits here until leased, so its bytes per event are the
//! receiver's memory under a backlog (issue 12). A `BTreeMap<u64, Arc<str>>` cost ~47 B an event
//! (massif, docs/PERFORMANCE.md section 15: a 16-byte fat pointer per value, leaves about half
//! full when ids only grow); here each source name is stored once and an event holds a 4-byte
//! index to it (~24 B an event by the same layout; the receiver's total is measured there).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct ReadySet {
    ids: BTreeMap<u64, u32>,
    /// The sources seen, each once; never shrinks (a handful of configured sources).
    names: Vec<Arc<str>>,
    by_name: HashMap<Arc<str>, u32>,
}

impl ReadySet {
    fn intern(&mut self, src: Arc<str>) -> u32 {
        if let Some(i) = self.by_name.get(&src) {
            return *i;
        }
        let i = self.names.len() as u32;
        self.names.push(src.clone());
        self.by_name.insert(src, i);
        i
    }

    /// Makes `id` (from `src`) deliverable.
    pub fn insert(&mut self, id: u64, src: Arc<str>) {
        let i = self.intern(src);
        self.ids.insert(id, i);
    }

    /// Takes `id` out, with its source, if it was here.
    pub fn remove(&mut self, id: &u64) -> Option<Arc<str>> {
        let i = self.ids.remove(id)?;
        self.names.get(i as usize).cloned()
    }

    pub fn contains_key(&self, id: &u64) -> bool {
        self.ids.contains_key(id)
    }

    /// The ids, oldest first.
    pub fn keys(&self) -> impl Iterator<Item = &u64> {
        self.ids.keys()
    }

    /// Each event's source, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Arc<str>> {
        self.ids
            .values()
            .filter_map(|i| self.names.get(*i as usize))
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_id_order_and_each_events_source() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut r = ReadySet::default();
        r.insert(5, a.clone());
        r.insert(2, b.clone());
        r.insert(9, a.clone());
        assert_eq!(r.keys().copied().collect::<Vec<_>>(), vec![2, 5, 9]);
        assert_eq!(
            r.values().map(|s| &**s).collect::<Vec<_>>(),
            vec!["b", "a", "a"]
        );
        assert_eq!(r.names.len(), 2, "each source stored once");
        assert_eq!(r.remove(&5).as_deref(), Some("a"));
        assert_eq!(r.remove(&5), None);
        assert!(r.contains_key(&2) && !r.contains_key(&5));
        assert_eq!(r.len(), 2);
    }
}
