//! The NATS backend under faults (issue 19), end to end: two receivers and two workers on one
//! JetStream server (file storage), the real binaries, real SMTP (the aiosmtpd sink) so emails
//! are counted by Message-ID. Clients post signed Shopify `inventory_levels/update` webhooks
//! through both receivers, each for a fresh item below the threshold, so every item answered
//! 200 must end as exactly one alert in exactly one email. A client whose request got no
//! answer, or a 503, sends it again with the same delivery id, as a platform does.
//!
//! | test | fault |
//! |---|---|
//! | `worker_and_receiver_kill_9_mid_burst_...` | a worker and a receiver SIGKILLed at random moments of the burst; the receiver comes back at once, the worker only after what it held went out |
//! | `paused_worker_past_its_lease_and_claims_...` | a worker SIGSTOPped for 20 s (longer than its lease and its send claims), then SIGCONT |
//! | `nats_server_kill_9_and_restart_...` | the single nats-server SIGKILLed and started again on its file store |
//! | `two_workers_each_apply_at_least_a_third_...` | none: the load is shared (each worker's `events_total{outcome="applied"}` metric) |
//!
//! The 3-node cluster with its stream leader killed is in `tests/nats.rs`
//! (`cluster_r3_node_killed_mid_load_loses_no_accepted_event`).
//!
//! Each fault test prints one line per run: `answered alerted lost duplicated
//! longest_delay_ms`, where duplicated counts extra copies by Message-ID and by alert id, and
//! the delay runs from the fault to the last email carrying an item answered before it (the
//! alerts the fault held up). It asserts lost 0, duplicated 0, and that delay within 30 s.
//!
//! Kill moments come from a seeded xorshift (the seed is printed; `SHTEST_SEED=<n>` repeats
//! them). Run: `cargo test -p stockhook-tests --test nats_faults` (one fault cycle per test).
//! Long form: `SHTEST_SOAK=1 cargo test -p stockhook-tests --test nats_faults -- --test-threads=1`
//! (5 cycles per test, more items). Nothing sleeps to wait for something: conditions are polled
//! with a deadline; the pauses are inputs (the clients' sending pace, the fault moments, the
//! length of the SIGSTOP).
//!
//! Where `nats-server` is not installed these tests print a loud SKIPPED line and pass, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where they fail.

use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};
use stockhook_test_kit::nats;
use stockhook_tests::answers::metric;
use stockhook_tests::config::toml_str;
use stockhook_tests::http::{self, Conn};
use stockhook_tests::nats_node::{wait_healthy, Node};
use stockhook_tests::smtp::SmtpSink;
use stockhook_tests::stack::{
    cycles, expect_within, free_port, start_worker, stat, wait_stats, Email, Endpoint, XorShift,
};
use stockhook_tests::{deadline_in, sign, ConfigBuilder, Proc, SourceSpec, TestDir};

const SECRET: &str = "shpss_nats_faults_0123456789abcdef";
const TO: &str = "inventory@example.com";

/// Client threads, and the most often each sends (the platforms' rate: the test's input).
const CLIENTS: usize = 8;
const PACE: Duration = Duration::from_millis(20);

/// How long a client keeps retrying one delivery, and the pipeline may take to drain.
const PATIENCE: Duration = Duration::from_secs(120);

/// The promise: what a fault held up is out within this long after it.
const RECOVERY: Duration = Duration::from_secs(30);

