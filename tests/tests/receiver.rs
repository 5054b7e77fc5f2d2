//! End-to-end tests of `stockhook-receiver`: the real binary on a loopback port, driven with
//! signed (and unsigned, malformed, oversized, slow) requests as platforms send them, and read
//! back over its queue socket as the worker does.
//!
//! Each test starts its own receiver in its own temporary directory, so they run in parallel.
//! Nothing here sleeps to wait for something: conditions are polled with a deadline. The only
//! pauses are inputs (a slowloris client's dribble, an append made while a long poll waits).
//!
//! Tests whose assertions bound a duration take [`timing`]; the burst test takes [`burst`], so it
//! never saturates the cores while a timed test measures.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use stockhook_shared::config::Platform;
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::{now_ms, DeadFilter, Failure};
use stockhook_tests::answers::{accepted, delivery_id, exclusive, metric, refused, timing};
use stockhook_tests::http::{self, Conn, Outcome, Resp};
use stockhook_tests::queue::{attempts, lease_all, queue_stats, Queue};
use stockhook_tests::{
    deadline_in, fixtures, poll_until, sign, ConfigBuilder, SourceSpec, TestDir,
};

const SHOP: &str = "shop";
const SHOP_SECRET: &str = "shpss_e2e_0123456789abcdef";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// A config with the one Shopify source `shop`.
fn shop_config(dir: &TestDir) -> ConfigBuilder {
    dir.config().source(SourceSpec::shopify(SHOP, SHOP_SECRET))
}

fn start(dir: &TestDir, cfg: &ConfigBuilder) -> stockhook_tests::Proc {
    let path = dir.write_config("stockhook.toml", cfg);
    dir.receiver(&path)
}

/// A signed `products/update` of `body` (a new delivery id from `tag`), asserting it is
/// accepted; its event id.
fn post_product(addr: SocketAddr, body: &[u8], tag: &str) -> EventId {
    accepted(&post_shop(addr, body, "products/update", &delivery_id(tag)))
}

/// The next answer on `c` (within 5 s) is `status` with error `code`, closing the connection.
fn refused_and_closed(c: &mut Conn, status: u16, code: &str) {
    match c
        .read_outcome(Duration::from_secs(5))
        .expect("reading the answer")
    {
        Outcome::Response(r) => {
            refused(&r, status, code);
            assert_eq!(r.header("connection"), Some("close"), "{r:?}");
        }
        other => panic!("expected {status} ({code}), got {other:?}"),
    }
}

/// POSTs `body` to `/webhooks/shop` signed as Shopify signs it.
fn post_shop(addr: SocketAddr, body: &[u8], topic: &str, webhook_id: &str) -> Resp {
    let h = sign::shopify(SHOP_SECRET, body, topic, webhook_id);
    http::post(addr, "/webhooks/shop", &h, body)
}

fn pending(dir: &TestDir) -> u64 {
    queue_stats(&dir.data_dir()).pending
}

// 1 -------------------------------------------------------------------------------------------

/// A 408 came after the 1 s timeout (not at once, not much later), and the server closed the
/// connection after it.
fn timed_out_then_closed(c: &mut Conn, took: Duration, what: &str) {
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{what} after {took:?}"
    );
    assert!(
        c.closed_within(Duration::from_secs(5)).expect("reading"),
        "connection left open after 408"
    );
}

#[test]
fn shopify_fixture_payloads_are_stored_byte_for_byte_in_order() {
    let dir = TestDir::new("fixtures");
    let rx = start(&dir, &shop_config(&dir));
    let payloads = fixtures::data().payloads("payloads/shopify");
    assert!(payloads.len() >= 2, "tests/data/payloads/shopify/*.json");

    let mut sent = Vec::new();
    for (stem, body) in &payloads {
        let (resource, action) = stem
            .rsplit_once('_')
            .expect("files are named <resource>_<action>");
        let topic = format!("{resource}/{action}");
        let wid = delivery_id("fixture");
        let id = accepted(&post_shop(rx.addr(), body, &topic, &wid));
        sent.push((id, topic, wid, body.clone()));
    }
    for pair in sent.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "ids not increasing: {} then {}",
            pair[0].0,
            pair[1].0
        );
    }

    let leased = lease_all(&dir.data_dir(), 60_000);
    assert_eq!(leased.len(), sent.len(), "one stored event per 200");
    for (l, (id, topic, wid, body)) in leased.iter().zip(&sent) {
        let e = &l.envelope;
        assert_eq!(e.id, *id, "delivered in arrival order");
        assert_eq!(l.attempts, 1);
        assert_eq!(e.source, SHOP);
        assert_eq!(e.platform, Platform::Shopify);
        assert!(
            e.body == *body,
            "event {id}: stored body differs from the bytes sent"
        );
        assert_eq!(e.header("x-shopify-topic"), Some(topic.as_str()));
        assert_eq!(e.header("x-shopify-webhook-id"), Some(wid.as_str()));
        assert_eq!(
            e.header("x-shopify-shop-domain"),
            Some("stockhook-test.myshopify.com")
        );
        assert_eq!(e.header("x-shopify-api-version"), Some("2024-01"));
        assert_eq!(e.header("content-type"), Some("application/json"));
        assert_eq!(
            e.header("x-shopify-hmac-sha256"),
            None,
            "credentials are not stored"
        );
    }
}

