//! Helpers for the worker and crash-safety suites (`tests/worker.rs`, `tests/crash.rs`): the
//! worker's `ready state=` line, its operator CLI (`stats --json` and friends), alert emails read
//! back from `.eml` files or a Maildir, accounting of which items reached an email how often, a
//! seeded RNG for kill moments, a receiver address that changes across restarts, an SMTP sink
//! on a chosen port (to stop it and bring it back on the same one), and a tmpfs mount guard.
//!
//! Everything here panics with what it was doing when something is off, and waits only by
//! polling a condition with a deadline.

use crate::poll::{deadline_in, poll_until};
use crate::proc::{mail_files, Proc, TestDir};
use crate::smtp::SmtpSink;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a worker may take from spawn to its `ready state=` line.
pub const WORKER_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one CLI command may run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The worker process and its CLI

/// `stockhook-worker --config <config> run`, waited for until it prints `ready state=`.
pub fn start_worker(dir: &TestDir, config: &Path) -> Proc {
    let mut p = dir.worker(config);
    wait_worker_ready(&mut p);
    p
}

/// Waits for the worker's `ready state=<path>` line and returns the path. Panics if the process
/// exits first or the deadline passes (its drop then dumps the output).
pub fn wait_worker_ready(p: &mut Proc) -> String {
    let ready = |p: &Proc| {
        p.stdout()
            .lines()
            .find_map(|l| l.strip_prefix("ready state=").map(|s| s.trim().to_string()))
    };
    let found = poll_until(deadline_in(WORKER_READY_TIMEOUT), || {
        if let Some(s) = ready(p) {
            return Some(Ok(s));
        }
        p.try_wait_exit(deadline_in(Duration::ZERO))
            .map(|st| ready(p).ok_or(st))
    });
    match found {
        Some(Ok(state)) => state,
        Some(Err(st)) => panic!(
            "`{}` exited ({st}) before printing `ready state=`",
            p.cmdline()
        ),
        None => panic!(
            "`{}` printed no `ready state=` line within {WORKER_READY_TIMEOUT:?}",
            p.cmdline()
        ),
    }
}

/// Runs `stockhook-worker --config <config> <args>` to completion.
pub fn worker_cli(dir: &TestDir, config: &Path, args: &[&str]) -> Proc {
    let mut all: Vec<&std::ffi::OsStr> = vec!["--config".as_ref(), config.as_os_str()];
    all.extend(args.iter().map(|a| std::ffi::OsStr::new(*a)));
    dir.run(crate::bins::worker(), &all, CLI_TIMEOUT)
}

/// [`worker_cli`], asserting exit 0; returns stdout.
pub fn worker_cli_ok(dir: &TestDir, config: &Path, args: &[&str]) -> String {
    let p = worker_cli(dir, config, args);
    assert_eq!(
        p.status().and_then(|s| s.code()),
        Some(0),
        "`{}` failed:\nstdout: {}\nstderr: {}",
        p.cmdline(),
        p.stdout(),
        p.stderr()
    );
    p.stdout()
}

/// `stats --json`.
pub fn stats(dir: &TestDir, config: &Path) -> serde_json::Value {
    let out = worker_cli_ok(dir, config, &["stats", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("stats --json is not JSON ({e}): {out}"))
}

/// One number of `stats --json` by dotted path: `alerts.sent`, `sources.shop.processed`.
pub fn stat(v: &serde_json::Value, path: &str) -> i64 {
    let mut cur = v;
    for part in path.split('.') {
        cur = cur
            .get(part)
            .unwrap_or_else(|| panic!("stats has no `{path}` (at `{part}`): {v:#}"));
    }
    cur.as_i64()
        .unwrap_or_else(|| panic!("stats `{path}` is not an integer: {cur} in {v:#}"))
}

/// Asserts several numbers of one `stats --json` snapshot, given as `path=n` pairs separated by
/// white space (`"alerts.sent=1 queue.pending=0"`); a mismatch names the stat, the number it
/// has and the one wanted, and shows the whole snapshot.
#[track_caller]
pub fn assert_stats(v: &serde_json::Value, want: &str) {
    for pair in want.split_whitespace() {
        let (path, n) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("assert_stats: `{pair}` is not path=n"));
        let n: i64 = n
            .parse()
            .unwrap_or_else(|e| panic!("assert_stats: `{pair}`: {e}"));
        let got = stat(v, path);
        assert_eq!(got, n, "stats `{path}` is {got}, want {n}: {v:#}");
    }
}