/// A level below the threshold for a fresh item: exactly one low-stock alert.
fn level(item: u64) -> Vec<u8> {
    json!({
        "inventory_item_id": item,
        "location_id": 1,
        "available": 1 + item % 4,
        "updated_at": "2024-07-01T10:00:00Z",
    })
    .to_string()
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// The processes

/// nats-server, the SMTP sink, two receivers and two workers, each with its own config and
/// data dir; all on the defaults that matter here (lease timeout, claims), batches of 32.
struct Rig {
    dir: TestDir,
    node: Node,
    smtp: SmtpSink,
    rcfg: Vec<PathBuf>,
    wcfg: Vec<PathBuf>,
    rx: Vec<Proc>,
    eps: Vec<Arc<Endpoint>>,
    workers: Vec<Proc>,
    metrics: Vec<SocketAddr>,
}

impl Rig {
    /// `short` names the test directory (the worker's socket path must stay short).
    fn start(test: &str, short: &str) -> Option<Rig> {
        let bin = nats::require(test)?;
        let dir = TestDir::new(short);
        let node = Node::start(&dir, &bin, "n1", None);
        wait_healthy(&[&node]);
        let smtp = SmtpSink::start(&dir);
        let cfg = |name: &str, metrics: Option<SocketAddr>| {
            let mut c = ConfigBuilder::new(&dir.path().join(name))
                .queue("backend", "\"nats\"")
                .queue("nats_url", &toml_str(&node.url))
                .worker("batch_size", "32")
                .email("smtp_url", &toml_str(&smtp.url()))
                .email("max_backoff", "\"2s\"")
                .recipients(&[TO])
                .source(SourceSpec::shopify("shop", SECRET));
            if let Some(m) = metrics {
                c = c.worker("metrics_listen", &toml_str(&m.to_string()));
            }
            dir.write_config(&format!("{name}.toml"), &c)
        };
        let metrics: Vec<SocketAddr> = (0..2)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let rcfg: Vec<PathBuf> = (0..2).map(|i| cfg(&format!("r{i}"), None)).collect();
        let wcfg: Vec<PathBuf> = (0..2)
            .map(|i| cfg(&format!("w{i}"), Some(metrics[i])))
            .collect();
        let rx: Vec<Proc> = rcfg.iter().map(|c| dir.receiver(c)).collect();
        let eps = rx
            .iter()
            .map(|r| Arc::new(Endpoint::new(r.addr())))
            .collect();
        let workers = wcfg.iter().map(|c| start_worker(&dir, c)).collect();
        Some(Rig {
            dir,
            node,
            smtp,
            rcfg,
            wcfg,
            rx,
            eps,
            workers,
            metrics,
        })
    }

    fn kill_receiver(&mut self, i: usize) {
        self.eps[i].down();
        let st = self.rx[i].kill9();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "receiver {i}: {st}");
    }

    fn restart_receiver(&mut self, i: usize) {
        self.rx[i] = self.dir.receiver(&self.rcfg[i]);
        self.eps[i].up(self.rx[i].addr());
    }

    fn kill_worker(&mut self, i: usize) {
        let st = self.workers[i].kill9();
        assert_eq!(st.signal(), Some(libc::SIGKILL), "worker {i}: {st}");
    }

    fn restart_worker(&mut self, i: usize) {
        self.workers[i] = start_worker(&self.dir, &self.wcfg[i]);
    }

    /// Events worker `i` applied since it started (its metrics endpoint).
    fn applied(&self, i: usize) -> u64 {
        let text = http::get(self.metrics[i], "/metrics").text();
        metric(
            &text,
            "stockhook_worker_events_total{source=\"shop\",outcome=\"applied\"}",
        )
        .unwrap_or(0)
    }

    /// Every message the SMTP sink stored, with the time it was stored.
    fn emails(&self) -> Vec<(SystemTime, Email)> {
        let new = self.smtp.maildir.join("new");
        let rd = match std::fs::read_dir(&new) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => panic!("listing {}: {e}", new.display()),
        };
        let mut out = Vec::new();
        for f in rd {
            let p = f
                .unwrap_or_else(|e| panic!("listing {}: {e}", new.display()))
                .path();
            let (Ok(meta), Ok(raw)) = (std::fs::metadata(&p), std::fs::read(&p)) else {
                continue; // being renamed into place
            };
            let at = meta
                .modified()
                .unwrap_or_else(|e| panic!("mtime of {}: {e}", p.display()));
            let raw = String::from_utf8_lossy(&raw).into_owned();
            out.push((at, Email::parse(&p.display().to_string(), &raw)));
        }
        out.sort_by_key(|(at, _)| *at);
        out
    }

    /// When each item first reached an email.
    fn first_emailed(&self) -> BTreeMap<String, SystemTime> {
        let mut first = BTreeMap::new();
        for (at, e) in self.emails() {
            for item in e.items() {
                first.entry(item).or_insert(at);
            }
        }
        first
    }

    /// Waits until every item answered before `fault` is in an email, at most [`RECOVERY`]
    /// after it; returns how long after the fault the last of them went out (zero when the
    /// fault held none up) and how many it held up.
    fn recovery(&self, what: &str, fault: SystemTime, answered: &Answers) -> (Duration, usize) {
        let before: Vec<String> = answered.before(fault);
        let deadline = fault + RECOVERY;
        let first = expect_within(
            RECOVERY + Duration::from_secs(5),
            &format!("{what}: every alert answered before it emailed"),
            || {
                let first = self.first_emailed();
                if before.iter().all(|i| first.contains_key(i)) {
                    return Some(first);
                }
                assert!(
                    SystemTime::now() < deadline,
                    "{what}: {} of {} items answered before it still in no email {RECOVERY:?} later",
                    before.iter().filter(|i| !first.contains_key(*i)).count(),
                    before.len()
                );
                None
            },
        );
        let held: Vec<Duration> = before
            .iter()
            .filter_map(|i| first[i].duration_since(fault).ok())
            .collect();
        (held.iter().max().copied().unwrap_or_default(), held.len())
    }

    /// Waits until `n` alerts were created and sent and the queue is empty; then counts the
    /// emails against `items`, prints the line, and asserts nothing lost and nothing twice.
    fn account(&self, case: &str, items: &[String], longest: Duration) {
        let n = items.len() as i64;
        let s = wait_stats(
            &self.dir,
            &self.wcfg[0],
            PATIENCE,
            &format!("{n} alerts created and sent, queue drained"),
            |s| {
                stat(s, "alerts.created") >= n
                    && stat(s, "alerts.pending") == 0
                    && stat(s, "queue.pending") == 0
                    && stat(s, "queue.leased") == 0
            },
        );
        let emails = self.emails();
        let mut by_message_id: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_alert: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_item: BTreeMap<String, usize> = BTreeMap::new();
        for (_, e) in &emails {
            *by_message_id.entry(e.message_id().to_string()).or_default() += 1;
            for a in e.alert_ids() {
                *by_alert.entry(a).or_default() += 1;
            }
            for i in e.items() {
                *by_item.entry(i).or_default() += 1;
            }
        }
        let extra = |m: &BTreeMap<String, usize>| m.values().map(|n| n - 1).sum::<usize>();
        let duplicated = extra(&by_message_id) + extra(&by_alert);
        let lost: Vec<&String> = items.iter().filter(|i| !by_item.contains_key(*i)).collect();
        let alerted = items.iter().filter(|i| by_item.contains_key(*i)).count();
        println!(
            "nats-faults {case}: answered={} alerted={alerted} lost={} duplicated={duplicated} longest_delay_ms={} (emails={} alert_ids={} created={} sent={})",
            items.len(),
            lost.len(),
            longest.as_millis(),
            emails.len(),
            by_alert.len(),
            stat(&s, "alerts.created"),
            stat(&s, "alerts.sent"),
        );
        assert!(lost.is_empty(), "{case}: lost {lost:?}");
        let twice: Vec<_> = by_message_id.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{case}: Message-IDs twice: {twice:?}");
        let twice: Vec<_> = by_alert.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{case}: alert ids in two emails: {twice:?}"
        );
        let twice: Vec<_> = by_item.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{case}: items alerted twice: {twice:?}");
        assert_eq!(by_item.len(), items.len(), "{case}: items never posted");
        assert_eq!(stat(&s, "alerts.created"), n, "{case}: {s:#}");
        assert_eq!(stat(&s, "queue.dead"), 0, "{case}: {s:#}");
        assert!(
            longest <= RECOVERY,
            "{case}: a fault held alerts up {longest:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The clients

/// When each delivery was answered 200.
#[derive(Default)]
struct Answers(Mutex<BTreeMap<String, SystemTime>>);

impl Answers {
    fn record(&self, item: u64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(item.to_string(), SystemTime::now());
    }

    fn before(&self, t: SystemTime) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, at)| **at <= t)
            .map(|(i, _)| i.clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Posts one item's level through `ep` until it is answered 200 (accepted, or duplicate of an
/// earlier try), with the same delivery id on every try: no answer means the receiver died (wait
/// for it to come back), a 503 that JetStream is unreachable (try again shortly).
fn deliver(ep: &Endpoint, item: u64, answers: &Answers) {
    let body = level(item);
    let h = sign::shopify(
        SECRET,
        &body,
        "inventory_levels/update",
        &format!("lvl-{item}"),
    );
    let deadline = deadline_in(PATIENCE);
    loop {
        let (generation, addr) = ep.current(deadline);
        let sent =
            Conn::try_connect(addr).and_then(|mut c| c.send("POST", "/webhooks/shop", &h, &body));
        match sent {
            Ok(r)
                if r.status == 200
                    && matches!(r.json()["status"].as_str(), Some("accepted" | "duplicate")) =>
            {
                answers.record(item);
                return;
            }
            Ok(r) if r.status == 503 => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "item {item}: still 503 after {PATIENCE:?}"
                );
                // The client's retry schedule (an input), not a wait for a condition.
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(r) => panic!("item {item}: unexpected answer {r:?}"),
            Err(_) => ep.wait_past(generation, deadline),
        }
    }
}

