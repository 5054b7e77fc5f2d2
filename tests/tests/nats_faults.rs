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
//! | `a_live_worker_on_a_slow_mail_server_keeps_its_claims` | none: a mail server that takes 18 s per DATA (longer than a send claim's 15 s), so only renewals keep the claims |
//!
//! The 3-node cluster with its stream leader killed is in `tests/nats.rs`
//! (`cluster_r3_node_killed_mid_load_loses_no_accepted_event`).
//!
//! Each fault test prints one line per run: `answered alerted lost duplicated
//! longest_delay_ms`, where duplicated counts alerts in more than one distinct email (distinct
//! Message-IDs: a mail client shows copies of one Message-ID once), and the delay runs from the
//! fault to the last email carrying an item answered before it (the alerts the fault held up).
//! It asserts lost 0, duplicated 0, and that delay within 30 s. The same email delivered again
//! (same Message-ID: a worker killed or stopped between the mail server's 250 and writing it
//! down, SMTP being at least once) is printed on its own line as `same-Message-ID
//! redeliveries`, and asserted to carry the same alerts as the first copy.
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
use std::time::{Duration, SystemTime};
use stockhook_test_kit::nats;
use stockhook_tests::answers::metric;
use stockhook_tests::clients::Clients;
use stockhook_tests::config::toml_str;
use stockhook_tests::http;
use stockhook_tests::nats_node::{wait_healthy, Node};
use stockhook_tests::smtp::SmtpSink;
use stockhook_tests::stack::{
    cycles, deliver_level, expect_within, free_port, start_worker, stat, wait_stats, Email,
    Endpoint, XorShift,
};
use stockhook_tests::{ConfigBuilder, Proc, SourceSpec, TestDir};

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
    /// Where the mail server stores each message it accepted, one file each.
    maildir: PathBuf,
    _smtp: Option<SmtpSink>,
    slow: Option<SlowSmtp>,
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
        Rig::start_with(test, short, None)
    }

    /// With `slow`, the mail server is a [`SlowSmtp`] answering each DATA after that long.
    fn start_with(test: &str, short: &str, slow: Option<Duration>) -> Option<Rig> {
        let bin = nats::require(test)?;
        let dir = TestDir::new(short);
        let node = Node::start(&dir, &bin, "n1", None);
        wait_healthy(&[&node]);
        let (smtp, slow, url, maildir) = match slow {
            None => {
                let sink = SmtpSink::start(&dir);
                let (url, maildir) = (sink.url(), sink.maildir.clone());
                (Some(sink), None, url, maildir)
            }
            Some(hold) => {
                let maildir = dir.path().join("slow-mail");
                let slow = SlowSmtp::start(&maildir, hold);
                (None, Some(slow.clone()), slow.url, maildir)
            }
        };
        let cfg = |name: &str, metrics: Option<SocketAddr>| {
            let mut c = ConfigBuilder::new(&dir.path().join(name))
                .queue("backend", "\"nats\"")
                .queue("nats_url", &toml_str(&node.url))
                .worker("batch_size", "32")
                .email("smtp_url", &toml_str(&url))
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
            maildir,
            _smtp: smtp,
            slow,
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
        let new = self.maildir.join("new");
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

    /// [`Rig::account_with`] for a run where nats-server kept running.
    fn account(&self, case: &str, items: &[String], longest: Duration) {
        self.account_with(case, items, longest, false)
    }

    /// Waits until every item is in an email, no alert is pending and the queue has nothing
    /// left to deliver; then counts the emails against `items`, prints the line, and asserts
    /// nothing lost and nothing twice.
    ///
    /// The statistics counters are reported, not asserted: they are added after each batch by a
    /// separate write, so a worker killed, or an outage, between the two under-counts them.
    /// After a nats-server SIGKILL (`nats_killed`), an empty events stream is not asserted
    /// either: nats-server 2.9 can bring back, from its file store, messages that were acked
    /// before the kill, which the consumer (its ack floor past them) never delivers again.
    /// Those must all be events already applied: each is read back and its item must be in an
    /// email.
    fn account_with(&self, case: &str, items: &[String], longest: Duration, nats_killed: bool) {
        let n = items.len() as i64;
        let s = wait_stats(
            &self.dir,
            &self.wcfg[0],
            PATIENCE,
            &format!("{n} items emailed, no alert pending, queue drained"),
            |s| {
                let emailed = self.first_emailed();
                items.iter().all(|i| emailed.contains_key(i))
                    && stat(s, "alerts.pending") == 0
                    && stat(s, "queue.leased") == 0
                    && (stat(s, "queue.pending") == 0
                        || (nats_killed && undelivered(&self.node.url) == 0))
            },
        );
        let leftover = if nats_killed {
            let left = stream_leftovers(&self.node.url);
            let emailed = self.first_emailed();
            let unapplied: Vec<&String> =
                left.iter().filter(|i| !emailed.contains_key(*i)).collect();
            assert!(
                unapplied.is_empty(),
                "{case}: messages left in the stream for items in no email: {unapplied:?}"
            );
            left.len()
        } else {
            assert_eq!(stat(&s, "queue.pending"), 0, "{case}: {s:#}");
            0
        };
        // Emails by Message-ID: copies of one Message-ID are the same email delivered again
        // (SMTP is at least once: a worker killed, or stopped, between the server's 250 and
        // writing it down; mail clients show one). They must carry the same alerts. Duplicated
        // counts alerts in more than one distinct email (distinct Message-IDs): what a seller
        // would see twice.
        let emails = self.emails();
        let mut by_message_id: BTreeMap<String, (usize, Vec<String>)> = BTreeMap::new();
        let mut by_alert: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_item: BTreeMap<String, usize> = BTreeMap::new();
        let mut redelivered_alerts = 0;
        for (_, e) in &emails {
            let mut alerts = e.alert_ids();
            alerts.sort();
            let (copies, first) = by_message_id
                .entry(e.message_id().to_string())
                .or_insert((0, alerts.clone()));
            *copies += 1;
            if *copies > 1 {
                assert_eq!(
                    *first,
                    alerts,
                    "{case}: two emails with Message-ID {} carry different alerts",
                    e.message_id()
                );
                redelivered_alerts += alerts.len();
                continue;
            }
            for a in alerts {
                *by_alert.entry(a).or_default() += 1;
            }
            for i in e.items() {
                *by_item.entry(i).or_default() += 1;
            }
        }
        let extra = |m: &BTreeMap<String, usize>| m.values().map(|n| n - 1).sum::<usize>();
        let duplicated = extra(&by_alert);
        let resent: usize = by_message_id.values().map(|(n, _)| n - 1).sum();
        let lost: Vec<&String> = items.iter().filter(|i| !by_item.contains_key(*i)).collect();
        let alerted = items.iter().filter(|i| by_item.contains_key(*i)).count();
        println!(
            "nats-faults {case}: answered={} alerted={alerted} lost={} duplicated={duplicated} longest_delay_ms={} (emails={} distinct={} alert_ids={} counters: created={} sent={}; acked events back in the stream={leftover})",
            items.len(),
            lost.len(),
            longest.as_millis(),
            emails.len(),
            by_message_id.len(),
            by_alert.len(),
            stat(&s, "alerts.created"),
            stat(&s, "alerts.sent"),
        );
        println!(
            "nats-faults {case}: same-Message-ID redeliveries={resent} (the same email accepted again after a worker died or stopped between the 250 and writing it down; {redelivered_alerts} alerts in them)"
        );
        assert!(lost.is_empty(), "{case}: lost {lost:?}");
        let twice: Vec<&String> = by_alert
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(a, _)| a)
            .collect();
        assert!(
            twice.is_empty(),
            "{case}: alerts in more than one distinct email: {twice:?}"
        );
        let twice: Vec<_> = by_item.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{case}: items alerted twice: {twice:?}");
        assert_eq!(by_item.len(), items.len(), "{case}: items never posted");
        assert_eq!(stat(&s, "queue.dead"), 0, "{case}: {s:#}");
        assert!(
            longest <= RECOVERY,
            "{case}: a fault held alerts up {longest:?}"
        );
    }
}

