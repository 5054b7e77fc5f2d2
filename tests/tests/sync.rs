//! Catalog sync from Shopify's GraphQL Admin API (issue 14), against the fake Shopify of
//! `stockhook_tests::fake_shopify` (published response shapes), with the real worker binary:
//! paging, throttling, 429/500 retried, 401 stopping the sync without touching state, and end
//! to end: a level changed on the platform with no webhook is corrected by the next sync and its
//! alert email goes out over real SMTP.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockhook_tests::config::toml_str;
use stockhook_tests::fake_shopify::{FakeShopify, Fault, Shop};
use stockhook_tests::proc::TestDir;
use stockhook_tests::smtp::SmtpSink;
use stockhook_tests::stack::{
    expect_within, maildir_emails, stats, wait_stats, worker_cli, worker_cli_ok,
};
use stockhook_tests::SourceSpec;

const TOKEN: &str = "shpat_test_token_0123456789";
const SHOP: &str = "shop";

fn config(dir: &TestDir, fake: &FakeShopify, smtp: Option<&str>, interval: &str) -> PathBuf {
    let api = format!(
        "{{ shop_domain = \"acme.myshopify.com\", access_token_env = \"SHOP_TOKEN\", api_base = {} }}",
        toml_str(&fake.base())
    );
    let mut c = dir
        .config()
        .top("sync", &format!("{{ interval = {} }}", toml_str(interval)))
        .recipients(&["ops@example.com"])
        .source(SourceSpec::shopify(SHOP, "whsec-shop").with("shopify_sync", &api));
    if let Some(url) = smtp {
        c = c.email("smtp_url", &toml_str(url));
    }
    dir.write_config("stockhook.toml", &c)
}

/// `stockhook-worker --config <cfg> <args>` with the token in the environment, started.
fn spawn_with_token(dir: &TestDir, cfg: &Path, args: &[&str]) -> stockhook_tests::Proc {
    let mut all: Vec<&str> = vec!["--config", cfg.to_str().unwrap()];
    all.extend(args);
    dir.spawn_env(
        stockhook_tests::bins::worker(),
        &all,
        &[("SHOP_TOKEN", TOKEN)],
    )
}

/// `stockhook-worker --config <cfg> <args>` with the token in the environment, to completion.
fn worker_with_token(dir: &TestDir, cfg: &Path, args: &[&str]) -> stockhook_tests::Proc {
    let mut p = spawn_with_token(dir, cfg, args);
    p.wait_exit(stockhook_tests::deadline_in(Duration::from_secs(120)));
    p
}

/// `stockhook-worker run` with the token in the environment, once it is ready.
fn run_with_token(dir: &TestDir, cfg: &Path) -> stockhook_tests::Proc {
    let mut worker = spawn_with_token(dir, cfg, &["run"]);
    stockhook_tests::stack::wait_worker_ready(&mut worker);
    worker
}

/// Whether `stats --json` shows the source synced at least once.
fn synced(s: &Value) -> bool {
    s["sync"]["sources"][SHOP]["last_at"].as_i64().is_some()
}

/// Waits (up to a minute) until the source has synced; returns the stats.
fn wait_synced(dir: &TestDir, cfg: &Path, what: &str) -> Value {
    wait_stats(dir, cfg, Duration::from_secs(60), what, synced)
}