/// [`CLIENTS`] threads posting `items`, alternately through the two receivers, each at most
/// one request per [`PACE`].
struct Load {
    threads: Vec<JoinHandle<()>>,
    answers: Arc<Answers>,
    posted: Arc<AtomicUsize>,
}

impl Load {
    fn start(eps: &[Arc<Endpoint>], items: &[u64]) -> Load {
        let answers: Arc<Answers> = Arc::default();
        let posted = Arc::new(AtomicUsize::new(0));
        let threads = (0..CLIENTS)
            .map(|t| {
                let mine: Vec<u64> = items.iter().copied().skip(t).step_by(CLIENTS).collect();
                let (eps, answers, posted) = (eps.to_vec(), answers.clone(), posted.clone());
                std::thread::spawn(move || {
                    for item in mine {
                        let started = std::time::Instant::now();
                        deliver(&eps[(item % 2) as usize], item, &answers);
                        posted.fetch_add(1, Ordering::SeqCst);
                        if let Some(rest) = PACE.checked_sub(started.elapsed()) {
                            std::thread::sleep(rest);
                        }
                    }
                })
            })
            .collect();
        Load {
            threads,
            answers,
            posted,
        }
    }

    fn answered(&self) -> usize {
        self.posted.load(Ordering::SeqCst)
    }

