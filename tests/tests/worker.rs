//! End-to-end tests of `stockhook-worker` (issue 3): the real receiver and worker binaries on one
//! data dir, fed signed webhooks over loopback HTTP as the platforms send them, their effects
//! read back as the seller and the operator see them: alert emails (`.eml` files, or a real SMTP
//! server process writing a Maildir), `stats --json`, `failed list|replay`, `export --csv`.
//!
//! Each test starts its own processes in its own temporary directory, so they run in parallel.
//! Nothing sleeps to wait: conditions are polled with a deadline. Every count asserted is exact,
//! and "no second email" is asserted only once the worker has provably processed the event that
//! could have caused one (its counters say so; alerts are created in the same transaction).
//!
//! | # | test | what |
//! |---|---|---|
//! | 1 | `product_then_inventory_level_...` | product + level: one low-stock email with its fields; duplicate delivery and a lower level: none more |
//! | 2 | `recovery_rearms_...` | 2 (email), 10 (none), 1 (second email, new alert id) |
//! | 3 | `a_late_older_level_...` | an older level after a newer one changes nothing (`export --csv`) |
//! | 4 | `over_smtp_...` | one email in a real SMTP server's Maildir, Message-ID as the outbox recorded it |
//! | 5 | `smtp_down_at_first_...` | refused: pending, retried, not failed; server up: delivered once |
//! | 6 | `malformed_payload_...` | `not json` dead-lettered; `failed list`, `replay --all --dry-run`, `replay ID` (waits: failed again, exit 1), stats |
//! | 6b | `replay_after_a_platform_fix_...` | wrong `platform` dead-letters; replay unchanged: exit 1; `platform` fixed: replay reads it as now configured, reports it processed, its email arrives |
//! | 7 | `unknown_topic_...` | acknowledged and counted as ignored, not failed |
//! | 8 | `the_old_notes_simple_forms_...` | the Flask notes' two unsigned forms: low stock and out of stock emails |
//! | 9 | `amazon_eventbridge_...` | EventBridge-wrapped MFN quantity change: one email; the same notification again: a duplicate |
//! | 10 | `sigterm_mid_stream_...` | SIGTERM while webhooks stream in: exit 0; a new worker finishes, every item once |
//!
//! Run: `cargo test -p stockhook-tests --test worker`.

use serde_json::json;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stockhook_tests::config::toml_str;
use stockhook_tests::http::{self, Resp};
use stockhook_tests::proc::mail_files;
use stockhook_tests::smtp::SmtpSink;
use stockhook_tests::stack::{
    assert_stats, eml_emails, expect_within, free_port, maildir_emails, smtp_sink_on, start_worker,
    stat, stats, wait_eml, wait_stats, worker_cli, worker_cli_ok, Accounting, Email,
};
use stockhook_tests::{fixtures, sign, ConfigBuilder, Proc, SourceSpec, TestDir};

const SHOP: &str = "shop";
const SECRET: &str = "shpss_worker_e2e_0123456789abcdef";
const TO: &str = "inventory@example.com";
const LOCATION: u64 = 655_441_491;

/// Waits for the pipeline to get somewhere: emails, counters.
const SETTLE: Duration = Duration::from_secs(30);

/// A delivery id no other request in this test run uses.
fn wid(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Receiver and worker on one data dir. Fields drop in order: processes first, the directory
/// last.
struct Pipeline {
    worker: Proc,
    rx: Proc,
    config: PathBuf,
    dir: TestDir,
}

impl Pipeline {
    fn addr(&self) -> SocketAddr {
        self.rx.addr()
    }
    fn data(&self) -> PathBuf {
        self.dir.data_dir()
    }
    fn stats(&self) -> serde_json::Value {
        stats(&self.dir, &self.config)
    }
    /// Polls stats until `done`.
    fn wait(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        wait_stats(&self.dir, &self.config, SETTLE, what, done)
    }
    /// [`Self::wait`] for one stat at `path` to reach `n`.
    fn wait_stat(&self, what: &str, path: &str, n: i64) -> serde_json::Value {
        self.wait(what, |s| stat(s, path) == n)
    }
    fn cli_ok(&self, args: &[&str]) -> String {
        worker_cli_ok(&self.dir, &self.config, args)
    }
    /// The CLI run to completion, whatever its exit status.
    fn cli(&self, args: &[&str]) -> Proc {
        worker_cli(&self.dir, &self.config, args)
    }
}

/// The config every test starts from: one Shopify source, one recipient, short email backoff.
fn base(dir: &TestDir) -> ConfigBuilder {
    dir.config()
        .recipients(&[TO])
        .email("max_backoff", "\"2s\"")
        .source(SourceSpec::shopify(SHOP, SECRET))
}

fn start(name: &str, cfg: impl FnOnce(&TestDir) -> ConfigBuilder) -> Pipeline {
    let dir = TestDir::new(name);
    let config = dir.write_config("stockhook.toml", &cfg(&dir));
    let rx = dir.receiver(&config);
    let worker = start_worker(&dir, &config);
    Pipeline {
        worker,
        rx,
        config,
        dir,
    }
}

fn post_shop(addr: SocketAddr, body: &[u8], topic: &str, webhook_id: &str) -> Resp {
    let h = sign::shopify(SECRET, body, topic, webhook_id);
    http::post(addr, "/webhooks/shop", &h, body)
}

/// Asserts `200 {"status":"accepted","id":"evt_..."}`; returns the id.
fn accepted(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{r:?}");
    let j = r.json();
    assert_eq!(j["status"], "accepted", "{r:?}");
    j["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id: {r:?}"))
        .to_string()
}