/// A mail server that is slow to accept: it speaks just enough SMTP for lettre, and answers
/// each DATA only `hold` after the message's last line; then it stores the message as one file
/// under `<maildir>/new/`, as the aiosmtpd sink does. It counts the messages begun (DATA
/// received) and stored, so a test can wait until none is in flight.
#[derive(Clone)]
struct SlowSmtp {
    url: String,
    begun: Arc<AtomicUsize>,
    stored: Arc<AtomicUsize>,
}

impl SlowSmtp {
    /// Listens on a free loopback port (for the rest of the test run).
    fn start(maildir: &std::path::Path, hold: Duration) -> SlowSmtp {
        let new = maildir.join("new");
        std::fs::create_dir_all(&new).unwrap_or_else(|e| panic!("creating {}: {e}", new.display()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the slow SMTP");
        let addr = listener.local_addr().expect("its address");
        let smtp = SlowSmtp {
            url: format!("smtp://{addr}"),
            begun: Arc::default(),
            stored: Arc::default(),
        };
        let server = smtp.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (new, server) = (new.clone(), server.clone());
                std::thread::spawn(move || {
                    // A connection the worker dropped ends the conversation.
                    let _ = server.serve(conn, &new, hold);
                });
            }
        });
        smtp
    }

    /// No message between its DATA and its store.
    fn idle(&self) -> bool {
        self.begun.load(Ordering::SeqCst) == self.stored.load(Ordering::SeqCst)
    }

    fn serve(
        &self,
        conn: std::net::TcpStream,
        new: &std::path::Path,
        hold: Duration,
    ) -> std::io::Result<()> {
        use std::io::{BufRead as _, Write as _};
        let mut out = conn.try_clone()?;
        let mut lines = std::io::BufReader::new(conn);
        out.write_all(b"220 slow ESMTP\r\n")?;
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            let answer: &[u8] = match verb.as_str() {
                "EHLO" | "HELO" => b"250 slow\r\n",
                "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                "QUIT" => {
                    out.write_all(b"221 bye\r\n")?;
                    return Ok(());
                }
                "DATA" => {
                    out.write_all(b"354 go on\r\n")?;
                    self.begun.fetch_add(1, Ordering::SeqCst);
                    let mut message = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line)? == 0 {
                            return Ok(());
                        }
                        if line == ".\r\n" || line == ".\n" {
                            break;
                        }
                        message.push_str(line.strip_prefix('.').unwrap_or(&line));
                    }
                    // The slowness is this server's behaviour: the test's input.
                    std::thread::sleep(hold);
                    let path = new.join(format!("{}.eml", unique_name()));
                    std::fs::write(&path, message)?;
                    self.stored.fetch_add(1, Ordering::SeqCst);
                    b"250 queued\r\n"
                }
                _ => b"502 not here\r\n",
            };
            out.write_all(answer)?;
        }
    }
}

