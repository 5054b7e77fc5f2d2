//! Tests of [`super`], kept apart so the module reads as production code.
use super::*;
use crate::alert::Rule;
use std::os::unix::fs::PermissionsExt;
use stockhook_shared::secret::Secret;

/// 2024-05-01T12:00:00Z.
const AT: i64 = 1_714_564_800_000;

fn alert(rule: Rule, source: &str, item: &str) -> Alert {
    let mut a = crate::alert::test_alert(rule, source, item);
    a.sku = Some(format!("SKU-{item}"));
    a.title = Some(format!("Widget {item}"));
    a.location = Some("gid://shopify/Location/77".into());
    a.available = Some(3);
    a.at = AT;
    a.created_at = AT + 1_000;
    a
}

fn to() -> Vec<String> {
    vec!["ops@example.com".into(), "Owner <owner@example.org>".into()]
}

const FROM: &str = "Stockhook <stockhook@example.com>";

fn formatted(alerts: &[Alert]) -> String {
    String::from_utf8(
        render(alerts, FROM, &to(), &Stores::default())
            .unwrap()
            .formatted(),
    )
    .unwrap()
}

// ----- render -----

#[test]
fn the_message_carries_both_parts_and_the_subject() {
    let a = [
        alert(Rule::OutOfStock, "acme-shop", "3"),
        alert(Rule::LowStock, "acme-shop", "1"),
    ];
    let m = formatted(&a);
    stockhook_test_kit::assert_contains(
        &m,
        &[
            "Subject: 2 stock alerts (acme-shop): Out of stock: Widget 3 and 1 more\r\n",
            "Content-Type: multipart/alternative;",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Type: text/html; charset=utf-8",
        ],
    );
}

#[test]
fn rendering_is_deterministic_and_order_independent() {
    let a = vec![
        alert(Rule::LowStock, "acme-shop", "1"),
        alert(Rule::OutOfStock, "acme-shop", "2"),
        alert(Rule::LowStock, "other", "3"),
    ];
    let first = render(&a, FROM, &to(), &Stores::default())
        .unwrap()
        .formatted();
    let second = render(&a, FROM, &to(), &Stores::default())
        .unwrap()
        .formatted();
    assert_eq!(first, second, "same input, different bytes");
    let mut reversed = a.clone();
    reversed.reverse();
    reversed.push(a[0].clone()); // a duplicate is dropped
    assert_eq!(
        first,
        render(&reversed, FROM, &to(), &Stores::default())
            .unwrap()
            .formatted()
    );

    let m = render(&a, FROM, &to(), &Stores::default()).unwrap();
    let id = message_id_of(&m);
    let mut ids: Vec<&str> = a.iter().map(|x| x.id.as_str()).collect();
    ids.sort();
    let expect = hex::encode(Sha256::digest(ids.join(",").as_bytes()));
    assert_eq!(id, format!("<{}@stockhook>", &expect[..32]));
    // A different set, a different id.
    assert_ne!(
        id,
        message_id_of(&render(&a[..2], FROM, &to(), &Stores::default()).unwrap())
    );

    let text = String::from_utf8(first).unwrap();
    stockhook_test_kit::assert_contains(&text, &[&format!("Message-ID: {id}\r\n")]);
    // Date: the earliest created_at (2024-05-01T12:00:01Z).
    stockhook_test_kit::assert_contains(
        &text,
        &[
            "Date: Wed, 01 May 2024 12:00:01 +0000\r\n",
            "boundary=\"=_stockhook_",
        ],
    );
}

#[test]
fn alert_ids_header_lists_every_id() {
    let a = [
        alert(Rule::LowStock, "acme-shop", "1"),
        alert(Rule::LowStock, "acme-shop", "2"),
    ];
    let m = render(&a, FROM, &to(), &Stores::default()).unwrap();
    let raw = m
        .headers()
        .get_raw(ALERT_IDS_HEADER)
        .expect("header present");
    for x in &a {
        stockhook_test_kit::assert_contains(raw, &[&x.id]);
    }
    assert!(formatted(&a).contains("X-Stockhook-Alert-Ids: "));
}

#[test]
fn every_recipient_is_addressed() {
    let m = render(
        &[alert(Rule::LowStock, "s", "1")],
        FROM,
        &to(),
        &Stores::default(),
    )
    .unwrap();
    let rcpt: Vec<String> = m.envelope().to().iter().map(|a| a.to_string()).collect();
    assert_eq!(rcpt, ["ops@example.com", "owner@example.org"]);
    assert_eq!(
        m.envelope().from().unwrap().to_string(),
        "stockhook@example.com"
    );
}

