//! Hostile input against the real binaries on loopback (issue 6, "Reliability and security"):
//! malformed HTTP, headers past the limits, slowloris headers and bodies, bodies over the limit,
//! invalid UTF-8 and deeply nested JSON, thousands of idle connections, replayed deliveries, the
//! Unix sockets' permissions, and customer data in the logs.
//!
//! What every test here holds the receiver to: it answers 4xx or drops the connection, stays up
//! (`/healthz` answers 200 from a fresh connection afterwards), stores nothing unsigned (the
//! queue holds exactly the signed events, counted over its socket), and its memory stays bounded.
//! A signed body the worker cannot read is stored (200) and then dead-lettered with an error,
//! never a crash.
//!
//! Nothing sleeps to wait for something: conditions are polled with a deadline. The pauses here
//! are inputs (a slowloris client's dribble, a replay made after the tolerance has passed).
//! The two tests that load the machine (memory, 1500 connections) take the write side of
//! [`LOAD`]; the timed ones its read side, so they never measure under that load.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use stockhook_shared::envelope::EventId;
use stockhook_shared::queue::DeadFilter;
use stockhook_tests::answers::{accepted, delivery_id, exclusive, refused, timing};
use stockhook_tests::http::{self, Conn, Outcome, Resp};
use stockhook_tests::proc::stdout_of;
use stockhook_tests::queue::{lease_all, queue_stats, Queue};
use stockhook_tests::{
    deadline_in, fixtures, poll_until, sign, ConfigBuilder, Proc, SourceSpec, TestDir,
};

const SHOP: &str = "shop";
const SHOP_SECRET: &str = "shpss_hostile_0123456789abcdef";
const TO: &str = "ops-alerts@stockhook.test";

fn shop_config(dir: &TestDir) -> ConfigBuilder {
    dir.config()
        .recipients(&[TO])
        .source(SourceSpec::shopify(SHOP, SHOP_SECRET))
}

fn start(dir: &TestDir, cfg: &ConfigBuilder) -> (Proc, PathBuf) {
    let path = dir.write_config("stockhook.toml", cfg);
    (dir.receiver(&path), path)
}

fn post_shop(addr: SocketAddr, body: &[u8], topic: &str, webhook_id: &str) -> Resp {
    let h = sign::shopify(SHOP_SECRET, body, topic, webhook_id);
    http::post(addr, "/webhooks/shop", &h, body)
}

/// The receiver is up and serving a fresh connection, and its queue holds exactly `pending`.
fn still_serving(what: &str, addr: SocketAddr, data_dir: &Path, pending: u64) {
    let r = Conn::try_connect(addr)
        .and_then(|mut c| c.send::<&str, &str>("GET", "/healthz", &[], b""))
        .unwrap_or_else(|e| panic!("after {what}: GET /healthz on a fresh connection: {e}"));
    assert_eq!(r.status, 200, "after {what}: {r:?}");
    let s = queue_stats(data_dir);
    assert_eq!(
        (s.pending, s.leased, s.dead),
        (pending, 0, 0),
        "after {what}: the queue should hold exactly the {pending} signed event(s)"
    );
}

/// A response in 4xx (or one of `also`), or the connection closed without one.
fn refused_or_closed(what: &str, outcome: &Outcome, also: &[u16]) {
    match outcome {
        Outcome::Response(r) if (400..500).contains(&r.status) || also.contains(&r.status) => {}
        Outcome::Closed => {}
        other => panic!("{what}: expected a 4xx answer or a closed connection, got {other:?}"),
    }
}

/// Sends `bytes` on a fresh connection (a write the server cuts short is fine: it may answer
/// and close before reading everything) and reads what comes back within `wait`.
fn send_raw(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Outcome {
    let mut c = Conn::connect(addr);
    let _ = c.write_raw(bytes);
    c.read_outcome(wait)
        .unwrap_or_else(|e| panic!("reading the answer: {e}"))
}

/// A tiny xorshift for reproducible garbage.
fn garbage(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"))
}

/// True while the process has not exited.
fn alive(p: &mut Proc) -> bool {
    p.try_wait_exit(Instant::now()).is_none()
}

/// Raises this process's open-file limit to at least `want` (up to the hard limit); children
/// inherit it. Returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        if r.rlim_cur < want {
            r.rlim_cur = want.min(r.rlim_max);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &r),
                0,
                "setrlimit(RLIMIT_NOFILE, {}): {}",
                r.rlim_cur,
                std::io::Error::last_os_error()
            );
        }
    }
    r.rlim_cur
}

// 1 -------------------------------------------------------------------------------------------

