//! Days of cover (issue 15): how fast an item sells, how long its stock lasts, and the `cover`
//! rule that warns while there is still time to reorder.
//!
//! Why it exists: a fixed low-stock threshold is too late for a fast seller and noise for a slow
//! one. The seller's question is "will it run out before a reorder can arrive?", so this module
//! keeps a sales velocity per item and compares the stock with the demand expected over the
//! supplier's lead time (`cover_days`).
//!
//! Method (also in docs/COVER.md):
//!
//! * **History** ([`Demand`]): per UTC day, the units sold (sale facts, including those catalog
//!   sync imports from order history; refunds subtract) and the levels reported that day (the
//!   lowest, and the newest). Only the newest [`WINDOW_DAYS`] + 1 days (relative to the newest
//!   day any fact carried) are kept, so the record is bounded. Every field is a sum, a minimum or
//!   a newest-wins maximum, so the same facts in any order give the same record.
//! * **Velocity** ([`velocity`]): over the last [`WINDOW_DAYS`] whole days before `now` (not
//!   before the item was first seen; today is partial and counts from tomorrow), the mean units
//!   per in-stock day. A day is out of stock, and left out,
//!   when it began with the item at zero or below, or a level of zero or below was reported
//!   that day and nothing sold. (With several locations a single location's zero says nothing
//!   about the item: out-of-stock days are only recognised for items with one level record.)
//!   Each day counts at most [`CAP_FACTOR`] times the median of the item's selling days, so one
//!   huge order does not dominate. At least [`MIN_DAYS`] in-stock days are needed.
//! * **Weekly profile**: measured in the backtest and left off by default (see docs/COVER.md);
//!   [`CoverRules::weekly`] turns it on: with [`WEEKLY_MIN_DAYS`] in-stock days each weekday gets
//!   a factor (shrunk towards 1) and stock is projected day by day.
//! * **Days of cover** = available / velocity; the stock-out date is now + days of cover.
//! * **Reorder point** = demand over the lead time, at the higher of the window's rate and the
//!   last [`RECENT_DAYS`]' rate (a rising item), + safety stock at a 99% service level
//!   (`2.33 × daily standard deviation × √lead time`; 95% warned 87% of the backtest's
//!   stock-outs in time, docs/COVER.md). The `cover` rule fires once when available
//!   drops below it and re-arms only when available is back at [`REARM_FACTOR`] × the reorder
//!   point (a noisy velocity does not make it flap).
//! * **Reorder quantity** = ⌈velocity × (`cover_days` + `safety_days`) − available⌉, at least 0.

use crate::state::{ItemState, RuleConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const DAY_MS: i64 = 86_400_000;
/// Days of demand the velocity looks back over: four whole weeks (each weekday four times).
pub const WINDOW_DAYS: i64 = 28;
/// In-stock days needed before a velocity is given.
pub const MIN_DAYS: f64 = 7.0;
/// A day counts at most this many times the median of the item's selling days.
pub const CAP_FACTOR: f64 = 3.0;
/// One-sided z of the safety stock: a 99% service level.
pub const SERVICE_Z: f64 = 2.33;
/// The cover rule re-arms when available is back at this multiple of the reorder point.
pub const REARM_FACTOR: f64 = 1.25;
/// The recent rate looks back over this many in-stock days.
pub const RECENT_DAYS: usize = 7;
/// In-stock days needed for a weekly profile.
pub const WEEKLY_MIN_DAYS: usize = 21;
/// Projections stop after this many days (a slow seller's cover is "more than ten years").
const HORIZON_DAYS: i64 = 3650;

/// One UTC day of an item's history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRec {
    /// Net units sold (refunds subtract).
    #[serde(rename = "s", default)]
    pub sold: i64,
    /// The lowest level reported that day.
    #[serde(rename = "l", default, skip_serializing_if = "Option::is_none")]
    pub low: Option<i64>,
    /// The newest level reported that day: (time, available); equal times keep the lower.
    #[serde(rename = "n", default, skip_serializing_if = "Option::is_none")]
    pub last: Option<(i64, i64)>,
}

/// An item's recent demand, by UTC day number (Unix ms / [`DAY_MS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Demand {
    #[serde(default)]
    pub days: BTreeMap<i64, DayRec>,
}