// 2 -------------------------------------------------------------------------------------------

#[test]
fn shopify_published_vectors_and_tampering() {
    let Some(fx) = fixtures::shared("shopify_published_vectors_and_tampering") else {
        return;
    };
    let dir = TestDir::new("shopify-vectors");
    let valid = fx.vector("shopify_hmac.json", "shopify-api-js-validate-valid");
    let invalid = fx.vector("shopify_hmac.json", "shopify-api-js-validate-invalid-hmac");
    let secret = valid["secret"].as_str().expect("secret");
    assert_eq!(secret, "test_secret_key");
    let cfg = dir.config().source(SourceSpec::shopify("vec", secret));
    let rx = start(&dir, &cfg);
    let headers = fixtures::vector_headers;
    let body = valid["body_utf8"]
        .as_str()
        .expect("body")
        .as_bytes()
        .to_vec();

    let id = accepted(&http::post(
        rx.addr(),
        "/webhooks/vec",
        &headers(&valid),
        &body,
    ));
    assert_eq!(pending(&dir), 1);

    // "fake" is base64 of 3 bytes: not an HMAC at all.
    let r = http::post(rx.addr(), "/webhooks/vec", &headers(&invalid), &body);
    assert_eq!(r.status, 401, "{r:?}");
    let code = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        code == "malformed_signature" || code == "signature_mismatch",
        "{r:?}"
    );

    // The valid signature over a body with one byte changed.
    let mut tampered = body.clone();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let r = http::post(rx.addr(), "/webhooks/vec", &headers(&valid), &tampered);
    refused(&r, 401, "signature_mismatch");

    // A signature one character off, of the right length.
    let mut h = headers(&valid);
    let sig = &mut h
        .iter_mut()
        .find(|(k, _)| k == "X-Shopify-Hmac-Sha256")
        .expect("hmac")
        .1;
    *sig = format!("A{}", &sig[1..]);
    refused(
        &http::post(rx.addr(), "/webhooks/vec", &h, &body),
        401,
        "signature_mismatch",
    );

    // No signature header at all.
    let h: Vec<(String, String)> = headers(&valid)
        .into_iter()
        .filter(|(k, _)| k != "X-Shopify-Hmac-Sha256")
        .collect();
    let r = http::post(rx.addr(), "/webhooks/vec", &h, &body);
    refused(&r, 401, "missing_header");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap_or_default()
            .contains("X-Shopify-Hmac-Sha256"),
        "{r:?}"
    );

    // Signed with another secret.
    let h = sign::shopify(
        "another_secret",
        &body,
        "products/create",
        &delivery_id("other"),
    );
    refused(
        &http::post(rx.addr(), "/webhooks/vec", &h, &body),
        401,
        "signature_mismatch",
    );

    // The refusals are counted by source, status and reason.
    let m = http::get(rx.addr(), "/metrics");
    assert_eq!(m.status, 200, "{m:?}");
    let metrics = m.text();
    for (series, value) in [
        (r#"stockhook_requests_total{source="vec",status="200"}"#, 1),
        (r#"stockhook_requests_total{source="vec",status="401"}"#, 5),
        (
            r#"stockhook_verification_failures_total{source="vec",reason="missing_header"}"#,
            1,
        ),
    ] {
        assert_eq!(
            metric(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    let mismatches = metric(
        &metrics,
        r#"stockhook_verification_failures_total{source="vec",reason="signature_mismatch"}"#,
    )
    .unwrap_or(0);
    let malformed = metric(
        &metrics,
        r#"stockhook_verification_failures_total{source="vec",reason="malformed_signature"}"#,
    )
    .unwrap_or(0);
    assert_eq!(
        (mismatches + malformed, mismatches >= 3),
        (4, true),
        "{metrics}"
    );

    let s = queue_stats(&dir.data_dir());
    assert_eq!(
        (s.pending, s.leased, s.dead),
        (1, 0, 0),
        "no refused request was stored"
    );
    let leased = lease_all(&dir.data_dir(), 60_000);
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].envelope.id, id);
    assert_eq!(
        leased[0].envelope.header("x-shopify-webhook-id"),
        Some("123456789")
    );
}

// 3 -------------------------------------------------------------------------------------------

#[test]
fn standard_webhooks_timestamps_and_signature_lists() {
    let dir = TestDir::new("standard-webhooks");
    let cfg = dir
        .config()
        .source(SourceSpec::standard_webhooks("feed", WHSEC));
    let rx = start(&dir, &cfg);
    let body = br#"{"sku":"MUG-1","available":3}"#;

    // Fresh timestamp.
    let id = delivery_id("msg");
    let h = sign::standard_webhooks(WHSEC, &id, sign::now_unix(), body);
    let first = accepted(&http::post(rx.addr(), "/webhooks/feed", &h, body));

    // A request captured 400 s ago (signed correctly then) is replayed now: refused.
    let h = sign::standard_webhooks(WHSEC, &delivery_id("msg"), sign::now_unix() - 400, body);
    let r = http::post(rx.addr(), "/webhooks/feed", &h, body);
    refused(&r, 401, "stale_timestamp");
    // And one from the future.
    let h = sign::standard_webhooks(WHSEC, &delivery_id("msg"), sign::now_unix() + 400, body);
    refused(
        &http::post(rx.addr(), "/webhooks/feed", &h, body),
        401,
        "stale_timestamp",
    );

    // The published vector: a real captured request from 2021, replayed.
    if let Some(fx) =
        fixtures::shared("standard_webhooks_timestamps_and_signature_lists (published vector)")
    {
        let f = fx.json("standard_webhooks.json");
        let v = &f["vectors"][0];
        assert_eq!(v["secret"], WHSEC);
        let vh = fixtures::vector_headers(v);
        let vbody = v["body_utf8"].as_str().expect("body").as_bytes();
        refused(
            &http::post(rx.addr(), "/webhooks/feed", &vh, vbody),
            401,
            "stale_timestamp",
        );
    }

    // Several signatures (a sender rotating keys): one valid v1 among others is enough.
    let id = delivery_id("msg");
    let ts = sign::now_unix();
    let good = sign::standard_webhooks_signature(WHSEC, &id, ts, body);
    let wrong =
        sign::standard_webhooks_signature("whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=", &id, ts, body);
    let list = format!("v1a,bm90LWFzeW1tZXRyaWM= {wrong} v2,abc {good}");
    let h = vec![
        ("webhook-id".to_string(), id.clone()),
        ("webhook-timestamp".to_string(), ts.to_string()),
        ("webhook-signature".to_string(), list),
    ];
    let second = accepted(&http::post(rx.addr(), "/webhooks/feed", &h, body));
    assert!(second > first);

    // Only wrong ones: refused.
    let id = delivery_id("msg");
    let wrong =
        sign::standard_webhooks_signature("whsec_c2Vjb25kLXNlY3JldC1mb3ItdGVzdHM=", &id, ts, body);
    let h = vec![
        ("webhook-id".to_string(), id),
        ("webhook-timestamp".to_string(), ts.to_string()),
        ("webhook-signature".to_string(), format!("{wrong} {wrong}")),
    ];
    refused(
        &http::post(rx.addr(), "/webhooks/feed", &h, body),
        401,
        "signature_mismatch",
    );

    let leased = lease_all(&dir.data_dir(), 60_000);
    let ids: Vec<EventId> = leased.iter().map(|l| l.envelope.id).collect();
    assert_eq!(
        ids,
        vec![first, second],
        "only the two accepted requests are stored"
    );
    assert!(leased.iter().all(|l| l.envelope.body == body));
}

// 4 -------------------------------------------------------------------------------------------

#[test]
fn limits_unknown_source_oversized_and_slow_body() {
    let _timing = timing();
    let dir = TestDir::new("limits");
    let cfg = shop_config(&dir)
        .receiver("max_body_bytes", "1024")
        .receiver("body_timeout", "\"1s\"");
    let rx = start(&dir, &cfg);
    let addr = rx.addr();

    // Unknown source.
    let body = br#"{"id":1}"#;
    let h = sign::shopify(SHOP_SECRET, body, "products/update", &delivery_id("x"));
    refused(
        &http::post(addr, "/webhooks/nope", &h, body),
        404,
        "unknown_source",
    );

    // Declared too large: 413 before the body is sent, and the connection is closed.
    let big = vec![b'x'; 2048];
    let h = sign::shopify(SHOP_SECRET, &big, "products/update", &delivery_id("big"));
    let mut c = Conn::connect(addr);
    let mut head = http::request_bytes("POST", "/webhooks/shop", addr, &h, &big);
    head.truncate(head.len() - big.len());
    c.write_raw(&head).expect("writing the request head");
    refused_and_closed(&mut c, 413, "body_too_large");
    assert!(
        c.closed_within(Duration::from_secs(5)).expect("reading"),
        "connection left open after 413"
    );

    // Too large without a Content-Length (chunked): 413 once the limit is crossed.
    let mut c = Conn::connect(addr);
    let mut req = format!(
        "POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nX-Shopify-Hmac-Sha256: {}\r\n\r\n",
        sign::shopify_hmac(SHOP_SECRET, &big)
    )
    .into_bytes();
    req.extend_from_slice(b"800\r\n");
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    c.write_raw(&req).expect("writing the chunked request");
    match c
        .read_outcome(Duration::from_secs(5))
        .expect("reading the 413")
    {
        Outcome::Response(r) => refused(&r, 413, "body_too_large"),
        other => panic!("expected 413 for a 2048-byte chunked body, got {other:?}"),
    }

    // Content-Length says 100, half of it arrives, then nothing: 408 after body_timeout (1 s).
    let half = vec![b'{'; 50];
    let h = sign::shopify(
        SHOP_SECRET,
        &[b'{'; 100],
        "products/update",
        &delivery_id("slow"),
    );
    let mut c = Conn::connect(addr);
    let mut req = http::request_bytes("POST", "/webhooks/shop", addr, &h, &[b'{'; 100]);
    req.truncate(req.len() - 50);
    assert!(req.ends_with(&half));
    let t = Instant::now();
    c.write_raw(&req)
        .expect("writing headers and half the body");
    refused_and_closed(&mut c, 408, "body_timeout");
    let took = t.elapsed();
    timed_out_then_closed(&mut c, took, "408");

    // Content-Length says 100, 50 bytes come, then the client closes its side: 400 at once,
    // not after the body timeout.
    let mut c = Conn::connect(addr);
    let t = Instant::now();
    c.write_raw(&req)
        .expect("writing headers and half the body");
    c.shutdown_write().expect("half-closing");
    match c
        .read_outcome(Duration::from_secs(5))
        .expect("reading the 400")
    {
        Outcome::Response(r) => refused(&r, 400, "bad_body"),
        other => panic!("expected 400 for a body cut short, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_millis(800),
        "400 after {:?}",
        t.elapsed()
    );

    // Exactly max_body_bytes is fine.
    let edge = vec![b' '; 1024];
    let r = post_shop(addr, &edge, "products/update", &delivery_id("edge"));
    let edge_id = accepted(&r);

    // Still serving, and nothing else was stored.
    let r = http::get(addr, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["queue"]["pending"], 1, "{r:?}");
    let after = post_product(addr, body, "after");
    let ids: Vec<EventId> = lease_all(&dir.data_dir(), 60_000)
        .iter()
        .map(|l| l.envelope.id)
        .collect();
    assert_eq!(
        ids,
        vec![edge_id, after],
        "only the two accepted requests were stored"
    );
}

#[test]
fn slow_headers_get_408_and_the_receiver_keeps_serving() {
    let _timing = timing();
    let dir = TestDir::new("slow-headers");
    let cfg = shop_config(&dir).receiver("header_timeout", "\"1s\"");
    let rx = start(&dir, &cfg);
    let addr = rx.addr();
    let body = br#"{"id":4}"#;
    let h = sign::shopify(SHOP_SECRET, body, "products/update", &delivery_id("sl"));

    // Slow headers: a partial request line, then nothing.
    let mut c = Conn::connect(addr);
    let t = Instant::now();
    c.write_raw(b"POST /webhooks/shop HT")
        .expect("writing a partial request line");
    let outcome = c.read_outcome(Duration::from_secs(5)).expect("reading");
    let took = t.elapsed();
    match outcome {
        Outcome::Response(r) => refused(&r, 408, "header_timeout"),
        other => panic!("expected 408 for a stalled request line after {took:?}, got {other:?}"),
    }
    timed_out_then_closed(&mut c, took, "header timeout");

    // Slowloris: headers dribbled one byte per 100 ms never finish within header_timeout (1 s),
    // though bytes keep arriving: the server must not restart its clock on each byte.
    let mut c = Conn::connect(addr);
    let head = http::request_bytes("POST", "/webhooks/shop", addr, &h, b"");
    assert!(head.len() > 100, "the dribble lasts well past the timeout");
    let t = Instant::now();
    let dribbler = c.dribble(head, Duration::from_millis(100));
    let outcome = c.read_outcome(Duration::from_secs(5)).expect("reading");
    let took = t.elapsed();
    let sent = dribbler.stop();
    match outcome {
        Outcome::Response(r) => refused(&r, 408, "header_timeout"),
        other => {
            panic!("expected 408 for slowloris after {took:?} ({sent} bytes sent), got {other:?}")
        }
    }
    assert!(
        took < Duration::from_secs(3),
        "slowloris cut after {took:?} ({sent} bytes sent)"
    );

    assert_eq!(http::get(addr, "/healthz").status, 200);
    post_product(addr, body, "after");
    assert_eq!(pending(&dir), 1, "only the last request was stored");
}

// 5 -------------------------------------------------------------------------------------------

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let _timing = timing();
    let dir = TestDir::new("rate-limit");
    let cfg = dir.config().source(
        SourceSpec::shopify(SHOP, SHOP_SECRET).with("rate_limit", "{ per_second = 1, burst = 3 }"),
    );
    let rx = start(&dir, &cfg);
    let body = br#"{"id":5}"#;
    // Four requests on one connection: the bucket (3 tokens, 1/s) must be empty at the 4th
    // unless a whole second passed, which the assertion below reports.
    let mut c = Conn::connect(rx.addr());
    let t = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..4 {
        let h = sign::shopify(SHOP_SECRET, body, "products/update", &delivery_id("rl"));
        answers.push(
            c.send("POST", "/webhooks/shop", &h, body)
                .expect("POST on one connection"),
        );
    }
    let took = t.elapsed();
    for r in &answers[..3] {
        accepted(r);
    }
    let r = &answers[3];
    assert!(
        took < Duration::from_millis(900),
        "four requests took {took:?}: the bucket refilled"
    );
    refused(r, 429, "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("Retry-After is not whole seconds ({e}): {r:?}"));
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(pending(&dir), 3, "the 429 stored nothing");
}

// 6 -------------------------------------------------------------------------------------------

#[test]
fn repeated_delivery_id_is_a_duplicate_stored_once() {
    let dir = TestDir::new("duplicate");
    let cfg = shop_config(&dir).source(SourceSpec::shopify("shop2", SHOP_SECRET));
    let rx = start(&dir, &cfg);
    let body = br#"{"id":6,"title":"Mug"}"#;
    let wid = delivery_id("dup");
    let first = accepted(&post_shop(rx.addr(), body, "products/update", &wid));
    for _ in 0..2 {
        let r = post_shop(rx.addr(), body, "products/update", &wid);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            r.json(),
            serde_json::json!({"status": "duplicate", "id": first.to_string()}),
            "{r:?}"
        );
    }
    // The same delivery id from another source is another event.
    let h = sign::shopify(SHOP_SECRET, body, "products/update", &wid);
    let other = accepted(&http::post(rx.addr(), "/webhooks/shop2", &h, body));
    assert!(other > first);

    // The same delivery arriving 16 times at once (a platform retrying while the first is in
    // flight): one is accepted, every other answer names it.
    let body2 = br#"{"id":66}"#;
    let wid2 = delivery_id("dup-concurrent");
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|_| s.spawn(|| post_shop(rx.addr(), body2, "products/update", &wid2)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut acc = Vec::new();
    let mut dups = Vec::new();
    for r in &answers {
        assert_eq!(r.status, 200, "{r:?}");
        let j = r.json();
        match j["status"].as_str() {
            Some("accepted") => acc.push(accepted(r)),
            Some("duplicate") => dups.push(j["id"].as_str().expect("id").to_string()),
            _ => panic!("{r:?}"),
        }
    }
    assert_eq!(acc.len(), 1, "concurrent copies accepted: {answers:?}");
    let third = acc[0];
    assert!(
        dups.iter().all(|d| *d == third.to_string()),
        "{dups:?} vs {third}"
    );

    let leased = lease_all(&dir.data_dir(), 60_000);
    let got: Vec<(EventId, &str)> = leased
        .iter()
        .map(|l| (l.envelope.id, l.envelope.source.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![(first, "shop"), (other, "shop2"), (third, "shop")]
    );
}

// 7 -------------------------------------------------------------------------------------------

#[test]
fn over_disk_budget_answers_503_and_is_not_ready_but_healthy() {
    let dir = TestDir::new("budget");
    let rx = start(&dir, &shop_config(&dir).receiver("max_queue_bytes", "1"));
    let addr = rx.addr();

    // The budget check refreshes every second: poll.
    let ready = poll_until(deadline_in(Duration::from_secs(10)), || {
        let r = http::get(addr, "/readyz");
        (r.status == 503).then_some(r)
    })
    .expect("/readyz never answered 503 with max_queue_bytes = 1");
    assert_eq!(ready.json()["status"], "not_ready", "{ready:?}");
    assert!(ready.header("retry-after").is_some(), "{ready:?}");

    let r = post_shop(
        addr,
        br#"{"id":7}"#,
        "products/update",
        &delivery_id("full"),
    );
    refused(&r, 503, "queue_full");
    let retry: u64 = r
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("503 without a numeric Retry-After: {r:?}"));
    assert!(retry >= 1);

    let h = http::get(addr, "/healthz");
    assert_eq!(h.status, 200, "{h:?}");
    let j = h.json();
    assert_eq!(j["status"], "ok", "{h:?}");
    assert_eq!(j["queue"]["pending"], 0, "{h:?}");
    assert_eq!(j["queue"]["dead"], 0, "{h:?}");
    assert!(
        j["queue"]["disk_bytes"].as_u64().is_some_and(|b| b > 1),
        "{h:?}"
    );
    assert!(
        j.get("last_event_at").is_some_and(|v| v.is_null()),
        "no event yet: {h:?}"
    );
    assert!(
        j["disk_free_bytes"].as_u64().is_some_and(|b| b > 0),
        "{h:?}"
    );
    assert_eq!(pending(&dir), 0);
}

#[test]
fn healthz_reports_the_last_event() {
    let dir = TestDir::new("healthz");
    let rx = start(&dir, &shop_config(&dir));
    let id = post_product(rx.addr(), br#"{"id":8}"#, "h");
    let h = http::get(rx.addr(), "/healthz");
    assert_eq!(h.status, 200, "{h:?}");
    let j = h.json();
    assert_eq!(j["status"], "ok", "{h:?}");
    assert_eq!(j["queue"]["pending"], 1, "{h:?}");
    assert_eq!(j["queue"]["dead"], 0, "{h:?}");
    let last = j["last_event_at"]
        .as_str()
        .unwrap_or_else(|| panic!("last_event_at: {h:?}"));
    let at = time::OffsetDateTime::parse(last, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("last_event_at {last:?} is not RFC 3339: {e}"));
    let leased = lease_all(&dir.data_dir(), 60_000);
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].envelope.id, id);
    assert_eq!(
        (at.unix_timestamp_nanos() / 1_000_000) as i64,
        leased[0].envelope.received_at_ms,
        "last_event_at {last} is not the event's arrival time"
    );
    let r = http::get(rx.addr(), "/readyz");
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"status": "ready"})),
        "{r:?}"
    );
}

