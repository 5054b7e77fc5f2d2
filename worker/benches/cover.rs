//! Days of cover (issue 15): what one sale fact costs the velocity. `demand_sale` is the record
//! update alone ([`Demand::sale`] on a full 28-day record); `record_sale` is what the state
//! engine runs per sale fact: the record update plus the cover rule (velocity over the window,
//! days of cover, arming). Target: under 5 µs per sale fact. Figures: docs/PERFORMANCE.md.
//!
//! `cargo bench -p stockhook-worker --bench cover`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use stockhook_worker::backtest;
use stockhook_worker::cover::{Demand, DAY_MS};
use stockhook_worker::state::ItemState;

const T0: i64 = 20_000 * DAY_MS;

/// An item with 28 days of sales (3 to 9 a day) and a level after each.
fn item() -> ItemState {
    let rules = backtest::rules(false);
    let mut st = ItemState::new("bench", "shopify", "1", T0);
    let mut stock = 10_000;
    for i in 0..28 * 6 {
        let at = T0 + i * DAY_MS / 6;
        stock -= 1 + i % 3;
        st.record_sale(1 + i % 3, at, &rules, at);
        st.record_level("all", Some(stock), at, &rules, at);
    }
    st
}

fn bench(c: &mut Criterion) {
    let rules = backtest::rules(false);
    let base = item();
    let now = T0 + 28 * DAY_MS + 3_600_000;
    c.bench_function("demand_sale", |b| {
        let mut d: Demand = base.demand.clone();
        let mut k = 0i64;
        b.iter(|| {
            k += 1;
            d.sale(black_box(now + k % 1000), black_box(2));
        })
    });
    let weekly = backtest::rules(true);
    for (name, rules) in [("record_sale", &rules), ("record_sale_weekly", &weekly)] {
        c.bench_function(name, |b| {
            let mut st = base.clone();
            let mut k = 0i64;
            b.iter(|| {
                k += 1;
                black_box(st.record_sale(black_box(2), now + k % 1000, rules, now + k % 1000))
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