#[test]
fn bad_addresses_and_empty_sets_are_permanent() {
    let a = [alert(Rule::LowStock, "s", "1")];
    let e = render(
        &a,
        FROM,
        &["ok@example.com".into(), "not an address".into()],
        &Stores::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, SendError::Permanent(m) if m.contains("\"not an address\"")),
        "{e}"
    );
    let e = render(&a, "nobody", &to(), &Stores::default()).unwrap_err();
    assert!(
        matches!(&e, SendError::Permanent(m) if m.contains("\"nobody\"")),
        "{e}"
    );
    assert!(matches!(
        render(&a, FROM, &[], &Stores::default()),
        Err(SendError::Permanent(_))
    ));
    assert!(matches!(
        render(&[], FROM, &to(), &Stores::default()),
        Err(SendError::Permanent(_))
    ));
}

#[test]
fn passwords_are_scrubbed() {
    let r = redactions("smtps://user:p%40ss@mail.example.com:465");
    assert_eq!(
        scrub("x smtps://user:p%40ss@mail.example.com:465 y", &r),
        "x [redacted] y"
    );
    assert_eq!(
        scrub("auth p@ss and p%40ss", &r),
        "auth [redacted] and [redacted]"
    );
    assert_eq!(redactions("smtp://localhost:25"), ["smtp://localhost:25"]);
    let m = Mailer::from_config(
        &smtp_config("smtps://user:hunter22@mail.example.com"),
        Path::new("/nonexistent"),
    )
    .unwrap();
    assert!(!format!("{m:?}").contains("hunter22"));
}

#[test]
fn invalid_config_is_refused_with_the_key() {
    let c = EmailConfig {
        from: "not an address".into(),
        ..EmailConfig::default()
    };
    let e = Mailer::from_config(&c, Path::new("/nonexistent")).unwrap_err();
    stockhook_test_kit::assert_contains(&e, &["email.from"]);
    let e =
        Mailer::from_config(&smtp_config("smtp://user:hunter22@/"), Path::new("/x")).unwrap_err();
    assert!(
        e.contains("email.smtp_url") && !e.contains("hunter22"),
        "{e}"
    );
}

// ----- file transport -----

#[tokio::test]
async fn file_transport_writes_each_set_once() {
    let data = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_config(&EmailConfig::default(), data.path()).unwrap();
    let dir = data.path().join("mail");
    assert_eq!(mailer.mail_dir(), Some(dir.as_path()));
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let a = vec![
        alert(Rule::LowStock, "acme-shop", "1"),
        alert(Rule::OutOfStock, "acme-shop", "2"),
    ];
    let sent = mailer.send(&a, &to()).await.unwrap();
    let file = sent.file.clone().expect("a file");
    assert_eq!(file.parent(), Some(dir.as_path()));
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let hash = &sent.message_id[1..17];
    assert_eq!(name, format!("{:013}-{hash}.eml", AT + 1_000));
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let text = fs::read_to_string(&file).unwrap();
    stockhook_test_kit::assert_contains(
        &text,
        &[
            "Subject: 2 stock alerts (acme-shop): Out of stock: Widget 2 and 1 more\r\n",
            &format!("Message-ID: {}\r\n", sent.message_id),
            "To: ops@example.com, Owner <owner@example.org>\r\n",
        ],
    );
    assert!(text.contains("\r\n\r\n"), "headers and body are separated");

    // The same set again (in another order): reported sent, nothing new written.
    let mut again = a.clone();
    again.reverse();
    let second = mailer.send(&again, &to()).await.unwrap();
    assert_eq!(second, sent);
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [name], "one file, no temporary leftovers");

    // A different set is a different file.
    let third = mailer.send(&a[..1], &to()).await.unwrap();
    assert_ne!(third.file, sent.file);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
}

#[tokio::test]
async fn file_transport_rejects_bad_recipients_permanently() {
    let data = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_config(&EmailConfig::default(), data.path()).unwrap();
    let e = mailer
        .send(&[alert(Rule::LowStock, "s", "1")], &["bad@".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, SendError::Permanent(m) if m.contains("\"bad@\"")),
        "{e}"
    );
    assert_eq!(fs::read_dir(data.path().join("mail")).unwrap().count(), 0);
}

// ----- SMTP -----

fn smtp_config(url: &str) -> EmailConfig {
    EmailConfig {
        from: FROM.into(),
        smtp_url: Some(Secret::new(url)),
        ..EmailConfig::default()
    }
}