#[test]
fn malformed_http_gets_4xx_or_a_closed_connection_and_stores_nothing() {
    let _t = timing();
    let dir = TestDir::new("hostile-http");
    let cfg = shop_config(&dir)
        .receiver("header_timeout", "\"1s\"")
        .receiver("body_timeout", "\"2s\"")
        .receiver("max_body_bytes", "65536");
    let (mut rx, _) = start(&dir, &cfg);
    let addr = rx.addr();
    let data = dir.data_dir();
    let host = format!("Host: {addr}\r\n");
    let body = br#"{"id":1,"title":"Mug"}"#;
    let sig = sign::shopify_hmac(SHOP_SECRET, body);

    // Raw requests to the Shopify route: `post` writes the request line and Host, `signed` also
    // a valid signature of `body`; each case adds its own headers and framing.
    let post = |rest: &str| format!("POST /webhooks/shop HTTP/1.1\r\n{host}{rest}").into_bytes();
    let signed = |rest: &str| post(&format!("X-Shopify-Hmac-Sha256: {sig}\r\n{rest}"));
    let text = std::str::from_utf8(body).unwrap();

    let mut cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("binary garbage", {
            let mut g = garbage(512, 0x9E37_79B9);
            g.extend_from_slice(b"\r\n\r\n");
            g
        }, &[]),
        (
            "a TLS ClientHello on the plain port",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x00\x00\x02\x13\x01\x01\x00\r\n\r\n".to_vec(),
            &[],
        ),
        // An HTTP/2 preface to an HTTP/1-only server: 505 would be as right as 400.
        ("an HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(), &[505]),
        ("GET / HTTP/9.9", format!("GET /healthz HTTP/9.9\r\n{host}\r\n").into_bytes(), &[505]),
        ("HTTP/1.1 with no version digits", format!("GET /healthz HTTP/\r\n{host}\r\n").into_bytes(), &[505]),
        // Never finishes its head: 408 after header_timeout (1 s).
        ("a head missing its final CRLF", format!("GET /healthz HTTP/1.1\r\n{host}").into_bytes(), &[]),
        ("a request line with no CRLF at all", b"GET /healthz HTTP/1.1".to_vec(), &[]),
        // Bare LF is tolerated by the parser: then it is an unsigned POST, 401.
        ("bare LF line endings, unsigned", format!("POST /webhooks/shop HTTP/1.1\n{}Content-Length: 2\n\n{{}}", host.replace("\r\n", "\n")).into_bytes(), &[]),
        ("NUL in the request target", format!("GET /heal\0thz HTTP/1.1\r\n{host}\r\n").into_bytes(), &[]),
        ("NUL in the method", format!("PO\0ST /webhooks/shop HTTP/1.1\r\n{host}\r\n").into_bytes(), &[]),
        ("a space in a header name", post("X-Bad Name: v\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("a control byte in a header name", post("X-\x01: v\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("an empty header name", post(": v\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("NUL in a header value", post("X-A: a\0b\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("a lone CR in a header value", post("X-A: a\rb\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("an obs-fold continuation line", post("X-Shopify-Topic: products/\r\n update\r\nContent-Length: 0\r\n\r\n"), &[]),
        ("obs-text (0xFF) in the signature header", {
            let mut r = post("X-Shopify-Hmac-Sha256: ");
            r.extend_from_slice(b"\xff\xfe\xfd");
            r.extend_from_slice(format!("\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
            r.extend_from_slice(body);
            r
        }, &[]),
        // Over the 64 KiB head buffer: 431 or closed, or (see
        // `a_head_over_64_kib_is_refused_with_431`) parsed, then 401 for want of a signature.
        ("a 100 KiB header line", long_header_request(addr, 100 * 1024), &[]),
        ("a 1 MiB header line", long_header_request(addr, 1024 * 1024), &[]),
        ("2000 headers", {
            let mut r = post("");
            for i in 0..2000 {
                r.extend_from_slice(format!("X-H-{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"Content-Length: 0\r\n\r\n");
            r
        }, &[]),
        ("a 100 KiB request target", {
            let mut r = b"GET /".to_vec();
            r.extend(std::iter::repeat_n(b'a', 100 * 1024));
            r.extend_from_slice(format!(" HTTP/1.1\r\n{host}\r\n").as_bytes());
            r
        }, &[]),
        ("a bogus chunk size, signed", signed(&format!("Transfer-Encoding: chunked\r\n\r\nzz\r\n{text}\r\n0\r\n\r\n")), &[]),
        ("an overflowing chunk size", signed("Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\nabc\r\n0\r\n\r\n"), &[]),
        ("a chunk longer than its size", signed(&format!("Transfer-Encoding: chunked\r\n\r\n2\r\n{text}\r\n0\r\n\r\n")), &[]),
        ("Transfer-Encoding gzip (not chunked)", post("Transfer-Encoding: gzip\r\n\r\nxxxx"), &[]),
        ("Transfer-Encoding in HTTP/1.0", format!(
            "POST /webhooks/shop HTTP/1.0\r\n{host}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ).into_bytes(), &[]),
        ("a negative Content-Length", signed("Content-Length: -1\r\n\r\n"), &[]),
        ("an overflowing Content-Length", signed("Content-Length: 99999999999999999999999\r\n\r\n"), &[]),
        ("Content-Length u64::MAX", signed("Content-Length: 18446744073709551615\r\n\r\n"), &[]),
        ("Content-Length with a plus sign", signed(&format!("Content-Length: +22\r\n\r\n{text}")), &[]),
        ("two different Content-Lengths", signed(&format!("Content-Length: 22\r\nContent-Length: 23\r\n\r\n{text} ")), &[]),
        ("a declared body over max_body_bytes", signed("Content-Length: 70000\r\n\r\n{"), &[]),
        ("a chunked body over max_body_bytes, signed", {
            let big = vec![b' '; 100 * 1024];
            let mut r = format!(
                "POST /webhooks/shop HTTP/1.1\r\n{host}X-Shopify-Hmac-Sha256: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
                sign::shopify_hmac(SHOP_SECRET, &big),
                big.len()
            ).into_bytes();
            r.extend_from_slice(&big);
            r.extend_from_slice(b"\r\n0\r\n\r\n");
            r
        }, &[]),
        ("a body shorter than its Content-Length, then nothing", signed(&format!("Content-Length: 500\r\n\r\n{text}")), &[]),
    ];
    // Unsigned and wrongly signed, well-formed: 401.
    cases.push((
        "an unsigned POST",
        http::request_bytes::<&str, &str>("POST", "/webhooks/shop", addr, &[], body),
        &[],
    ));

    for (what, bytes, also) in &cases {
        let t = Instant::now();
        let outcome = send_raw(addr, bytes, Duration::from_secs(6));
        refused_or_closed(what, &outcome, also);
        // Past the head limits: refused as such, never routed.
        if [
            "a 1 MiB header line",
            "2000 headers",
            "a 100 KiB request target",
        ]
        .contains(what)
        {
            match &outcome {
                Outcome::Response(r) if [400, 414, 431].contains(&r.status) => {}
                Outcome::Closed => {}
                other => panic!("{what}: expected 431, 414, 400 or closed, got {other:?}"),
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: took {:?} (header_timeout 1 s, body_timeout 2 s)",
            t.elapsed()
        );
        assert!(alive(&mut rx), "the receiver exited after {what}");
        still_serving(what, addr, &data, 0);
        let status = match &outcome {
            Outcome::Response(r) => r.status.to_string(),
            _ => "closed".into(),
        };
        println!("{what}: {status}");
    }

    // Content-Length and Transfer-Encoding together (a request-smuggling shape): the chunked
    // framing wins, and the connection must close after the answer, so the bytes behind the
    // body ("smuggled": a second, validly signed request) are never read as a request.
    let smuggled_body = br#"{"id":2,"smuggled":true}"#;
    let smuggled = http::request_bytes(
        "POST",
        "/webhooks/shop",
        addr,
        &sign::shopify(
            SHOP_SECRET,
            smuggled_body,
            "products/update",
            &delivery_id("smug"),
        ),
        smuggled_body,
    );
    let mut req = format!(
        "POST /webhooks/shop HTTP/1.1\r\n{host}X-Shopify-Hmac-Sha256: {sig}\r\nX-Shopify-Topic: products/update\r\nX-Shopify-Webhook-Id: {}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        delivery_id("clte"),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\n\r\n");
    req.extend_from_slice(&smuggled);
    let mut c = Conn::connect(addr);
    let _ = c.write_raw(&req);
    let first = c
        .read_outcome(Duration::from_secs(5))
        .expect("reading the CL+TE answer");
    let stored = match &first {
        Outcome::Response(r) if r.status == 200 => {
            accepted(r);
            1
        }
        other => {
            refused_or_closed("Content-Length + Transfer-Encoding", other, &[]);
            0
        }
    };
    let next = c
        .read_outcome(Duration::from_secs(3))
        .expect("reading after the CL+TE answer");
    assert!(
        matches!(next, Outcome::Closed),
        "Content-Length + Transfer-Encoding: the connection stayed open and answered the bytes \
         after the body as a request: {next:?}"
    );
    still_serving("Content-Length + Transfer-Encoding", addr, &data, stored);
    println!("Content-Length + Transfer-Encoding: {first:?}");

    // Still accepting real work.
    let id = accepted(&post_shop(
        addr,
        body,
        "products/update",
        &delivery_id("after"),
    ));
    let leased = lease_all(&data, 60_000);
    assert_eq!(leased.len() as u64, stored + 1, "only signed events stored");
    assert_eq!(leased.last().map(|l| l.envelope.id), Some(id));
    assert!(leased.iter().all(|l| l.envelope.body == body));
}

/// An unsigned POST with one header line of `len` bytes.
fn long_header_request(addr: SocketAddr, len: usize) -> Vec<u8> {
    let mut r = format!("POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nX-Long: ").into_bytes();
    r.extend(std::iter::repeat_n(b'a', len));
    r.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    r
}

/// KNOWN PRODUCT BUG, pinned. Input: one request whose head is 100 KiB (a single `X-Long`
/// header line), written at once. Expected: 431 (or the connection closed), as for any head over
/// the receiver's 64 KiB head limit (`max_buf_size(64 * 1024)` in receiver/src/server.rs).
/// Actual: hyper checks `max_buf_size` only when a read leaves the head incomplete; a head that
/// completes within the read that crosses 64 KiB is parsed (heads up to ~128 KiB get through),
/// so this one is routed and answered 401 `missing_header`. Memory stays bounded (1 MiB heads
/// are refused), but the limit is not the configured one. Fix: also set
/// `http1::Builder::max_header_size(64 * 1024)`. Un-ignore with the fix.
#[test]
fn a_head_over_64_kib_is_refused_with_431() {
    let _t = timing();
    let dir = TestDir::new("hostile-head-limit");
    let (rx, _) = start(&dir, &shop_config(&dir));
    for len in [70 * 1024, 100 * 1024, 120 * 1024] {
        match send_raw(
            rx.addr(),
            &long_header_request(rx.addr(), len),
            Duration::from_secs(5),
        ) {
            Outcome::Response(r) if r.status == 431 => {}
            Outcome::Closed => {}
            other => panic!("a {len}-byte header line: expected 431 or closed, got {other:?}"),
        }
    }
}

// 2 -------------------------------------------------------------------------------------------

/// `n` nested arrays: `[[[...]]]`.
fn nested_arrays(n: usize) -> Vec<u8> {
    let mut v = vec![b'['; n];
    v.extend(std::iter::repeat_n(b']', n));
    v
}

/// `n` nested objects: `{"a":{"a":...1...}}`.
fn nested_objects(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n * 6 + 1);
    for _ in 0..n {
        v.extend_from_slice(br#"{"a":"#);
    }
    v.push(b'1');
    v.extend(std::iter::repeat_n(b'}', n));
    v
}

#[test]
fn invalid_utf8_and_deep_nesting_are_stored_when_signed_then_dead_lettered_not_crashing() {
    let dir = TestDir::new("hostile-bodies");
    let cfg = shop_config(&dir);
    let (mut rx, config) = start(&dir, &cfg);
    let addr = rx.addr();
    let data = dir.data_dir();

    let bodies: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid UTF-8",
            b"{\"title\":\"caf\xe9 \xff\xfe \xed\xa0\x80\",\"id\":1}".to_vec(),
        ),
        ("100k nested arrays", nested_arrays(100_000)),
        ("100k unclosed arrays", vec![b'['; 100_000]),
        ("50k nested objects", nested_objects(50_000)),
        (
            "numbers past every range",
            br#"{"id":1e999999,"variants":[{"id":99999999999999999999999999,"inventory_quantity":-1e400}]}"#.to_vec(),
        ),
    ];
    let mut ids = Vec::new();
    for (what, b) in &bodies {
        // Unsigned: 401, nothing stored.
        let r = http::post(
            addr,
            "/webhooks/shop",
            &[("X-Shopify-Topic", "products/update")],
            b,
        );
        refused(&r, 401, "missing_header");
        // Signed with another secret: 401.
        let h = sign::shopify("not-the-secret", b, "products/update", &delivery_id("bad"));
        refused(
            &http::post(addr, "/webhooks/shop", &h, b),
            401,
            "signature_mismatch",
        );
        // Signed: stored as it is (the receiver never parses a body).
        let id = accepted(&post_shop(addr, b, "products/update", &delivery_id("ok")));
        ids.push((id, *what));
        assert!(alive(&mut rx), "the receiver exited after {what}");
    }
    still_serving("hostile bodies", addr, &data, bodies.len() as u64);

    // Stored byte for byte. One lease of 1 ms: they are deliverable again at once, for the
    // worker.
    let leased = Queue::connect(&data).lease(bodies.len() + 1, 0, 1);
    assert_eq!(leased.len(), bodies.len());
    for (l, (what, b)) in leased.iter().zip(&bodies) {
        assert!(l.envelope.body == *b, "{what}: stored body differs");
    }

    // The worker reads each, fails it permanently (dead letter with the parse error), and
    // keeps running.
    let mut worker = dir.worker(&config);
    let q = Queue::connect(&data);
    let dead = poll_until(deadline_in(Duration::from_secs(60)), || {
        assert!(
            alive(&mut worker),
            "the worker exited on a hostile body:\n{}",
            worker.stderr()
        );
        let d = q.dead_list(DeadFilter::default());
        (d.len() == bodies.len()).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "not all hostile bodies were dead-lettered within 60 s: {:?}\nworker log:\n{}",
            q.dead_list(DeadFilter::default()),
            worker.stderr()
        )
    });
    for (id, what) in &ids {
        let d = dead
            .iter()
            .find(|d| d.id == *id)
            .unwrap_or_else(|| panic!("{what} ({id}) not dead-lettered: {dead:?}"));
        assert!(
            d.error.contains("JSON"),
            "{what}: the dead letter should name the JSON error: {d:?}"
        );
        assert!(
            !d.error.contains("caf") && d.error.len() < 300,
            "{what}: the error carries body content: {d:?}"
        );
    }
    let s = q.stats();
    assert_eq!((s.pending, s.leased, s.dead), (0, 0, bodies.len() as u64));
    assert!(
        alive(&mut worker),
        "the worker exited:\n{}",
        worker.stderr()
    );
    still_serving_dead("after the worker ran", addr, &data, bodies.len() as u64);
}

fn still_serving_dead(what: &str, addr: SocketAddr, data_dir: &Path, dead: u64) {
    let r = http::get(addr, "/healthz");
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert_eq!(queue_stats(data_dir).dead, dead, "{what}");
}

/// An `inventory_levels/update` body.
fn level(item: u64, location: u64, available: &str, updated_at: &str) -> Vec<u8> {
    format!(
        r#"{{"inventory_item_id":{item},"location_id":{location},"available":{available},"updated_at":"{updated_at}","admin_graphql_api_id":"gid://shopify/InventoryLevel/{item}?inventory_item_id={item}"}}"#
    )
    .into_bytes()
}

/// Levels that are valid JSON integers but add up past i64 (one location at i64::MAX, another
/// at 5, a third at i64::MIN), sent signed as Shopify sends levels. Returns the worker's log
/// once the extremes have settled (acked or dead-lettered) and an ordinary low level sent after
/// them has given its alert email; panics if the worker exits, or stalls on them.
fn run_extreme_quantities(name: &str) -> String {
    let dir = TestDir::new(name);
    // Two attempts: an event failed as transient settles (dead-lettered) within ~5 s.
    let cfg = shop_config(&dir).queue("max_attempts", "2");
    let (mut rx, config) = start(&dir, &cfg);
    let addr = rx.addr();
    let data = dir.data_dir();
    let mut worker = dir.worker(&config);
    let q = Queue::connect(&data);

    let topic = "inventory_levels/update";
    for (loc, available, at) in [
        (1, "9223372036854775807", "2024-06-01T10:00:00Z"),
        (2, "5", "2024-06-01T10:00:01Z"),
        (3, "-9223372036854775808", "2024-06-01T10:00:02Z"),
    ] {
        accepted(&post_shop(
            addr,
            &level(900_001, loc, available, at),
            topic,
            &delivery_id("lvl"),
        ));
    }
    // Settled: nothing pending or leased (each event applied, or dead-lettered).
    poll_until(deadline_in(Duration::from_secs(60)), || {
        assert!(
            alive(&mut worker),
            "the worker exited on extreme quantities:\n{}",
            worker.stderr()
        );
        let s = q.stats();
        (s.pending == 0 && s.leased == 0).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "extreme quantities still pending or leased after 60 s: {:?}\nworker log:\n{}",
            q.stats(),
            worker.stderr()
        )
    });
    let after_extremes = q.stats();

    // An ordinary low level after them: its alert email is written.
    accepted(&post_shop(
        addr,
        &level(900_002, 1, "1", "2024-06-01T11:00:00Z"),
        topic,
        &delivery_id("lvl"),
    ));
    let mail = poll_until(deadline_in(Duration::from_secs(60)), || {
        assert!(alive(&mut worker), "the worker exited:\n{}", worker.stderr());
        stockhook_tests::proc::mail_files(&data)
            .into_iter()
            .find(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("900002")))
    })
    .unwrap_or_else(|| {
        panic!(
            "no low-stock email for the ordinary event after the extreme ones: {:?}\nworker log:\n{}",
            q.stats(),
            worker.stderr()
        )
    });
    println!(
        "after the extremes: {after_extremes:?}; ordinary alert in {}",
        mail.display()
    );
    assert!(alive(&mut rx));
    let s = q.stats();
    assert_eq!((s.pending, s.leased), (0, 0), "{s:?}");
    worker.stderr()
}

#[test]
fn extreme_quantities_do_not_crash_or_stall_the_worker() {
    run_extreme_quantities("hostile-quantities");
}

/// KNOWN PRODUCT BUG, pinned. Input: the levels of [`run_extreme_quantities`] (Shopify
/// `inventory_levels/update`, one inventory item, `available` 9223372036854775807 at one location
/// and 5 at another). Expected: applied with a checked total, or dead-lettered with a field
/// error; no panic. Actual: `ItemState::total()` (worker/src/state.rs, `tracked.iter().sum()`)
/// overflows: in a debug build it panics ("attempt to add with overflow") inside the state task,
/// the whole batch is failed as transient ("state store failed; events will be retried") and
/// dead-lettered after `max_attempts`, with any well-formed event that shared the batch; in a
/// release build the sum wraps to a negative total (a false out-of-stock). `combined_level`'s
/// `total.unwrap_or(0) + t` has the same overflow. Un-ignore with the fix.
#[test]
fn extreme_quantities_never_panic_the_worker() {
    let log = run_extreme_quantities("hostile-quantities-panic");
    assert!(!log.contains("panicked"), "the worker panicked:\n{log}");
}

// 3 -------------------------------------------------------------------------------------------

/// A partial request head, never finished: `POST`, signed-looking headers, then `pad` bytes of
/// a header value with no line end.
fn slow_head(addr: SocketAddr, pad: usize) -> Vec<u8> {
    let mut h = format!(
        "POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Topic: products/update\r\nX-Pad: "
    )
    .into_bytes();
    h.extend(std::iter::repeat_n(b'a', pad));
    h
}

/// Slowloris clients: unfinished heads on `streams`, one more byte each every 250 ms from one
/// thread, until dropped.
struct Slowloris {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Slowloris {
    fn start(addr: SocketAddr, n: usize, pad: usize) -> Slowloris {
        let mut streams = Vec::with_capacity(n);
        for _ in 0..n {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("connecting a slowloris client: {e}"));
            std::io::Write::write_all(&mut s, &slow_head(addr, pad)).expect("writing a slow head");
            streams.push(s);
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            // The pauses are this client's input, not a wait.
            while !stop2.load(Ordering::Relaxed) {
                for s in &mut streams {
                    let _ = std::io::Write::write_all(s, b"a");
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        });
        Slowloris {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Slowloris {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One round of load: 200 slowloris connections (a 48 KiB unfinished head each, then a byte
/// every 250 ms), 20 bodies declared over the limit, 15 chunked bodies streamed past it, and 15
/// chunked bodies meant to exceed it that stall after 240 KiB. Returns the peak RSS (KiB) while
/// all are open, and the open connections (the caller closes them by dropping).
fn load_round(addr: SocketAddr, pid: u32, max_body: usize) -> (u64, Slowloris, Vec<Conn>) {
    let slow = Slowloris::start(addr, 200, 48 * 1024);
    let mut conns = Vec::new();
    let body = vec![b' '; max_body + 1024];
    let sig = sign::shopify_hmac(SHOP_SECRET, &body);
    for _ in 0..20 {
        let mut c = Conn::connect(addr);
        let head = format!(
            "POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Hmac-Sha256: {sig}\r\nContent-Length: 10485760\r\n\r\n"
        );
        c.write_raw(head.as_bytes()).expect("writing a head");
        let _ = c.write_raw(&body[..64 * 1024]);
        oversize_refused(&mut c, "a declared oversize body");
        conns.push(c);
    }
    for _ in 0..15 {
        let mut c = Conn::connect(addr);
        let mut req = format!(
            "POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Hmac-Sha256: {sig}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        req.extend_from_slice(b"\r\n0\r\n\r\n");
        let _ = c.write_raw(&req);
        oversize_refused(&mut c, "a chunked oversize body");
        conns.push(c);
    }
    for _ in 0..15 {
        let mut c = Conn::connect(addr);
        let mut req = format!(
            "POST /webhooks/shop HTTP/1.1\r\nHost: {addr}\r\nX-Shopify-Hmac-Sha256: {sig}\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"
        )
        .into_bytes();
        req.extend(std::iter::repeat_n(b' ', 240 * 1024));
        c.write_raw(&req).expect("writing a stalled body");
        conns.push(c);
    }
    // Everything is open now: sample for 2 s.
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        peak = peak.max(vm_rss_kib(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    (peak, slow, conns)
}

/// The answer to a request whose body is over the limit: 413 `body_too_large` or a closed
/// connection; `what` names the request in the failure.
fn oversize_refused(c: &mut Conn, what: &str) {
    match c.read_outcome(Duration::from_secs(10)).expect("reading") {
        Outcome::Response(r) => refused(&r, 413, "body_too_large"),
        Outcome::Closed => {}
        other => panic!("{what}: {other:?}"),
    }
}

/// RSS once it stops moving: two samples 1 s apart within 256 KiB (at most 20 s).
fn settled_rss(pid: u32) -> u64 {
    let mut last = vm_rss_kib(pid);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        let now = vm_rss_kib(pid);
        if now.abs_diff(last) <= 256 {
            return now;
        }
        last = now;
    }
    last
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("listing /proc/{pid}/fd: {e}"))
        .count()
}

/// Memory under 200 slowloris connections and 50 oversize bodies at once, four rounds:
/// * RSS while they are all open stays under the baseline + 64 MiB, every round;
/// * once the clients close, every connection is released (the receiver's open descriptors
///   come back to the baseline);
/// * what stays behind levels off: glibc keeps freed heap pages mapped for reuse (one heap per
///   thread arena), so RSS does not drop back to the baseline, but later rounds reuse them. On
///   the reference machine: +10, +19, +25, +28 MiB after rounds 1 to 4, +35 MiB after 10; with
///   MALLOC_ARENA_MAX=1, flat at +28.8 MiB from round 8 to 24: allocator retention, not a leak.
///   So: the last round adds under 6 MiB, and the total stays under 48 MiB.
#[test]
fn memory_stays_bounded_under_slowloris_and_oversize_bodies() {
    let _x = exclusive();
    raise_nofile(4096);
    const MAX_BODY: usize = 256 * 1024;
    const BOUND_KIB: u64 = 64 * 1024;
    const ROUNDS: usize = 4;
    let dir = TestDir::new("hostile-memory");
    let cfg = shop_config(&dir)
        .receiver("header_timeout", "\"30s\"")
        .receiver("body_timeout", "\"30s\"")
        .receiver("max_body_bytes", &MAX_BODY.to_string());
    let (mut rx, _) = start(&dir, &cfg);
    let addr = rx.addr();
    let pid = rx.pid();
    let data = dir.data_dir();
    for i in 0..40 {
        accepted(&post_shop(
            addr,
            format!(r#"{{"warm":{i}}}"#).as_bytes(),
            "products/update",
            &delivery_id("warm"),
        ));
    }
    let baseline = settled_rss(pid);
    let baseline_fds = fd_count(pid);

    let mut after = Vec::new();
    for round in 1..=ROUNDS {
        let (peak, slow, conns) = load_round(addr, pid, MAX_BODY);
        assert!(alive(&mut rx), "round {round}: the receiver exited");
        let open_fds = fd_count(pid);
        let growth = peak.saturating_sub(baseline);
        assert!(
            growth < BOUND_KIB,
            "round {round}: RSS grew {growth} KiB (over {BOUND_KIB} KiB) under 200 slowloris \
             connections and 50 oversize bodies"
        );
        drop(slow);
        drop(conns);
        let fds = poll_until(deadline_in(Duration::from_secs(20)), || {
            let n = fd_count(pid);
            (n <= baseline_fds).then_some(n)
        })
        .unwrap_or_else(|| {
            panic!(
                "round {round}: {} descriptors open 20 s after the clients closed (baseline \
                 {baseline_fds}): connections not released",
                fd_count(pid)
            )
        });
        let settled = settled_rss(pid);
        println!(
            "round {round}: baseline {baseline} KiB, peak {peak} KiB (+{growth}) with {open_fds} fds, \
             after close {settled} KiB (+{}) with {fds} fds",
            settled.saturating_sub(baseline)
        );
        after.push(settled);
        still_serving(&format!("load round {round}"), addr, &data, 40);
    }
    let (before_last, last) = (after[ROUNDS - 2], after[ROUNDS - 1]);
    assert!(
        last <= before_last + 6 * 1024,
        "RSS after each round: {after:?} KiB: the last round still added over 6 MiB"
    );
    assert!(
        last.saturating_sub(baseline) < 48 * 1024,
        "RSS {last} KiB after the load, {} KiB over the baseline",
        last.saturating_sub(baseline)
    );
}

// 4 -------------------------------------------------------------------------------------------

#[test]
fn fifteen_hundred_idle_connections_do_not_take_the_receiver_down() {
    let _x = exclusive();
    const IDLE: usize = 1500;
    let limit = raise_nofile(8192);
    assert!(
        limit >= 2 * IDLE as u64 + 200,
        "RLIMIT_NOFILE is {limit}: this test needs both ends of {IDLE} connections"
    );
    let dir = TestDir::new("hostile-idle");
    let cfg = shop_config(&dir)
        .receiver("max_connections", "1024")
        .receiver("header_timeout", "\"1s\"");
    let (mut rx, _) = start(&dir, &cfg);
    let addr = rx.addr();
    let data = dir.data_dir();

    // Open them from 8 threads; connections past max_connections wait in the kernel backlog.
    let t = Instant::now();
    let idle: Vec<TcpStream> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    (0..IDLE / 8)
                        .filter_map(|_| {
                            TcpStream::connect_timeout(&addr, Duration::from_secs(10)).ok()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("connector thread"))
            .collect()
    });
    println!(
        "{} of {IDLE} idle connections opened in {:?}",
        idle.len(),
        t.elapsed()
    );
    assert!(
        idle.len() >= 1024,
        "only {} connections could be opened",
        idle.len()
    );
    assert!(
        alive(&mut rx),
        "the receiver exited with {IDLE} idle connections"
    );

    // A fresh client is served once idle connections time out (header_timeout 1 s).
    let t = Instant::now();
    let r = poll_until(deadline_in(Duration::from_secs(60)), || {
        let mut c = Conn::try_connect(addr).ok()?;
        c.write_raw(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .ok()?;
        match c.read_outcome(Duration::from_secs(10)).ok()? {
            Outcome::Response(r) => Some(r),
            _ => None,
        }
    })
    .unwrap_or_else(|| {
        panic!("/healthz from a fresh connection not answered within 60 s of {IDLE} idle ones")
    });
    assert_eq!(r.status, 200, "{r:?}");
    println!("fresh /healthz answered after {:?}", t.elapsed());

    // Every idle connection is closed by the server (none holds a slot forever).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut open = 0;
    for mut s in idle {
        let left = deadline.saturating_duration_since(Instant::now());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set_read_timeout");
        let mut buf = [0u8; 512];
        let closed = loop {
            match std::io::Read::read(&mut s, &mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        if !closed {
            open += 1;
        }
    }
    assert_eq!(open, 0, "idle connections the server never closed");
    assert!(alive(&mut rx));
    still_serving("1500 idle connections", addr, &data, 0);
    accepted(&post_shop(
        addr,
        br#"{"id":1}"#,
        "products/update",
        &delivery_id("after-idle"),
    ));
}

// 5 -------------------------------------------------------------------------------------------

#[test]
fn standard_webhooks_replay_after_the_tolerance_is_refused_and_an_id_is_stored_once() {
    let _t = timing();
    const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = TestDir::new("hostile-replay-sw");
    let cfg = dir
        .config()
        .source(SourceSpec::standard_webhooks("feed", WHSEC).with("tolerance_secs", "1"));
    let (rx, _) = start(&dir, &cfg);
    let addr = rx.addr();
    let body = br#"{"ASIN":"B000REPLAY","quantity":3}"#;
    let msg_id = delivery_id("msg");
    let ts = sign::now_unix();
    let captured = http::request_bytes(
        "POST",
        "/webhooks/feed",
        addr,
        &sign::standard_webhooks(WHSEC, &msg_id, ts, body),
        body,
    );
    let send = |bytes: &[u8]| -> Resp {
        let mut c = Conn::connect(addr);
        c.write_raw(bytes).expect("writing");
        match c.read_outcome(Duration::from_secs(10)).expect("reading") {
            Outcome::Response(r) => r,
            other => panic!("no answer: {other:?}"),
        }
    };

    let first = accepted(&send(&captured));
    // The same bytes again at once (within the 1 s tolerance): a duplicate, nothing stored.
    let r = send(&captured);
    if sign::now_unix() <= ts + 1 {
        assert_eq!(
            (r.status, r.json()),
            (
                200,
                serde_json::json!({"status": "duplicate", "id": first.to_string()})
            ),
            "{r:?}"
        );
    }

    // The input of this test: time passes beyond the tolerance (now >= ts + 2).
    poll_until(deadline_in(Duration::from_secs(5)), || {
        (sign::now_unix() > ts + 1).then_some(())
    })
    .expect("the clock moves");
    refused(&send(&captured), 401, "stale_timestamp");

    // The attacker refreshes the timestamp but cannot re-sign: refused.
    let mut h = sign::standard_webhooks(WHSEC, &msg_id, ts, body);
    for (k, v) in h.iter_mut() {
        if k == "webhook-timestamp" {
            *v = sign::now_unix().to_string();
        }
    }
    refused(
        &http::post(addr, "/webhooks/feed", &h, body),
        401,
        "signature_mismatch",
    );

    // The sender's own retry (same webhook-id, fresh timestamp and signature): a duplicate.
    let h = sign::standard_webhooks(WHSEC, &msg_id, sign::now_unix(), body);
    let r = http::post(addr, "/webhooks/feed", &h, body);
    assert_eq!(
        (r.status, r.json()),
        (
            200,
            serde_json::json!({"status": "duplicate", "id": first.to_string()})
        ),
        "{r:?}"
    );

    let leased = lease_all(&dir.data_dir(), 60_000);
    let ids: Vec<EventId> = leased.iter().map(|l| l.envelope.id).collect();
    assert_eq!(ids, vec![first], "stored exactly once");
}

#[test]
fn shopify_replayed_delivery_is_stored_once_even_after_processing_and_restart() {
    let dir = TestDir::new("hostile-replay-shopify");
    let cfg = shop_config(&dir);
    let (mut rx, config) = start(&dir, &cfg);
    let body = fixtures::data().bytes("payloads/shopify/orders_create.json");
    let wid = delivery_id("order");
    let captured = |addr: SocketAddr| {
        http::request_bytes(
            "POST",
            "/webhooks/shop",
            addr,
            &sign::shopify(SHOP_SECRET, &body, "orders/create", &wid),
            &body,
        )
    };
    let send = |addr: SocketAddr, bytes: &[u8]| -> Resp {
        let mut c = Conn::connect(addr);
        c.write_raw(bytes).expect("writing");
        match c.read_outcome(Duration::from_secs(10)).expect("reading") {
            Outcome::Response(r) => r,
            other => panic!("no answer: {other:?}"),
        }
    };
    let dup = |r: &Resp, id: EventId| {
        assert_eq!(
            (r.status, r.json()),
            (
                200,
                serde_json::json!({"status": "duplicate", "id": id.to_string()})
            ),
            "{r:?}"
        );
    };

    let first = accepted(&send(rx.addr(), &captured(rx.addr())));
    // Replayed byte for byte, several times, concurrently too.
    let addr = rx.addr();
    let req = captured(addr);
    let answers: Vec<Resp> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| send(addr, &req))).collect();
        hs.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    for r in &answers {
        dup(r, first);
    }
    // The same delivery id with another (validly signed) body: still the first event.
    let other = br#"{"id":1,"line_items":[]}"#;
    let r = http::post(
        rx.addr(),
        "/webhooks/shop",
        &sign::shopify(SHOP_SECRET, other, "orders/create", &wid),
        other,
    );
    dup(&r, first);

    // Processed (leased and acked), then replayed: still a duplicate.
    let q = Queue::connect(&dir.data_dir());
    let got = q.lease(10, 0, 60_000);
    assert_eq!(
        got.iter().map(|l| l.envelope.id).collect::<Vec<_>>(),
        vec![first]
    );
    q.ack(vec![first]);
    dup(&send(rx.addr(), &captured(rx.addr())), first);
    drop(q);

    // After a restart too.
    rx.sigterm();
    rx.wait_exit(deadline_in(Duration::from_secs(15)));
    let rx = dir.receiver(&config);
    dup(&send(rx.addr(), &captured(rx.addr())), first);

    let s = queue_stats(&dir.data_dir());
    assert_eq!(
        (s.pending, s.leased, s.dead, s.acked_retained),
        (0, 0, 0, 1),
        "one event in all"
    );
}

// 6 -------------------------------------------------------------------------------------------

/// How to run a command as `nobody`, if this machine has a way.
fn as_nobody() -> Option<Vec<String>> {
    let has = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("setpriv") {
        Some(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ]
            .map(String::from)
            .to_vec(),
        )
    } else if has("runuser") {
        Some(["runuser", "-u", "nobody", "--"].map(String::from).to_vec())
    } else {
        None
    }
}

/// A Python that `nobody` can run (not a per-user shim under /root).
fn system_python() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Tries to connect to the Unix socket `path` as `nobody`: the Python script's output
/// (`uid=65534 ok` or `uid=65534 <ErrorClass> <errno>`).
/// Skips the other-user connection check, loudly, saying `why`; under CI, where it must run,
/// fails instead.
fn skip_other_user_check(why: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "the other-user connection check cannot run: {why} (CI must run it)"
    );
    eprintln!("\n!!!!!!!! SKIPPED the other-user connection check: {why} !!!!!!!!\n");
}

fn connect_as_nobody(runner: &[String], python: &Path, path: &Path) -> String {
    const SCRIPT: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    print("uid=%d ok" % os.getuid())
except OSError as e:
    print("uid=%d %s %s" % (os.getuid(), type(e).__name__, e.errno))
"#;
    let out = stdout_of(
        Command::new(&runner[0])
            .args(&runner[1..])
            .arg(python)
            .args(["-c", SCRIPT])
            .arg(path),
        &format!("{runner:?} python"),
    );
    String::from_utf8_lossy(&out).trim().to_string()
}

#[test]
fn queue_and_worker_sockets_are_0600_and_refuse_other_users() {
    let dir = TestDir::new("hostile-sockets");
    let cfg = shop_config(&dir);
    let (_rx, config) = start(&dir, &cfg);
    let data = dir.data_dir();
    let mut worker = dir.worker(&config);
    let queue_sock = data.join("queue.sock");
    let worker_sock = data.join("worker.sock");
    poll_until(deadline_in(Duration::from_secs(30)), || {
        assert!(
            alive(&mut worker),
            "the worker exited:\n{}",
            worker.stderr()
        );
        worker_sock.exists().then_some(())
    })
    .unwrap_or_else(|| panic!("{} never appeared", worker_sock.display()));

    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    for sock in [&queue_sock, &worker_sock] {
        let m = std::fs::metadata(sock).unwrap_or_else(|e| panic!("stat {}: {e}", sock.display()));
        assert!(
            m.file_type().is_socket(),
            "{} is not a socket",
            sock.display()
        );
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o600,
            "{} mode {:o}",
            sock.display(),
            m.permissions().mode() & 0o777
        );
        assert_eq!(m.uid(), me, "{} owner", sock.display());
    }

    // Another user cannot connect. Needs root (to become nobody), setpriv or runuser, and a
    // system python3.
    let (runner, python) = match (me == 0, as_nobody(), system_python()) {
        (true, Some(r), Some(p)) => (r, p),
        (is_root, runner, python) => {
            return skip_other_user_check(&format!(
                "root={is_root}, setpriv/runuser={}, system python3={}",
                runner.is_some(),
                python.is_some()
            ));
        }
    };
    // Each socket refuses nobody; `errno` (when given) is the error the refusal must end with.
    let nobody_refused = |errno: &str, why: &str| {
        for sock in [&queue_sock, &worker_sock] {
            let out = connect_as_nobody(&runner, &python, sock);
            assert!(
                out.starts_with("uid=65534 ")
                    && out.contains("PermissionError")
                    && out.ends_with(errno),
                "{}{why}: {out}",
                sock.display()
            );
        }
    };
    // As things are (data_dir 0700 too): refused.
    nobody_refused("", "");
    // Now let nobody traverse the directories, so only the sockets' own mode stands in the way.
    // Control: a socket of mode 0666 beside them accepts nobody.
    for d in [dir.path(), data.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", d.display()));
    }
    let probe = data.join("probe.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&probe).expect("binding probe.sock");
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = connect_as_nobody(&runner, &python, &probe);
    if out != "uid=65534 ok" {
        return skip_other_user_check(&format!(
            "nobody cannot reach a 0666 socket in {} ({out}): a parent directory is closed to \
             other users, so the mode check below would prove nothing",
            data.display()
        ));
    }
    nobody_refused(" 13", " (mode 0600) let another user connect");
    assert!(alive(&mut worker));
}

// 7 -------------------------------------------------------------------------------------------

/// Customer data in the fixture payloads: every string containing '@', and the values of
/// customer keys (names, addresses, phones, emails, usernames, tokens), at least 4 characters.
fn customer_data(payloads: &[Vec<u8>]) -> BTreeSet<String> {
    const KEYS: &[&str] = &[
        "email",
        "contact_email",
        "first_name",
        "last_name",
        "address1",
        "address2",
        "phone",
        "company",
        "username",
        "eiasToken",
    ];
    fn walk(
        v: &serde_json::Value,
        key: Option<&str>,
        in_address: bool,
        out: &mut BTreeSet<String>,
    ) {
        match v {
            serde_json::Value::Object(m) => {
                let address = m.contains_key("address1") || m.contains_key("first_name");
                for (k, x) in m {
                    walk(x, Some(k), address, out);
                }
            }
            serde_json::Value::Array(a) => {
                for x in a {
                    walk(x, key, in_address, out);
                }
            }
            serde_json::Value::String(s) => {
                let s = s.trim();
                let by_key =
                    key.is_some_and(|k| KEYS.contains(&k)) || (in_address && key == Some("name"));
                if (by_key || s.contains('@')) && s.len() >= 4 {
                    out.insert(s.to_string());
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for p in payloads {
        if let Ok(v) = serde_json::from_slice(p) {
            walk(&v, None, false, &mut out);
        }
    }
    out
}

#[test]
fn logs_of_both_processes_hold_no_payloads_or_customer_data() {
    const MARKER: &str = "hostile-log-marker-5b1e@example.invalid";
    const MARKER_NAME: &str = "Zebulon Quixote-Markerfield";
    const BODY_SENTINEL: &str = "body-sentinel-7c2d: this payload is not JSON";
    const API_KEY: &str = "sk_live_hostile_5f1e0c9a";
    const KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";
    let dir = TestDir::new("hostile-logs");
    // The suite's own payloads always; the published ones (and eBay's signed account deletion,
    // whose signature only eBay's key makes) when ../shared/fixtures is beside the repository.
    let published = fixtures::shared(
        "logs_of_both_processes_hold_no_payloads_or_customer_data (the published payloads part)",
    );
    let toml = stockhook_tests::config::toml_str;
    let mut cfg = shop_config(&dir)
        .top("log_level", "\"debug\"")
        .receiver("max_body_bytes", "65536")
        .source(SourceSpec::api_key("amazon", "x-api-key", API_KEY));
    if let Some(fx) = &published {
        let pem = fx.json("payloads/ebay/getPublicKey_response.json")["key"]
            .as_str()
            .expect("key")
            .to_string();
        cfg = cfg.source(
            SourceSpec::new("ebay", "ebay", "ebay", &[])
                .with(
                    "verification_token",
                    &toml("hostile-verification-token-0123456789"),
                )
                .with(
                    "endpoint_url",
                    &toml("https://example.invalid/webhooks/ebay"),
                )
                .with(
                    "public_keys",
                    &format!("{{ {} = {} }}", toml(KID), toml(&pem)),
                ),
        );
    }
    let (rx, config) = start(&dir, &cfg);
    let addr = rx.addr();
    let data = dir.data_dir();
    let worker = dir.worker(&config);

    let mut sent_payloads = Vec::new();
    let mut stored = 0u64;
    let corpora: Vec<fixtures::Fixtures> = std::iter::once(fixtures::data())
        .chain(published.clone())
        .collect();
    for fx in &corpora {
        for (stem, body) in fx.payloads("payloads/shopify") {
            let (resource, action) = stem.rsplit_once('_').expect("<resource>_<action>");
            accepted(&post_shop(
                addr,
                &body,
                &format!("{resource}/{action}"),
                &delivery_id("log"),
            ));
            sent_payloads.push(body);
            stored += 1;
        }
        for (_, body) in fx.payloads("payloads/amazon") {
            accepted(&http::post(
                addr,
                "/webhooks/amazon",
                &sign::api_key("x-api-key", API_KEY),
                &body,
            ));
            sent_payloads.push(body);
            stored += 1;
        }
    }
    // The eBay account deletion: the signed compact bytes and eBay's own signature header.
    if let Some(fx) = &published {
        let ebay_vector = fx.vector("ebay_signature.json", "ebay-valid");
        let ebay_body = ebay_vector["signed_bytes_utf8"]
            .as_str()
            .expect("bytes")
            .as_bytes()
            .to_vec();
        let ebay_sig = ebay_vector["headers"]["X-EBAY-SIGNATURE"]
            .as_str()
            .expect("signature");
        accepted(&http::post(
            addr,
            "/webhooks/ebay",
            &[
                ("X-EBAY-SIGNATURE", ebay_sig),
                ("Content-Type", "application/json"),
            ],
            &ebay_body,
        ));
        sent_payloads.push(ebay_body);
        sent_payloads.push(fx.bytes("payloads/ebay/marketplace_account_deletion.json"));
        stored += 1;
    }

    // A failing payload: a real order with the marker as the customer, one field of the wrong
    // type. And a body that is not JSON at all, carrying the marker.
    let mut order = fixtures::data().json("payloads/shopify/orders_create.json");
    order["email"] = MARKER.into();
    order["customer"]["first_name"] = MARKER_NAME.into();
    order["line_items"][0]["quantity"] = "lots".into();
    let bad_order = serde_json::to_vec(&order).expect("serializes");
    let bad_id = accepted(&post_shop(
        addr,
        &bad_order,
        "orders/create",
        &delivery_id("bad"),
    ));
    let not_json = format!("{MARKER_NAME} <{MARKER}> {BODY_SENTINEL}").into_bytes();
    let not_json_id = accepted(&post_shop(
        addr,
        &not_json,
        "products/update",
        &delivery_id("bad"),
    ));
    stored += 2;
    // And refusals carrying the marker: unsigned (401), too large (413), unknown source (404).
    refused(
        &http::post(
            addr,
            "/webhooks/shop",
            &[("X-Shopify-Topic", "orders/create"), ("X-Customer", MARKER)],
            &bad_order,
        ),
        401,
        "missing_header",
    );
    let mut big = not_json.clone();
    big.extend(std::iter::repeat_n(b' ', 70_000));
    refused(
        &post_shop(addr, &big, "orders/create", &delivery_id("big")),
        413,
        "body_too_large",
    );
    refused(
        &http::post(
            addr,
            &format!("/webhooks/{}", MARKER.replace('@', "%40")),
            &sign::shopify(SHOP_SECRET, &not_json, "orders/create", &delivery_id("x")),
            &not_json,
        ),
        404,
        "unknown_source",
    );

    // Wait for the worker: everything read, the two bad ones dead-lettered.
    let q = Queue::connect(&data);
    let settled = poll_until(deadline_in(Duration::from_secs(60)), || {
        let s = q.stats();
        (s.pending == 0 && s.leased == 0 && s.dead == 2).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "the worker did not settle: {:?}\nworker log:\n{}",
            q.stats(),
            worker.stderr()
        )
    });
    let dead: BTreeSet<EventId> = q
        .dead_list(DeadFilter::default())
        .iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(dead, BTreeSet::from([bad_id, not_json_id]));
    println!("settled: {settled:?} ({stored} stored)");
    // The logs say what happened (so the scan below reads real log lines).
    let logs = poll_until(deadline_in(Duration::from_secs(10)), || {
        let r = format!("{}\n{}", rx.stderr(), rx.stdout());
        let w = format!("{}\n{}", worker.stderr(), worker.stdout());
        (r.contains("body_too_large")
            && w.contains(&bad_id.to_string())
            && w.contains(&not_json_id.to_string()))
        .then_some((r, w))
    })
    .unwrap_or_else(|| {
        panic!(
            "the logs lack the expected lines:\nreceiver:\n{}\nworker:\n{}",
            rx.stderr(),
            worker.stderr()
        )
    });

    let mut needles = customer_data(&sent_payloads);
    assert!(
        needles.iter().any(|n| n.contains('@'))
            && needles.contains("Kitsonworth")
            && (published.is_none() || needles.contains("test_user")),
        "the fixtures' customer data was not found: {needles:?}"
    );
    needles.insert(MARKER.to_string());
    needles.insert(MARKER_NAME.to_string());
    needles.insert(SHOP_SECRET.to_string());
    needles.insert(API_KEY.to_string());
    println!(
        "scanning the logs for {} strings: {needles:?}",
        needles.len()
    );
    for (who, text) in [("receiver", &logs.0), ("worker", &logs.1)] {
        let found: Vec<&String> = needles
            .iter()
            .filter(|n| text.contains(n.as_str()))
            .collect();
        assert!(
            found.is_empty(),
            "the {who}'s log holds customer data or secrets: {found:?}\n{text}"
        );
        assert!(
            !text.contains(BODY_SENTINEL),
            "the {who}'s log holds a payload body:\n{text}"
        );
    }
}
