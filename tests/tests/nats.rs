//! `[queue] backend = "nats"` end to end, against Debian's `nats-server` (2.9) started by the
//! tests on free loopback ports with temporary store directories:
//!
//! * two receivers and two workers on one JetStream server: every delivery is accepted once
//!   (a repeat through the *other* receiver is a duplicate), and every alert is emailed exactly
//!   once across both workers;
//! * a three-node JetStream cluster with R3 streams: one node is killed with SIGKILL in the
//!   middle of the load, and every event the receiver answered 200 for is in the stream.
//!
//! Where `nats-server` is not installed these tests print a loud SKIPPED line and pass, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where they fail.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockhook_shared::envelope::Envelope;
use stockhook_test_kit::{free_port, nats};
use stockhook_tests::config::toml_str;
use stockhook_tests::http::Conn;
use stockhook_tests::nats_node::{wait_healthy, Node};
use stockhook_tests::proc::mail_files;
use stockhook_tests::{bins, deadline_in, poll_until, sign, SourceSpec, TestDir};

const SECRET: &str = "nats-test-shopify-secret";

// ---------------------------------------------------------------------------------------------
// stockhook processes and traffic

fn config(dir: &TestDir, name: &str, urls: &[&str], replicas: usize) -> PathBuf {
    let urls: Vec<String> = urls.iter().map(|u| toml_str(u)).collect();
    let cfg = stockhook_tests::ConfigBuilder::new(&dir.path().join(name))
        .queue("backend", "\"nats\"")
        .queue("nats_url", &format!("[{}]", urls.join(", ")))
        .queue("nats_replicas", &replicas.to_string())
        .queue("lease_timeout", "\"5s\"")
        .recipients(&["seller@example.com"])
        .source(SourceSpec::shopify("shop", SECRET));
    dir.write_config(&format!("{name}.toml"), &cfg)
}

fn level_body(item: u64, available: i64, second: u32) -> Vec<u8> {
    format!(
        r#"{{"inventory_item_id":{item},"location_id":1,"available":{available},"updated_at":"2024-05-01T00:00:{second:02}Z"}}"#
    )
    .into_bytes()
}

/// POSTs one signed `inventory_levels/update`; the answer's status and JSON (if any).
fn send_level(
    addr: SocketAddr,
    item: u64,
    available: i64,
    second: u32,
    delivery: &str,
) -> Result<(u16, serde_json::Value), String> {
    let body = level_body(item, available, second);
    let headers = sign::shopify(SECRET, &body, "inventory_levels/update", delivery);
    let mut c = Conn::try_connect(addr).map_err(|e| e.to_string())?;
    let r = c
        .send("POST", "/webhooks/shop", &headers, &body)
        .map_err(|e| e.to_string())?;
    let json = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    Ok((r.status, json))
}

/// Every alert id in every `.eml` under the data dirs, with how many emails carried it.
fn emailed_alert_ids(data_dirs: &[PathBuf]) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for d in data_dirs {
        for f in mail_files(d) {
            let text = std::fs::read_to_string(&f)
                .unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
            let mut lines = text.lines();
            let mut value = String::new();
            while let Some(l) = lines.next() {
                if let Some(v) = l.strip_prefix("X-Stockhook-Alert-Ids:") {
                    value.push_str(v);
                    for cont in lines.by_ref() {
                        if cont.starts_with([' ', '\t']) {
                            value.push_str(cont);
                        } else {
                            break;
                        }
                    }
                    break;
                }
            }
            assert!(
                !value.trim().is_empty(),
                "{} has no X-Stockhook-Alert-Ids header",
                f.display()
            );
            for id in value.split_whitespace() {
                *seen.entry(id.to_string()).or_insert(0) += 1;
            }
        }
    }
    seen
}

fn worker_stats(dir: &TestDir, config: &Path) -> serde_json::Value {
    let mut p = dir.run(
        bins::worker(),
        &["--config", config.to_str().unwrap(), "stats", "--json"],
        Duration::from_secs(60),
    );
    let st = p.wait_exit(deadline_in(Duration::from_secs(1)));
    assert!(st.success(), "stats failed: {}", p.stderr());
    serde_json::from_str(&p.stdout())
        .unwrap_or_else(|e| panic!("stats --json: {e}: {}", p.stdout()))
}

// ---------------------------------------------------------------------------------------------

