//! The days-of-cover backtest (issue 15): a year of simulated sales for many items, replayed
//! through the real rule code ([`ItemState::record_sale`], [`ItemState::record_level`],
//! [`ItemState::take_scheduled`]), scoring the fixed low-stock threshold against the cover rule.
//!
//! Why it exists: whether the cover rule warns in time, and how often it speaks, is a claim
//! about sales that look like real ones; this puts numbers on it (docs/COVER.md) and a short run
//! of it is a test (`worker/tests/backtest.rs`).
//!
//! The world: each item has a demand shape (steady, trending, weekly seasonal, intermittent or
//! lumpy, promotions, occasional huge orders), sold as orders at random times of day; stock
//! that is not there is a lost sale. The seller restocks on a fixed review cycle (every 7 to 28
//! days) up to roughly the demand until the next delivery, with a misjudged quantity (0.7 to
//! 1.5 times that) and deliveries that arrive after the lead time, late by 1 to 10 days three
//! times in ten: stock-outs happen, and the alerts do not change when (the rules are scored on
//! the same world). The platform reports the level after every order and every delivery; the
//! scheduled pass runs daily at 06:00 UTC.
//!
//! Scoring, per rule (threshold: its low-stock alerts; cover: its cover alerts): a stock-out is
//! the level reaching zero; it was warned when the rule fired in the current episode (since it
//! last re-armed), and its lead is the time from that alert to the stock-out (0 unwarned). The first
//! [`WARMUP_DAYS`] are history only (no velocity exists yet): neither stock-outs nor alerts are
//! scored there.

use crate::alert::Rule;
use crate::cover::{CoverRules, DAY_MS};
use crate::state::{ItemState, RuleConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Days simulated before scoring starts: the velocity window must fill first.
pub const WARMUP_DAYS: i64 = 56;
/// The supplier's lead time in the simulated world, and the cover rule's `cover_days`.
pub const LEAD_DAYS: i64 = 14;
/// The fixed threshold scored against the cover rule.
pub const THRESHOLD: i64 = 5;
/// Day 0 of the simulation (2026-01-05, a Monday).
const START_MS: i64 = 20_458 * DAY_MS;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    pub items: usize,
    /// Scored days (after the warm-up).
    pub days: i64,
    pub seed: u64,
    /// The cover rule's weekly profile.
    pub weekly: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            items: 1000,
            days: 365,
            seed: 15,
            weekly: false,
        }
    }
}

/// One rule's score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Score {
    pub stockouts: usize,
    /// Stock-outs warned at least the lead time ahead.
    pub warned_in_time: usize,
    /// Stock-outs warned at all.
    pub warned: usize,
    /// Warning leads in days (0 for unwarned stock-outs).
    pub leads: Vec<f64>,
    pub alerts: usize,
}

impl Score {
    pub fn share_in_time(&self) -> f64 {
        self.warned_in_time as f64 / self.stockouts.max(1) as f64
    }
    pub fn median_lead(&self) -> f64 {
        let mut v = self.leads.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }
    fn add(&mut self, o: &Score) {
        self.stockouts += o.stockouts;
        self.warned_in_time += o.warned_in_time;
        self.warned += o.warned;
        self.leads.extend(&o.leads);
        self.alerts += o.alerts;
    }
}

/// The demand shapes simulated (one item in six each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    Steady,
    Trending,
    Weekly,
    Lumpy,
    Promotions,
    BigOrders,
}

impl Shape {
    const ALL: [Shape; 6] = [
        Shape::Steady,
        Shape::Trending,
        Shape::Weekly,
        Shape::Lumpy,
        Shape::Promotions,
        Shape::BigOrders,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Shape::Steady => "steady",
            Shape::Trending => "trending",
            Shape::Weekly => "weekly seasonal",
            Shape::Lumpy => "intermittent/lumpy",
            Shape::Promotions => "promotions",
            Shape::BigOrders => "steady + huge orders",
        }
    }
}

/// The scores of a run: per rule, overall and per shape.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub items: usize,
    pub days: i64,
    pub threshold: Score,
    pub cover: Score,
    pub by_shape: BTreeMap<Shape, (Score, Score)>,
}

impl Report {
    /// Alerts per item per (30-day) month.
    pub fn per_item_month(&self, s: &Score) -> f64 {
        s.alerts as f64 / self.items.max(1) as f64 / (self.days as f64 / 30.0)
    }