impl Demand {
    /// The record of the day of `at`, unless it is older than the window kept.
    fn day_mut(&mut self, at: i64) -> Option<&mut DayRec> {
        let day = at.div_euclid(DAY_MS);
        let newest = self.days.keys().next_back().map_or(day, |d| (*d).max(day));
        // One day before the window is kept: it carries its last level into the window.
        let oldest = newest - WINDOW_DAYS;
        if day < oldest {
            return None;
        }
        if self.days.keys().next().is_some_and(|d| *d < oldest) {
            self.days = self.days.split_off(&oldest);
        }
        Some(self.days.entry(day).or_default())
    }

    /// Records a sale (`quantity` < 0: a refund) at `at`.
    pub fn sale(&mut self, at: i64, quantity: i64) {
        if let Some(d) = self.day_mut(at) {
            d.sold = d.sold.saturating_add(quantity);
        }
    }

    /// Adds another record's days (an alias's sales merged into its item).
    pub fn absorb(&mut self, other: &Demand) {
        for (day, r) in &other.days {
            let at = day * DAY_MS;
            self.sale(at, r.sold);
            if let Some(low) = r.low {
                self.level(at, Some(low));
            }
            if let Some((t, a)) = r.last {
                self.level(t, Some(a));
            }
        }
    }

    /// Records a level report (untracked ones say nothing about stock-outs).
    pub fn level(&mut self, at: i64, available: Option<i64>) {
        let Some(a) = available else { return };
        if let Some(d) = self.day_mut(at) {
            d.low = Some(d.low.map_or(a, |l| l.min(a)));
            let newer = d.last.is_none_or(|(t, v)| at > t || (at == t && a < v));
            if newer {
                d.last = Some((at, a));
            }
        }
    }
}

/// The estimated rate of sale.
#[derive(Debug, Clone, PartialEq)]
pub struct Velocity {
    /// Units per in-stock day.
    pub per_day: f64,
    /// Standard deviation of the (capped) daily units.
    pub sd: f64,
    /// In-stock days it was measured over.
    pub days: f64,
    /// Units per in-stock day over the last [`RECENT_DAYS`] of them (capped alike): a rise
    /// (trend, promotion) shows here first.
    pub recent: f64,
    /// Per weekday (day number mod 7) factor, when the profile is on and history suffices.
    pub weekly: Option<[f64; 7]>,
}

/// The velocity at `now` from `demand` (see the module doc). `out_days`: recognise out-of-stock
/// days (the item has one level record).
pub fn velocity(
    demand: &Demand,
    first_seen_at: i64,
    out_days: bool,
    weekly: bool,
    now: i64,
) -> Option<Velocity> {
    let today = now.div_euclid(DAY_MS);
    let start = (today - WINDOW_DAYS + 1).max(first_seen_at.div_euclid(DAY_MS));
    let mut carried: Option<i64> = demand
        .days
        .range(..start)
        .rev()
        .find_map(|(_, r)| r.last.map(|l| l.1));
    // (day, units) of the whole days before today (today is partial: it counts tomorrow).
    let mut samples: Vec<(i64, f64)> = Vec::with_capacity(WINDOW_DAYS as usize);
    for day in start..today {
        let rec = demand.days.get(&day).copied().unwrap_or_default();
        let out = out_days
            && (carried.is_some_and(|c| c <= 0)
                || (rec.low.is_some_and(|l| l <= 0) && rec.sold <= 0));
        if let Some((_, l)) = rec.last {
            carried = Some(l);
        }
        if out {
            continue;
        }
        samples.push((day, rec.sold.max(0) as f64));
    }
    let days = samples.len() as f64;
    if days < MIN_DAYS {
        return None;
    }
    let cap = CAP_FACTOR * median_selling(&samples).max(1.0);
    let capped = |u: f64| u.min(cap);
    let total: f64 = samples.iter().map(|s| capped(s.1)).sum();
    let per_day = total / days;
    let last: Vec<f64> = samples
        .iter()
        .rev()
        .take(RECENT_DAYS)
        .map(|s| capped(s.1))
        .collect();
    let recent = last.iter().sum::<f64>() / last.len() as f64;
    let var = samples
        .iter()
        .map(|s| (capped(s.1) - per_day).powi(2))
        .sum::<f64>()
        / (days - 1.0);
    let weekly = (weekly && samples.len() >= WEEKLY_MIN_DAYS && per_day > 0.0).then(|| {
        let mut sum = [0.0f64; 7];
        let mut n = [0.0f64; 7];
        for s in &samples {
            let k = s.0.rem_euclid(7) as usize;
            sum[k] += capped(s.1);
            n[k] += 1.0;
        }
        // Two pseudo-days at the overall rate per weekday: a weekday seen twice moves little.
        let mut f = [1.0f64; 7];
        for k in 0..7 {
            f[k] = (sum[k] + 2.0 * per_day) / (n[k] + 2.0) / per_day;
        }
        let mean = f.iter().sum::<f64>() / 7.0;
        f.map(|x| x / mean)
    });
    Some(Velocity {
        per_day,
        sd: var.sqrt(),
        days,
        recent,
        weekly,
    })
}