#[tokio::test]
async fn smtp_delivers_to_a_real_server() {
    let Some(server) = test_smtp::SmtpServer::mailbox() else {
        return;
    };
    let mailer =
        Mailer::from_config(&smtp_config(&server.url()), Path::new("/nonexistent")).unwrap();
    assert_eq!(mailer.mail_dir(), None);
    let a = [
        alert(Rule::LowStock, "acme-shop", "1"),
        alert(Rule::LowStock, "acme-shop", "2"),
    ];
    let sent = mailer.send(&a, &to()).await.unwrap();
    assert_eq!(sent.file, None);
    let got = server
        .wait_for_messages(1, Duration::from_secs(10))
        .remove(0);
    stockhook_test_kit::assert_contains(
        &got,
        &[
            "Subject: 2 stock alerts (acme-shop): Low stock: Widget 1, 3 left and 1 more",
            &format!("Message-ID: {}", sent.message_id),
            "Widget 1",
            "Widget 2",
            "X-RcptTo: ops@example.com, owner@example.org",
        ],
    );
    // A second email, over the pooled connection.
    let b = [alert(Rule::OutOfStock, "acme-shop", "3")];
    let second = mailer.send(&b, &to()).await.unwrap();
    let all = server.wait_for_messages(2, Duration::from_secs(10));
    let second_id = format!("Message-ID: {}", second.message_id);
    assert!(all.iter().any(|m| m.contains(&second_id)), "{all:?}");
    mailer.shutdown().await;
}

#[tokio::test]
async fn smtp_connection_refused_is_transient_and_hides_the_password() {
    let port = stockhook_test_kit::free_port(); // released: nobody listens there now
    let url = format!("smtp://alerts:hunter22@127.0.0.1:{port}");
    let mailer = Mailer::from_config(&smtp_config(&url), Path::new("/nonexistent")).unwrap();
    let e = send_one_err(&mailer).await;
    assert!(e.is_transient(), "{e}");
    assert!(!e.to_string().contains("hunter22"), "{e}");
    assert!(!format!("{e:?}").contains("hunter22"), "{e:?}");
}

/// A listener that never greets (connections wait in the kernel's backlog) and a mailer for
/// it with this connection `timeout` and send `deadline`; keep the listener until the send is
/// over.
fn to_silent_server(timeout: Duration, deadline: Duration) -> (std::net::TcpListener, Mailer) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mailer = Mailer::build(
        &smtp_config(&url),
        Path::new("/nonexistent"),
        timeout,
        deadline,
    )
    .unwrap();
    (listener, mailer)
}

