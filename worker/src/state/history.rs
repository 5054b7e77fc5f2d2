//! Per-item history for the dashboard's chart (issue 16): the level reports and sales an item
//! got, newest first kept, bounded so a busy item's record stays small.
//!
//! It is a set with a deterministic merge, so the same deliveries give the same history in any
//! order (the state's order-independence property): points are keyed by time (and location),
//! a repeated level key keeps the larger value, sales at the same time add up, and only the
//! [`CAP`] newest keys are kept. Dropping the oldest keys of a set is the same whichever order
//! the keys came in.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Points kept per kind (levels, sales) per item.
pub const CAP: usize = 96;

/// One level report: when, where, how many (`None`: untracked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelPoint {
    pub at: i64,
    pub location: String,
    pub available: Option<i64>,
}

/// An item's recent level reports and sales, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub levels: Vec<LevelPoint>,
    /// (when, units): sales add, refunds subtract; summed per time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sales: Vec<(i64, i64)>,
}

impl History {
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty() && self.sales.is_empty()
    }

    /// Adds a level report (stale ones too: history is what was reported, in time order).
    pub fn record_level(&mut self, at: i64, location: &str, available: Option<i64>) {
        let key = |p: &LevelPoint| (p.at, p.location.clone());
        let point = LevelPoint {
            at,
            location: location.to_string(),
            available,
        };
        match self.levels.binary_search_by(|p| key(p).cmp(&key(&point))) {
            Ok(i) => {
                let held = &mut self.levels[i];
                held.available = held.available.max(available);
            }
            Err(i) => self.levels.insert(i, point),
        }
        if self.levels.len() > CAP {
            self.levels.drain(..self.levels.len() - CAP);
        }
    }

    /// Adds a sale (negative: a refund).
    pub fn record_sale(&mut self, at: i64, units: i64) {
        match self.sales.binary_search_by(|(t, _)| t.cmp(&at)) {
            Ok(i) => self.sales[i].1 = self.sales[i].1.saturating_add(units),
            Err(i) => self.sales.insert(i, (at, units)),
        }
        if self.sales.len() > CAP {
            self.sales.drain(..self.sales.len() - CAP);
        }
    }

    /// Both histories in one (an alias's orphan record merged into its item).
    pub fn merge(&mut self, other: &History) {
        for p in &other.levels {
            self.record_level(p.at, &p.location, p.available);
        }
        for (at, units) in &other.sales {
            self.record_sale(*at, *units);
        }
    }

    /// The item's total after each report, in time order: the same rule as
    /// [`super::ItemState::total`] (a product-level `all` and per-location reports are never
    /// added; the newer kind wins).
    pub fn totals(&self) -> Vec<(i64, Option<i64>)> {
        let mut levels: BTreeMap<String, super::LevelRec> = BTreeMap::new();
        let mut out: Vec<(i64, Option<i64>)> = Vec::with_capacity(self.levels.len());
        for p in &self.levels {
            levels.insert(
                p.location.clone(),
                super::LevelRec {
                    available: p.available,
                    at: p.at,
                },
            );
            let total = super::total_of(&levels);
            match out.last_mut() {
                Some(last) if last.0 == p.at => last.1 = total,
                _ => out.push((p.at, total)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_the_same_in_any_order() {
        let mut a = History::default();
        let mut b = History::default();
        let n = (CAP as i64) * 2;
        for t in 0..n {
            a.record_level(t, "l", Some(t));
            a.record_sale(t, 1);
        }
        for t in (0..n).rev() {
            b.record_sale(t, 1);
            b.record_level(t, "l", Some(t));
        }
        assert_eq!(a, b);
        assert_eq!(a.levels.len(), CAP);
        assert_eq!(a.sales.len(), CAP);
        assert_eq!(a.levels[0].at, n - CAP as i64, "the oldest are dropped");
    }

    #[test]
    fn totals_follow_the_items_rule() {
        let mut h = History::default();
        h.record_level(1, "a", Some(3));
        h.record_level(2, "b", Some(4));
        h.record_level(3, "all", Some(10));
        h.record_level(4, "a", Some(1));
        assert_eq!(
            h.totals(),
            vec![(1, Some(3)), (2, Some(7)), (3, Some(10)), (4, Some(5))]
        );
    }
}