/// The median of the days that sold something (0 when none did).
fn median_selling(samples: &[(i64, f64)]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s.1).filter(|u| *u > 0.0).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

impl Velocity {
    /// Units expected to sell from `now` over `days` days.
    pub fn demand_over(&self, now: i64, days: f64) -> f64 {
        let Some(f) = self.weekly else {
            return self.per_day * days;
        };
        let mut left = days;
        let mut day = now.div_euclid(DAY_MS);
        let mut part = 1.0 - (now - day * DAY_MS) as f64 / DAY_MS as f64;
        let mut sum = 0.0;
        while left > 0.0 {
            let take = part.min(left);
            sum += self.per_day * f[day.rem_euclid(7) as usize] * take;
            left -= take;
            part = 1.0;
            day += 1;
        }
        sum
    }

    /// Days until `available` units are sold, from `now` (`None`: nothing sells).
    pub fn days_until_out(&self, available: f64, now: i64) -> Option<f64> {
        if self.per_day <= 0.0 {
            return None;
        }
        let Some(f) = self.weekly else {
            return Some((available / self.per_day).min(HORIZON_DAYS as f64));
        };
        let mut left = available;
        let mut t = 0.0;
        let today = now.div_euclid(DAY_MS);
        let mut part = 1.0 - (now - today * DAY_MS) as f64 / DAY_MS as f64;
        for day in today..today + HORIZON_DAYS {
            let rate = self.per_day * f[day.rem_euclid(7) as usize];
            let need = rate * part;
            if need >= left && rate > 0.0 {
                return Some(t + left / rate);
            }
            left -= need;
            t += part;
            part = 1.0;
        }
        Some(t)
    }
}

/// The cover rule's settings (`[alerts] cover_days`, `safety_days`, their overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct CoverRules {
    /// The lead time in days; 0 turns the rule off.
    pub cover_days: u32,
    pub source_cover_days: BTreeMap<String, u32>,
    pub sku_cover_days: BTreeMap<String, u32>,
    /// Days of stock bought beyond the lead time (the reorder quantity).
    pub safety_days: u32,
    /// The weekly profile (off: measured not worth it, docs/COVER.md).
    pub weekly: bool,
}

impl Default for CoverRules {
    fn default() -> Self {
        CoverRules {
            cover_days: 14,
            source_cover_days: BTreeMap::new(),
            sku_cover_days: BTreeMap::new(),
            safety_days: 7,
            weekly: false,
        }
    }
}

impl CoverRules {
    /// The lead time for an item: its SKU's, else its source's, else the global one.
    pub fn cover_days(&self, source: &str, sku: Option<&str>) -> u32 {
        sku.and_then(|s| self.sku_cover_days.get(s))
            .or_else(|| self.source_cover_days.get(source))
            .copied()
            .unwrap_or(self.cover_days)
    }
}

/// What the seller sees about an item's cover (email, CSV, dashboard, preview).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoverView {
    /// Units per day, rounded to 2 decimals.
    pub velocity_per_day: f64,
    /// Available / velocity, rounded to 1 decimal.
    pub days_of_cover: f64,
    /// Unix ms when the stock is projected to run out.
    pub stockout_date: i64,
    /// ⌈velocity × (cover_days + safety_days) − available⌉, at least 0.
    pub reorder_qty: i64,
    /// The lead time it was computed for.
    pub cover_days: u32,
    /// Below this many units the rule fires (lead-time demand + safety stock).
    pub reorder_point: i64,
}