#[test]
fn two_receivers_two_workers_one_server_each_alert_exactly_once() {
    let Some(bin) = nats::require("two_receivers_two_workers_one_server_each_alert_exactly_once")
    else {
        return;
    };
    let dir = TestDir::new("nats-exactly-once");
    let node = Node::start(&dir, &bin, "n1", None);
    wait_healthy(&[&node]);
    let names = ["r1", "r2", "w1", "w2"];
    let cfgs: Vec<PathBuf> = names
        .iter()
        .map(|n| config(&dir, n, &[&node.url], 1))
        .collect();
    let r1 = dir.receiver(&cfgs[0]);
    let r2 = dir.receiver(&cfgs[1]);
    let receivers = [r1.addr(), r2.addr()];
    let _w1 = dir.worker(&cfgs[2]);
    let _w2 = dir.worker(&cfgs[3]);
    let worker_dirs = vec![dir.path().join("w1"), dir.path().join("w2")];

    const ITEMS: u64 = 40;
    const OUT: u64 = 10;
    // Phase 1: every item drops to 2 (below 5): one low-stock alert each. Each delivery goes to
    // one receiver and is repeated through the other: the repeat is a duplicate of the same id.
    for item in 0..ITEMS {
        let delivery = format!("low-{item}");
        let first = receivers[(item % 2) as usize];
        let other = receivers[((item + 1) % 2) as usize];
        let (s1, j1) = send_level(first, 1000 + item, 2, 1, &delivery).unwrap();
        assert_eq!((s1, j1["status"].as_str()), (200, Some("accepted")), "{j1}");
        let (s2, j2) = send_level(other, 1000 + item, 2, 1, &delivery).unwrap();
        assert_eq!(
            (s2, j2["status"].as_str()),
            (200, Some("duplicate")),
            "{j2}"
        );
        assert_eq!(j1["id"], j2["id"], "the duplicate names the first event");
    }
    let wait_alerts = |n: usize| {
        poll_until(deadline_in(Duration::from_secs(90)), || {
            let seen = emailed_alert_ids(&worker_dirs);
            (seen.len() >= n).then_some(seen)
        })
        .unwrap_or_else(|| {
            panic!(
                "only {} of {n} alerts emailed",
                emailed_alert_ids(&worker_dirs).len()
            )
        })
    };
    wait_alerts(ITEMS as usize);
    // Phase 2: some go out of stock: one more alert each; a re-sent stale level changes nothing.
    for item in 0..OUT {
        let addr = receivers[(item % 2) as usize];
        let (s, j) = send_level(addr, 1000 + item, 0, 2, &format!("out-{item}")).unwrap();
        assert_eq!((s, j["status"].as_str()), (200, Some("accepted")), "{j}");
        let (s, _) = send_level(addr, 1000 + item, 9, 0, &format!("stale-{item}")).unwrap();
        assert_eq!(s, 200);
    }
    wait_alerts((ITEMS + OUT) as usize);

    // Drained: nothing pending in the queue or the outbox, then count.
    let st = poll_until(deadline_in(Duration::from_secs(60)), || {
        let st = worker_stats(&dir, &cfgs[2]);
        let drained = st["queue"]["pending"] == 0
            && st["queue"]["leased"] == 0
            && st["alerts"]["pending"] == 0
            && st["events"]["processed"] == (ITEMS + 2 * OUT);
        drained.then_some(st)
    })
    .unwrap_or_else(|| panic!("not drained: {}", worker_stats(&dir, &cfgs[2])));
    let seen = emailed_alert_ids(&worker_dirs);
    assert_eq!(seen.len(), (ITEMS + OUT) as usize, "{seen:?}");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "alerts emailed more than once: {twice:?}");
    assert_eq!(st["alerts"]["created"], ITEMS + OUT, "{st}");
    assert_eq!(st["alerts"]["sent"], ITEMS + OUT, "{st}");
    assert_eq!(st["events"]["stale_levels"], OUT, "{st}");
    assert_eq!(st["queue"]["dead"], 0, "{st}");
}