    /// Waits until `n` items are answered.
    fn wait_answered(&self, n: usize) {
        expect_within(PATIENCE, &format!("{n} items answered"), || {
            (self.answered() >= n).then_some(())
        });
    }

    fn finish(self, expected: usize) -> Arc<Answers> {
        for t in self.threads {
            t.join().expect("a client thread panicked");
        }
        assert_eq!(self.answers.len(), expected, "deliveries answered 200");
        self.answers
    }
}

fn items(first: u64, n: usize) -> Vec<u64> {
    (first..first + n as u64).collect()
}

fn names(items: &[u64]) -> Vec<String> {
    items.iter().map(u64::to_string).collect()
}

// ---------------------------------------------------------------------------------------------

/// A worker and a receiver SIGKILLed mid-burst: the receiver is restarted at once; the worker
/// stays dead until everything answered before its death went out (through the other worker,
/// within 30 s: its leases and send claims lapse in seconds), then comes back.
#[test]
fn worker_and_receiver_kill_9_mid_burst_lose_nothing_send_nothing_twice() {
    const NAME: &str = "worker_and_receiver_kill_9_mid_burst_lose_nothing_send_nothing_twice";
    let Some(mut rig) = Rig::start(NAME, "nf-kill") else {
        return;
    };
    let mut rng = XorShift::from_env(NAME, "SHTEST_SEED");
    let per_cycle = cycles(240, 400);
    let mut all = Vec::new();
    let mut longest = Duration::ZERO;
    for cycle in 0..cycles(1, 5) {
        let batch = items(100_000 * (cycle as u64 + 1), per_cycle);
        let load = Load::start(&rig.eps, &batch);
        let (r, w) = (rng.range(0, 1) as usize, rng.range(0, 1) as usize);
        let (at_r, at_w) = (
            rng.range(per_cycle as u64 / 10, per_cycle as u64 / 2) as usize,
            rng.range(per_cycle as u64 / 5, per_cycle as u64 * 7 / 10) as usize,
        );
        let (first, second) = (at_r.min(at_w), at_r.max(at_w));
        let mut worker_killed_at = None;
        for at in [first, second] {
            load.wait_answered(at);
            if at == at_w && worker_killed_at.is_none() {
                let t = SystemTime::now();
                rig.kill_worker(w);
                worker_killed_at = Some(t);
                println!("cycle {cycle}: worker {w} SIGKILLed after {at} answers");
            } else {
                rig.kill_receiver(r);
                let down = Duration::from_millis(rng.range(100, 1500));
                println!("cycle {cycle}: receiver {r} SIGKILLed after {at} answers, down {down:?}");
                // How long it stays down: an input of the test.
                std::thread::sleep(down);
                rig.restart_receiver(r);
            }
        }
        let killed_at = worker_killed_at.expect("the worker was killed");
        let answers = load.finish(per_cycle);
        let (delay, held) = rig.recovery("worker kill -9", killed_at, &answers);
        println!(
            "cycle {cycle}: {held} alerts answered before the worker kill went out after it, the last {delay:?} after"
        );
        longest = longest.max(delay);
        rig.restart_worker(w);
        all.extend(names(&batch));
    }
    rig.account("worker+receiver kill -9", &all, longest);
}

