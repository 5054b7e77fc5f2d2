//! The worker's leases against the sled queue's socket (issue 12): a lease is capped by bytes as
//! well as by count, so big bodies drain instead of overflowing the socket's frame limit; and a
//! lease that fails is retried after a growing pause, not in a hot loop.
//!
//! Run: `cargo test -p stockhook-tests --test leases`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockhook_tests::payloads::{big_body_config, padded_product};
use stockhook_tests::stack::{expect_within, start_worker, stat, wait_stats};
use stockhook_tests::{http, sign, SourceSpec, TestDir};

const SECRET: &str = "shpss_leases_0123456789abcdef";

/// 300 bodies of ~2 MiB are 600 MiB: one lease of the default batch (256) would be a socket
/// frame of ~680 MiB (base64), over the 512 MiB limit, and the worker could never lease them.
#[test]
fn a_worker_drains_300_bodies_of_2_mib() {
    const N: usize = 300;
    const MAX_BODY: usize = 2 * 1024 * 1024;
    let dir = TestDir::new("leases-big");
    let config = big_body_config(&dir, MAX_BODY, SECRET);
    let rx = dir.receiver(&config);
    // One body for all (the HMAC covers only the body); each post has its own delivery id, so
    // each is its own event.
    let body = padded_product(0, MAX_BODY - 1000);
    for n in 0..N {
        let h = sign::shopify(SECRET, &body, "products/update", &format!("big-{n}"));
        let r = http::post(rx.addr(), "/webhooks/shop", &h, &body);
        assert_eq!(r.status, 200, "post {n}: {r:?}");
    }
    let worker = start_worker(&dir, &config);
    let s = wait_stats(
        &dir,
        &config,
        Duration::from_secs(600),
        "the worker drains all 300 events",
        |s| {
            stat(s, "queue.pending") == 0
                && stat(s, "queue.leased") == 0
                && stat(s, "queue.acked_retained") == N as i64
        },
    );
    assert_eq!(stat(&s, "queue.dead"), 0, "{s:#}");
    let log = worker.stderr();
    assert!(
        !log.contains("lease failed"),
        "a lease failed on the way:\n{}",
        log.lines()
            .filter(|l| l.contains("lease failed"))
            .take(3)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).ok()?;
    serde_json::from_slice(&buf).ok()
}

fn write_frame(s: &mut UnixStream, v: &serde_json::Value) -> Option<()> {
    let bytes = serde_json::to_vec(v).ok()?;
    s.write_all(&(bytes.len() as u32).to_be_bytes()).ok()?;
    s.write_all(&bytes).ok()
}

/// Serves connections for the rest of the test: `hello` works, every `lease` is refused; records
/// when each lease arrived.
fn serve_failing_leases(listener: UnixListener, leases: Arc<Mutex<Vec<Instant>>>) {
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { return };
        let leases = leases.clone();
        std::thread::spawn(move || {
            while let Some(req) = read_frame(&mut s) {
                let answer = match req["op"].as_str() {
                    Some("hello") => serde_json::json!({
                        "ok": true,
                        "result": {"server": "fake", "versions": [1]}
                    }),
                    Some("lease") => {
                        leases
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Instant::now());
                        serde_json::json!({"ok": false, "error": "fake queue: storage failed"})
                    }
                    _ => serde_json::json!({"ok": true, "result": null}),
                };
                if write_frame(&mut s, &answer).is_none() {
                    return;
                }
            }
        });
    }
}

/// The pauses the worker logged after failed leases (`retry_in_ms` of each warning).
fn logged_pauses(stderr: &str) -> Vec<u64> {
    stderr
        .lines()
        .filter(|l| l.contains("lease failed"))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["fields"]["retry_in_ms"]
                .as_u64()
                .or(v["retry_in_ms"].as_u64())
        })
        .collect()
}

#[test]
fn failed_leases_back_off_instead_of_reconnecting_in_a_hot_loop() {
    let dir = TestDir::new("leases-backoff");
    let data = dir.data_dir();
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("creating {}: {e}", data.display()));
    let sock = data.join("queue.sock");
    let listener =
        UnixListener::bind(&sock).unwrap_or_else(|e| panic!("binding {}: {e}", sock.display()));
    let leases = Arc::new(Mutex::new(Vec::new()));
    {
        let leases = leases.clone();
        std::thread::spawn(move || serve_failing_leases(listener, leases));
    }
    let config = dir.write_config(
        "stockhook.toml",
        &dir.config()
            .recipients(&["ops@example.com"])
            .source(SourceSpec::shopify("shop", SECRET)),
    );
    let worker = start_worker(&dir, &config);
    let times = expect_within(Duration::from_secs(60), "five lease attempts", || {
        let t = leases.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (t.len() >= 5).then_some(t)
    });
    // The log says how long each pause is: 100 ms doubling (±20 %), reset only by a lease that
    // works (connecting again does not reset it).
    let pauses = expect_within(Duration::from_secs(30), "four logged pauses", || {
        let p = logged_pauses(&worker.stderr());
        (p.len() >= 4).then_some(p)
    });
    for (i, pair) in pauses.windows(2).take(3).enumerate() {
        assert!(
            pair[1] as f64 >= pair[0] as f64 * 1.3,
            "pause {} ({} ms) did not grow from {} ms: {pauses:?}",
            i + 1,
            pair[1],
            pair[0]
        );
    }
    // And the worker kept to them: the gaps between lease calls are at least the pauses.
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).take(4).collect();
    for (gap, pause) in gaps.iter().zip(&pauses) {
        assert!(
            *gap >= Duration::from_millis(*pause),
            "a lease came {gap:?} after the last, before its {pause} ms pause: gaps {gaps:?}, pauses {pauses:?}"
        );
    }
}