/// Runs `f` against the JetStream server at `url` (a probe connection of the test's own).
fn with_js<T>(url: &str, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
    use stockhook_shared::queue::nats as qnats;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let opts = qnats::NatsOptions::new(url, "nats-faults-probe");
        let client = qnats::connect(&opts).await.expect("connecting the probe");
        f(qnats::context(client)).await
    })
}

/// Messages the worker consumer has still to deliver (never delivered, or due again).
fn undelivered(url: &str) -> u64 {
    with_js(url, async |js| {
        let stream = js
            .get_stream(qnats_names::EVENTS)
            .await
            .expect("the events stream");
        let info = stream
            .consumer_info(qnats_names::CONSUMER)
            .await
            .expect("the worker consumer");
        info.num_pending + info.num_ack_pending as u64
    })
}

/// The items of the messages still in the events stream.
fn stream_leftovers(url: &str) -> Vec<String> {
    with_js(url, async |js| {
        let mut stream = js
            .get_stream(qnats_names::EVENTS)
            .await
            .expect("the events stream");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut items = Vec::new();
        if state.messages == 0 {
            return items;
        }
        for seq in state.first_sequence..=state.last_sequence {
            // Deleted (acked) sequences in between are gaps.
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let env = stockhook_shared::envelope::Envelope::decode(&m.payload)
                .expect("an envelope in the events stream");
            let delivery = env.delivery_id().expect("a delivery id").to_string();
            items.push(
                delivery
                    .strip_prefix("lvl-")
                    .unwrap_or(&delivery)
                    .to_string(),
            );
        }
        items
    })
}