/// A Shopify `inventory_levels/update` body.
fn level(item: u64, location: u64, available: i64, updated_at: &str) -> Vec<u8> {
    json!({
        "inventory_item_id": item,
        "location_id": location,
        "available": available,
        "updated_at": updated_at,
    })
    .to_string()
    .into_bytes()
}

fn post_level(p: &Pipeline, item: u64, available: i64, at: &str) -> String {
    accepted(&post_shop(
        p.addr(),
        &level(item, LOCATION, available, at),
        "inventory_levels/update",
        &wid("level"),
    ))
}

/// The one `.eml` file expected so far, after waiting for it.
fn only_email(p: &Pipeline) -> Email {
    let mut all = wait_eml(&p.data(), 1, SETTLE);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

/// `<32 hex digits@stockhook>`.
fn assert_message_id(e: &Email) {
    let id = e.message_id();
    let hex = id
        .strip_prefix('<')
        .and_then(|s| s.strip_suffix("@stockhook>"))
        .unwrap_or_else(|| panic!("Message-ID {id:?} is not <hex@stockhook>"));
    assert!(
        hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "Message-ID {id:?}"
    );
}

/// The single alert id of an email: 32 hex digits.
fn one_alert_id(e: &Email) -> String {
    let ids = e.alert_ids();
    assert_eq!(ids.len(), 1, "{e:?}");
    assert!(
        ids[0].len() == 32 && ids[0].chars().all(|c| c.is_ascii_hexdigit()),
        "alert id {:?}",
        ids[0]
    );
    ids[0].clone()
}

/// Asserts the text part's fields for the alert about `item`.
fn assert_fields(e: &Email, item: &str, want: &[(&str, &str)]) {
    for (label, value) in want {
        e.assert_field(item, label, value);
    }
}

// 1 -------------------------------------------------------------------------------------------

/// The product of `deploy/samples/low-stock.json` with both variants well stocked.
fn tshirt_product() -> Vec<u8> {
    let mut p: serde_json::Value = serde_json::from_slice(
        &std::fs::read(stockhook_tests::bins::repo_root().join("deploy/samples/low-stock.json"))
            .expect("reading deploy/samples/low-stock.json"),
    )
    .expect("deploy/samples/low-stock.json is JSON");
    for v in p["variants"].as_array_mut().expect("variants") {
        v["inventory_quantity"] = json!(40);
    }
    p.to_string().into_bytes()
}

const TSHIRT_L: u64 = 46_208_873_541_699;

#[test]
fn product_then_inventory_level_gives_exactly_one_low_stock_email() {
    let p = start("w-lowstock", |d| {
        d.config()
            .recipients(&[TO])
            .email("max_backoff", "\"2s\"")
            .source(
                SourceSpec::shopify(SHOP, SECRET)
                    .with("store_url", "\"acme-shop.myshopify.com\"")
                    .with("location_names", r#"{ "655441491" = "Main warehouse" }"#),
            )
    });
    accepted(&post_shop(
        p.addr(),
        &tshirt_product(),
        "products/update",
        &wid("product"),
    ));
    let s = p.wait_stat("the product is processed", "events.processed", 1);
    assert_eq!(stat(&s, "alerts.created"), 0, "40 in stock is no alert");

    // 3 at one location, newer than the product's total: low stock.
    let level_wid = wid("level");
    let body = level(TSHIRT_L, LOCATION, 3, "2024-05-14T17:00:00-04:00");
    accepted(&post_shop(
        p.addr(),
        &body,
        "inventory_levels/update",
        &level_wid,
    ));
    let e = only_email(&p);
    assert_eq!(
        e.subject(),
        "Low stock: Organic Cotton T-Shirt - Blue / L, 3 left (shop)"
    );
    assert_eq!(e.header("To"), Some(TO));
    assert_message_id(&e);
    let alert = one_alert_id(&e);
    assert_eq!(e.items(), vec![TSHIRT_L.to_string()]);
    let text = e.text();
    assert!(
        text.contains("Low stock: Organic Cotton T-Shirt - Blue / L"),
        "{text}"
    );
    assert_fields(
        &e,
        &TSHIRT_L.to_string(),
        &[
            ("SKU", "TSHIRT-BLUE-L"),
            ("Item id", "46208873541699 (shopify)"),
            ("Location", "Main warehouse"),
            ("Available", "3"),
            // The product's total before the per-location report.
            ("Before", "40"),
            ("Threshold", "5"),
            ("Store", "shop (Shopify)"),
            ("When", "Tue 14 May 2024, 21:00 UTC"),
            ("Next step", "Open it in Shopify admin"),
        ],
    );
    assert!(
        text.contains(
            "https://acme-shop.myshopify.com/admin/products/inventory?query=TSHIRT-BLUE-L"
        ),
        "{text}"
    );

    // The platform retries the same delivery: a duplicate, nothing stored.
    let dup = post_shop(p.addr(), &body, "inventory_levels/update", &level_wid);
    assert_eq!(dup.status, 200, "{dup:?}");
    assert_eq!(dup.json()["status"], "duplicate", "{dup:?}");
    // Lower still, but still below: the alert does not fire again.
    post_level(&p, TSHIRT_L, 2, "2024-05-14T18:00:00-04:00");

    // (emails.sent is counted just after the alerts are marked sent: wait for both.)
    let s = p.wait(
        "three events processed, the outbox empty, the email counted",
        |s| {
            stat(s, "events.processed") == 3
                && stat(s, "alerts.pending") == 0
                && stat(s, "emails.sent") >= 1
        },
    );
    assert_stats(&s, "alerts.created=1 alerts.sent=1 emails.sent=1 alerts.failed=0 queue.pending=0 queue.dead=0 sources.shop.processed=3");
    let all = eml_emails(&p.data());
    assert_eq!(all.len(), 1, "a second email: {all:#?}");
    assert_eq!(all[0].alert_ids(), vec![alert]);
    // The repeat says, at info, that the alert already fired and when; no customer data.
    let log = expect_within(SETTLE, "the repeat's log line", || {
        let log = format!("{}{}", p.worker.stdout(), p.worker.stderr());
        log.contains("already fired").then_some(log)
    });
    let line = log
        .lines()
        .find(|l| l.contains("already fired"))
        .expect("the line");
    assert!(line.contains("INFO") || line.contains("\"INFO\""), "{line}");
    assert!(
        line.contains("low_stock alert already fired for it (event of 2024-05-14T21:00:00Z)"),
        "{line}"
    );
    assert!(line.contains("46208873541699"), "{line}");
    assert!(
        !line.contains("Organic") && !line.contains("TSHIRT-BLUE-L"),
        "{line}"
    );
}

// 2 -------------------------------------------------------------------------------------------

#[test]
fn recovery_rearms_the_low_stock_alert() {
    let p = start("w-rearm", base);
    const ITEM: u64 = 900_001;
    post_level(&p, ITEM, 2, "2024-06-01T10:00:00Z");
    let first = only_email(&p);
    let first_id = one_alert_id(&first);
    assert_fields(&first, "900001", &[("Available", "2")]);

    post_level(&p, ITEM, 10, "2024-06-01T11:00:00Z");
    let s = p.wait_stat("the recovery is processed", "events.processed", 2);
    assert_eq!(stat(&s, "alerts.created"), 1, "10 is no alert: {s:#}");
    assert_eq!(mail_files(&p.data()).len(), 1);

    post_level(&p, ITEM, 1, "2024-06-01T12:00:00Z");
    let all = wait_eml(&p.data(), 2, SETTLE);
    assert_eq!(all.len(), 2, "{all:#?}");
    let second = all
        .iter()
        .find(|e| e.alert_ids() != vec![first_id.clone()])
        .unwrap_or_else(|| panic!("no email with a new alert id: {all:#?}"));
    let second_id = one_alert_id(second);
    assert_ne!(second_id, first_id, "a new crossing is a new alert");
    assert_eq!(
        second.subject(),
        "Low stock: untitled item (Shopify inventory item 900001), 1 left (shop)"
    );
    assert_fields(second, "900001", &[("Available", "1"), ("Threshold", "5")]);

    let s = p.wait("three events, outbox empty", |s| {
        stat(s, "events.processed") == 3 && stat(s, "alerts.pending") == 0
    });
    assert_stats(&s, "alerts.created=2 alerts.sent=2");
    assert_eq!(mail_files(&p.data()).len(), 2);
}

// 3 -------------------------------------------------------------------------------------------

#[test]
fn a_late_older_level_never_overwrites_a_newer_one() {
    let p = start("w-order", base);
    const ITEM: u64 = 900_002;
    // The newer report arrives first ...
    post_level(&p, ITEM, 10, "2024-06-02T12:00:00Z");
    // ... then an older one, retried late by the platform, that would have been an alert.
    post_level(&p, ITEM, 1, "2024-06-02T11:59:59Z");
    let s = p.wait_stat("both levels processed", "events.processed", 2);
    assert_stats(
        &s,
        "events.stale_levels=1 alerts.created=0 alerts.pending=0",
    );
    assert!(mail_files(&p.data()).is_empty());

    let csv = p.cli_ok(&["export", "--csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a CSV header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} column in {header:?}"))
    };
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 1, "{csv}");
    let row = &rows[0];
    assert_eq!(row[col("item")], "900002", "{csv}");
    assert_eq!(row[col("source")], SHOP, "{csv}");
    assert_eq!(row[col("available")], "10", "{csv}");
    assert_eq!(row[col("locations")], format!("{LOCATION}=10"), "{csv}");
    assert_eq!(row[col("low_stock_armed")], "true", "{csv}");
}