// 8 -------------------------------------------------------------------------------------------

#[test]
fn every_200_survives_kill_9_in_the_middle_of_a_exclusive() {
    let _exclusive = exclusive();
    const TOTAL: usize = 2000;
    const THREADS: usize = 32;
    const KILL_AFTER: usize = 1000;
    let dir = TestDir::new("kill9");
    let cfg = shop_config(&dir);
    let mut rx = start(&dir, &cfg);
    let addr = rx.addr();

    let body_of = |i: usize| format!(r#"{{"n":{i},"pad":"{}"}}"#, "x".repeat(i % 300)).into_bytes();
    let answered = Arc::new(AtomicUsize::new(0));
    let ok: Arc<Mutex<Vec<(usize, EventId)>>> = Arc::default();
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (answered, ok, unexpected) = (answered.clone(), ok.clone(), unexpected.clone());
            std::thread::spawn(move || {
                let Ok(mut c) = Conn::try_connect(addr) else {
                    return;
                };
                for i in (t..TOTAL).step_by(THREADS) {
                    let body = body_of(i);
                    let h =
                        sign::shopify(SHOP_SECRET, &body, "products/update", &format!("burst-{i}"));
                    match c.send("POST", "/webhooks/shop", &h, &body) {
                        Ok(r) if r.status == 200 => {
                            let id = accepted(&r);
                            ok.lock().expect("lock").push((i, id));
                            answered.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => unexpected
                            .lock()
                            .expect("lock")
                            .push(format!("request {i}: {r:?}")),
                        // The receiver was killed: this connection is done.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();

    let seen = poll_until(deadline_in(Duration::from_secs(60)), || {
        let n = answered.load(Ordering::SeqCst);
        (n >= KILL_AFTER).then_some(n)
    })
    .expect("the receiver did not answer 1000 requests within 60 s");
    let status = rx.kill9();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for t in threads {
        t.join().expect("a client thread panicked");
    }
    let ok = std::mem::take(&mut *ok.lock().expect("lock"));
    let unexpected = unexpected.lock().expect("lock").clone();
    assert!(
        unexpected.is_empty(),
        "answers other than 200: {unexpected:#?}"
    );
    assert!(
        ok.len() >= seen,
        "{} answers, {seen} seen before the kill",
        ok.len()
    );
    assert!(
        ok.len() < TOTAL,
        "all {TOTAL} requests were answered before the kill: nothing was in flight"
    );

    // Restart on the same data_dir and take everything out.
    let rx2 = start(&dir, &cfg);
    let leased = lease_all(&dir.data_dir(), 600_000);
    let mut copies: HashMap<EventId, usize> = HashMap::new();
    for l in &leased {
        *copies.entry(l.envelope.id).or_default() += 1;
    }
    let by_id: HashMap<EventId, &Vec<u8>> = leased
        .iter()
        .map(|l| (l.envelope.id, &l.envelope.body))
        .collect();
    let mut lost = Vec::new();
    for (i, id) in &ok {
        match by_id.get(id) {
            None => lost.push(*id),
            Some(b) => assert!(
                **b == body_of(*i),
                "event {id}: body differs from request {i}"
            ),
        }
    }
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let delivered = ok.len() - lost.len();
    println!(
        "answered={} delivered={delivered} lost={} (stored without an answer: {})",
        ok.len(),
        lost.len(),
        leased.len() - delivered
    );
    assert!(lost.is_empty(), "answered 200 but not stored: {lost:?}");
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert!(leased.len() <= TOTAL);

    // The delivery ids of answered events survived too: a platform's retry is a duplicate.
    let (i, id) = ok[0];
    let body = body_of(i);
    let r = post_shop(rx2.addr(), &body, "products/update", &format!("burst-{i}"));
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"status": "duplicate", "id": id.to_string()})
        ),
        "{r:?}"
    );
}

// 9 -------------------------------------------------------------------------------------------

#[test]
fn sigterm_exits_0_and_a_second_receiver_is_refused_as_locked() {
    let _timing = timing();
    let dir = TestDir::new("lifecycle");
    let cfg = shop_config(&dir);
    let config_path = dir.write_config("stockhook.toml", &cfg);
    let mut first = dir.receiver(&config_path);
    let sock = dir.data_dir().join("queue.sock");
    assert!(sock.exists());

    let mut second = dir.spawn(
        stockhook_tests::bins::receiver(),
        &["--config", config_path.to_str().expect("utf-8"), "serve"],
    );
    let t = Instant::now();
    let status = second.wait_exit(deadline_in(Duration::from_secs(10)));
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the second receiver took {:?} to give up",
        t.elapsed()
    );
    assert_eq!(status.code(), Some(1), "second receiver: {status}");
    let err = second.stderr();
    assert!(err.contains("locked"), "stderr does not say locked: {err}");
    assert!(
        !second.stdout().contains("ready addr="),
        "the second receiver announced readiness"
    );

    // The first is untouched: HTTP and its socket still work.
    assert_eq!(http::get(first.addr(), "/healthz").status, 200);
    post_product(first.addr(), br#"{"id":9}"#, "lc");
    assert_eq!(pending(&dir), 1);

    first.sigterm();
    let status = first.wait_exit(deadline_in(Duration::from_secs(15)));
    assert_eq!(status.code(), Some(0), "after SIGTERM: {status}");
    assert!(!sock.exists(), "queue.sock left behind after a clean stop");

    // Stopped cleanly: a new receiver opens the same queue at once and finds the event.
    let _third = dir.receiver(&config_path);
    assert_eq!(pending(&dir), 1);
}

// 10 ------------------------------------------------------------------------------------------

#[test]
fn queue_socket_mode_long_poll_fail_and_lease_expiry() {
    let _timing = timing();
    let dir = TestDir::new("socket");
    let rx = start(&dir, &shop_config(&dir));
    let addr = rx.addr();
    let sock = dir.data_dir().join("queue.sock");
    let meta = std::fs::metadata(&sock).unwrap_or_else(|e| panic!("stat {}: {e}", sock.display()));
    assert!(
        meta.file_type().is_socket(),
        "{} is not a socket",
        sock.display()
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");

    // A long poll (5 s) is woken by an append made while it waits.
    let data_dir = dir.data_dir();
    let (tx, waiting) = mpsc::channel();
    let poller = std::thread::spawn(move || {
        let q = Queue::connect(&data_dir);
        tx.send(()).expect("main thread waits");
        let t = Instant::now();
        let got = q.lease(10, 5000, 60_000);
        (t.elapsed(), got)
    });
    waiting.recv().expect("poller connected");
    // The input of this test: the append happens while the lease is parked.
    std::thread::sleep(Duration::from_millis(300));
    let id = post_product(addr, br#"{"id":10}"#, "lp");
    let (took, got) = poller.join().expect("poller thread");
    let ids: Vec<EventId> = got.iter().map(|l| l.envelope.id).collect();
    assert_eq!(ids, vec![id], "the long poll returned the appended event");
    assert!(
        took >= Duration::from_millis(250),
        "the lease returned before the append ({took:?})"
    );
    assert!(
        took < Duration::from_secs(2),
        "the append did not wake the long poll: {took:?}"
    );

    let q = Queue::connect(&dir.data_dir());

    // Permanent failure: dead-lettered with the error.
    q.fail(
        id,
        Failure::Permanent {
            error: "body is not JSON: e2e".into(),
        },
    );
    let dead = q.dead_list(DeadFilter::default());
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].id, id);
    assert_eq!(dead[0].error, "body is not JSON: e2e");
    assert_eq!(dead[0].source, SHOP);
    assert_eq!(dead[0].topic.as_deref(), Some("products/update"));
    assert_eq!(dead[0].attempts, 1);
    let s = q.stats();
    assert_eq!((s.pending, s.leased, s.dead), (0, 0, 1));

    // Transient failure with a retry time in the past: delivered again, attempts 2.
    let id2 = post_product(addr, br#"{"id":11}"#, "tr");
    let got = q.lease(10, 0, 60_000);
    assert_eq!(attempts(&got), vec![(id2, 1)]);
    q.fail(
        id2,
        Failure::Transient {
            error: "smtp down".into(),
            retry_at_ms: now_ms() - 1000,
        },
    );
    let got = q.lease(10, 2000, 60_000);
    assert_eq!(attempts(&got), vec![(id2, 2)]);

    // A lease not acked within lease_ms is delivered again (and not before).
    let id3 = post_product(addr, br#"{"id":12}"#, "ex");
    let got = q.lease(10, 0, 700);
    assert_eq!(attempts(&got), vec![(id3, 1)]);
    assert!(
        q.lease(10, 0, 60_000).is_empty(),
        "redelivered while its lease is still valid"
    );
    let t = Instant::now();
    let got = q.lease(10, 5000, 60_000);
    let took = t.elapsed();
    assert_eq!(attempts(&got), vec![(id3, 2)]);
    assert!(
        took < Duration::from_secs(3),
        "expired lease came back after {took:?}"
    );

    q.ack(vec![id2, id3]);
    let s = q.stats();
    assert_eq!(
        (s.pending, s.leased, s.dead, s.acked_retained),
        (0, 0, 1, 2)
    );
}

// 11 ------------------------------------------------------------------------------------------

/// `stockhook-receiver --config <config> check-config`, run to its end.
fn check_config(dir: &TestDir, config: &std::path::Path) -> stockhook_tests::Proc {
    dir.run(
        stockhook_tests::bins::receiver(),
        &["--config", config.to_str().expect("utf-8"), "check-config"],
        Duration::from_secs(20),
    )
}

/// `check-config` of `config` exits 2 naming `<config>:<line>:`; its stderr.
fn refused_at(dir: &TestDir, config: &std::path::Path, line: usize) -> String {
    let p = check_config(dir, config);
    assert_eq!(p.status().and_then(|s| s.code()), Some(2));
    let err = p.stderr();
    assert!(
        err.contains(&format!("{}:{line}:", config.display())),
        "no file:line in {err}"
    );
    err
}

#[test]
fn check_config_names_file_and_line() {
    let dir = TestDir::new("check-config");
    let bad = dir.write(
        "bad.toml",
        format!(
            "data_dir = {}\n\n[receiver]\nmax_body_bytes = \"lots\"\n",
            stockhook_tests::config::toml_str(dir.data_dir().to_str().expect("utf-8"))
        ),
    );
    let err = refused_at(&dir, &bad, 4);
    assert!(
        err.contains("max_body_bytes") || err.contains("usize"),
        "{err}"
    );

    let typo = dir.write(
        "typo.toml",
        "log_level = \"info\"\n\n[receiver]\nlisten = \"127.0.0.1:0\"\nmax_body_byte = 5\n",
    );
    let err = refused_at(&dir, &typo, 5);
    assert!(err.contains("max_body_byte"), "{err}");

    // A good one passes and masks the secret.
    let good = dir.write_config("good.toml", &shop_config(&dir));
    let p = check_config(&dir, &good);
    assert_eq!(p.status().and_then(|s| s.code()), Some(0), "{}", p.stderr());
    assert!(
        !p.stdout().contains(SHOP_SECRET),
        "check-config printed the secret"
    );
}

#[test]
fn sign_output_makes_an_accepted_request() {
    let dir = TestDir::new("sign");
    let cfg = shop_config(&dir);
    let config_path = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&config_path);
    let body = fixtures::data().bytes("payloads/shopify/products_update.json");
    let file = dir.write("body.json", &body);
    let p = dir.run(
        stockhook_tests::bins::receiver(),
        &[
            "--config",
            config_path.to_str().expect("utf-8"),
            "sign",
            "--source",
            SHOP,
            "--file",
            file.to_str().expect("utf-8"),
            "--topic",
            "products/update",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(p.status().and_then(|s| s.code()), Some(0), "{}", p.stderr());
    let out = p.stdout();
    let headers: Vec<(String, String)> = out
        .lines()
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(": ")
                .unwrap_or_else(|| panic!("not a header line: {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect();
    assert!(
        headers.iter().any(|(k, _)| k == "X-Shopify-Hmac-Sha256"),
        "{out}"
    );
    let id = accepted(&http::post(rx.addr(), "/webhooks/shop", &headers, &body));
    let leased = lease_all(&dir.data_dir(), 60_000);
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].envelope.id, id);
    assert!(leased[0].envelope.body == body);
    assert_eq!(
        leased[0].envelope.header("x-shopify-topic"),
        Some("products/update")
    );
}

// 12 ------------------------------------------------------------------------------------------

#[test]
fn logs_never_contain_the_body() {
    const MARKER: &str = "customer-email-marker@example.com";
    let dir = TestDir::new("logs");
    let rx = start(
        &dir,
        &shop_config(&dir)
            .top("log_level", "\"debug\"")
            .receiver("max_body_bytes", "4096"),
    );
    let addr = rx.addr();
    let body =
        format!(r#"{{"id":12,"email":"{MARKER}","customer":{{"email":"{MARKER}"}}}}"#).into_bytes();

    let wid = delivery_id("log");
    let id = accepted(&post_shop(addr, &body, "orders/create", &wid));
    let dup = post_shop(addr, &body, "orders/create", &wid);
    assert_eq!(dup.json()["status"], "duplicate");
    let h = sign::shopify("wrong-secret", &body, "orders/create", &delivery_id("log"));
    refused(
        &http::post(addr, "/webhooks/shop", &h, &body),
        401,
        "signature_mismatch",
    );
    let mut big = body.clone();
    big.extend(std::iter::repeat_n(b' ', 5000));
    let h = sign::shopify(SHOP_SECRET, &big, "orders/create", &delivery_id("log"));
    refused(
        &http::post(addr, "/webhooks/shop", &h, &big),
        413,
        "body_too_large",
    );
    let h = sign::shopify(SHOP_SECRET, &body, "orders/create", &delivery_id("log"));
    refused(
        &http::post(addr, "/webhooks/unknown", &h, &body),
        404,
        "unknown_source",
    );

    // The logs are there (the accepted event's id and the refusal reasons) ...
    let logs = poll_until(deadline_in(Duration::from_secs(10)), || {
        let e = rx.stderr();
        (e.contains(&id.to_string())
            && e.contains("signature_mismatch")
            && e.contains("body_too_large"))
        .then_some(e)
    })
    .unwrap_or_else(|| {
        panic!(
            "the receiver's log lacks the request lines:\n{}",
            rx.stderr()
        )
    });
    // ... and no body in them.
    assert!(!logs.contains(MARKER), "a payload reached the log:\n{logs}");
    assert!(
        !logs.contains(r#""id":12"#),
        "a payload reached the log:\n{logs}"
    );
    assert!(!logs.contains(SHOP_SECRET), "the secret reached the log");
}