// Never NaN: every field is computed from finite sums over finite counts.
impl Eq for CoverView {}

/// The cover of `available` units at `now` for a velocity, lead time and safety days.
pub fn view(
    v: &Velocity,
    available: i64,
    cover_days: u32,
    safety_days: u32,
    now: i64,
) -> Option<CoverView> {
    let days = v.days_until_out(available.max(0) as f64, now)?;
    let lead = f64::from(cover_days);
    // Planned for the higher of the window's rate and the recent one: a rising item is not
    // planned at last month's rate.
    let rise = (v.recent / v.per_day).max(1.0);
    let rop = rise * v.demand_over(now, lead) + SERVICE_Z * v.sd * lead.sqrt();
    let want = v.demand_over(now, lead + f64::from(safety_days));
    Some(CoverView {
        velocity_per_day: (v.per_day * 100.0).round() / 100.0,
        days_of_cover: (days * 10.0).round() / 10.0,
        stockout_date: now.saturating_add((days * DAY_MS as f64) as i64),
        reorder_qty: (want - available as f64).ceil().max(0.0) as i64,
        cover_days,
        reorder_point: rop.ceil() as i64,
    })
}

/// An item's cover at `now` for the rules in force: `None` when it is out of the catalog, its
/// stock is untracked, or no velocity is known yet (too little history, or nothing sells). The
/// one computation the rule, the email, `export --csv`, the dashboard and `preview` all use.
pub fn cover(item: &ItemState, rules: &RuleConfig, now: i64) -> Option<CoverView> {
    if item.removed.is_some() {
        return None;
    }
    let available = item.total()?;
    let one_location = item.levels.len() <= 1;
    let v = velocity(
        &item.demand,
        item.first_seen_at,
        one_location,
        rules.cover.weekly,
        now,
    )?;
    let days = rules.cover.cover_days(&item.source, item.sku.as_deref());
    view(&v, available, days, rules.cover.safety_days, now)
}

/// What the cover rule remembers about one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoverArming {
    pub armed: bool,
    /// Increments at every re-arm: part of the alert id, one alert per crossing.
    pub episode: u64,
}

impl Default for CoverArming {
    fn default() -> Self {
        CoverArming {
            armed: true,
            episode: 0,
        }
    }
}