// 4 -------------------------------------------------------------------------------------------

#[test]
fn over_smtp_one_email_arrives_in_the_maildir() {
    let dir_holder = TestDir::new("w-smtp-sink");
    let sink = SmtpSink::start(&dir_holder);
    let url = sink.url();
    let p = start("w-smtp", |d| base(d).email("smtp_url", &toml_str(&url)));
    post_level(&p, 900_003, 4, "2024-06-03T10:00:00Z");

    let msgs = expect_within(SETTLE, "a message in the SMTP sink's Maildir", || {
        let m = maildir_emails(&sink);
        (!m.is_empty()).then_some(m)
    });
    let e = &msgs[0];
    assert_eq!(
        e.subject(),
        "Low stock: untitled item (Shopify inventory item 900003), 4 left (shop)"
    );
    assert_message_id(e);
    let alert = one_alert_id(e);
    assert_eq!(e.items(), vec!["900003".to_string()]);
    assert_fields(e, "900003", &[("Available", "4"), ("Threshold", "5")]);
    assert_eq!(e.header("To"), Some(TO));

    let s = p.wait("the alert marked sent and the email counted", |s| {
        stat(s, "alerts.sent") == 1 && stat(s, "alerts.pending") == 0 && stat(s, "emails.sent") >= 1
    });
    assert_stats(&s, "emails.sent=1");
    assert_eq!(maildir_emails(&sink).len(), 1, "exactly one copy");
    assert!(
        mail_files(&p.data()).is_empty(),
        "SMTP configured: no .eml files"
    );
    // The outbox remembers the Message-ID the server accepted.
    let shown: serde_json::Value =
        serde_json::from_str(&p.cli_ok(&["failed", "show", &alert, "--json"])).expect("JSON");
    assert_eq!(shown["status"], "sent", "{shown:#}");
    assert_eq!(shown["message_id"], e.message_id(), "{shown:#}");
}

