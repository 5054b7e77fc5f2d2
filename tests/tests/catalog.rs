//! End to end: `stockhook-worker import` and `preview` (issue 14's import and preview, issue 21's
//! preview of removed items), with the real binaries on loopback and a real SMTP server.
//!
//! Imports use the published sample files in `worker/tests/data/catalog/` (README there names
//! their sources). Nothing sleeps to wait: conditions are polled with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;
use stockhook_tests::config::toml_str;
use stockhook_tests::http;
use stockhook_tests::smtp::SmtpSink;
use stockhook_tests::stack::{
    expect_within, maildir_emails, start_worker, stat, stats, wait_stats, worker_cli, worker_cli_ok,
};
use stockhook_tests::{sign, SourceSpec, TestDir};

const SECRET: &str = "shpss_catalog_0123456789";
const TO: &str = "seller@example.com";
const SETTLE: Duration = Duration::from_secs(60);

fn sample(name: &str) -> PathBuf {
    stockhook_tests::bins::repo_root()
        .join("worker/tests/data/catalog")
        .join(name)
}

fn config(dir: &TestDir, smtp: Option<&SmtpSink>) -> PathBuf {
    std::fs::create_dir_all(dir.data_dir()).unwrap();
    let mut c = dir
        .config()
        .recipients(&[TO])
        .source(SourceSpec::shopify("shop", SECRET));
    if let Some(s) = smtp {
        c = c.email("smtp_url", &toml_str(&s.url()));
    }
    dir.write_config("stockhook.toml", &c)
}

/// A test directory `name` whose config ([`config`]) emails an SMTP sink, and the sink (in a
/// directory of its own, returned first to be kept alive as long as the sink).
fn with_sink(name: &str) -> (TestDir, SmtpSink, TestDir, PathBuf) {
    let holder = TestDir::new(&format!("{name}-sink"));
    let sink = SmtpSink::start(&holder);
    let dir = TestDir::new(name);
    let cfg = config(&dir, Some(&sink));
    (holder, sink, dir, cfg)
}

fn import(dir: &TestDir, cfg: &Path, file: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["import", "--source", "shop", "--json"];
    args.extend(extra);
    let f = file.to_str().unwrap();
    args.push(f);
    let out = worker_cli_ok(dir, cfg, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("import --json is not JSON ({e}): {out}"))
}

/// Every published sample is read with the format its header names, rows and `not stocked`
/// cells counted as the file has them, and a dry run writes nothing.
#[test]
fn each_published_format_is_detected_and_a_dry_run_writes_nothing() {
    let dir = TestDir::new("import-formats");
    let cfg = config(&dir, None);
    let cases = [
        (
            "shopify_product_template__2024-format.csv",
            "shopify_products",
        ),
        (
            "shopify_product_template__2021-format.csv",
            "shopify_products",
        ),
        (
            "shopify_inventory_export__2024-format__nsls.csv",
            "shopify_inventory_2024",
        ),
        (
            "shopify_inventory_export__2023-format__olt.csv",
            "shopify_inventory_2023",
        ),
        (
            "shopify_inventory_export__legacy-per-location-column__poptoys__first25lines.csv",
            "shopify_inventory_per_location",
        ),
        (
            "amazon_all_listings_report__zynk_docs_sample.txt",
            "amazon_all_listings",
        ),
    ];
    for (file, format) in cases {
        let path = sample(file);
        let bytes = std::fs::read(&path).unwrap();
        let v = import(&dir, &cfg, &path, &["--dry-run"]);
        assert_eq!(v["format"], format, "{file}: {v:#}");
        assert_eq!(v["dry_run"], true);
        // Data rows as the csv crate counts records (quoted newlines in Body (HTML) included):
        // never more than the file's lines less the header.
        let lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as i64;
        let rows = v["rows"].as_i64().unwrap();
        assert!(
            rows > 0 && rows < lines,
            "{file}: {rows} rows of {lines} lines"
        );
        if file.contains("nsls") {
            let not_stocked = String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| l.contains(",not stocked,"))
                .count() as i64;
            assert_eq!(v["catalog_only"].as_i64().unwrap(), not_stocked, "{v:#}");
        }
    }
    let s = stats(&dir, &cfg);
    assert_eq!(
        stat(&s, "catalog.items"),
        0,
        "dry runs wrote nothing: {s:#}"
    );
}