    /// The table the `backtest` command prints.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} items, {} days scored (after {} days of history), lead time {} days\n\n",
            self.items, self.days, WARMUP_DAYS, LEAD_DAYS
        );
        out.push_str(&format!(
            "{:<28} {:>9} {:>15} {:>13} {:>18}\n",
            "rule", "stockouts", "warned >= lead", "median lead", "alerts/item/month"
        ));
        let mut row = |name: &str, s: &Score| {
            out.push_str(&format!(
                "{:<28} {:>9} {:>14.1}% {:>11.1} d {:>18.2}\n",
                name,
                s.stockouts,
                100.0 * s.share_in_time(),
                s.median_lead(),
                self.per_item_month(s)
            ));
        };
        row(&format!("threshold {THRESHOLD}"), &self.threshold);
        row(&format!("cover {LEAD_DAYS} d"), &self.cover);
        out.push_str("\nby shape (threshold | cover): stockouts, warned >= lead, median lead\n");
        for (shape, (t, c)) in &self.by_shape {
            out.push_str(&format!(
                "{:<22} {:>5} {:>6.1}% {:>6.1} d | {:>6.1}% {:>6.1} d\n",
                shape.name(),
                t.stockouts,
                100.0 * t.share_in_time(),
                t.median_lead(),
                100.0 * c.share_in_time(),
                c.median_lead()
            ));
        }
        out
    }
}

/// The rules the backtest runs: threshold 5, cover 14 days (safety 7), the rest defaults.
pub fn rules(weekly: bool) -> RuleConfig {
    RuleConfig {
        default_threshold: THRESHOLD,
        source_threshold: BTreeMap::new(),
        sku_thresholds: BTreeMap::new(),
        default_recipients: Vec::new(),
        source_recipients: BTreeMap::new(),
        no_sales_days: 60,
        digest_window_ms: 0,
        combine_channels: false,
        events: Default::default(),
        cover: CoverRules {
            cover_days: LEAD_DAYS as u32,
            weekly,
            ..CoverRules::default()
        },
    }
}

/// Runs the backtest.
pub fn run(o: &Options) -> Report {
    let rules = rules(o.weekly);
    let mut report = Report {
        items: o.items,
        days: o.days,
        ..Report::default()
    };
    for i in 0..o.items {
        let shape = Shape::ALL[i % Shape::ALL.len()];
        let mut rng =
            StdRng::seed_from_u64(o.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let (t, c) = item(&mut rng, shape, i, o.days, &rules);
        report.threshold.add(&t);
        report.cover.add(&c);
        let e = report.by_shape.entry(shape).or_default();
        e.0.add(&t);
        e.1.add(&c);
    }
    report
}

/// An item's demand: expected units on `day`, and how orders are sized.
struct Demand {
    shape: Shape,
    base: f64,
    growth: f64,
    weekend: f64,
    promos: Vec<(i64, i64, f64)>,
    lumpy_p: f64,
    lumpy_size: f64,
}

impl Demand {
    fn new(rng: &mut StdRng, shape: Shape, total_days: i64) -> Demand {
        // Log-uniform from 0.3 to 20 units a day.
        let base = (0.3f64.ln() + rng.gen::<f64>() * (20.0f64 / 0.3).ln()).exp();
        let mut promos = Vec::new();
        if shape == Shape::Promotions {
            let mut d = rng.gen_range(20..60);
            while d < total_days {
                let len = rng.gen_range(3..8);
                promos.push((d, d + len, rng.gen_range(2.0..5.0)));
                d += len + rng.gen_range(40..90);
            }
        }
        Demand {
            shape,
            base,
            // From a third to three times over the run.
            growth: if shape == Shape::Trending {
                let g = rng.gen_range(-(3.0f64.ln())..3.0f64.ln());
                g / total_days as f64
            } else {
                0.0
            },
            weekend: rng.gen_range(1.8..3.0),
            promos,
            lumpy_p: rng.gen_range(0.05..0.3),
            lumpy_size: rng.gen_range(2.0..8.0),
        }
    }

    /// Expected units on `day` (for the seller's planning and the draws).
    fn mean(&self, day: i64) -> f64 {
        let mut m = self.base * (self.growth * day as f64).exp();
        if self.shape == Shape::Weekly {
            // Day 0 is a Monday: days 5 and 6 of each week are the weekend. Normalized so the
            // weekly mean is `base`.
            let f = if day.rem_euclid(7) >= 5 {
                self.weekend
            } else {
                1.0
            };
            m *= f * 7.0 / (5.0 + 2.0 * self.weekend);
        }
        if self.shape == Shape::Lumpy {
            m = self.lumpy_p * self.lumpy_size;
        }
        for (a, b, f) in &self.promos {
            if (*a..*b).contains(&day) {
                m *= f;
            }
        }
        m
    }

    /// The orders of `day`: (time within the day in ms, units).
    fn orders(&self, rng: &mut StdRng, day: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        if self.shape == Shape::Lumpy {
            if rng.gen_bool(self.lumpy_p) {
                // One order of 1 to 2 x the mean size.
                let q = (self.lumpy_size * rng.gen_range(0.5..1.5)).round().max(1.0) as i64;
                out.push((rng.gen_range(0..DAY_MS), q));
            }
            return out;
        }
        let mut left = poisson(rng, self.mean(day));
        while left > 0 {
            let q = if rng.gen_bool(0.8) {
                1
            } else {
                rng.gen_range(2..4)
            }
            .min(left);
            out.push((rng.gen_range(0..DAY_MS), q));
            left -= q;
        }
        if self.shape == Shape::BigOrders && rng.gen_bool(0.02) {
            // A wholesale order of 10 to 40 days of sales.
            let q = (self.base * rng.gen_range(10.0..40.0)).round().max(5.0) as i64;
            out.push((rng.gen_range(0..DAY_MS), q));
        }
        out.sort();
        out
    }
}

fn poisson(rng: &mut StdRng, lambda: f64) -> i64 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        // Normal approximation (Box-Muller).
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (lambda + z * lambda.sqrt()).round().max(0.0) as i64;
    }
    let l = (-lambda).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.gen::<f64>();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