// 5 -------------------------------------------------------------------------------------------

#[test]
fn smtp_down_at_first_then_delivered_once_when_it_comes_up() {
    let port = free_port();
    let p = start("w-smtp-down", |d| {
        base(d).email("smtp_url", &format!("\"smtp://127.0.0.1:{port}\""))
    });
    post_level(&p, 900_004, 1, "2024-06-04T10:00:00Z");

    // Refused: a transient failure, retried; not a failed alert.
    expect_within(SETTLE, "the worker logging a retry", || {
        p.worker.stderr().contains("will retry").then_some(())
    });
    let failed = p.cli_ok(&["failed", "list", "--json"]);
    let failed: serde_json::Value = serde_json::from_str(&failed).expect("JSON");
    assert_eq!(failed, json!([]), "nothing failed while retrying");
    let s = p.stats();
    assert_stats(&s, "alerts.pending=1 alerts.sent=0 alerts.failed=0");

    let sink = smtp_sink_on(&p.dir, port, &p.dir.path().join("smtp-mail"));
    let msgs = expect_within(SETTLE, "the email once the server is up", || {
        let m = maildir_emails(&sink);
        (!m.is_empty()).then_some(m)
    });
    assert_eq!(
        msgs[0].subject(),
        "Low stock: untitled item (Shopify inventory item 900004), 1 left (shop)"
    );
    assert_eq!(msgs[0].items(), vec!["900004".to_string()]);
    let s = p.wait("the alert is marked sent", |s| {
        stat(s, "alerts.sent") == 1 && stat(s, "alerts.pending") == 0
    });
    assert_stats(&s, "alerts.failed=0");
    assert_eq!(maildir_emails(&sink).len(), 1, "exactly one copy");
}

// 6 -------------------------------------------------------------------------------------------

#[test]
fn malformed_payload_is_dead_lettered_listed_and_replayable() {
    let p = start("w-malformed", base);
    // One good event, so the processed counts have something to say.
    post_level(&p, 900_005, 50, "2024-06-05T10:00:00Z");
    let bad = accepted(&post_shop(
        p.addr(),
        b"not json",
        "products/update",
        &wid("bad"),
    ));

    let list = || -> serde_json::Value {
        serde_json::from_str(&p.cli_ok(&["failed", "list", "--json"])).expect("JSON")
    };
    let rows = expect_within(SETTLE, "the bad event in `failed list`", || {
        let l = list();
        (l.as_array().is_some_and(|a| !a.is_empty())).then_some(l)
    });
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = &rows[0];
    assert_eq!(r["id"], bad.as_str(), "{r:#}");
    assert_eq!(r["kind"], "event", "{r:#}");
    assert_eq!(r["source"], SHOP, "{r:#}");
    assert_eq!(r["topic"], "products/update", "{r:#}");
    assert_eq!(r["attempts"], 1, "{r:#}");
    let err = r["error"].as_str().unwrap_or_default();
    assert!(err.contains("JSON"), "error should mention JSON: {r:#}");
    assert!(
        !err.contains("not json"),
        "the body leaked into the error: {r:#}"
    );

    let dry = p.cli_ok(&["failed", "replay", "--all", "--dry-run"]);
    assert!(
        dry.contains(&format!("event {bad}: would fail again:")) && dry.contains("JSON"),
        "{dry}"
    );
    // A dry run changes nothing.
    assert_eq!(list().as_array().map(Vec::len), Some(1));

    // The replay waits for the outcome: read again, dead-lettered again, so it exits 1 and
    // says so (issue 13, item 8: it printed "replayed" and exited 0).
    let r = p.cli(&["failed", "replay", &bad]);
    assert_eq!(r.status().and_then(|s| s.code()), Some(1), "{}", r.dump());
    let err = r.stderr();
    assert!(err.contains(&format!("replayed event {bad}")), "{err}");
    assert!(
        err.contains(&format!("event {bad}: failed again:")) && err.contains("JSON"),
        "{err}"
    );
    // Replayed, read again by the worker, dead-lettered again: twice in its log.
    expect_within(SETTLE, "the replayed event dead-lettered again", || {
        let log = p.worker.stderr();
        let n = log
            .lines()
            .filter(|l| l.contains("event dead-lettered") && l.contains(&bad))
            .count();
        (n == 2).then_some(())
    });
    let s = p.wait("the dead letter back, nothing pending", |s| {
        stat(s, "queue.dead") == 1 && stat(s, "queue.pending") == 0 && stat(s, "queue.leased") == 0
    });
    assert_stats(&s, "sources.shop.dead=1 events.processed=1 sources.shop.processed=1 events.ignored=0 alerts.created=0");
    let rows = list();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows:#}");
    assert_eq!(rows[0]["id"], bad.as_str());
}