/// The names the queue gives its stream and consumer.
mod qnats_names {
    pub use stockhook_shared::queue::nats::{CONSUMER, EVENTS_STREAM as EVENTS};
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

/// Posts one item's level through `ep` until it is answered 200 ([`deliver_level`], retrying
/// 503s: JetStream unreachable for now).
fn deliver(ep: &Endpoint, item: u64, answers: &Answers) {
    if let Err(r) = deliver_level(ep, SECRET, item, &level(item), true) {
        panic!("item {item}: unexpected answer {r:?}");
    }
    answers.record(item);
}

/// [`CLIENTS`] threads posting `items`, alternately through the two receivers, each at most
/// one request per [`PACE`].
struct Load {
    clients: Clients,
    answers: Arc<Answers>,
}

impl Load {
    fn start(eps: &[Arc<Endpoint>], items: &[u64]) -> Load {
        let answers: Arc<Answers> = Arc::default();
        let (eps, mine) = (eps.to_vec(), answers.clone());
        let clients = Clients::start(items, CLIENTS, move |item| {
            let started = std::time::Instant::now();
            deliver(&eps[(item % 2) as usize], item, &mine);
            if let Some(rest) = PACE.checked_sub(started.elapsed()) {
                std::thread::sleep(rest);
            }
            true
        });
        Load { clients, answers }
    }

    fn answered(&self) -> usize {
        self.clients.done()
    }

    /// Waits until `n` items are answered.
    fn wait_answered(&self, n: usize) {
        expect_within(PATIENCE, &format!("{n} items answered"), || {
            (self.answered() >= n).then_some(())
        });
    }

