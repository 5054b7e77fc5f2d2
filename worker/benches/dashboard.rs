//! Dashboard page rendering with 50,000 items in a real sled state (issue 16: p99 under 50 ms).
//!
//! `cargo bench -p stockhook-worker --bench dashboard` fills a sled state in a temporary
//! directory through the same `apply_batch` the worker uses (catalog entry, three level reports
//! and two sales per item, over ten sources), then renders each page through the dashboard's
//! own route code (`server::get_page`, from the shared snapshot) 200 times and prints p50, p99
//! and max. It also times taking a snapshot (what a page load costs once a second at most): the
//! first one (every item read), and one after [`FLOW`] items changed (a second of events at
//! 2,000/s: the dashboard reads only those). Under `cargo test` (no `--bench`) it runs once
//! with 2,000 items, as a smoke test. `DASHBOARD_BENCH_ITEMS` sets the number of items (for a
//! run under callgrind, docs/PERFORMANCE.md section 15b).

use std::sync::Arc;
use std::time::{Duration, Instant};
use stockhook_shared::config::Config;
use stockhook_shared::envelope::EventId;
use stockhook_worker::dashboard::pages::Ctx;
use stockhook_worker::dashboard::{server, Dashboard};
use stockhook_worker::facts::{Fact, Normalized};
use stockhook_worker::reload::RulesSlot;
use stockhook_worker::state::{Prepared, RuleConfig, SledState, StateBackend};

const SOURCES: usize = 10;

/// Items changed between the snapshots of the "after a flow" line.
const FLOW: usize = 2_000;
const TOKEN: &str = "bench-admin-token-0123456789";

fn rules() -> RuleConfig {
    RuleConfig::example()
}

fn event(id: u64, i: usize, now: i64) -> Prepared {
    let source = format!("src-{}", i % SOURCES);
    let item = format!("item-{i}");
    let hour = 3_600_000;
    let mut facts = vec![Fact::CatalogEntry {
        item: item.clone(),
        aliases: Vec::new(),
        sku: Some(format!("SKU-{i}")),
        title: Some(format!("Product number {i}")),
        at: now - 10 * hour,
    }];
    for k in 0..3i64 {
        facts.push(Fact::InventoryLevel {
            item: item.clone(),
            location: "all".into(),
            available: Some(((i as i64 * 7919) % 60) - k * 3),
            at: now - (8 - k * 2) * hour,
        });
    }
    for k in 0..2i64 {
        facts.push(Fact::Sale {
            item: item.clone(),
            quantity: 1 + k,
            order: format!("o{i}-{k}"),
            line: "1".into(),
            at: now - (7 - k * 2) * hour,
        });
    }
    Prepared {
        id: EventId(id),
        accepted_at: now,
        source,
        platform: "shopify".into(),
        payload_key: None,
        normalized: Normalized {
            topic: "bench".into(),
            facts,
            ignored: false,
        },
    }
}

