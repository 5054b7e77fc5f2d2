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

/// `name` in `dir`: a config with the one source `shop` under [`SECRET_OLD`].
fn shop_config(dir: &TestDir, name: &str) -> std::path::PathBuf {
    dir.write_config(
        name,
        &dir.config().source(SourceSpec::shopify("shop", SECRET_OLD)),
    )
}

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
    let path = shop_config(&dir, "stockhook.toml");
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

/// The value of the metric line that starts with `series ` (name and labels exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `metrics_listen` serves /metrics, /healthz and /readyz on their own address and the webhook
/// listener no longer does; 300 requests to random source names add no series (they are all
/// `<unknown>`); build info, process metrics and the last event time per source are there; the
/// worker serves its own metrics on its own `metrics_listen`.
#[test]
fn metrics_listeners_bounded_labels_and_the_workers_metrics() {
    use stockhook_tests::stack::{free_port, start_worker, stat, wait_stats};
    let dir = TestDir::new("metrics");
    let rx_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let wk_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = dir
        .config()
        .receiver("metrics_listen", &format!("\"{rx_metrics}\""))
        .worker("metrics_listen", &format!("\"{wk_metrics}\""))
        .recipients(&["ops@example.com"])
        .source(SourceSpec::shopify("shop", SECRET_OLD));
    let path = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&path);
    let addr = rx.addr();

    assert_eq!(
        http::get(addr, "/metrics").status,
        404,
        "not on the public listener"
    );
    assert_eq!(http::get(addr, "/healthz").status, 404);
    assert_eq!(http::get(rx_metrics, "/healthz").status, 200);
    assert_eq!(http::get(rx_metrics, "/readyz").status, 200);
    let scrape = || {
        let r = http::get(rx_metrics, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        r.text()
    };
    let series = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("stockhook_requests_total{"))
            .count()
    };

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert_eq!(post_level(addr, SECRET_OLD, 81, 2, "m-1").status, 200);
    let first = scrape();
    let series_before = series(&first);
    let last = metric(
        &first,
        "stockhook_last_event_timestamp_seconds{source=\"shop\"}",
    )
    .unwrap_or_else(|| panic!("no last event time for shop: {first}"));
    assert!(
        last >= before - 1.0 && last <= before + 60.0,
        "{last} vs {before}"
    );

    let mut conn = Conn::connect(addr);
    for i in 0..300u32 {
        let name = format!("random-{i}-{:08x}", i.wrapping_mul(2654435761));
        let r = conn
            .send::<&str, &str>("PUT", &format!("/webhooks/{name}"), &[], b"")
            .unwrap();
        assert_eq!(r.status, 405);
    }
    let text = scrape();
    assert_eq!(
        metric(
            &text,
            "stockhook_requests_total{source=\"<unknown>\",status=\"405\"}"
        ),
        Some(300.0),
        "{text}"
    );
    assert!(
        series(&text) <= series_before + 1,
        "300 random names made new series:\n{text}"
    );
    assert!(!text.contains("random-"), "a URL name became a label");
    assert!(text.contains("stockhook_build_info{version=\""), "{text}");
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(metric(&text, name).is_some(), "no {name}: {text}");
    }
    // No request line was dropped: the log output kept up.
    assert!(
        text.contains("# TYPE stockhook_access_log_dropped_total counter\n"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "stockhook_access_log_dropped_total"),
        Some(0.0),
        "{text}"
    );

    // The worker's own metrics.
    let _worker = start_worker(&dir, &path);
    wait_stats(
        &dir,
        &path,
        Duration::from_secs(30),
        "the event is applied",
        |s| stat(s, "events.processed") == 1 && stat(s, "alerts.sent") == 1,
    );
    let wk = poll_until(deadline_in(Duration::from_secs(30)), || {
        let t = http::get(wk_metrics, "/metrics").text();
        metric(
            &t,
            "stockhook_worker_alerts_total{rule=\"low_stock\",status=\"sent\"}",
        )
        .is_some()
        .then_some(t)
    })
    .expect("the worker's metrics count the sent alert");
    assert_eq!(
        metric(
            &wk,
            "stockhook_worker_events_total{source=\"shop\",outcome=\"applied\"}"
        ),
        Some(1.0),
        "{wk}"
    );
    assert_eq!(
        metric(
            &wk,
            "stockhook_worker_alerts_total{rule=\"low_stock\",status=\"created\"}"
        ),
        Some(1.0),
        "{wk}"
    );
    assert_eq!(
        metric(&wk, "stockhook_worker_email_send_seconds_count"),
        Some(1.0)
    );
    assert!(metric(&wk, "stockhook_worker_queue_lag_seconds").is_some());
    assert!(metric(&wk, "process_open_fds").is_some());
    assert_eq!(http::get(wk_metrics, "/other").status, 404);

    // Every metric the Grafana dashboard queries is one the processes export.
    let dash = std::fs::read_to_string(
        stockhook_tests::bins::repo_root().join("deploy/grafana-dashboard.json"),
    )
    .expect("deploy/grafana-dashboard.json");
    let exported = format!("{text}\n{wk}");
    let mut queried = 0;
    for word in dash.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("stockhook_") || word.starts_with("process_") {
            queried += 1;
            assert!(
                exported.contains(&format!("\n{word}"))
                    || exported.contains(&format!("# TYPE {word} ")),
                "the dashboard queries {word}, which neither process exports"
            );
        }
    }
    assert!(queried > 10, "the dashboard queries {queried} metrics");
}

