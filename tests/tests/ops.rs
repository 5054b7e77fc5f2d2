//! End-to-end tests of what an operator does to running processes and sees from them (issue 17):
//! SIGHUP reloads, metrics, journald priorities, the ops CLI without secrets.
//!
//! Each test starts the real binaries in its own temporary directory; nothing sleeps to wait,
//! conditions are polled with a deadline.

use std::net::SocketAddr;
use std::time::Duration;
use stockhook_tests::http::{self, Conn, Resp};
use stockhook_tests::{deadline_in, poll_until, sign, SourceSpec, TestDir};

const SECRET_OLD: &str = "shpss_reload_old_0123456789";
const SECRET_NEW: &str = "shpss_reload_new_9876543210";
const SECRET_SHOP2: &str = "shpss_reload_shop2_abcdef";

fn post(addr: SocketAddr, source: &str, secret: &str, delivery: &str) -> Resp {
    let body = br#"{"id":1,"variants":[{"id":2,"sku":"R-1","inventory_quantity":9}]}"#;
    let h = sign::shopify(secret, body, "products/update", delivery);
    http::post(addr, &format!("/webhooks/{source}"), &h, body)
}

/// SIGHUP after rotating a secret and adding a source: the old secret is refused, the new one
/// and the new source are accepted, and a keep-alive connection opened before the reload keeps
/// being served. Then SIGHUP with a broken config: refused with an error in the log, and the
/// receiver keeps serving with the config it had.
#[test]
fn sighup_reloads_sources_and_secrets_and_refuses_a_broken_config() {
    let dir = TestDir::new("sighup-reload");
    let before = dir.config().source(SourceSpec::shopify("shop", SECRET_OLD));
    let path = dir.write_config("stockhook.toml", &before);
    let recv = dir.receiver(&path);
    let addr = recv.addr();

    let mut kept = Conn::connect(addr);
    let body = br#"{"id":1}"#;
    let h = sign::shopify(SECRET_OLD, body, "products/update", "kept-1");
    let r = kept.send("POST", "/webhooks/shop", &h, body).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(post(addr, "shop2", SECRET_SHOP2, "d-0").status, 404);

    // Rotate shop's secret and add shop2, then SIGHUP.
    let after = dir
        .config()
        .source(SourceSpec::shopify("shop", SECRET_NEW))
        .source(SourceSpec::shopify("shop2", SECRET_SHOP2));
    dir.write_config("stockhook.toml", &after);
    recv.signal(libc::SIGHUP);
    let mut n = 0;
    let answered = poll_until(deadline_in(Duration::from_secs(30)), || {
        n += 1;
        let r = post(addr, "shop2", SECRET_SHOP2, &format!("d-{n}"));
        (r.status != 404).then_some(r)
    })
    .expect("the new source answered within 30 s of SIGHUP");
    assert_eq!(answered.status, 200, "{answered:?}");
    assert_eq!(answered.json()["status"], "accepted");
    let old = post(addr, "shop", SECRET_OLD, "rot-old");
    assert_eq!(
        old.status, 401,
        "the rotated-out secret is refused: {old:?}"
    );
    let new = post(addr, "shop", SECRET_NEW, "rot-new");
    assert_eq!(new.status, 200, "the new secret is accepted: {new:?}");
    // The connection from before the reload is still served, under the new config.
    let h = sign::shopify(SECRET_NEW, body, "products/update", "kept-2");
    let r = kept.send("POST", "/webhooks/shop", &h, body).unwrap();
    assert_eq!(r.status, 200, "{r:?}");

    // A broken config: refused, logged, the running one stays.
    dir.write(
        "stockhook.toml",
        after.render().replace("shopify-hmac", "no-such-scheme"),
    );
    recv.signal(libc::SIGHUP);
    poll_until(deadline_in(Duration::from_secs(30)), || {
        recv.stderr().contains("new config refused").then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal logged: {}", recv.stderr()));
    assert!(
        recv.stderr().contains("no-such-scheme"),
        "the error names what is wrong: {}",
        recv.stderr()
    );
    assert_eq!(post(addr, "shop", SECRET_NEW, "after-broken").status, 200);
    assert_eq!(
        post(addr, "shop2", SECRET_SHOP2, "after-broken-2").status,
        200
    );
    assert_eq!(recv.status(), None, "still running");

    // Both reloads kept every event: the six accepted ones are all in the queue.
    let stats = stockhook_tests::queue::queue_stats(&dir.data_dir());
    assert_eq!(stats.pending, 6, "{stats:?}");
    let mut recv = recv;
    recv.sigterm();
    let st = recv.wait_exit(deadline_in(Duration::from_secs(30)));
    assert_eq!(st.code(), Some(0), "SIGTERM still drains and exits 0");
}

/// A Shopify `inventory_levels/update` for `item` at `available`, signed with `secret`.
fn post_level(addr: SocketAddr, secret: &str, item: u64, available: i64, delivery: &str) -> Resp {
    let body = serde_json::json!({
        "inventory_item_id": item,
        "location_id": 655_441_491u64,
        "available": available,
        "updated_at": "2024-06-01T10:00:00Z",
    })
    .to_string();
    let h = sign::shopify(secret, body.as_bytes(), "inventory_levels/update", delivery);
    http::post(addr, "/webhooks/shop", &h, body.as_bytes())
}

/// SIGHUP to the worker after raising the threshold and changing the recipient: the next event
/// is judged by the new rules and mailed to the new recipient, without a restart. A broken
/// config on the next SIGHUP is refused and logged; the worker keeps running.
#[test]
fn sighup_reloads_the_workers_thresholds_and_recipients() {
    use stockhook_tests::stack::{start_worker, stat, wait_eml, wait_stats};
    let dir = TestDir::new("sighup-worker");
    let base = |threshold: &str, to: &str| {
        dir.config()
            .recipients(&[to])
            .alerts("low_stock_threshold", threshold)
            .source(SourceSpec::shopify("shop", SECRET_OLD))
    };
    let path = dir.write_config("stockhook.toml", &base("5", "before@example.com"));
    let rx = dir.receiver(&path);
    let worker = start_worker(&dir, &path);

    assert_eq!(post_level(rx.addr(), SECRET_OLD, 71, 7, "w-1").status, 200);
    let s = wait_stats(
        &dir,
        &path,
        Duration::from_secs(30),
        "the first level is processed",
        |s| stat(s, "events.processed") == 1,
    );
    assert_eq!(stat(&s, "alerts.created"), 0, "7 is not below 5: {s:#}");

    dir.write_config("stockhook.toml", &base("10", "after@example.com"));
    worker.signal(libc::SIGHUP);
    poll_until(deadline_in(Duration::from_secs(30)), || {
        worker
            .stderr()
            .contains("alert rules reloaded")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no reload logged: {}", worker.stderr()));

    assert_eq!(post_level(rx.addr(), SECRET_OLD, 72, 7, "w-2").status, 200);
    let mails = wait_eml(&dir.data_dir(), 1, Duration::from_secs(30));
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let to = mails[0].header("To").unwrap_or_default().to_string();
    assert!(to.contains("after@example.com"), "To: {to}");
    assert!(mails[0].text().contains("72"), "the alert is item 72's");

    dir.write("stockhook.toml", "this is = not [toml");
    worker.signal(libc::SIGHUP);
    poll_until(deadline_in(Duration::from_secs(30)), || {
        worker.stderr().contains("new config refused").then_some(())
    })
    .unwrap_or_else(|| panic!("no refusal logged: {}", worker.stderr()));
    assert_eq!(worker.status(), None, "the worker still runs");
    let mut worker = worker;
    worker.sigterm();
    assert_eq!(
        worker
            .wait_exit(deadline_in(Duration::from_secs(30)))
            .code(),
        Some(0)
    );
}