fn config(data_dir: &std::path::Path) -> Config {
    let mut text = format!("data_dir = {:?}\n", data_dir.display().to_string());
    for s in 0..SOURCES {
        text.push_str(&format!(
            "[[sources]]\nname = \"src-{s}\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets = [\"x\"]\n"
        ));
    }
    text.push_str(&format!(
        "[dashboard]\nlisten = \"127.0.0.1:0\"\n[[dashboard.users]]\nname = \"ops\"\nrole = \"admin\"\ntoken = \"{TOKEN}\"\n"
    ));
    toml::from_str(&text).expect("bench config parses")
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (items, rounds) = if full { (50_000, 200) } else { (2_000, 3) };
    let items = std::env::var("DASHBOARD_BENCH_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(items);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let state = Arc::new(SledState::open(&dir.path().join("state")).expect("sled state"));
        let now = stockhook_shared::queue::now_ms();
        let r = Arc::new(rules());
        let started = Instant::now();
        let mut id = 1u64;
        for chunk in (0..items).collect::<Vec<_>>().chunks(500) {
            let batch: Vec<Prepared> = chunk
                .iter()
                .map(|i| {
                    id += 1;
                    event(id, *i, now)
                })
                .collect();
            state
                .apply_batch(batch, r.clone(), now, false)
                .await
                .expect("apply");
        }
        println!("filled {items} items in {:.1?}", started.elapsed());

        let config = config(dir.path());
        let dashboard = || {
            Dashboard::new(
                &config,
                state.clone(),
                Arc::new(RulesSlot::new(rules())),
                Arc::new(tokio::sync::Notify::new()),
                false,
            )
            .expect("dashboard")
        };
        // The first snapshot of a dashboard reads every item.
        let mut first = Vec::new();
        for _ in 0..rounds.min(10) {
            let dash = dashboard();
            let t = Instant::now();
            dash.snapshot().await.expect("snapshot");
            first.push(t.elapsed());
        }
        let dash = dashboard();
        let user = dash.auth.by_token(TOKEN).expect("the bench user").clone();
        let ctx = Ctx {
            user: &user,
            csrf: "bench",
        };

        // Later snapshots read the items changed since the last one: here FLOW level reports
        // on items already there, between snapshots.
        let flow = FLOW.min(items);
        let mut later = Vec::new();
        dash.snapshot().await.expect("snapshot");
        for round in 0..rounds.min(10) {
            for start in (0..flow).step_by(500) {
                let batch: Vec<Prepared> = (start..flow.min(start + 500))
                    .map(|k| {
                        id += 1;
                        let i = (round * flow + k) % items;
                        let mut ev = event(id, i, now);
                        ev.normalized.facts = vec![Fact::InventoryLevel {
                            item: format!("item-{i}"),
                            location: "all".into(),
                            available: Some((id % 50) as i64),
                            at: now - 1_000 + round as i64,
                        }];
                        ev
                    })
                    .collect();
                state
                    .apply_batch(batch, r.clone(), now, false)
                    .await
                    .expect("apply");
            }
            dash.invalidate().await;
            let t = Instant::now();
            dash.snapshot().await.expect("snapshot");
            later.push(t.elapsed());
        }
        let snap = dash.snapshot().await.expect("snapshot");
        for (name, times) in [
            ("snapshot, first (every item read)".to_string(), &mut first),
            (format!("snapshot after {flow} items changed"), &mut later),
        ] {
            println!(
                "{name:<48} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  ({} items, {} open alerts)",
                pct(times, 0.5),
                pct(times, 0.99),
                pct(times, 1.0),
                snap.items.len(),
                snap.open.len()
            );
        }
        assert_eq!(snap.items.len(), items);

        let k = items / 2 + 2;
        let item_path = format!("/items/src-{}%3Aitem-{k}", k % SOURCES);
        let pages: [(&str, Option<&str>); 8] = [
            ("/", None),
            ("/inventory", None),
            ("/inventory", Some("q=number 4242")),
            ("/inventory", Some("status=low&sort=last_sale&dir=desc")),
            ("/inventory", Some("sort=name&page=200")),
            (item_path.as_str(), None),
            ("/alerts", None),
            ("/inventory.csv", None),
        ];
        let mut worst = Duration::ZERO;
        for (path, query) in pages {
            let mut times = Vec::with_capacity(rounds);
            let mut bytes = 0;
            for _ in 0..rounds {
                // Keep the snapshot young: the bench measures rendering, not the state read.
                let t = Instant::now();
                let resp = server::get_page(&dash, &ctx, path, query).await;
                times.push(t.elapsed());
                assert_eq!(resp.status(), 200, "{path}?{query:?}");
                bytes = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
            }
            let p99 = pct(&mut times, 0.99);
            if path != "/inventory.csv" {
                worst = worst.max(p99);
            }
            let name = format!(
                "{path}{}",
                query.map(|q| format!("?{q}")).unwrap_or_default()
            );
            println!(
                "{name:<48} p50 {:>9.2?}  p99 {p99:>9.2?}  max {:>9.2?}  ({bytes} bytes)",
                pct(&mut times, 0.5),
                pct(&mut times, 1.0)
            );
        }
        println!("worst page p99: {worst:.2?} (target < 50 ms)");
    });
}