/// Posts a signed `inventory_levels/update` of `item` at `location`, asserting it is accepted.
fn post_level(
    rx: &stockhook_tests::Proc,
    item: u64,
    location: u64,
    available: u64,
    delivery: &str,
) {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let body = serde_json::json!({
        "inventory_item_id": item, "location_id": location, "available": available, "updated_at": now,
    })
    .to_string();
    let h = stockhook_tests::sign::shopify(
        "whsec-shop",
        body.as_bytes(),
        "inventory_levels/update",
        delivery,
    );
    let r = stockhook_tests::http::post(rx.addr(), "/webhooks/shop", &h, body.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
}

/// `stockhook-worker sync ...`.
fn sync_cli(dir: &TestDir, cfg: &Path, args: &[&str]) -> stockhook_tests::Proc {
    worker_with_token(dir, cfg, &[&["sync"], args].concat())
}

/// Asserts the exit code, showing the output otherwise.
fn assert_exit(p: &stockhook_tests::Proc, code: i32) {
    assert_eq!(
        p.status().and_then(|s| s.code()),
        Some(code),
        "`{}`:\n{}\n{}",
        p.cmdline(),
        p.stdout(),
        p.stderr()
    );
}

fn reports(p: &stockhook_tests::Proc) -> Vec<Value> {
    serde_json::from_str(&p.stdout()).unwrap_or_else(|e| {
        panic!(
            "sync --json is not JSON ({e}):\n{}\n{}",
            p.stdout(),
            p.stderr()
        )
    })
}

fn export_rows(dir: &TestDir, cfg: &Path) -> Vec<Vec<String>> {
    let csv = worker_cli_ok(dir, cfg, &["export", "--csv"]);
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn sync_pages_through_throttles_and_retries_then_401_stops_it_and_keeps_state() {
    let dir = TestDir::new("sync-pages");
    let mut shop = Shop::generated(TOKEN, 600, 1, 20);
    // One sale two days ago of the first variant.
    let first = shop.variants[0].clone();
    let two_days_ago = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let at = two_days_ago
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    shop.orders
        .push((5_000_001, at, vec![(7_000_001, first.id, 2)]));
    // Before the answers: a 500, a 429 asking for 1 s, and a THROTTLED error.
    shop.faults.extend([
        Fault::Status(500, None),
        Fault::Status(429, Some(1)),
        Fault::Throttled,
    ]);
    let fake = FakeShopify::start(shop);
    let cfg = config(&dir, &fake, None, "0s");

    let p = sync_cli(&dir, &cfg, &["--json"]);
    assert_exit(&p, 0);
    let r = reports(&p);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["source"], SHOP);
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert_eq!(r[0]["items"], 600);
    assert_eq!(r[0]["locations"], 2);
    assert_eq!(r[0]["sales"], 1);
    // 600 variants at 250 a page: 3 pages; 2 locations of 600 levels: 3 pages each.
    assert_eq!(fake.requests("productVariants"), 3);
    assert_eq!(fake.requests("inventoryLevels"), 6);
    assert_eq!(fake.requests("locations"), 1);
    assert_eq!(fake.requests("orders"), 1);
    assert_eq!(
        fake.requests("fault"),
        3,
        "every fault was answered and retried"
    );

    // Every variant is an item keyed by its inventory item, with title, SKU and both levels.
    let rows = export_rows(&dir, &cfg);
    assert_eq!(rows.len(), 600, "{rows:?}");
    let header = worker_cli_ok(&dir, &cfg, &["export", "--csv"]);
    let cols: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    let col = |n: &str| cols.iter().position(|c| *c == n).unwrap();
    let row = rows
        .iter()
        .find(|r| r[col("item")] == first.inventory_item.to_string())
        .expect("the first variant's inventory item is an item");
    assert_eq!(row[col("sku")], first.sku);
    assert_eq!(
        row[col("title")],
        format!("{} - {}", first.product_title, first.title)
    );
    assert_eq!(
        row[col("available")],
        "40",
        "20 at each of 2 locations: {row:?}"
    );
    assert_eq!(row[col("units_sold")], "2", "{row:?}");

    let s = stats(&dir, &cfg);
    let src = &s["sync"]["sources"][SHOP];
    assert!(src["last_at"].as_i64().unwrap_or(0) > 0, "{s:#}");
    assert_eq!(src["errors"], 0, "{s:#}");
    assert_eq!(src["last_error"], Value::Null, "{s:#}");

    // The token is revoked: the sync fails with a clear error, state stays as it was.
    fake.with(|s| s.token = "shpat_other".into());
    let p = sync_cli(&dir, &cfg, &[]);
    assert_exit(&p, 1);
    assert!(
        p.stdout().contains("refused the credentials"),
        "{}",
        p.stdout()
    );
    assert!(
        p.stderr().contains("nothing in state was changed"),
        "{}",
        p.stderr()
    );
    assert!(!p.stdout().contains(TOKEN) && !p.stderr().contains(TOKEN));
    assert_eq!(fake.requests("unauthorized"), 1, "a 401 is not retried");
    let s = stats(&dir, &cfg);
    let src = &s["sync"]["sources"][SHOP];
    assert_eq!(src["errors"], 1, "{s:#}");
    assert_eq!(src["last_error"]["kind"], "unauthorized", "{s:#}");
    assert_eq!(export_rows(&dir, &cfg).len(), 600, "state is never deleted");
}

#[test]
fn run_syncs_at_start_and_the_next_sync_corrects_a_missed_level_with_an_email() {
    let dir = TestDir::new("sync-e2e");
    let sink = SmtpSink::start(&dir);
    let shop = Shop::generated(TOKEN, 30, 0, 12);
    let target = shop.variants[7].clone();
    let fake = FakeShopify::start(shop);
    let cfg = config(&dir, &fake, Some(&sink.url()), "1h");

    let worker = run_with_token(&dir, &cfg);
    // A source that never synced is synced at start.
    let s = wait_synced(&dir, &cfg, "the start-up sync");
    assert_eq!(
        s["alerts"]["created"], 0,
        "12 in stock is above the threshold: {s:#}"
    );
    assert_eq!(fake.requests("productVariants"), 1);

    // A sale on the platform whose webhook never came: 12 -> 2.
    let loc = fake.with(|s| {
        let loc = s.locations[0].0;
        s.levels.insert((target.inventory_item, loc), 2);
        loc
    });
    // The next sync (on demand, through the running worker's socket) corrects it.
    let p = worker_cli(&dir, &cfg, &["sync", "--source", SHOP]);
    assert_exit(&p, 0);
    assert!(p.stdout().contains("applied 30 items"), "{}", p.stdout());
    assert!(p.stdout().contains("1 alerts"), "{}", p.stdout());

    let msgs = expect_within(
        Duration::from_secs(60),
        "the low-stock email over SMTP",
        || {
            let m = maildir_emails(&sink);
            (!m.is_empty()).then_some(m)
        },
    );
    assert_eq!(msgs.len(), 1);
    let text = msgs[0].text();
    let subject = msgs[0].subject().to_string();
    assert!(subject.starts_with("Low stock"), "{subject}");
    assert!(
        subject.contains(&target.product_title) || text.contains(&target.product_title),
        "the email names the product: {subject}\n{text}"
    );
    assert!(
        text.contains(&target.sku),
        "the email names the SKU:\n{text}"
    );
    assert!(
        text.contains(&loc.to_string()) || text.contains("Main warehouse"),
        "{text}"
    );
    let _ = worker;
}

/// `stockhook-worker connect --source shop ...`.
fn connect_cli(dir: &TestDir, cfg: &Path, args: &[&str]) -> stockhook_tests::Proc {
    worker_with_token(dir, cfg, &[&["connect", "--source", SHOP], args].concat())
}

#[test]
fn connect_registers_each_topic_once_and_reports_a_wrong_url() {
    let dir = TestDir::new("sync-connect");
    let fake = FakeShopify::start(Shop::generated(TOKEN, 1, 0, 1));
    // Another install's subscription, at a stale URL.
    fake.with(|s| {
        s.webhooks.push((
            1,
            "ORDERS_CREATE".into(),
            "https://old.example.com/webhooks/shop".into(),
        ))
    });
    let cfg = config(&dir, &fake, None, "0s");
    let url = "https://hooks.example.com/webhooks/shop";

    let p = connect_cli(&dir, &cfg, &["--check", "--url", url]);
    assert_exit(&p, 1);
    assert_eq!(p.stdout().matches(" missing").count(), 9, "{}", p.stdout());

    let p = connect_cli(&dir, &cfg, &["--url", url, "--dry-run"]);
    assert_exit(&p, 0);
    assert_eq!(
        p.stdout().matches("would create").count(),
        9,
        "{}",
        p.stdout()
    );
    assert_eq!(
        fake.with(|s| s.webhooks.len()),
        1,
        "a dry run creates nothing"
    );

    let p = connect_cli(&dir, &cfg, &["--url", url]);
    assert_exit(&p, 0);
    assert_eq!(p.stdout().matches(" created").count(), 9, "{}", p.stdout());
    assert!(
        p.stdout().contains("https://old.example.com/webhooks/shop"),
        "the wrong URL is reported: {}",
        p.stdout()
    );
    assert_eq!(
        fake.with(|s| s.webhooks.len()),
        10,
        "the stale one is left alone"
    );
    // The pinned default version (2026-10) takes `uri`.
    assert!(fake.with(|s| s.create_keys.iter().all(|k| k == "uri")));

    // Idempotent: nothing more is created.
    let p = connect_cli(&dir, &cfg, &["--url", url, "--json"]);
    assert_exit(&p, 0);
    let states: Vec<Value> = serde_json::from_str(&p.stdout()).unwrap();
    assert!(states.iter().all(|s| s["status"] == "ok"), "{states:?}");
    assert_eq!(fake.with(|s| s.webhooks.len()), 10);
    let p = connect_cli(&dir, &cfg, &["--check", "--url", url]);
    assert_exit(&p, 0);

    // A version before 2026-07 names the address `callbackUrl`.
    let old = dir.write(
        "old.toml",
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("api_base", "api_version = \"2025-10\", api_base"),
    );
    let other = "https://other.example.com/webhooks/shop";
    let p = connect_cli(&dir, &old, &["--url", other]);
    assert_exit(&p, 0);
    assert!(fake.with(|s| s.create_keys.iter().skip(9).all(|k| k == "callbackUrl")));
    assert_eq!(fake.with(|s| s.create_keys.len()), 18);

    // A URL that is not this source's is refused before anything is asked of Shopify.
    let p = connect_cli(
        &dir,
        &cfg,
        &["--url", "http://hooks.example.com/webhooks/other"],
    );
    assert_exit(&p, 2);
}

#[test]
fn an_item_the_catalog_does_not_know_is_looked_up_before_its_email() {
    let dir = TestDir::new("sync-lookup");
    let fake = FakeShopify::start(Shop::generated(TOKEN, 3, 0, 12));
    let cfg = config(&dir, &fake, None, "0s");
    let rx = dir.receiver(&cfg);
    let mut worker = run_with_token(&dir, &cfg);
    wait_synced(&dir, &cfg, "the start-up sync");

    // A product created after the sync, whose products/create webhook never came.
    let (item, location) = fake.with(|s| {
        let mut v = s.variants[0].clone();
        v.id = 40_000_000_000_001;
        v.inventory_item = 42_000_000_000_001;
        v.sku = "NEW-SKU 1".into();
        v.product_title = "Brand new thing".into();
        v.title = "Default Title".into();
        let loc = s.locations[0].0;
        s.levels.insert((v.inventory_item, loc), 1);
        s.variants.push(v.clone());
        (v.inventory_item, loc)
    });
    post_level(&rx, item, location, 1, "lookup-1");

    let mails = stockhook_tests::stack::wait_eml(&dir.data_dir(), 1, Duration::from_secs(60));
    assert_eq!(mails.len(), 1);
    let text = mails[0].text();
    let subject = mails[0].subject().to_string();
    assert!(
        subject.contains("Brand new thing") || text.contains("Brand new thing"),
        "the looked-up title is in the email: {subject}\n{text}"
    );
    assert!(text.contains("NEW-SKU 1"), "the looked-up SKU: {text}");
    assert_eq!(fake.requests("inventoryItem"), 1);

    // What the lookup found is kept in the catalog (the dashboard and the export show it)...
    let rows = export_rows(&dir, &cfg);
    let row = rows
        .iter()
        .find(|r| r.contains(&item.to_string()))
        .expect("the looked-up item is in the catalog");
    assert!(
        row.contains(&"NEW-SKU 1".to_string()) && row.contains(&"Brand new thing".to_string()),
        "{row:?}"
    );
    // ...so after a restart (no lookup cache) its next alert names it without asking again.
    // (Stopped cleanly: a killed worker's pending lease would hold the next event a minute.)
    worker.sigterm();
    worker.wait_exit(stockhook_tests::deadline_in(Duration::from_secs(60)));
    let worker = run_with_token(&dir, &cfg);
    post_level(&rx, item, location, 0, "lookup-2");
    let mails = stockhook_tests::stack::wait_eml(&dir.data_dir(), 2, Duration::from_secs(60));
    let second = mails
        .iter()
        .find(|m| m.subject().starts_with("Out of stock"))
        .unwrap_or_else(|| panic!("an out-of-stock email: {mails:#?}"));
    assert!(
        second.subject().contains("Brand new thing") || second.text().contains("Brand new thing"),
        "{}",
        second.text()
    );
    assert!(second.text().contains("NEW-SKU 1"), "{}", second.text());
    assert_eq!(
        fake.requests("inventoryItem"),
        1,
        "the catalog named it: no second lookup"
    );
    drop(worker);
}

#[test]
fn sync_on_the_nats_backend_applies_and_corrects_through_jetstream_kv() {
    let Some(nats) = stockhook_test_kit::nats::start_required() else {
        return;
    };
    let dir = TestDir::new("sync-nats");
    let fake = FakeShopify::start(Shop::generated(TOKEN, 300, 0, 9));
    let api = format!(
        "{{ shop_domain = \"acme.myshopify.com\", access_token_env = \"SHOP_TOKEN\", api_base = {} }}",
        toml_str(&fake.base())
    );
    let cfg = dir.write_config(
        "stockhook.toml",
        &dir.config()
            .queue("backend", "\"nats\"")
            .queue("nats_url", &toml_str(&nats.url))
            .recipients(&["ops@example.com"])
            .source(SourceSpec::shopify(SHOP, "whsec-shop").with("shopify_sync", &api)),
    );
    let p = sync_cli(&dir, &cfg, &["--json"]);
    assert_exit(&p, 0);
    assert_eq!(reports(&p)[0]["items"], 300);
    assert_eq!(reports(&p)[0]["alerts"], 0);
    assert_eq!(export_rows(&dir, &cfg).len(), 300);

    let target = fake.with(|s| {
        let v = s.variants[5].clone();
        let loc = s.locations[0].0;
        s.levels.insert((v.inventory_item, loc), 0);
        v
    });
    let p = sync_cli(&dir, &cfg, &["--json"]);
    assert_exit(&p, 0);
    assert_eq!(
        reports(&p)[0]["alerts"],
        1,
        "the corrected level raises out of stock: {}",
        p.stdout()
    );
    let header = worker_cli_ok(&dir, &cfg, &["export", "--csv"]);
    let cols: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    let col = |n: &str| cols.iter().position(|c| *c == n).unwrap();
    let rows = export_rows(&dir, &cfg);
    let row = rows
        .iter()
        .find(|r| r[col("item")] == target.inventory_item.to_string())
        .unwrap();
    assert_eq!(row[col("available")], "0", "{row:?}");
    let s = stats(&dir, &cfg);
    assert!(synced(&s), "{s:#}");
}

/// By hand, for docs/PERFORMANCE.md ("Catalog sync"): a 50,000-variant shop stocked at 2
/// locations, served by the fake Shopify 250 nodes a page, synced at start by the worker
/// (`run`). The worker's own CPU (utime + stime) and peak RSS (VmHWM) are read from /proc once
/// the sync is recorded, and must stay under the bounds (60 s, 128 MiB). Run it on the
/// release build:
/// `cargo test --release -p stockhook-tests --test sync sync_of_50k_variants -- --ignored --nocapture`
#[test]
#[ignore]
fn sync_of_50k_variants_stays_within_cpu_and_memory() {
    const VARIANTS: usize = 50_000;
    let dir = TestDir::new("sync-50k");
    let fake = FakeShopify::start(Shop::generated(TOKEN, VARIANTS, 1, 20));
    let cfg = config(&dir, &fake, None, "0s");
    let worker = run_with_token(&dir, &cfg);
    let started = std::time::Instant::now();
    // Its log line, not `stats` (which reads every item through the worker's socket, and
    // would be measured with it).
    expect_within(
        Duration::from_secs(900),
        "the start-up sync of 50,000 variants",
        || worker.stderr().contains("catalog synced").then_some(()),
    );
    let took = started.elapsed();
    let pid = worker.pid();
    let cpu = stockhook_tests::proc::cpu_seconds(pid).expect("the worker's /proc/PID/stat");
    let hwm = stockhook_tests::proc::status_kib(pid, "VmHWM:").expect("the worker's VmHWM");
    let rss = stockhook_tests::proc::status_kib(pid, "VmRSS:").unwrap_or(0);
    println!(
        "catalog sync: {VARIANTS} variants x 2 locations, {} variant pages, {} level pages: \
         wall {:.1} s, worker CPU {cpu:.1} s (utime+stime, start-up included), \
         VmHWM {:.1} MiB, VmRSS after {:.1} MiB",
        fake.requests("productVariants"),
        fake.requests("inventoryLevels"),
        took.as_secs_f64(),
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0,
    );
    let s = stats(&dir, &cfg);
    assert_eq!(s["sync"]["sources"][SHOP]["errors"], 0, "{s:#}");
    assert_eq!(s["catalog"]["items"], VARIANTS as u64, "{s:#}");
    assert_eq!(
        fake.requests("productVariants"),
        VARIANTS.div_ceil(250) as u64
    );
    assert!(cpu < 60.0, "worker CPU {cpu:.1} s for the sync");
    assert!(
        hwm < 128 * 1024,
        "worker peak RSS {:.1} MiB",
        hwm as f64 / 1024.0
    );
}

/// The sync schedule follows a SIGHUP: a source given API credentials by a reload is synced at
/// once (it never synced), and a shorter `[sync] interval` takes effect without a restart.
#[test]
fn a_reload_that_adds_a_sync_source_or_shortens_the_interval_takes_effect() {
    let dir = TestDir::new("sync-sighup");
    let fake = FakeShopify::start(Shop::generated(TOKEN, 5, 0, 12));
    // First without an API for the source: nothing to sync.
    let plain = dir
        .config()
        .top("sync", "{ interval = \"1h\" }")
        .recipients(&["ops@example.com"])
        .source(SourceSpec::shopify(SHOP, "whsec-shop"));
    let cfg = dir.write_config("stockhook.toml", &plain);
    let worker = run_with_token(&dir, &cfg);
    assert_eq!(fake.requests("productVariants"), 0);

    // The source gets its credentials: a reload, and it syncs (it never did).
    config(&dir, &fake, None, "1h");
    worker.signal(libc::SIGHUP);
    let s = wait_synced(&dir, &cfg, "the added source's first sync");
    assert_eq!(s["catalog"]["items"], 5, "{s:#}");
    assert_eq!(fake.requests("productVariants"), 1);

    // A one-second interval: more syncs follow without a restart.
    config(&dir, &fake, None, "1s");
    worker.signal(libc::SIGHUP);
    expect_within(
        Duration::from_secs(60),
        "two more syncs at the new interval",
        || (fake.requests("productVariants") >= 3).then_some(()),
    );
    assert!(
        worker.stderr().contains("sync interval changed"),
        "{}",
        worker.stderr()
    );
    drop(worker);
}