/// Polls `stats --json` until `done` holds; returns that snapshot. Panics with the last one.
pub fn wait_stats(
    dir: &TestDir,
    config: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let found = poll_until(deadline_in(timeout), || {
        let s = stats(dir, config);
        let ok = done(&s);
        last = s;
        ok.then(|| last.clone())
    });
    found.unwrap_or_else(|| panic!("within {timeout:?}: {what}; last stats: {last:#}"))
}

/// Polls until `f` returns `Some`, panicking with `what` at the deadline.
pub fn expect_within<T>(timeout: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll_until(deadline_in(timeout), f).unwrap_or_else(|| panic!("not within {timeout:?}: {what}"))
}

// ---------------------------------------------------------------------------------------------
// Emails

/// One alert email, read back from an `.eml` file or a Maildir message.
#[derive(Clone)]
pub struct Email {
    /// Where it came from (file path), for messages.
    pub origin: String,
    pub raw: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "---- {} ----\n{}", self.origin, self.raw)
    }
}

impl Email {
    /// Parses a message (CRLF or LF line ends; folded headers are unfolded).
    pub fn parse(origin: &str, raw: &str) -> Email {
        let text = raw.replace("\r\n", "\n");
        let (head, body) = text
            .split_once("\n\n")
            .unwrap_or_else(|| panic!("{origin}: no blank line after the headers:\n{raw}"));
        Email {
            origin: origin.to_string(),
            raw: raw.to_string(),
            headers: parse_headers(head),
            body: body.to_string(),
        }
    }

    /// The first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("email has no {name} header: {self:?}"))
    }

    pub fn subject(&self) -> &str {
        self.need("Subject")
    }

    pub fn message_id(&self) -> &str {
        self.need("Message-ID")
    }

    /// `X-Stockhook-Alert-Ids`, split on spaces and commas.
    pub fn alert_ids(&self) -> Vec<String> {
        self.need("X-Stockhook-Alert-Ids")
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// The decoded `text/plain` part (the whole body when the message is not multipart).
    pub fn text(&self) -> String {
        let ct = self.header("Content-Type").unwrap_or("text/plain");
        let Some(boundary) = param(ct, "boundary") else {
            return decode(
                &self.body,
                self.header("Content-Transfer-Encoding").unwrap_or("7bit"),
            );
        };
        let delim = format!("--{boundary}");
        for part in self.body.split(&delim).skip(1) {
            if part.starts_with("--") {
                break;
            }
            let part = part.strip_prefix('\n').unwrap_or(part);
            let Some((head, body)) = part.split_once("\n\n") else {
                continue;
            };
            let h = parse_headers(head);
            let get = |n: &str| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.as_str())
            };
            if get("Content-Type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/plain"))
            {
                return decode(body, get("Content-Transfer-Encoding").unwrap_or("7bit"));
            }
        }
        panic!("email has no text/plain part: {self:?}")
    }

    /// The platform item ids the text part lists (`Item id:   <id> (<platform>)`), in order.
    pub fn items(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("Item id:"))
            .map(|rest| {
                let rest = rest.trim();
                rest.rsplit_once(" (")
                    .map_or(rest, |(id, _)| id)
                    .to_string()
            })
            .collect()
    }

    /// The value of the text part's `<label>:` line (e.g. `Available`, `Item id`) in the block
    /// of the alert about `item`, or `None`.
    pub fn field_for(&self, item: &str, label: &str) -> Option<String> {
        self.blocks()
            .into_iter()
            .find(|b| {
                b.get("Item id")
                    .is_some_and(|v| v.rsplit_once(" (").map_or(v.as_str(), |(id, _)| id) == item)
            })
            .and_then(|mut b| b.remove(label))
    }

    /// Asserts the alert about `item` shows `label: want`, failing with the email's text.
    pub fn assert_field(&self, item: &str, label: &str, want: &str) {
        assert_eq!(
            self.field_for(item, label).as_deref(),
            Some(want),
            "{label} of item {item} in:\n{}",
            self.text()
        );
    }

    /// The text part's alert blocks: indented `Label: value` lines under a heading line.
    fn blocks(&self) -> Vec<BTreeMap<String, String>> {
        let mut out: Vec<BTreeMap<String, String>> = Vec::new();
        let mut cur: Option<BTreeMap<String, String>> = None;
        for l in self.text().lines() {
            if l.starts_with("  ") {
                if let (Some(b), Some((k, v))) = (cur.as_mut(), l.trim().split_once(':')) {
                    b.insert(k.trim().to_string(), v.trim().to_string());
                }
            } else {
                out.extend(cur.take().filter(|b| !b.is_empty()));
                if !l.trim().is_empty() {
                    cur = Some(BTreeMap::new());
                }
            }
        }
        out.extend(cur.filter(|b| !b.is_empty()));
        out
    }
}