/// A worker SIGSTOPped for longer than its lease (10 s) and its send claims (15 s), then
/// SIGCONT: the other one takes over its events and its claims, and the paused one, resumed,
/// sends nothing the other already sent.
#[test]
fn paused_worker_past_its_lease_and_claims_resumes_without_sending_twice() {
    const NAME: &str = "paused_worker_past_its_lease_and_claims_resumes_without_sending_twice";
    let Some(rig) = Rig::start(NAME, "nf-pause") else {
        return;
    };
    let mut rng = XorShift::from_env(NAME, "SHTEST_SEED");
    let per_cycle = cycles(240, 400);
    let pause = Duration::from_secs(20);
    let mut all = Vec::new();
    let mut longest = Duration::ZERO;
    for cycle in 0..cycles(1, 5) {
        let batch = items(100_000 * (cycle as u64 + 1), per_cycle);
        let load = Load::start(&rig.eps, &batch);
        let w = rng.range(0, 1) as usize;
        let at = rng.range(per_cycle as u64 / 5, per_cycle as u64 * 7 / 10) as usize;
        load.wait_answered(at);
        let paused_at = SystemTime::now();
        rig.workers[w].signal(libc::SIGSTOP);
        println!("cycle {cycle}: worker {w} SIGSTOPped after {at} answers, for {pause:?}");
        let answers = load.finish(per_cycle);
        let (delay, held) = rig.recovery("worker SIGSTOP", paused_at, &answers);
        println!(
            "cycle {cycle}: {held} alerts answered before the pause went out after it, the last {delay:?} after"
        );
        longest = longest.max(delay);
        // The pause's length is the test's input.
        if let Ok(left) = (paused_at + pause).duration_since(SystemTime::now()) {
            std::thread::sleep(left);
        }
        rig.workers[w].signal(libc::SIGCONT);
        all.extend(names(&batch));
        // The resumed worker gets back to work: it finishes what it held when paused (and its
        // sender looks at what it had planned), then applies fresh events; only then count.
        let applied = rig.applied(w);
        let more = items(100_000 * (cycle as u64 + 1) + 50_000, 80);
        Load::start(&rig.eps, &more).finish(more.len());
        expect_within(PATIENCE, "the resumed worker applies fresh events", || {
            (rig.applied(w) > applied).then_some(())
        });
        all.extend(names(&more));
    }
    rig.account("worker SIGSTOP/SIGCONT", &all, longest);
}