#[tokio::test]
async fn smtp_silent_server_times_out_as_transient() {
    // Accepted by the kernel's backlog, never greeted.
    let (listener, mailer) = to_silent_server(Duration::from_millis(300), Duration::from_secs(30));
    let started = std::time::Instant::now();
    let e = send_one_err(&mailer).await;
    assert!(e.is_transient(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    drop(listener);
}

#[tokio::test]
async fn smtp_send_deadline_is_transient() {
    let (_listener, mailer) = to_silent_server(Duration::from_secs(2), Duration::from_millis(200));
    let e = send_one_err(&mailer).await;
    assert!(
        matches!(&e, SendError::Transient(m) if m.contains("did not finish")),
        "{e}"
    );
}

/// Sends one alert; the error it must end in.
async fn send_one_err(mailer: &Mailer) -> SendError {
    mailer
        .send(&[alert(Rule::LowStock, "s", "1")], &to())
        .await
        .unwrap_err()
}

/// The error of sending one alert to a server answering `code` to the envelope; `None` where
/// the test SMTP server cannot run (the test returns).
async fn refused_by(code: u16) -> Option<SendError> {
    let server = test_smtp::SmtpServer::rejecting(code)?;
    let mailer =
        Mailer::from_config(&smtp_config(&server.url()), Path::new("/nonexistent")).unwrap();
    Some(send_one_err(&mailer).await)
}

/// A 5xx refusal is permanent, a 4xx one transient; either names the server's code.
#[tokio::test]
async fn smtp_550_is_permanent_and_451_transient() {
    for (code, permanent) in [(550, true), (451, false)] {
        let Some(e) = refused_by(code).await else {
            return;
        };
        let m = match (&e, permanent) {
            (SendError::Permanent(m), true) | (SendError::Transient(m), false) => m,
            _ => panic!("{code}: permanent should be {permanent}: {e}"),
        };
        assert!(m.contains(&code.to_string()), "{code}: {e}");
    }
}

/// A real SMTP server for the tests: Debian's python3-aiosmtpd, run as a child process.
mod test_smtp {
    use std::io::Write as _;
    use std::net::TcpStream;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    const PYTHON: &str = "/usr/bin/python3";
    const SKIP_ENV: &str = "STOCKHOOK_SKIP_SMTP_TESTS";

    /// Killed (and reaped) on drop.
    pub struct SmtpServer {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl SmtpServer {
        /// Stores every message in a maildir:
        /// `/usr/bin/python3 -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`.
        pub fn mailbox() -> Option<SmtpServer> {
            SmtpServer::start(|dir| {
                vec![
                    "aiosmtpd.handlers.Mailbox".into(),
                    dir.join("maildir").display().to_string(),
                ]
            })
        }

        /// Refuses every RCPT with `code` (worker/tests/fixtures/smtp_reject.py).
        pub fn rejecting(code: u16) -> Option<SmtpServer> {
            SmtpServer::start(|_| vec!["smtp_reject.Reject".into(), code.to_string()])
        }

        pub fn url(&self) -> String {
            format!("smtp://127.0.0.1:{}", self.port)
        }

        fn start(handler: impl FnOnce(&Path) -> Vec<String>) -> Option<SmtpServer> {
            if std::env::var(SKIP_ENV).as_deref() == Ok("1") {
                // Straight to stderr, past libtest's capture, so a skip is never silent.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n!!!!!!!! SKIPPED: SMTP test against a real server ({SKIP_ENV}=1) !!!!!!!!\n"
                );
                return None;
            }
            let ok = Command::new(PYTHON)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "the SMTP tests need Debian's aiosmtpd for {PYTHON}: run \
                     `apt-get install -y python3-aiosmtpd` (or set {SKIP_ENV}=1 to skip them)"
            );
            let dir = tempfile::tempdir().unwrap();
            let port = stockhook_test_kit::free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let mut args = handler(dir.path());
            let class = args.remove(0);
            let child = Command::new(PYTHON)
                .args([
                    "-m",
                    "aiosmtpd",
                    "-n",
                    "-l",
                    &format!("127.0.0.1:{port}"),
                    "-c",
                    &class,
                ])
                .args(&args)
                .env(
                    "PYTHONPATH",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("starting /usr/bin/python3 -m aiosmtpd");
            let mut server = SmtpServer { child, port, dir };
            server.wait_until_listening(Duration::from_secs(15));
            Some(server)
        }

        fn log(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        }

        fn wait_until_listening(&mut self, limit: Duration) {
            let deadline = Instant::now() + limit;
            loop {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!(
                        "aiosmtpd exited ({status}) before listening:\n{}",
                        self.log()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "aiosmtpd did not listen on port {} within {limit:?}:\n{}",
                    self.port,
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }

        /// The messages in the maildir once there are `n`, waiting up to `limit`.
        pub fn wait_for_messages(&self, n: usize, limit: Duration) -> Vec<String> {
            let new: PathBuf = self.dir.path().join("maildir/new");
            let deadline = Instant::now() + limit;
            loop {
                let files: Vec<PathBuf> = std::fs::read_dir(&new)
                    .map(|d| d.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default();
                if files.len() >= n {
                    return files
                        .iter()
                        .map(|p| std::fs::read_to_string(p).unwrap())
                        .collect();
                }
                assert!(
                    Instant::now() < deadline,
                    "{} of {n} messages reached the maildir within {limit:?}:\n{}",
                    files.len(),
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    impl Drop for SmtpServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn bodies_get_crlf_line_endings_as_lettre_would_give_them() {
    use lettre::message::{Body, SinglePart};
    for s in [
        "",
        "\n",
        "a\nb\r\nc\n\nd",
        "\r\n\n\r\r\n",
        "ünïcødé\nline €\n",
        "no newline",
    ] {
        assert_eq!(crlf(s), crlf(&crlf(s)), "idempotent: {s:?}");
        assert!(!crlf(s).replace("\r\n", "").contains('\n'), "{s:?}");
        // Byte for byte what lettre makes of the LF text.
        assert_eq!(
            Body::new(crlf(s)).into_vec(),
            Body::new(s.to_string()).into_vec(),
            "{s:?}"
        );
        assert_eq!(
            SinglePart::html(crlf(s)).formatted(),
            SinglePart::html(s.to_string()).formatted()
        );
    }
}

#[test]
fn a_200_alert_email_has_crlf_line_endings_only_and_lists_every_item() {
    // 200 alerts: the email whose line endings lettre converted in quadratic time.
    let alerts: Vec<Alert> = (0..200)
        .map(|i| alert(Rule::LowStock, "shop", &format!("{i}")))
        .collect();
    let set = crate::alert::set_id(&alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>());
    let m = render_set(&set, &alerts, FROM, &to(), &Stores::default()).unwrap();
    let raw = String::from_utf8(m.formatted()).unwrap();
    assert!(
        !raw.replace("\r\n", "").contains('\n'),
        "bare LF in the message"
    );
    assert!(
        raw.matches("Widget 199").count() >= 2,
        "both parts list every item"
    );
}
