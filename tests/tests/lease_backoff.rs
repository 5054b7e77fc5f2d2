//! The worker's drain loop when leasing fails but connecting works (issue 12): it must wait
//! between tries, growing the wait, instead of reconnecting in a hot loop.
//!
//! A fake queue socket at `<data_dir>/queue.sock` answers `hello` as the receiver does and every
//! `lease` with an error; the real worker binary runs against it. The test records when each
//! lease arrived and checks the gaps: a hot loop makes five tries within milliseconds, the
//! backoff (100 ms doubling, ±50 % jitter) spaces them by at least 750 ms in all.
//!
//! Run: `cargo test -p stockhook-tests --test lease_backoff`.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockhook_tests::stack::{expect_within, start_worker};
use stockhook_tests::{SourceSpec, TestDir};

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

/// Serves connections until the test ends: `hello` succeeds, `lease` fails; records lease times.
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

#[test]
fn failed_leases_back_off_instead_of_reconnecting_in_a_hot_loop() {
    let dir = TestDir::new("lease-backoff");
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
            .source(SourceSpec::shopify(
                "shop",
                "shpss_backoff_0123456789abcdef",
            )),
    );
    let _worker = start_worker(&dir, &config);
    let times = expect_within(Duration::from_secs(30), "five lease attempts", || {
        let t = leases.lock().unwrap_or_else(|p| p.into_inner()).clone();
        (t.len() >= 5).then_some(t)
    });
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).take(4).collect();
    let total: Duration = gaps.iter().sum();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(45)) && total >= Duration::from_millis(700),
        "lease retries came too fast (a hot loop): gaps {gaps:?}"
    );
}