fn parse_headers(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// A `name=value` (optionally quoted) parameter of a header value.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

fn decode(body: &str, encoding: &str) -> String {
    match encoding.trim().to_ascii_lowercase().as_str() {
        "quoted-printable" => {
            let mut out = Vec::new();
            for line in body.split('\n') {
                let (line, soft) = match line.strip_suffix('=') {
                    Some(l) => (l, true),
                    None => (line, false),
                };
                let b = line.as_bytes();
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'=' && i + 3 <= b.len() {
                        let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                        if let Ok(v) = u8::from_str_radix(hex, 16) {
                            out.push(v);
                            i += 3;
                            continue;
                        }
                    }
                    out.push(b[i]);
                    i += 1;
                }
                if !soft {
                    out.push(b'\n');
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            let bytes = B64
                .decode(joined.as_bytes())
                .unwrap_or_else(|e| panic!("a base64 body part does not decode: {e}"));
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => body.to_string(),
    }
}

/// The worker's `.eml` files under `<data_dir>/mail/`, parsed, sorted by name.
pub fn eml_emails(data_dir: &Path) -> Vec<Email> {
    mail_files(data_dir)
        .into_iter()
        .map(|p| {
            let raw = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            Email::parse(&p.display().to_string(), &raw)
        })
        .collect()
}

/// Waits until at least `n` `.eml` files exist; returns them all, parsed.
pub fn wait_eml(data_dir: &Path, n: usize, timeout: Duration) -> Vec<Email> {
    expect_within(
        timeout,
        &format!("{n} email file(s) under {}/mail", data_dir.display()),
        || (mail_files(data_dir).len() >= n).then_some(()),
    );
    eml_emails(data_dir)
}

/// The messages an [`SmtpSink`] stored, parsed, oldest first.
pub fn maildir_emails(sink: &SmtpSink) -> Vec<Email> {
    sink.messages()
        .iter()
        .enumerate()
        .map(|(i, raw)| Email::parse(&format!("{} message {i}", sink.maildir.display()), raw))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Accounting: which items reached an email, how often

/// What a set of emails says about the items a test expected one alert each for.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Items expected (answered 200).
    pub answered: usize,
    /// Expected items found in exactly one email.
    pub delivered: usize,
    /// Expected items in no email.
    pub lost: Vec<String>,
    /// Items (expected or not) listed more than once across all emails, with their count.
    pub duplicated_items: BTreeMap<String, usize>,
    /// Alert ids listed more than once across all emails, with their count.
    pub duplicated_alert_ids: BTreeMap<String, usize>,
    /// Items in emails that the test never expected.
    pub unexpected: Vec<String>,
    /// Emails, and alert ids across them.
    pub emails: usize,
    pub alert_ids: usize,
}

impl Accounting {
    /// Counts `emails` against `expected` items (each should appear in exactly one email, under
    /// exactly one alert id).
    pub fn of<'a>(emails: &[Email], expected: impl IntoIterator<Item = &'a String>) -> Accounting {
        let mut items: BTreeMap<String, usize> = BTreeMap::new();
        let mut ids: BTreeMap<String, usize> = BTreeMap::new();
        for e in emails {
            for i in e.items() {
                *items.entry(i).or_default() += 1;
            }
            for a in e.alert_ids() {
                *ids.entry(a).or_default() += 1;
            }
        }
        let expected: std::collections::BTreeSet<&String> = expected.into_iter().collect();
        let mut acc = Accounting {
            answered: expected.len(),
            emails: emails.len(),
            alert_ids: ids.len(),
            ..Accounting::default()
        };
        for item in &expected {
            match items.get(*item) {
                None => acc.lost.push((*item).clone()),
                Some(1) => acc.delivered += 1,
                Some(_) => {}
            }
        }
        acc.duplicated_items = items
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        acc.duplicated_alert_ids = ids
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        acc.unexpected = items
            .keys()
            .filter(|k| !expected.contains(k))
            .cloned()
            .collect();
        acc
    }

    /// Extra copies: items and alert ids seen more than once.
    pub fn duplicated_effects(&self) -> usize {
        self.duplicated_items.values().map(|n| n - 1).sum::<usize>()
            + self
                .duplicated_alert_ids
                .values()
                .map(|n| n - 1)
                .sum::<usize>()
    }

    /// `answered=N delivered=N lost=0 duplicated_effects=0 (...)`.
    pub fn line(&self) -> String {
        format!(
            "answered={} delivered={} lost={} duplicated_effects={} (emails={} alert_ids={} unexpected={})",
            self.answered,
            self.delivered,
            self.lost.len(),
            self.duplicated_effects(),
            self.emails,
            self.alert_ids,
            self.unexpected.len()
        )
    }

    /// Prints [`Accounting::line`] and asserts nothing was lost, duplicated or unexpected, and
    /// one alert id per item.
    pub fn assert_exactly_once(&self, emails: &[Email]) {
        println!("{}", self.line());
        let show = || {
            emails
                .iter()
                .map(|e| format!("{}: {:?} items={:?}", e.origin, e.alert_ids(), e.items()))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            self.lost.is_empty(),
            "{}\nlost (answered 200, in no email): {:?}\n{}",
            self.line(),
            self.lost,
            show()
        );
        assert!(
            self.duplicated_items.is_empty() && self.duplicated_alert_ids.is_empty(),
            "{}\nitems in more than one alert: {:?}\nalert ids in more than one email: {:?}\n{}",
            self.line(),
            self.duplicated_items,
            self.duplicated_alert_ids,
            show()
        );
        assert!(
            self.unexpected.is_empty(),
            "{}\nitems never posted: {:?}",
            self.line(),
            self.unexpected
        );
        assert_eq!(self.delivered, self.answered, "{}", self.line());
        assert_eq!(
            self.alert_ids,
            self.answered,
            "one alert id per item: {}",
            self.line()
        );
    }
}

impl Accounting {
    /// The weaker promise, for where the stronger one is known broken: nothing lost, nothing
    /// unexpected, and exactly one alert id per item (no event's effect applied twice), while
    /// an alert may arrive in more than one email. Prints how many did.
    pub fn assert_no_loss_one_alert_each(&self) {
        println!(
            "{} (alerts re-sent in a second email: {})",
            self.line(),
            self.duplicated_alert_ids.len()
        );
        assert!(
            self.lost.is_empty(),
            "{}\nlost (answered 200, in no email): {:?}",
            self.line(),
            self.lost
        );
        assert!(
            self.unexpected.is_empty(),
            "{}\nitems never posted: {:?}",
            self.line(),
            self.unexpected
        );
        assert_eq!(
            self.alert_ids,
            self.answered,
            "one alert id per item (an item with two alert ids was processed twice): {}",
            self.line()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness: a seeded xorshift, so a failing run can be replayed

pub use stockhook_test_kit::rng::XorShift;

/// Cycles for kill/restart loops: `ci` normally, `soak` with `SHTEST_SOAK=1`.
pub fn cycles(ci: usize, soak: usize) -> usize {
    if std::env::var("SHTEST_SOAK").is_ok_and(|v| !v.is_empty() && v != "0") {
        soak
    } else {
        ci
    }
}

// ---------------------------------------------------------------------------------------------
// A receiver address that changes across restarts

/// Where the receiver listens now: `None` while it is down. Each restart is a new generation, so
/// a client whose request failed waits for the next one instead of spinning.
#[derive(Default)]
pub struct Endpoint {
    state: Mutex<(u64, Option<SocketAddr>)>,
    changed: Condvar,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            state: Mutex::new((1, Some(addr))),
            changed: Condvar::new(),
        }
    }

    /// The receiver is down (about to be killed, or killed).
    pub fn down(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 = None;
        s.0 += 1;
        self.changed.notify_all();
    }

    /// The receiver is up at `addr`.
    pub fn up(&self, addr: SocketAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.1 = Some(addr);
        s.0 += 1;
        self.changed.notify_all();
    }

    /// The current generation and address, waiting (until `deadline`) while it is down.
    pub fn current(&self, deadline: Instant) -> (u64, SocketAddr) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(a) = s.1 {
                return (s.0, a);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the receiver did not come back up in time");
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Waits until the generation is past `seen` (the receiver went down or came back).
    pub fn wait_past(&self, seen: u64, deadline: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 <= seen {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "a request failed but the receiver was never restarted"
            );
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How long [`deliver_level`] keeps retrying one delivery.
pub const DELIVERY_PATIENCE: Duration = Duration::from_secs(120);

/// Posts one signed Shopify `inventory_levels/update` (`body`, delivery id `lvl-<item>`)
/// through `ep` to `/webhooks/shop` until it is answered 200 (accepted, or duplicate of an
/// earlier try), with the same delivery id on every try, as a platform does: no answer means
/// the receiver died under the request (try again once it is back); a 503, with `retry_503`,
/// that the queue is unreachable for now (try again shortly). Any other answer is returned.
pub fn deliver_level(
    ep: &Endpoint,
    secret: &str,
    item: u64,
    body: &[u8],
    retry_503: bool,
) -> Result<(), crate::http::Resp> {
    let h = crate::sign::shopify(
        secret,
        body,
        "inventory_levels/update",
        &format!("lvl-{item}"),
    );
    let deadline = deadline_in(DELIVERY_PATIENCE);
    loop {
        let (generation, addr) = ep.current(deadline);
        let sent = crate::http::Conn::try_connect(addr)
            .and_then(|mut c| c.send("POST", "/webhooks/shop", &h, body));
        match sent {
            Ok(r)
                if r.status == 200
                    && matches!(r.json()["status"].as_str(), Some("accepted" | "duplicate")) =>
            {
                return Ok(())
            }
            Ok(r) if r.status == 503 && retry_503 => {
                assert!(
                    Instant::now() < deadline,
                    "item {item}: still 503 after {DELIVERY_PATIENCE:?}"
                );
                // The client's retry schedule (an input), not a wait for a condition.
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(r) => return Err(r),
            Err(_) => ep.wait_past(generation, deadline),
        }
    }
}

/// `<prefix>-<pid>-<n>`: a delivery id no other request of this test run uses.
pub fn unique_id(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------------
// SMTP sink on a chosen port

pub use stockhook_test_kit::free_port;

/// Starts the aiosmtpd sink (as [`SmtpSink::start`] does) on `port`, storing mail in `maildir`
/// (kept across restarts), and waits for its `220` greeting.
pub fn smtp_sink_on(dir: &TestDir, port: u16, maildir: &Path) -> SmtpSink {
    SmtpSink::on(dir, port, maildir)
}

// ---------------------------------------------------------------------------------------------
// tmpfs

/// A tmpfs mounted for one test; unmounted on drop (lazily if still busy). Declare it before the
/// processes that use it, so they are dropped (killed) first.
pub struct TmpfsMount {
    path: PathBuf,
}

impl TmpfsMount {
    /// `mount -t tmpfs -o size=<size_mib>m tmpfs <path>` (created if missing).
    pub fn mount(path: &Path, size_mib: u64) -> Result<TmpfsMount, String> {
        std::fs::create_dir_all(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs {} failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(TmpfsMount {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folded_headers_and_encoded_parts() {
        let raw = "Subject: Low stock: 2 items at shop\r\nX-Stockhook-Alert-Ids: aaa\r\n bbb\r\nMessage-ID: <x@stockhook>\r\nContent-Type: multipart/alternative;\r\n boundary=\"=_b\"\r\n\r\n--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nLow stock: item 1\r\n  Item id:   1 (shopify)\r\n  Available: 3=\r\n\r\n\r\nLow stock: item 2\r\n  Item id:   2 (shopify)\r\n  Available: =34\r\n\r\n--=_b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: base64\r\n\r\nPGI+\r\n--=_b--\r\n";
        let e = Email::parse("t", raw);
        assert_eq!(e.subject(), "Low stock: 2 items at shop");
        assert_eq!(e.alert_ids(), vec!["aaa", "bbb"]);
        assert_eq!(e.items(), vec!["1", "2"]);
        assert_eq!(e.field_for("1", "Available").as_deref(), Some("3"));
        assert_eq!(e.field_for("2", "Available").as_deref(), Some("4"));
        assert_eq!(decode("PGI+\n", "base64"), "<b>");
    }

    #[test]
    fn accounting_finds_lost_and_duplicated_items() {
        let mk = |ids: &str, items: &[&str]| {
            let body: String = items
                .iter()
                .map(|i| format!("Low stock: x\n  Item id:   {i} (shopify)\n\n"))
                .collect();
            Email::parse(
                "t",
                &format!("Subject: s\nX-Stockhook-Alert-Ids: {ids}\n\n{body}"),
            )
        };
        let emails = vec![mk("a1 a2", &["1", "2"]), mk("a2", &["2"])];
        let want: Vec<String> = ["1", "2", "3"].iter().map(|s| s.to_string()).collect();
        let acc = Accounting::of(&emails, &want);
        assert_eq!(acc.delivered, 1);
        assert_eq!(acc.lost, vec!["3".to_string()]);
        assert_eq!(acc.duplicated_effects(), 2);
    }
}