/// The worker's sync metrics against the fake Shopify: the start-up sync counts a run, its items
/// and no correction, and sets the last success time; a level changed on the platform is one
/// correction at the next sync; a revoked token counts an `unauthorized` run and leaves the last
/// success as it was; a restarted worker shows the last success from its state before it syncs.
#[test]
fn worker_sync_metrics_count_runs_items_corrections_and_the_last_success() {
    use stockhook_tests::config::toml_str;
    use stockhook_tests::fake_shopify::{FakeShopify, Shop};
    use stockhook_tests::stack::{free_port, wait_worker_ready, worker_cli};
    const TOKEN: &str = "shpat_metrics_token_0123456789";
    let dir = TestDir::new("sync-metrics");
    let shop = Shop::generated(TOKEN, 30, 0, 12);
    let target = shop.variants[7].clone();
    let fake = FakeShopify::start(shop);
    let wk_metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let api = format!(
        "{{ shop_domain = \"acme.myshopify.com\", access_token_env = \"SHOP_TOKEN\", api_base = {} }}",
        toml_str(&fake.base())
    );
    let cfg = dir
        .config()
        .top("sync", "{ interval = \"1h\" }")
        .worker("metrics_listen", &format!("\"{wk_metrics}\""))
        .recipients(&["ops@example.com"])
        .source(SourceSpec::shopify("shop", SECRET_OLD).with("shopify_sync", &api));
    let path = dir.write_config("stockhook.toml", &cfg);
    let start = || {
        let mut w = dir.spawn_env(
            stockhook_tests::bins::worker(),
            &["--config", path.to_str().unwrap(), "run"],
            &[("SHOP_TOKEN", TOKEN)],
        );
        wait_worker_ready(&mut w);
        w
    };
    let scrape = || {
        let r = http::get(wk_metrics, "/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        r.text()
    };
    let runs = |t: &str, result: &str| {
        metric(
            t,
            &format!("stockhook_sync_runs_total{{source=\"shop\",result=\"{result}\"}}"),
        )
    };
    let items = |t: &str| metric(t, "stockhook_sync_items_total{source=\"shop\"}");
    let corrections = |t: &str| metric(t, "stockhook_sync_corrections_total{source=\"shop\"}");
    let last_success = |t: &str| {
        metric(
            t,
            "stockhook_sync_last_success_timestamp_seconds{source=\"shop\"}",
        )
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };

    let before = now();
    let mut worker = start();
    // A source that never synced is synced at start.
    let t = poll_until(deadline_in(Duration::from_secs(60)), || {
        let t = scrape();
        runs(&t, "ok").is_some().then_some(t)
    })
    .expect("the start-up sync is counted");
    assert_eq!(runs(&t, "ok"), Some(1.0), "{t}");
    assert_eq!(items(&t), Some(30.0), "{t}");
    assert_eq!(corrections(&t), Some(0.0), "nothing was held before: {t}");
    let first = last_success(&t).unwrap_or_else(|| panic!("no last success: {t}"));
    assert!(
        first >= before.floor() - 1.0 && first <= now() + 1.0,
        "{first} vs {before}"
    );

    // A sale on the platform whose webhook never came: 12 -> 2; the next sync corrects it.
    fake.with(|s| {
        let loc = s.locations[0].0;
        s.levels.insert((target.inventory_item, loc), 2);
    });
    let p = worker_cli(&dir, &path, &["sync", "--source", "shop"]);
    assert_eq!(p.status().and_then(|s| s.code()), Some(0), "{}", p.stdout());
    let t = scrape();
    assert_eq!(runs(&t, "ok"), Some(2.0), "{t}");
    assert_eq!(items(&t), Some(60.0), "{t}");
    assert_eq!(corrections(&t), Some(1.0), "{t}");
    let second = last_success(&t).unwrap_or_else(|| panic!("no last success: {t}"));
    assert!(second >= first, "{second} < {first}");

    // The token is revoked: an unauthorized run; the last success stays.
    fake.with(|s| s.token = "shpat_other".into());
    let p = worker_cli(&dir, &path, &["sync", "--source", "shop"]);
    assert_eq!(p.status().and_then(|s| s.code()), Some(1), "{}", p.stdout());
    let t = scrape();
    assert_eq!(runs(&t, "unauthorized"), Some(1.0), "{t}");
    assert_eq!(runs(&t, "failed"), None, "{t}");
    assert_eq!(runs(&t, "ok"), Some(2.0), "{t}");
    assert_eq!(last_success(&t), Some(second), "{t}");
    assert_eq!(corrections(&t), Some(1.0), "{t}");
    assert!(
        !t.contains(TOKEN) && !t.contains("shpat_other"),
        "a token in the metrics"
    );

    // Restarted (the interval is not over: no sync at start), the worker shows the last success
    // from its state at once.
    worker.sigterm();
    let st = worker.wait_exit(deadline_in(Duration::from_secs(30)));
    assert!(st.success(), "{st:?}");
    let _worker = start();
    let t = poll_until(deadline_in(Duration::from_secs(30)), || {
        let t = scrape();
        last_success(&t).is_some().then_some(t)
    })
    .expect("the last success after a restart");
    assert_eq!(last_success(&t), Some(second), "{t}");
    assert_eq!(runs(&t, "ok"), None, "no sync since the restart: {t}");
}

/// Under systemd (`$JOURNAL_STREAM` names the process's stderr) every log line starts with its
/// syslog priority, which journald turns into `PRIORITY=`: `<6>` info, `<4>` a refused webhook,
/// and the JSON fields follow the prefix. With the variable naming another file: no prefixes.
#[test]
fn journal_stream_gets_a_priority_on_every_line() {
    use std::os::unix::fs::MetadataExt;
    use std::process::{Command, Stdio};
    let dir = TestDir::new("journald");
    let path = shop_config(&dir, "stockhook.toml");

    let run = |name: &str, journal: bool| -> String {
        let err_path = dir.path().join(format!("{name}.stderr"));
        let out_path = dir.path().join(format!("{name}.stdout"));
        let err = std::fs::File::create(&err_path).unwrap();
        let meta = err.metadata().unwrap();
        let stream = if journal {
            format!("{}:{}", meta.dev(), meta.ino())
        } else {
            format!("{}:{}", meta.dev(), meta.ino() + 1)
        };
        let mut child = Command::new(stockhook_tests::bins::receiver())
            .arg("--config")
            .arg(&path)
            .arg("serve")
            .env_remove("RUST_LOG")
            .env("JOURNAL_STREAM", stream)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap())
            .stderr(err)
            .spawn()
            .unwrap();
        let addr: SocketAddr = poll_until(deadline_in(Duration::from_secs(30)), || {
            let out = std::fs::read_to_string(&out_path).ok()?;
            out.lines()
                .find_map(|l| l.strip_prefix("ready addr="))
                .map(|a| a.trim().parse().unwrap())
        })
        .expect("the receiver printed its ready line");
        let bad = http::post(
            addr,
            "/webhooks/shop",
            &[
                ("X-Shopify-Hmac-Sha256", "bm90IGl0"),
                ("X-Shopify-Topic", "x"),
            ],
            b"{}",
        );
        assert_eq!(bad.status, 401);
        // SAFETY: kill(2) on the child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let st = poll_until(deadline_in(Duration::from_secs(30)), || {
            child.try_wait().unwrap()
        })
        .expect("the receiver exits on SIGTERM");
        assert_eq!(st.code(), Some(0));
        std::fs::read_to_string(&err_path).unwrap()
    };

    let journal = run("journal", true);
    let lines: Vec<&str> = journal.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{journal}");
    for l in &lines {
        let (prio, json) = l.split_at(3);
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&prio),
            "no priority prefix: {l}"
        );
        let v: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("not JSON after {prio} ({e}): {l}"));
        let want = match v["level"].as_str() {
            Some("ERROR") => "<3>",
            Some("WARN") => "<4>",
            Some("INFO") => "<6>",
            _ => "<7>",
        };
        assert_eq!(prio, want, "{l}");
    }
    let refused = lines
        .iter()
        .find(|l| l.contains("webhook refused"))
        .unwrap_or_else(|| panic!("no refusal line: {journal}"));
    assert!(refused.starts_with("<4>{"), "{refused}");
    assert!(
        refused.contains(r#""source":"shop""#),
        "fields follow: {refused}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("<6>") && l.contains("receiver ready")));

    let plain = run("plain", false);
    assert!(
        plain.lines().all(|l| l.is_empty() || l.starts_with('{')),
        "prefixes without the journal: {plain}"
    );
}

/// The operator's commands on a packaged install: the config names secrets only systemd can
/// provide (`${CREDENTIALS_DIRECTORY}`, an unset `smtp_url_env`), and `failed list`, `stats` and
/// `export` (CSV without being asked) still work, since they resolve no secret. `--version` names
/// the commit; completions and the man page come from the same definition.
#[test]
fn ops_cli_needs_no_secrets_and_names_its_commit() {
    use stockhook_tests::stack::{worker_cli, worker_cli_ok};
    let dir = TestDir::new("ops-cli");
    let serving = shop_config(&dir, "serving.toml");
    let rx = dir.receiver(&serving);
    assert_eq!(
        post_level(rx.addr(), SECRET_OLD, 91, 3, "cli-1").status,
        200
    );

    let packaged = dir
        .config()
        .email("smtp_url_env", "\"STOCKHOOK_TEST_UNSET_SMTP_URL\"")
        .source(
            SourceSpec::shopify("shop", "unused")
                .with("secrets_file", "\"${CREDENTIALS_DIRECTORY}/shop-secret\""),
        );
    let mut text = packaged.render();
    text = text.replace("secrets = [\"unused\"]\n", "");
    let packaged = dir.write("packaged.toml", text);

    let stats = worker_cli_ok(&dir, &packaged, &["stats", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["sources"]["shop"]["pending"], 1, "{stats}");
    worker_cli_ok(&dir, &packaged, &["failed", "list"]);
    let csv = worker_cli_ok(&dir, &packaged, &["export"]);
    assert!(csv.lines().next().is_some_and(|h| h.contains(',')), "{csv}");
    // `run` does need the SMTP URL: refused with the variable named (exit 2).
    let run = worker_cli(&dir, &packaged, &["run"]);
    assert_eq!(
        run.status().and_then(|s| s.code()),
        Some(2),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("STOCKHOOK_TEST_UNSET_SMTP_URL"));

    for bin in [
        stockhook_tests::bins::worker(),
        stockhook_tests::bins::receiver(),
    ] {
        let name = bin.file_name().unwrap().to_str().unwrap();
        let v = dir.run(bin, &["--version"], Duration::from_secs(30));
        let out = v.stdout();
        let commit = out
            .trim()
            .strip_prefix(&format!("{name} {} (commit ", env!("CARGO_PKG_VERSION")))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("--version: {out:?}"));
        let head = std::process::Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .current_dir(stockhook_tests::bins::repo_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        match head {
            Some(head) => assert_eq!(commit, head, "{name} --version"),
            None => assert_eq!(commit, "unknown"),
        }
        let bash = dir.run(bin, &["completions", "bash"], Duration::from_secs(30));
        assert_eq!(bash.status().and_then(|s| s.code()), Some(0));
        assert!(bash
            .stdout()
            .contains(&format!("_{}", name.replace('-', "__"))));
        let man = dir.run(bin, &["man"], Duration::from_secs(30));
        assert!(
            man.stdout().starts_with(".ie") || man.stdout().contains(".TH"),
            "{}",
            man.stdout()
        );
        assert!(man.stdout().contains(name));
    }
}