/// The cover rule: true when it fires now. Off (`cover_days` 0), no velocity, untracked or out
/// of stock (the out-of-stock rule speaks then): nothing fires and the arming stays.
pub fn evaluate(
    view: Option<&CoverView>,
    available: Option<i64>,
    arming: &mut CoverArming,
) -> bool {
    let (Some(v), Some(a)) = (view, available) else {
        return false;
    };
    if v.cover_days == 0 || a <= 0 {
        return false;
    }
    if a < v.reorder_point {
        let fire = arming.armed;
        arming.armed = false;
        return fire;
    }
    if !arming.armed && a as f64 >= v.reorder_point as f64 * REARM_FACTOR {
        arming.armed = true;
        arming.episode += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 20_000 * DAY_MS;

    fn steady(days: i64, per_day: i64) -> Demand {
        let mut d = Demand::default();
        for i in 0..days {
            d.sale(T0 + i * DAY_MS + 3_600_000, per_day);
        }
        d
    }

    #[test]
    fn steady_seller_velocity_and_cover() {
        let d = steady(28, 4);
        let now = T0 + 28 * DAY_MS;
        let v = velocity(&d, T0, true, false, now).unwrap();
        assert!((v.per_day - 4.0).abs() < 1e-9, "{v:?}");
        let c = view(&v, 40, 14, 7, now).unwrap();
        assert_eq!(c.days_of_cover, 10.0);
        assert_eq!(c.stockout_date, now + 10 * DAY_MS);
        assert_eq!(c.reorder_qty, 4 * 21 - 40);
        assert_eq!(c.reorder_point, 56);
    }

    #[test]
    fn one_huge_order_is_capped() {
        let mut d = steady(28, 2);
        d.sale(T0 + 5 * DAY_MS, 500);
        let v = velocity(&d, T0, true, false, T0 + 28 * DAY_MS).unwrap();
        // The window is the 27 whole days before `now`; the day of 502 counts as 6 (3 x the
        // median selling day of 2).
        assert!(
            (v.per_day - (26.0 * 2.0 + 6.0) / 27.0).abs() < 1e-9,
            "{v:?}"
        );
    }

    #[test]
    fn out_of_stock_days_are_not_zero_demand() {
        let mut d = Demand::default();
        for i in 0..28 {
            let at = T0 + i * DAY_MS + 3_600_000;
            if (10..20).contains(&i) {
                // Out: a zero reported on day 10, nothing sold until the restock on day 20.
                if i == 10 {
                    d.level(at, Some(0));
                }
                continue;
            }
            d.sale(at, 3);
            if i == 20 {
                d.level(at - 1, Some(50));
            }
        }
        let now = T0 + 28 * DAY_MS;
        let v = velocity(&d, T0, true, false, now).unwrap();
        assert!((v.per_day - 3.0).abs() < 1e-9, "{v:?}");
        // Several locations: a zero somewhere is not the item out of stock.
        let v = velocity(&d, T0, false, false, now).unwrap();
        assert!((v.per_day - 3.0 * 17.0 / 27.0).abs() < 1e-9, "{v:?}");
    }

    #[test]
    fn order_does_not_matter_and_size_is_bounded() {
        let facts: Vec<(i64, i64)> = (0..200)
            .map(|i| (T0 + (i * 7919 % 90) * DAY_MS / 2, i % 5 - 1))
            .collect();
        let mut a = Demand::default();
        for (at, q) in &facts {
            a.sale(*at, *q);
            a.level(*at, Some(*q));
        }
        let mut b = Demand::default();
        for (at, q) in facts.iter().rev() {
            b.level(*at, Some(*q));
            b.sale(*at, *q);
        }
        assert_eq!(a, b);
        assert!(a.days.len() as i64 <= WINDOW_DAYS + 1, "{}", a.days.len());
    }

    #[test]
    fn too_little_history_gives_no_velocity() {
        let d = steady(3, 4);
        assert_eq!(velocity(&d, T0, true, false, T0 + 3 * DAY_MS), None);
    }

    #[test]
    fn weekly_profile_projects_weekends() {
        let mut d = Demand::default();
        for i in 0..28 {
            let q = if (T0 / DAY_MS + i).rem_euclid(7) < 2 {
                3
            } else {
                1
            };
            d.sale(T0 + i * DAY_MS + 3_600_000, q);
        }
        let now = T0 + 28 * DAY_MS;
        let flat = velocity(&d, T0, true, false, now).unwrap();
        let weekly = velocity(&d, T0, true, true, now).unwrap();
        let f = weekly.weekly.unwrap();
        assert!(f[0] > 1.4 && f[3] < 0.85, "{f:?}");
        // Today is a heavy weekday: the weekly projection runs out sooner.
        let a = 3.0;
        assert!(weekly.days_until_out(a, now).unwrap() < flat.days_until_out(a, now).unwrap());
    }

    #[test]
    fn fires_once_per_crossing_with_hysteresis() {
        let v = Velocity {
            per_day: 2.0,
            sd: 0.0,
            days: 28.0,
            recent: 2.0,
            weekly: None,
        };
        let mut arm = CoverArming::default();
        let mut run = |a: i64| {
            let c = view(&v, a, 14, 7, T0);
            evaluate(c.as_ref(), Some(a), &mut arm)
        };
        // Reorder point 28; re-arm at 35.
        let fired: Vec<bool> = [40, 27, 20, 30, 26, 34, 27, 35, 27, 0, 100, 20]
            .into_iter()
            .map(&mut run)
            .collect();
        assert_eq!(
            fired,
            [false, true, false, false, false, false, false, false, true, false, false, true]
        );
        assert_eq!(arm.episode, 2);
        let mut off = CoverArming::default();
        let c = view(&v, 1, 0, 7, T0);
        assert!(!evaluate(c.as_ref(), Some(1), &mut off), "0 turns it off");
    }
}
