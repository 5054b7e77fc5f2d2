//! The alert rules as pure functions over an item's arming state: no storage, no clock, no I/O,
//! so every crossing, re-arm and quiet period is tested exactly.
//!
//! * low stock: `available < threshold` fires once when the item crosses below; re-arms only when
//!   it rises back to `threshold` or above;
//! * out of stock: `available <= 0`, its own alert, same arming. Going straight from plenty to
//!   zero sends only "out of stock" (the low-stock crossing is implied, not mailed twice);
//! * no sales: stock on hand and no sale for `no_sales_days` since the last sale (or first seen),
//!   once per quiet period.

use crate::alert::Rule;
use serde::{Deserialize, Serialize};

/// What the rules remember about one item between events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arming {
    pub low_armed: bool,
    pub out_armed: bool,
    /// Increments at every re-arm: part of an alert's id, so each crossing has its own alert.
    pub episode: u64,
}

impl Default for Arming {
    fn default() -> Self {
        Arming {
            low_armed: true,
            out_armed: true,
            episode: 0,
        }
    }
}

/// Evaluates the stock rules for a new total. Returns the rules that fire now (at most one) and
/// updates `arming`. `None` (untracked quantity) never fires and changes nothing.
pub fn evaluate_level(available: Option<i64>, threshold: i64, arming: &mut Arming) -> Option<Rule> {
    let a = available?;
    if a <= 0 {
        let fire = arming.out_armed;
        arming.out_armed = false;
        arming.low_armed = false;
        return fire.then_some(Rule::OutOfStock);
    }
    if a < threshold {
        let fire = arming.low_armed;
        arming.low_armed = false;
        return fire.then_some(Rule::LowStock);
    }
    if !arming.low_armed || !arming.out_armed {
        arming.low_armed = true;
        arming.out_armed = true;
        arming.episode += 1;
    }
    None
}

/// True when the no-sales rule fires: stock on hand, quiet for at least `days` since
/// `quiet_since`, and not already fired for this quiet period.
pub fn no_sales_due(
    available: Option<i64>,
    quiet_since: i64,
    now: i64,
    days: u32,
    fired_for: Option<i64>,
) -> bool {
    let quiet_ms = days as i64 * 86_400_000;
    available.is_some_and(|a| a > 0)
        && now - quiet_since >= quiet_ms
        && fired_for != Some(quiet_since)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(levels: &[i64], threshold: i64) -> Vec<(i64, Option<Rule>, u64)> {
        let mut arm = Arming::default();
        levels
            .iter()
            .map(|l| {
                let r = evaluate_level(Some(*l), threshold, &mut arm);
                (*l, r, arm.episode)
            })
            .collect()
    }

    #[test]
    fn low_fires_once_per_crossing_and_rearms_at_threshold() {
        let got = run(&[10, 4, 3, 4, 5, 2, 6], 5);
        let fired: Vec<_> = got.iter().map(|(l, r, _)| (*l, *r)).collect();
        assert_eq!(
            fired,
            vec![
                (10, None),
                (4, Some(Rule::LowStock)),
                (3, None),
                (4, None),
                (5, None),
                (2, Some(Rule::LowStock)),
                (6, None)
            ]
        );
        // Each crossing belongs to its own episode.
        assert_eq!(got[1].2, 0);
        assert_eq!(got[5].2, 1);
    }

    #[test]
    fn rising_but_staying_below_threshold_does_not_rearm() {
        let fired: Vec<_> = run(&[3, 4, 3, 1], 5)
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        assert_eq!(fired, vec![Some(Rule::LowStock), None, None, None]);
    }

    #[test]
    fn out_of_stock_is_its_own_alert_and_implies_low() {
        let fired: Vec<_> = run(&[10, 0, -1, 2, 0, 7, 3], 5)
            .into_iter()
            .map(|(l, r, _)| (l, r))
            .collect();
        assert_eq!(
            fired,
            vec![
                (10, None),
                (0, Some(Rule::OutOfStock)),
                (-1, None),
                (2, None),
                (0, None),
                (7, None),
                (3, Some(Rule::LowStock))
            ]
        );
        // Low first, then out: both are told.
        let fired: Vec<_> = run(&[4, 0], 5).into_iter().map(|(_, r, _)| r).collect();
        assert_eq!(fired, vec![Some(Rule::LowStock), Some(Rule::OutOfStock)]);
    }

    #[test]
    fn untracked_changes_nothing() {
        let mut arm = Arming::default();
        assert_eq!(evaluate_level(None, 5, &mut arm), None);
        assert_eq!(arm, Arming::default());
    }

    #[test]
    fn no_sales_once_per_quiet_period() {
        let day = 86_400_000;
        assert!(!no_sales_due(Some(3), 0, 59 * day, 60, None));
        assert!(no_sales_due(Some(3), 0, 60 * day, 60, None));
        assert!(
            !no_sales_due(Some(3), 0, 90 * day, 60, Some(0)),
            "already fired for this period"
        );
        assert!(
            no_sales_due(Some(3), 10 * day, 90 * day, 60, Some(0)),
            "a sale started a new period"
        );
        assert!(
            !no_sales_due(Some(0), 0, 90 * day, 60, None),
            "no stock, nothing to sell"
        );
        assert!(!no_sales_due(None, 0, 90 * day, 60, None), "untracked");
    }
}