/// Posts a bare signed `inventory_levels/update` (2 left at location 655441491) for `item` at
/// `at`, and returns the one low-stock email it brings to the SMTP sink.
fn low_level_email(
    rx: &stockhook_tests::Proc,
    sink: &SmtpSink,
    item: u64,
    at: &str,
    webhook_id: &str,
) -> stockhook_tests::stack::Email {
    let body = serde_json::json!({
        "inventory_item_id": item,
        "location_id": 655_441_491u64,
        "available": 2,
        "updated_at": at,
    })
    .to_string();
    let h = sign::shopify(
        SECRET,
        body.as_bytes(),
        "inventory_levels/update",
        webhook_id,
    );
    let r = http::post(rx.addr(), "/webhooks/shop", &h, body.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    let mut mails = expect_within(SETTLE, "the low-stock email in the SMTP sink", || {
        let m = maildir_emails(sink);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(mails.len(), 1, "{mails:#?}");
    mails.remove(0)
}

/// While the worker runs (through its socket): a catalog file with titles, SKUs and location
/// names, then a bare signed `inventory_levels/update` for one of its items: the email names
/// the product, the SKU and the location. The same file again changes nothing.
#[test]
fn import_while_running_then_a_bare_level_webhook_names_product_sku_and_location() {
    let (_holder, sink, dir, cfg) = with_sink("import-running");
    let rx = dir.receiver(&cfg);
    let worker = start_worker(&dir, &cfg);
    // stockhook's own export format (the one format that carries Shopify ids), with the
    // location names column the importer also reads.
    let file = dir.write(
        "catalog.csv",
        "source,platform,item,sku,title,available,locations,location_names\n\
         shop,shopify,808950810,MUG-BLUE-1,Blue enamel mug,40,655441491=40,655441491=Main warehouse\n\
         shop,shopify,808950811,MUG-RED-1,Red enamel mug,30,655441491=30,655441491=Main warehouse\n",
    );
    let v = import(&dir, &cfg, &file, &[]);
    assert_eq!(v["format"], "stockhook", "{v:#}");
    assert_eq!(v["items"], 2);
    assert_eq!(
        v["alerts"].as_array().unwrap().len(),
        0,
        "40 and 30 are not low"
    );
    let again = import(&dir, &cfg, &file, &[]);
    assert_eq!(again["already_imported"], true, "{again:#}");

    let m = &low_level_email(&rx, &sink, 808_950_810, "2030-01-01T10:00:00Z", "lvl-1");
    assert!(
        m.subject().contains("Blue enamel mug"),
        "subject names the product: {}",
        m.subject()
    );
    m.assert_field("808950810", "SKU", "MUG-BLUE-1");
    m.assert_field("808950810", "Location", "Main warehouse");
    let s = stats(&dir, &cfg);
    assert_eq!(stat(&s, "catalog.items"), 2, "{s:#}");
    // The export carries the names back, so an export can be imported into another install.
    let export = worker_cli_ok(&dir, &cfg, &["export", "--csv"]);
    assert!(
        export.lines().next().unwrap().ends_with(",location_names")
            && export.contains("655441491=Main warehouse"),
        "{export}"
    );
    drop(worker);
    drop(rx);
}

/// While the worker is stopped (straight to the state): a published inventory export with
/// several items below the threshold; imported twice, it raises its alerts once, and they go
/// out as one digest email when the worker starts.
#[test]
fn import_while_stopped_the_same_file_twice_gives_one_digest_email() {
    let (_holder, sink, dir, cfg) = with_sink("import-stopped");
    let path =
        sample("shopify_inventory_export__legacy-per-location-column__poptoys__first25lines.csv");
    // The items below the default threshold (5), from the file itself: the last column.
    let text = std::fs::read_to_string(&path).unwrap();
    let low: Vec<String> = text
        .lines()
        .skip(1)
        .filter(|l| {
            l.rsplit(',')
                .next()
                .and_then(|n| n.trim().parse::<i64>().ok())
                .is_some_and(|n| n < 5)
        })
        .map(|l| l.split(',').nth(8).unwrap().to_string())
        .collect();
    assert!(low.len() >= 2, "the sample has several low items: {low:?}");

    let first = import(&dir, &cfg, &path, &[]);
    assert_eq!(first["already_imported"], false);
    let mut skus: Vec<String> = first["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["sku"].as_str().unwrap().to_string())
        .collect();
    skus.sort();
    let mut want = low.clone();
    want.sort();
    assert_eq!(skus, want);
    let second = import(&dir, &cfg, &path, &[]);
    assert_eq!(second["already_imported"], true, "{second:#}");
    assert_eq!(second["alerts"].as_array().unwrap().len(), 0);

    let worker = start_worker(&dir, &cfg);
    let s = wait_stats(&dir, &cfg, SETTLE, "the import's alerts are sent", |s| {
        stat(s, "alerts.sent") == low.len() as i64
    });
    assert_eq!(stat(&s, "alerts.created"), low.len() as i64, "{s:#}");
    let mails = maildir_emails(&sink);
    assert_eq!(mails.len(), 1, "one digest email: {mails:#?}");
    assert_eq!(mails[0].alert_ids().len(), low.len());
    drop(worker);
}

/// A catalog item with stock and no sale shows up in `preview --at <now + no_sales_days + 1
/// day>`, not before; the preview sends and writes nothing.
#[test]
fn preview_shows_an_imported_item_with_stock_and_no_sale() {
    let dir = TestDir::new("preview");
    let cfg = config(&dir, None);
    let path = sample("amazon_all_listings_report__zynk_docs_sample.txt");
    import(&dir, &cfg, &path, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 86_400;
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs)
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let before = stats(&dir, &cfg);
    let early = worker_cli_ok(
        &dir,
        &cfg,
        &["preview", "--at", &at(now + 59 * day), "--json"],
    );
    let early: serde_json::Value = serde_json::from_str(&early).unwrap();
    assert_eq!(early.as_array().unwrap().len(), 0, "{early:#}");
    let out = worker_cli_ok(
        &dir,
        &cfg,
        &["preview", "--at", &at(now + 61 * day), "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["rule"], "no_sales");
            a["item"].as_str().unwrap()
        })
        .collect();
    // Every row of the sample has quantity 1 (merchant-fulfilled): all three are quiet stock.
    assert_eq!(items, vec!["1234567", "35-GFRR-W3VC", "ATV2"], "{v:#}");
    let after = stats(&dir, &cfg);
    assert_eq!(
        stat(&before, "alerts.created"),
        stat(&after, "alerts.created")
    );
    assert_eq!(
        stat(&before, "alerts.pending"),
        stat(&after, "alerts.pending"),
        "the preview wrote nothing (the pending ones are the import's low-stock alerts)"
    );
}

/// A malformed row imports nothing and the error names the file, the line and the column;
/// `--skip-bad-rows` imports the rest and lists it. An unknown file lists the known formats and
/// the header it read.
#[test]
fn a_malformed_row_imports_nothing_and_an_unknown_format_lists_the_known_ones() {
    let dir = TestDir::new("import-bad");
    let cfg = config(&dir, None);
    let text =
        std::fs::read_to_string(sample("shopify_inventory_export__2023-format__olt.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 10 (1-based): its Available cell (column 16) made unreadable.
    let mut cells: Vec<String> = lines[9].split(',').map(str::to_string).collect();
    cells[15] = "lots".into();
    lines[9] = cells.join(",");
    let bad = dir.write("bad.csv", lines.join("\n") + "\n");
    let p = worker_cli(
        &dir,
        &cfg,
        &["import", "--source", "shop", bad.to_str().unwrap()],
    );
    assert_eq!(p.status().and_then(|s| s.code()), Some(1), "{}", p.stderr());
    let err = p.stderr();
    assert!(
        err.contains("bad.csv") && err.contains("line 10") && err.contains("column `Available`"),
        "{err}"
    );
    assert_eq!(
        stat(&stats(&dir, &cfg), "catalog.items"),
        0,
        "nothing imported"
    );

    let v = import(&dir, &cfg, &bad, &["--skip-bad-rows"]);
    let skipped = v["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{v:#}");
    assert_eq!(skipped[0]["line"], 10);
    assert_eq!(
        stat(&stats(&dir, &cfg), "catalog.items"),
        v["items"].as_i64().unwrap()
    );

    let odd = dir.write("odd.csv", "name,qty\nmug,3\n");
    let p = worker_cli(
        &dir,
        &cfg,
        &["import", "--source", "shop", odd.to_str().unwrap()],
    );
    assert_eq!(p.status().and_then(|s| s.code()), Some(1));
    let err = p.stderr();
    assert!(err.contains("name,qty"), "the header read: {err}");
    assert!(err.contains("Shopify inventory export (2024)"), "{err}");
    assert!(err.contains("Amazon All Listings Report"), "{err}");
}

/// A Shopify product CSV (the published 2024 template's header) of `n` tracked variants, 3 per
/// product, 20 in stock each: the by-hand import benchmark's file.
fn product_csv(n: usize) -> String {
    let template = std::fs::read_to_string(sample("shopify_product_template__2024-format.csv"))
        .expect("the published template");
    let header = template.lines().next().expect("its header").trim_end();
    let cols: Vec<&str> = header.split(',').collect();
    let mut out = String::with_capacity(n * 300);
    out.push_str(header);
    out.push('\n');
    for i in 0..n {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match *c {
                "Handle" => format!("product-{}", i / 3),
                "Title" if i % 3 == 0 => format!("Product {}", i / 3),
                "Option1 Name" if i % 3 == 0 => "Size".into(),
                "Option1 Value" => format!("Size {}", i % 3 + 1),
                "Variant SKU" => format!("SKU-{i:06}"),
                "Variant Inventory Tracker" => "shopify".into(),
                "Variant Inventory Qty" => "20".into(),
                "Variant Price" => "10".into(),
                _ => String::new(),
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// CPU seconds (user + system) and peak RSS (KiB) of this process's reaped children so far.
fn children_usage() -> (f64, u64) {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(u.ru_utime) + secs(u.ru_stime), u.ru_maxrss as u64)
}

/// By hand, for docs/PERFORMANCE.md ("Catalog sync"): importing 50,000 rows (a Shopify product
/// CSV) into a stopped worker's state, then the same file again (nothing to do). Prints the
/// wall time and the import process's CPU and peak RSS. Run it on the release build:
/// `cargo test --release -p stockhook-tests --test catalog import_of_50k_rows -- --ignored --nocapture`
#[test]
#[ignore]
fn import_of_50k_rows_is_one_write_batch_per_chunk() {
    const ROWS: usize = 50_000;
    let dir = TestDir::new("import-50k");
    let cfg = config(&dir, None);
    let file = dir.write("products-50k.csv", product_csv(ROWS));
    for round in ["first", "again"] {
        let (cpu0, _) = children_usage();
        let t = std::time::Instant::now();
        let args = [
            "--config",
            cfg.to_str().unwrap(),
            "import",
            "--source",
            "shop",
            "--json",
            file.to_str().unwrap(),
        ];
        let p = dir.run(
            stockhook_tests::bins::worker(),
            &args,
            Duration::from_secs(1800),
        );
        let wall = t.elapsed();
        let (cpu1, maxrss) = children_usage();
        assert_eq!(p.status().and_then(|s| s.code()), Some(0), "{}", p.stderr());
        let v: serde_json::Value = serde_json::from_str(&p.stdout()).expect("import --json");
        assert_eq!(v["items"], ROWS as u64, "{v}");
        assert_eq!(v["already_imported"], round == "again", "{v}");
        println!(
            "import {round}: {ROWS} rows in {:.1} s wall, {:.1} s CPU, peak RSS of the children so far {:.1} MiB",
            wall.as_secs_f64(),
            cpu1 - cpu0,
            maxrss as f64 / 1024.0
        );
    }
    assert_eq!(stat(&stats(&dir, &cfg), "catalog.items"), ROWS as i64);
}

/// Shopify's product CSV carries no ids: its items are known by SKU until a webhook names the
/// same variants by id. Import the published template, then a signed `products/update` (the
/// published payload's shape) naming the jeans' variants with their ids and SKUs, then a bare
/// `inventory_levels/update` for one: still one item per variant (no duplicate), and the email
/// names the product and the SKU.
#[test]
fn a_product_csv_item_merges_with_the_webhook_that_names_its_ids() {
    let (_holder, sink, dir, cfg) = with_sink("import-merge");
    let rx = dir.receiver(&cfg);
    let worker = start_worker(&dir, &cfg);
    let v = import(
        &dir,
        &cfg,
        &sample("shopify_product_template__2024-format.csv"),
        &[],
    );
    let items = v["items"].as_i64().unwrap();
    assert_eq!(items, 16, "12 shirts, 3 jeans, 1 beanie: {v:#}");
    assert_eq!(v["alerts"].as_array().unwrap().len(), 0, "{v:#}");

    // The jeans as Shopify describes them: (variant id, inventory item id, SKU, size, qty).
    let jeans = [
        (44_001u64, 55_001u64, "PNT_DEN_285", "28", 20),
        (44_002, 55_002, "PNT_DEN_305", "30", 15),
        (44_003, 55_003, "PNT_DEN_405", "40", 10),
    ];
    let published: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            stockhook_tests::bins::repo_root()
                .join("worker/tests/data/shopify/products_create_2023-07.json"),
        )
        .unwrap(),
    )
    .unwrap();
    // Webhook times after the import's (they carry whole seconds; the import's is in ms).
    let after_import = |secs: i64| {
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let now = after_import(2);
    let mut product = published.clone();
    product["id"] = serde_json::json!(33_001u64);
    product["title"] = "Example Jeans".into();
    product["handle"] = "example-pants".into();
    product["updated_at"] = now.clone().into();
    product["variants"] = jeans
        .iter()
        .map(|(id, inv, sku, size, qty)| {
            let mut v = published["variants"][0].clone();
            v["id"] = serde_json::json!(id);
            v["product_id"] = serde_json::json!(33_001u64);
            v["inventory_item_id"] = serde_json::json!(inv);
            v["sku"] = (*sku).into();
            v["title"] = (*size).into();
            v["option1"] = (*size).into();
            v["inventory_quantity"] = serde_json::json!(qty);
            v
        })
        .collect();
    let body = product.to_string();
    let h = sign::shopify(SECRET, body.as_bytes(), "products/update", "prod-1");
    let r = http::post(rx.addr(), "/webhooks/shop", &h, body.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    wait_stats(&dir, &cfg, SETTLE, "the products/update is applied", |s| {
        // The import's event and the webhook.
        stat(s, "events.processed") >= 2
    });

    let m = &low_level_email(&rx, &sink, 55_002, &after_import(3), "lvl-2");
    assert!(
        m.subject().contains("Example Jeans"),
        "subject names the product: {}",
        m.subject()
    );
    m.assert_field("55002", "SKU", "PNT_DEN_305");
    let s = stats(&dir, &cfg);
    assert_eq!(
        stat(&s, "catalog.items"),
        items,
        "no item twice (by SKU and by id): {s:#}"
    );
    let export = worker_cli_ok(&dir, &cfg, &["export", "--csv"]);
    assert!(
        !export.contains("sku:PNT_DEN_") && export.contains("55002,PNT_DEN_305"),
        "the jeans are known by their ids now:\n{export}"
    );
    // The file saved again (LF line endings: other bytes, the same rows) lands on the same
    // items, matched by SKU.
    let text =
        std::fs::read_to_string(sample("shopify_product_template__2024-format.csv")).unwrap();
    let resaved = dir.write("resaved.csv", text.replace("\r\n", "\n"));
    let again = import(&dir, &cfg, &resaved, &[]);
    assert_eq!(again["already_imported"], false, "{again:#}");
    assert_eq!(stat(&stats(&dir, &cfg), "catalog.items"), items);
    drop(worker);
    drop(rx);
}