/// One item's run: (threshold score, cover score).
fn item(rng: &mut StdRng, shape: Shape, i: usize, days: i64, rules: &RuleConfig) -> (Score, Score) {
    let total_days = WARMUP_DAYS + days;
    let demand = Demand::new(rng, shape, total_days);
    let review = [7, 14, 21, 28][rng.gen_range(0..4)];
    // Demand until the delivery after next, misjudged.
    let target = |day: i64, rng: &mut StdRng| -> i64 {
        let horizon: f64 = (day..day + review + LEAD_DAYS)
            .map(|d| demand.mean(d))
            .sum();
        (horizon * rng.gen_range(0.7..1.5)).round().max(1.0) as i64
    };
    let mut st = ItemState::new("sim", "shopify", &format!("item-{i}"), START_MS);
    let mut stock = target(0, rng);
    let mut on_order = 0;
    let mut arrivals: Vec<(i64, i64)> = Vec::new();
    st.record_level("all", Some(stock), START_MS, rules, START_MS);

    let scored_from = START_MS + WARMUP_DAYS * DAY_MS;
    // Per rule: first alert since the last delivery.
    let mut first = [None::<i64>; 2];
    let mut scores = [Score::default(), Score::default()];
    let mut note = |alerts: Vec<crate::alert::Alert>, first: &mut [Option<i64>; 2], now: i64| {
        for a in alerts {
            let k = match a.rule {
                Rule::LowStock => 0,
                Rule::Cover => 1,
                _ => continue,
            };
            if first[k].is_none() {
                first[k] = Some(now);
            }
            if now >= scored_from {
                scores[k].alerts += 1;
            }
        }
    };
    let mut stockouts: Vec<(i64, [Option<i64>; 2])> = Vec::new();
    for day in 0..total_days {
        let day_ms = START_MS + day * DAY_MS;
        // Deliveries arrive at 08:00, the scheduled pass runs at 06:00.
        let scheduled = st.take_scheduled(rules, day_ms + 6 * 3_600_000);
        note(scheduled, &mut first, day_ms + 6 * 3_600_000);
        let due: i64 = arrivals.iter().filter(|a| a.0 == day).map(|a| a.1).sum();
        arrivals.retain(|a| a.0 != day);
        if due > 0 {
            let at = day_ms + 8 * 3_600_000;
            stock += due;
            on_order -= due;
            let alerts = st.record_level("all", Some(stock), at, rules, at);
            // A rule that re-armed on the delivery starts a new episode: its earlier alert no
            // longer warns of the next stock-out.
            if st.arming.low_armed {
                first[0] = None;
            }
            if st.cover_arming.armed {
                first[1] = None;
            }
            note(alerts, &mut first, at);
        }
        if day % review == 0 && day > 0 {
            let want = target(day, rng) - stock - on_order;
            if want > 0 {
                let late = if rng.gen_bool(0.3) {
                    rng.gen_range(1..11)
                } else {
                    0
                };
                arrivals.push((day + LEAD_DAYS + late, want));
                on_order += want;
            }
        }
        for (t, q) in demand.orders(rng, day) {
            if stock <= 0 {
                continue;
            }
            let at = day_ms + t;
            let sold = q.min(stock);
            stock -= sold;
            let mut alerts: Vec<_> = st.record_sale(sold, at, rules, at).into_iter().collect();
            alerts.extend(st.record_level("all", Some(stock), at, rules, at));
            note(alerts, &mut first, at);
            if stock == 0 && at >= scored_from {
                stockouts.push((at, first));
            }
        }
    }
    let lead_ms = LEAD_DAYS * DAY_MS;
    for (at, warned) in stockouts {
        for k in 0..2 {
            let s = &mut scores[k];
            s.stockouts += 1;
            match warned[k] {
                Some(w) => {
                    s.warned += 1;
                    if at - w >= lead_ms {
                        s.warned_in_time += 1;
                    }
                    s.leads.push((at - w) as f64 / DAY_MS as f64);
                }
                None => s.leads.push(0.0),
            }
        }
    }
    let [t, c] = scores;
    (t, c)
}