#[test]
fn cluster_r3_node_killed_mid_load_loses_no_accepted_event() {
    let Some(bin) = nats::require("cluster_r3_node_killed_mid_load_loses_no_accepted_event") else {
        return;
    };
    let dir = TestDir::new("nats-cluster");
    let cports = [free_port(), free_port(), free_port()];
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| {
            let others: Vec<u16> = (0..3).filter(|j| *j != i).map(|j| cports[j]).collect();
            Node::start(
                &dir,
                &bin,
                &format!("n{}", i + 1),
                Some((cports[i], &others)),
            )
        })
        .collect();
    wait_healthy(&nodes.iter().collect::<Vec<_>>());
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let cfg = config(&dir, "r1", &url_refs, 3);
    let r = dir.receiver(&cfg);
    let addr = r.addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The node to kill: the events stream's leader, so the failover is a leader election.
    let leader = rt.block_on(async {
        let opts = stockhook_shared::queue::nats::NatsOptions::new(&urls[1], "test-probe");
        let client = stockhook_shared::queue::nats::connect(&opts).await.unwrap();
        let js = stockhook_shared::queue::nats::context(client);
        let mut s = js.get_stream("STOCKHOOK_EVENTS").await.unwrap();
        let info = s.info().await.unwrap();
        info.cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("an R3 stream has a leader")
    });
    let victim: usize = leader
        .trim_start_matches('n')
        .parse::<usize>()
        .expect("nodes are named n1..n3")
        - 1;

    // Load from 4 client threads; the leader is killed once a third of it is answered.
    const PER_THREAD: u64 = 300;
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let killed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut ok: Vec<(String, u64)> = Vec::new();
                let mut refused = 0;
                for i in 0..PER_THREAD {
                    let item = t * 10_000 + i;
                    let delivery = format!("c-{item}");
                    // As a platform does: a 503 (or a dropped connection) is retried with the
                    // same delivery id until it gets a 200, "accepted" or "duplicate" (the
                    // pause is this client's retry schedule, not a wait for a condition).
                    let mut tries = 0;
                    loop {
                        match send_level(addr, item, 3, 1, &delivery) {
                            Ok((200, j)) => {
                                let id = j["id"].as_str().unwrap_or_default();
                                let seq = u64::from_str_radix(id.trim_start_matches("evt_"), 16)
                                    .unwrap_or_else(|e| panic!("bad id in {j}: {e}"));
                                ok.push((delivery, seq));
                                break;
                            }
                            Ok(_) | Err(_) => {
                                refused += 1;
                                tries += 1;
                                assert!(tries < 300, "{delivery}: no 200 after {tries} tries");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                (ok, refused)
            })
        })
        .collect();
    poll_until(deadline_in(Duration::from_secs(120)), || {
        (answered.load(std::sync::atomic::Ordering::Relaxed) >= 4 * PER_THREAD / 3).then_some(())
    })
    .expect("the load did not get a third through in 120 s");
    eprintln!("cluster: killing {leader} (SIGKILL), the events stream's leader");
    nodes[victim].proc.kill9();
    killed.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut accepted: BTreeMap<String, u64> = BTreeMap::new();
    let mut refused = 0;
    for t in threads {
        let (ok, n) = t.join().expect("load thread");
        accepted.extend(ok);
        refused += n;
    }
    assert!(killed.load(std::sync::atomic::Ordering::Relaxed));
    assert_eq!(
        accepted.len() as u64,
        4 * PER_THREAD,
        "every delivery got its 200"
    );

    // Every 200 is in the stream, on the two nodes left: read it all back.
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != victim)
        .map(|i| urls[i].clone())
        .collect();
    let in_stream: BTreeMap<String, u64> = rt.block_on(async move {
        let opts =
            stockhook_shared::queue::nats::NatsOptions::new(&survivors.join(","), "test-reader");
        let mut opts = opts;
        opts.urls = survivors;
        opts.replicas = 3;
        let client = stockhook_shared::queue::nats::connect(&opts).await.unwrap();
        let js = stockhook_shared::queue::nats::context(client);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match js.get_stream("STOCKHOOK_EVENTS").await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("waiting for the stream after the kill: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("STOCKHOOK_EVENTS not readable: {e}"),
            }
        };
        // A work-queue stream allows no second consumer: read it by sequence (nothing consumes
        // it here, no worker runs).
        let mut stream = stream;
        let info = stream.info().await.unwrap().clone();
        assert_eq!(info.config.num_replicas, 3);
        let mut out = BTreeMap::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let m = stream
                .get_raw_message(seq)
                .await
                .unwrap_or_else(|e| panic!("message {seq} of {:?}: {e}", info.state));
            let env = Envelope::decode(&m.payload).expect("an envelope");
            let delivery = env.delivery_id().expect("a delivery id").to_string();
            out.insert(delivery, seq);
        }
        out
    });
    let lost: Vec<_> = accepted
        .iter()
        .filter(|(d, seq)| in_stream.get(*d) != Some(*seq))
        .collect();
    assert!(
        lost.is_empty(),
        "{} events answered 200 are not in the stream (of {} accepted, {refused} refused): {:?}",
        lost.len(),
        accepted.len(),
        lost.iter().take(10).collect::<Vec<_>>()
    );
    // And each once: a retry of a publish that had landed was answered "duplicate".
    assert_eq!(
        in_stream.len(),
        accepted.len(),
        "one message per delivery id"
    );
    eprintln!(
        "cluster: {} deliveries answered 200, each once in the stream; {refused} answers were 503s or dropped connections during the failover (retried)",
        accepted.len()
    );
    drop(r);
}