/// The single nats-server SIGKILLed mid-burst and started again on the same file store: the
/// receivers answer 503 meanwhile (clients retry), the workers reconnect, nothing answered 200
/// is lost and nothing is sent twice.
#[test]
fn nats_server_kill_9_and_restart_on_its_file_store_loses_nothing() {
    const NAME: &str = "nats_server_kill_9_and_restart_on_its_file_store_loses_nothing";
    let Some(mut rig) = Rig::start(NAME, "nf-nats") else {
        return;
    };
    let mut rng = XorShift::from_env(NAME, "SHTEST_SEED");
    let per_cycle = cycles(240, 400);
    let mut all = Vec::new();
    let mut longest = Duration::ZERO;
    for cycle in 0..cycles(1, 5) {
        let batch = items(100_000 * (cycle as u64 + 1), per_cycle);
        let load = Load::start(&rig.eps, &batch);
        let at = rng.range(per_cycle as u64 / 5, per_cycle as u64 * 7 / 10) as usize;
        load.wait_answered(at);
        let killed_at = SystemTime::now();
        let down = Duration::from_millis(rng.range(200, 2000));
        rig.node.proc.kill9();
        println!("cycle {cycle}: nats-server SIGKILLed after {at} answers, down {down:?}");
        // How long it stays down: an input of the test.
        std::thread::sleep(down);
        let dir = &rig.dir;
        rig.node.kill9_and_restart(dir);
        wait_healthy(&[&rig.node]);
        let answers = load.finish(per_cycle);
        let (delay, held) = rig.recovery("nats-server kill -9", killed_at, &answers);
        println!(
            "cycle {cycle}: {held} alerts answered before the kill went out after it, the last {delay:?} after"
        );
        longest = longest.max(delay);
        all.extend(names(&batch));
    }
    rig.account("nats-server kill -9 + restart", &all, longest);
}

/// No fault: with two workers on one consumer, each applies at least a third of the events.
#[test]
fn two_workers_each_apply_at_least_a_third_of_the_events() {
    const NAME: &str = "two_workers_each_apply_at_least_a_third_of_the_events";
    let Some(rig) = Rig::start(NAME, "nf-share") else {
        return;
    };
    let n = cycles(300, 1000);
    let batch = items(1, n);
    let load = Load::start(&rig.eps, &batch);
    load.finish(n);
    rig.account("no fault (load sharing)", &names(&batch), Duration::ZERO);
    let applied = [rig.applied(0), rig.applied(1)];
    let total = applied[0] + applied[1];
    println!(
        "nats-faults load sharing: worker 0 applied {}, worker 1 applied {} of {total} events",
        applied[0], applied[1]
    );
    assert_eq!(total, n as u64, "each event applied once");
    assert!(
        applied.iter().all(|a| a * 3 >= total),
        "a worker did less than a third: {applied:?}"
    );
}