// 6b ------------------------------------------------------------------------------------------

/// Issue 13, item 8: a source configured with the wrong `platform` dead-letters a good Shopify
/// event; a replay with the config unchanged fails again (exit 1, saying so); once the operator
/// fixes `platform` and restarts the worker, the replay reads it with the current platform,
/// waits for it, reports it processed (exit 0), and the level it carried raises its email.
#[test]
fn replay_after_a_platform_fix_reads_the_event_with_the_current_config() {
    let wrong = |d: &TestDir| {
        d.config()
            .recipients(&[TO])
            .email("max_backoff", "\"2s\"")
            .source(SourceSpec::new(SHOP, "amazon", "shopify-hmac", &[SECRET]))
    };
    let mut p = start("w-replay-fix", wrong);
    let id = accepted(&post_shop(
        p.addr(),
        &level(900_021, LOCATION, 2, "2024-06-21T10:00:00Z"),
        "inventory_levels/update",
        &wid("fix"),
    ));
    p.wait_stat("read as Amazon and dead-lettered", "queue.dead", 1);

    let r = p.cli(&["failed", "replay", &id]);
    assert_eq!(r.status().and_then(|s| s.code()), Some(1), "{}", r.dump());
    assert!(
        r.stderr().contains(&format!("event {id}: failed again:")),
        "{}",
        r.dump()
    );
    p.wait("dead again", |s| stat(s, "queue.dead") == 1);

    // The fix: platform = "shopify", the worker restarted on it.
    p.worker.sigterm();
    p.worker.wait_exit(stockhook_tests::deadline_in(SETTLE));
    let fixed = p.dir.write_config("stockhook.toml", &base(&p.dir));
    assert_eq!(fixed, p.config);
    p.worker = start_worker(&p.dir, &p.config);

    let out = p.cli_ok(&["failed", "replay", &id]);
    assert!(out.contains(&format!("replayed event {id}")), "{out}");
    assert!(out.contains(&format!("event {id}: processed")), "{out}");
    let e = only_email(&p);
    e.assert_field("900021", "Available", "2");
    let s = p.wait("nothing dead", |s| stat(s, "queue.dead") == 0);
    assert_stats(&s, "events.processed=1");

    // --no-wait returns at once with the old one-line answer (nothing left to replay here).
    let out = p.cli_ok(&["failed", "replay", "--all", "--yes", "--no-wait"]);
    assert_eq!(out, "nothing to replay\n");
}

// 7 -------------------------------------------------------------------------------------------

#[test]
fn unknown_topic_is_acknowledged_and_counted_not_failed() {
    let p = start("w-ignored", base);
    accepted(&post_shop(
        p.addr(),
        br#"{"id":706405506930370084,"email":"bob@example.com"}"#,
        "customers/create",
        &wid("cust"),
    ));
    let s = p.wait("the event is counted", |s| stat(s, "events.ignored") == 1);
    assert_stats(
        &s,
        "events.processed=0 sources.shop.processed=1 queue.dead=0 queue.pending=0 alerts.created=0",
    );
    let failed: serde_json::Value =
        serde_json::from_str(&p.cli_ok(&["failed", "list", "--json"])).expect("JSON");
    assert_eq!(failed, json!([]));
    assert!(mail_files(&p.data()).is_empty());
}

// 8 -------------------------------------------------------------------------------------------