/// A CLI run: success, stdout, stderr.
type Cli<'a> = dyn Fn(&[&str]) -> (bool, String, String) + 'a;

/// `stockhook-worker failed list|show|replay|purge` and `stats` against JetStream.
#[test]
fn ops_cli_failed_and_stats_on_nats() {
    let Some(bin) = nats::require("ops_cli_failed_and_stats_on_nats") else {
        return;
    };
    let dir = TestDir::new("nats-ops");
    let node = Node::start(&dir, &bin, "n1", None);
    wait_healthy(&[&node]);
    let rcfg = config(&dir, "r1", &[&node.url], 1);
    let wcfg = config(&dir, "w1", &[&node.url], 1);
    let r = dir.receiver(&rcfg);
    let w = dir.worker(&wcfg);
    // The CLI reads the worker's data_dir, which the worker creates as it starts.
    poll_until(deadline_in(Duration::from_secs(60)), || {
        w.stderr().contains("worker ready").then_some(())
    })
    .unwrap_or_else(|| panic!("the worker never said it was ready:\n{}", w.stderr()));
    let cli = |args: &[&str]| -> (bool, String, String) {
        let mut full = vec!["--config", wcfg.to_str().unwrap()];
        full.extend_from_slice(args);
        let mut p = dir.run(bins::worker(), &full, Duration::from_secs(60));
        let st = p.wait_exit(deadline_in(Duration::from_secs(1)));
        (st.success(), p.stdout(), p.stderr())
    };
    let body = b"this is not json";
    let headers = sign::shopify(SECRET, body, "inventory_levels/update", "bad-1");
    let resp = Conn::connect(r.addr())
        .send("POST", "/webhooks/shop", &headers, body)
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let list = |cli: &Cli| -> Vec<serde_json::Value> {
        let (ok, out, err) = cli(&["failed", "list", "--json"]);
        assert!(ok, "failed list: {err}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out)
            .unwrap_or_else(|e| panic!("failed list --json: {e}: {out}"))
    };
    let rows = poll_until(deadline_in(Duration::from_secs(30)), || {
        let rows = list(&cli);
        (!rows.is_empty()).then_some(rows)
    })
    .expect("the unreadable event is dead-lettered");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kind"], "event");
    assert_eq!(rows[0]["source"], "shop");
    let id = rows[0]["id"].as_str().unwrap().to_string();

    let (ok, out, err) = cli(&["failed", "show", &id, "--payload", "--json"]);
    assert!(ok, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["payload"], "this is not json");
    assert_eq!(shown["id"], id.as_str());

    // Replay: processed again (and dead again: the bytes did not change), under a new id.
    let (ok, out, err) = cli(&["failed", "replay", &id]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("replayed event {id}")), "{out}");
    let again = poll_until(deadline_in(Duration::from_secs(30)), || {
        let rows = list(&cli);
        (rows.len() == 1 && rows[0]["id"] != id.as_str()).then_some(rows)
    })
    .expect("the replayed event is dead-lettered again");
    let id2 = again[0]["id"].as_str().unwrap().to_string();

    let (ok, out, _) = cli(&["failed", "purge", "--all"]);
    assert!(!ok, "a bulk purge needs --yes: {out}");
    let (ok, out, err) = cli(&["failed", "purge", "--all", "--yes"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("purged event {id2}")), "{out}");
    assert!(list(&cli).is_empty());

    let st = worker_stats(&dir, &wcfg);
    assert_eq!(st["queue"]["dead"], 0, "{st}");
    assert_eq!(st["queue"]["pending"], 0, "{st}");
    let (ok, out, err) = cli(&["stats"]);
    assert!(ok, "{err}");
    assert!(out.contains("queue.dead 0"), "{out}");
}