    fn finish(self, expected: usize) -> Arc<Answers> {
        self.clients.join();
        assert_eq!(self.answers.len(), expected, "deliveries answered 200");
        self.answers
    }
}

/// A file name no other message of this test run uses.
fn unique_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn items(first: u64, n: usize) -> Vec<u64> {
    (first..first + n as u64).collect()
}

fn names(items: &[u64]) -> Vec<String> {
    items.iter().map(u64::to_string).collect()
}

// ---------------------------------------------------------------------------------------------

/// What to do once a fault's recovery is measured (restart, resume, more load): returns the
/// items it posted.
type After = Box<dyn FnOnce(&mut Rig) -> Vec<u64>>;

/// A burst per cycle (`cycles(1, 5)` of them, 240 or 400 items) with one fault in it: `fault`
/// strikes mid-burst (given the rig, the RNG, the running load, the cycle and the burst's size)
/// and returns when, and what to do afterwards. Each cycle measures how long the alerts answered
/// before the fault took ([`Rig::recovery`]); the end accounts for every email.
fn fault_cycles(
    test: &str,
    short: &str,
    case: &str,
    nats_killed: bool,
    mut fault: impl FnMut(&mut Rig, &mut XorShift, &Load, usize, usize) -> (SystemTime, After),
) {
    let Some(mut rig) = Rig::start(test, short) else {
        return;
    };
    let mut rng = XorShift::from_env(test, "SHTEST_SEED");
    let per_cycle = cycles(240, 400);
    let mut all = Vec::new();
    let mut longest = Duration::ZERO;
    for cycle in 0..cycles(1, 5) {
        let batch = items(100_000 * (cycle as u64 + 1), per_cycle);
        let load = Load::start(&rig.eps, &batch);
        let (struck, after) = fault(&mut rig, &mut rng, &load, cycle, per_cycle);
        let answers = load.finish(per_cycle);
        let (delay, held) = rig.recovery(case, struck, &answers);
        println!(
            "cycle {cycle}: {held} alerts answered before the fault went out after it, the last {delay:?} after"
        );
        longest = longest.max(delay);
        all.extend(names(&batch));
        all.extend(names(&after(&mut rig)));
    }
    rig.account_with(case, &all, longest, nats_killed);
}

/// A worker and a receiver SIGKILLed mid-burst: the receiver is restarted at once; the worker
/// stays dead until everything answered before its death went out (through the other worker,
/// within 30 s: its leases and send claims lapse in seconds), then comes back.
#[test]
fn worker_and_receiver_kill_9_mid_burst_lose_nothing_send_nothing_twice() {
    fault_cycles(
        "worker_and_receiver_kill_9_mid_burst_lose_nothing_send_nothing_twice",
        "nf-kill",
        "worker+receiver kill -9",
        false,
        |rig, rng, load, cycle, n| {
            let (r, w) = (rng.range(0, 1) as usize, rng.range(0, 1) as usize);
            let n = n as u64;
            let at_r = rng.range(n / 10, n / 2) as usize;
            let at_w = rng.range(n / 5, n * 7 / 10) as usize;
            let mut worker_killed_at = None;
            for at in [at_r.min(at_w), at_r.max(at_w)] {
                load.wait_answered(at);
                if at == at_w && worker_killed_at.is_none() {
                    worker_killed_at = Some(SystemTime::now());
                    rig.kill_worker(w);
                    println!("cycle {cycle}: worker {w} SIGKILLed after {at} answers");
                } else {
                    rig.kill_receiver(r);
                    let down = Duration::from_millis(rng.range(100, 1500));
                    println!(
                        "cycle {cycle}: receiver {r} SIGKILLed after {at} answers, down {down:?}"
                    );
                    // How long it stays down: an input of the test.
                    std::thread::sleep(down);
                    rig.restart_receiver(r);
                }
            }
            let struck = worker_killed_at.expect("the worker was killed");
            (
                struck,
                Box::new(move |rig: &mut Rig| {
                    rig.restart_worker(w);
                    Vec::new()
                }),
            )
        },
    );
}

/// A worker SIGSTOPped for longer than its lease (10 s) and its send claims (15 s), then
/// SIGCONT: the other one takes over its events and its claims, and the paused one, resumed,
/// sends nothing the other already sent.
#[test]
fn paused_worker_past_its_lease_and_claims_resumes_without_sending_twice() {
    fault_cycles(
        "paused_worker_past_its_lease_and_claims_resumes_without_sending_twice",
        "nf-pause",
        "worker SIGSTOP/SIGCONT",
        false,
        |rig, rng, load, cycle, n| {
            let pause = Duration::from_secs(20);
            let w = rng.range(0, 1) as usize;
            let at = rng.range(n as u64 / 5, n as u64 * 7 / 10) as usize;
            load.wait_answered(at);
            let paused_at = SystemTime::now();
            rig.workers[w].signal(libc::SIGSTOP);
            println!("cycle {cycle}: worker {w} SIGSTOPped after {at} answers, for {pause:?}");
            let after = move |rig: &mut Rig| {
                // The pause's length is the test's input.
                if let Ok(left) = (paused_at + pause).duration_since(SystemTime::now()) {
                    std::thread::sleep(left);
                }
                rig.workers[w].signal(libc::SIGCONT);
                // The resumed worker gets back to work: it finishes what it held when paused
                // (and its sender looks at what it had planned), then applies fresh events;
                // only then count.
                let applied = rig.applied(w);
                let more = items(100_000 * (cycle as u64 + 1) + 50_000, 80);
                Load::start(&rig.eps, &more).finish(more.len());
                expect_within(PATIENCE, "the resumed worker applies fresh events", || {
                    (rig.applied(w) > applied).then_some(())
                });
                more
            };
            (paused_at, Box::new(after))
        },
    );
}

/// The single nats-server SIGKILLed mid-burst and started again on the same file store: the
/// receivers answer 503 meanwhile (clients retry), the workers reconnect, nothing answered 200
/// is lost and nothing is sent twice.
#[test]
fn nats_server_kill_9_and_restart_on_its_file_store_loses_nothing() {
    fault_cycles(
        "nats_server_kill_9_and_restart_on_its_file_store_loses_nothing",
        "nf-nats",
        "nats-server kill -9 + restart",
        true,
        |rig, rng, load, cycle, n| {
            let at = rng.range(n as u64 / 5, n as u64 * 7 / 10) as usize;
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
            (killed_at, Box::new(|_: &mut Rig| Vec::new()))
        },
    );
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

/// A live worker on a slow mail server (each DATA answered 18 s late, past the 15 s life of a
/// send claim) keeps its claims by renewing them: the other worker never takes the alerts
/// over, so each goes out once.
#[test]
fn a_live_worker_on_a_slow_mail_server_keeps_its_claims() {
    const NAME: &str = "a_live_worker_on_a_slow_mail_server_keeps_its_claims";
    let Some(rig) = Rig::start_with(NAME, "nf-slow", Some(Duration::from_secs(18))) else {
        return;
    };
    let batch = items(1, 24);
    Load::start(&rig.eps, &batch).finish(batch.len());
    // Everything sent and written down, and no message still in the server's hands (a worker
    // that took a lapsed claim over would be sending its copy now): then count.
    let slow = rig.slow.clone().expect("the slow server");
    wait_stats(&rig.dir, &rig.wcfg[0], PATIENCE, "alerts sent", |s| {
        stat(s, "alerts.pending") == 0 && stat(s, "alerts.sent") == batch.len() as i64
    });
    expect_within(PATIENCE, "no message in flight at the mail server", || {
        slow.idle().then_some(())
    });
    rig.account(
        "slow mail server (no fault)",
        &names(&batch),
        Duration::ZERO,
    );
}