#[test]
fn the_old_notes_simple_forms_give_low_and_out_of_stock_emails() {
    let p = start("w-simple", |d| {
        base(d).source(SourceSpec::new("notes", "simple", "none", &[]).with("insecure", "true"))
    });
    let h = [("Content-Type", "application/json")];
    accepted(&http::post(
        p.addr(),
        "/webhooks/notes",
        &h,
        br#"{"id":1,"title":"Mug","variants":[{"inventory_quantity":2}]}"#,
    ));
    let low = only_email(&p);
    assert_eq!(low.subject(), "Low stock: Mug, 2 left (notes)");
    assert!(low.text().contains("Low stock: Mug"), "{}", low.text());
    assert_eq!(low.items(), vec!["1:0".to_string()]);
    assert_fields(
        &low,
        "1:0",
        &[
            ("Item id", "1:0 (simple)"),
            ("Available", "2"),
            ("Threshold", "5"),
            ("Store", "notes"),
        ],
    );

    accepted(&http::post(
        p.addr(),
        "/webhooks/notes",
        &h,
        br#"{"ASIN":"B0X","product_name":"Cable","quantity":0}"#,
    ));
    let all = wait_eml(&p.data(), 2, SETTLE);
    assert_eq!(all.len(), 2, "{all:#?}");
    let out = all
        .iter()
        .find(|e| e.subject().starts_with("Out of stock"))
        .unwrap_or_else(|| panic!("no out-of-stock email: {all:#?}"));
    assert_eq!(out.subject(), "Out of stock: Cable (notes)");
    assert!(out.text().contains("Out of stock: Cable"), "{}", out.text());
    assert_fields(
        out,
        "B0X",
        &[("Item id", "B0X (simple)"), ("Available", "0")],
    );
    let s = p.wait("both processed, outbox empty", |s| {
        stat(s, "sources.notes.processed") == 2 && stat(s, "alerts.pending") == 0
    });
    assert_stats(&s, "alerts.created=2 alerts.sent=2");
}

// 9 -------------------------------------------------------------------------------------------

const AMZ_KEY: &str = "amz-eventbridge-connection-key-0123456789";

/// The SP-API fixture as an EventBridge event (API destination, no input transformer).
fn eventbridge(
    event_id: &str,
    time: &str,
    quantity: i64,
    notification_id: &str,
    at: &str,
) -> Vec<u8> {
    let mut detail =
        fixtures::data().json("payloads/amazon/listings_item_mfn_quantity_change.json");
    detail["Payload"]["Quantity"] = json!(quantity);
    detail["EventTime"] = json!(at);
    detail["NotificationMetadata"]["NotificationId"] = json!(notification_id);
    json!({
        "version": "0",
        "id": event_id,
        "detail-type": "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
        "source": "aws.partner/sellingpartnerapi.amazon.com/amzn1.sellerapps.app.f108f511",
        "account": "123456789012",
        "time": time,
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    })
    .to_string()
    .into_bytes()
}

#[test]
fn amazon_eventbridge_quantity_change_alerts_once_per_notification() {
    let p = start("w-amazon", |d| {
        base(d).source(SourceSpec::api_key("amz", "x-api-key", AMZ_KEY))
    });
    let post = |body: Vec<u8>| {
        accepted(&http::post(
            p.addr(),
            "/webhooks/amz",
            &sign::api_key("x-api-key", AMZ_KEY),
            &body,
        ))
    };
    // 99 in stock (the fixture's value): nothing to say.
    post(eventbridge(
        "eb-0001",
        "2021-02-03T18:59:31Z",
        99,
        "notif-0001",
        "2021-02-03T18:59:30.194Z",
    ));
    // Down to 3: low stock.
    let crossing =
        |eb: &str, time: &str| eventbridge(eb, time, 3, "notif-0002", "2021-02-04T09:00:00.000Z");
    post(crossing("eb-0002", "2021-02-04T09:00:01Z"));
    let e = only_email(&p);
    assert_eq!(
        e.subject(),
        "Low stock: untitled item (Amazon SKU KIT-MUG-BLUE), 3 left (amz)"
    );
    assert_eq!(e.items(), vec!["KIT-MUG-BLUE".to_string()]);
    assert_fields(
        &e,
        "KIT-MUG-BLUE",
        &[
            ("SKU", "KIT-MUG-BLUE"),
            ("Item id", "KIT-MUG-BLUE (amazon)"),
            ("Location", "your own stock (merchant-fulfilled)"),
            ("Available", "3"),
            ("Threshold", "5"),
        ],
    );
    // EventBridge delivers the same notification again in a new event envelope.
    post(crossing("eb-0003", "2021-02-04T09:05:00Z"));
    let s = p.wait_stat(
        "the redelivery is seen as a duplicate",
        "events.duplicate",
        1,
    );
    // Deduplicated, not merely stale.
    assert_stats(
        &s,
        "events.processed=2 events.stale_levels=0 alerts.created=1",
    );
    let s = p.wait("the outbox empty", |s| stat(s, "alerts.pending") == 0);
    assert_stats(&s, "alerts.sent=1");
    assert_eq!(mail_files(&p.data()).len(), 1);
}

// 10 ------------------------------------------------------------------------------------------

#[test]
fn sigterm_mid_stream_exits_0_and_a_restart_finishes_the_job() {
    const TOTAL: u64 = 300;
    const FIRST: u64 = 910_000;
    let mut p = start("w-sigterm", base);
    let addr = p.addr();
    let posted = Arc::new(AtomicUsize::new(0));
    let poster = {
        let posted = posted.clone();
        std::thread::spawn(move || {
            for i in 0..TOTAL {
                let body = level(FIRST + i, LOCATION, 1, "2024-06-10T10:00:00Z");
                accepted(&post_shop(
                    addr,
                    &body,
                    "inventory_levels/update",
                    &wid("st"),
                ));
                posted.fetch_add(1, Ordering::SeqCst);
                // A platform's pace (input, not synchronization): the stream lasts a few
                // seconds, so the signal lands mid-stream even on a loaded machine.
                if i >= 20 {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    // Mid-stream: the worker has sent something, the platform is still sending.
    wait_eml(&p.data(), 1, SETTLE);
    let at_signal = posted.load(Ordering::SeqCst);
    p.worker.sigterm();
    let st = p
        .worker
        .wait_exit(stockhook_tests::deadline_in(Duration::from_secs(30)));
    assert_eq!(
        st.code(),
        Some(0),
        "SIGTERM: exit 0, got {st} (signal {:?})",
        st.signal()
    );
    assert!(
        p.worker.stderr().contains("worker stopped cleanly"),
        "{}",
        p.worker.stderr()
    );
    assert!(
        (at_signal as u64) < TOTAL,
        "the stream had ended before the signal: not mid-stream"
    );
    poster.join().expect("the posting thread panicked");

    // A new worker picks up where the old one stopped: every item once.
    p.worker = start_worker(&p.dir, &p.config);
    let s = p.wait("every level processed and emailed", |s| {
        stat(s, "events.processed") == TOTAL as i64 && stat(s, "alerts.pending") == 0
    });
    assert_stats(
        &s,
        &format!("alerts.created={TOTAL} alerts.sent={TOTAL} queue.pending=0"),
    );
    let items: Vec<String> = (0..TOTAL).map(|i| (FIRST + i).to_string()).collect();
    let emails = eml_emails(&p.data());
    Accounting::of(&emails, &items).assert_exactly_once(&emails);
}

// 11-14: a wrong timestamp or quantity never silences an item (issue 20) ----------------------

/// An RFC 3339 time `offset_s` seconds from now.
fn rfc3339_from_now(offset_s: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(offset_s))
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting a time")
}

/// The `export --csv` row of `item`, by column name.
fn export_row(p: &Pipeline, item: u64) -> std::collections::HashMap<String, String> {
    let csv = p.cli_ok(&["export", "--csv"]);
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a CSV header").split(',').collect();
    let row = lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|r| header.iter().position(|h| *h == "item").map(|i| r[i]) == Some(&item.to_string()))
        .unwrap_or_else(|| panic!("no row for item {item} in\n{csv}"));
    header
        .iter()
        .zip(row)
        .map(|(h, v)| (h.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_far_future_level_then_a_current_one_the_current_one_wins() {
    let p = start("w-future", base);
    const ITEM: u64 = 900_020;
    // A sender with a wrong clock: 2099.
    post_level(&p, ITEM, 50, "2099-01-01T00:00:00Z");
    let s = p.wait_stat("the far-future level processed", "events.processed", 1);
    assert_stats(
        &s,
        "events.future_timestamps=1 sources.shop.future_timestamps=1",
    );
    // Now a current report of 1: it is newer than the clamped one, so it applies and alerts.
    post_level(&p, ITEM, 1, &rfc3339_from_now(0));
    let e = only_email(&p);
    assert_eq!(e.items(), vec![ITEM.to_string()]);
    assert_fields(&e, &ITEM.to_string(), &[("Available", "1")]);
    let s = p.wait_stat("both levels processed", "events.processed", 2);
    assert_stats(&s, "events.stale_levels=0 events.future_timestamps=1");
    let row = export_row(&p, ITEM);
    assert_eq!(row["available"], "1", "{row:?}");
    assert!(
        !row["first_seen"].starts_with("2099"),
        "first seen is the accepted time, not 2099: {row:?}"
    );
    let log = p.worker.stderr();
    assert_eq!(
        log.matches("event time ahead of the time the receiver accepted it")
            .count(),
        1,
        "logged once: {log}"
    );
}

#[test]
fn a_small_clock_skew_inside_the_tolerance_is_treated_as_ordinary() {
    let p = start("w-skew", base);
    const ITEM: u64 = 900_021;
    // Two minutes ahead (the tolerance is five): taken as it is, so the report one minute ahead,
    // older than it, is an ordinary late level.
    post_level(&p, ITEM, 10, &rfc3339_from_now(120));
    post_level(&p, ITEM, 1, &rfc3339_from_now(60));
    let s = p.wait_stat("both levels processed", "events.processed", 2);
    assert_stats(
        &s,
        "events.future_timestamps=0 events.stale_levels=1 alerts.created=0",
    );
    assert_eq!(export_row(&p, ITEM)["available"], "10");
}

#[test]
fn a_replayed_old_payload_is_applied_in_order_and_counted() {
    let p = start("w-old", base);
    const ITEM: u64 = 900_022;
    post_level(&p, ITEM, 10, &rfc3339_from_now(0));
    // Three days before the item was first seen (Shopify retries for 4 hours), at another
    // location: history replayed. Applied (it is that location's only report) and counted.
    let old = level(ITEM, LOCATION + 1, 3, &rfc3339_from_now(-3 * 86_400));
    accepted(&post_shop(
        p.addr(),
        &old,
        "inventory_levels/update",
        &wid("old"),
    ));
    let s = p.wait_stat("both levels processed", "events.processed", 2);
    assert_stats(&s, "events.old_timestamps=1 events.future_timestamps=0");
    let row = export_row(&p, ITEM);
    assert_eq!(row["available"], "13", "{row:?}");
}

#[test]
fn an_absurd_quantity_is_dead_lettered_naming_the_field_while_the_other_variants_apply() {
    let p = start("w-absurd", base);
    let mut product: serde_json::Value = serde_json::from_slice(&tshirt_product()).expect("JSON");
    product["variants"][0]["inventory_quantity"] = json!(5_000_000_000i64);
    product["variants"][1]["inventory_quantity"] = json!(2);
    let id = accepted(&post_shop(
        p.addr(),
        product.to_string().as_bytes(),
        "products/update",
        &wid("absurd"),
    ));
    // The sane variant applies: its low-stock email goes out.
    let e = only_email(&p);
    let m_item = product["variants"][1]["inventory_item_id"].to_string();
    assert_eq!(e.items(), vec![m_item.clone()]);
    assert_fields(&e, &m_item, &[("Available", "2"), ("SKU", "TSHIRT-BLUE-M")]);
    // The event is dead-lettered with the refused field named.
    let rows = expect_within(SETTLE, "the event in `failed list`", || {
        let l: serde_json::Value =
            serde_json::from_str(&p.cli_ok(&["failed", "list", "--json"])).expect("JSON");
        (l.as_array().is_some_and(|a| !a.is_empty())).then_some(l)
    });
    let rows = rows.as_array().expect("an array");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["id"], id.as_str(), "{rows:#?}");
    let err = rows[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("`available` = 5000000000") && err.contains("max_quantity"),
        "{err}"
    );
    let s = p.stats();
    assert_stats(&s, "facts.refused=1");
    // Never saturated into state: the refused variant has no level.
    let l_item: u64 = product["variants"][0]["inventory_item_id"]
        .as_u64()
        .expect("an id");
    let row = export_row(&p, l_item);
    assert_ne!(row["available"], "5000000000", "{row:?}");
    assert_eq!(row["available"], "", "{row:?}");
}

// 15: items that leave the catalog stop alerting (issue 21) ---------------------------------------

#[test]
fn variants_dropped_from_a_product_then_the_product_deleted_stop_alerting() {
    let p = start("w-removed", base);
    let product: serde_json::Value = serde_json::from_slice(&tshirt_product()).expect("JSON");
    let m_item = product["variants"][1]["inventory_item_id"]
        .as_u64()
        .expect("an id");
    accepted(&post_shop(
        p.addr(),
        &tshirt_product(),
        "products/update",
        &wid("product"),
    ));
    // The seller deletes the M variant: the next update lists only L.
    let mut only_l = product.clone();
    only_l["variants"] = json!([product["variants"][0].clone()]);
    only_l["updated_at"] = json!("2024-05-15T10:00:00-04:00");
    accepted(&post_shop(
        p.addr(),
        only_l.to_string().as_bytes(),
        "products/update",
        &wid("product"),
    ));
    let s = p.wait_stat("both updates processed", "events.processed", 2);
    assert_stats(&s, "catalog.removed=1");
    // A late level for M, older than its removal: no alert.
    post_level(&p, m_item, 1, "2024-05-14T20:00:00-04:00");
    // Then the product is deleted (`{"id": ...}` only; its time is X-Shopify-Triggered-At).
    let delete = json!({ "id": product["id"].clone() }).to_string();
    let mut h = sign::shopify(SECRET, delete.as_bytes(), "products/delete", &wid("delete"));
    for (k, v) in h.iter_mut() {
        if k == "X-Shopify-Triggered-At" {
            *v = rfc3339_from_now(0);
        }
    }
    accepted(&http::post(
        p.addr(),
        "/webhooks/shop",
        &h,
        delete.as_bytes(),
    ));
    let s = p.wait_stat(
        "the level and the deletion processed",
        "events.processed",
        4,
    );
    // products/delete is acted on, not ignored.
    assert_stats(&s, "catalog.removed=2 events.ignored=0 alerts.created=0");
    assert!(mail_files(&p.data()).is_empty());
    // Gone from the export; `--all` shows both with when and why.
    let csv = p.cli_ok(&["export", "--csv"]);
    assert_eq!(csv.lines().count(), 1, "only the header: {csv}");
    let all = p.cli_ok(&["export", "--csv", "--all"]);
    let rows: Vec<&str> = all.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{all}");
    let m_row = rows
        .iter()
        .find(|r| r.contains(&m_item.to_string()))
        .unwrap_or_else(|| panic!("{all}"));
    assert!(
        m_row.contains("2024-05-15T14:00:00Z") && m_row.contains("no longer a variant of product"),
        "{all}"
    );
    assert!(
        rows.iter().any(|r| r.contains("deleted")),
        "the other variant's reason: {all}"
    );
}
