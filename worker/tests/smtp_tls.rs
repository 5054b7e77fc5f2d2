//! The alert email over TLS with a login, against a real server (aiosmtpd, see
//! `tests/src/smtp_tls.rs`) with certificates made here: every TLS mode and AUTH mechanism the
//! issue names, and what each failure tells the operator. The password is never in an error.

use std::path::Path;
use std::time::Duration;
use stockhook_shared::config::EmailConfig;
use stockhook_shared::secret::Secret;
use stockhook_tests::smtp_tls::{ServerTls, TestCerts, TlsSmtp, TlsSmtpOptions};
use stockhook_tests::TestDir;
use stockhook_worker::alert::{Alert, Rule};
use stockhook_worker::email::{Mailer, SendError};

const USER: &str = "alerts@shop.example";
/// Characters that must be percent-encoded in the URL, to check both spellings are scrubbed.
const PASSWORD: &str = "hunter2 p@ss:w/rd";

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url(scheme: &str, server: &TlsSmtp, password: &str, query: &str) -> String {
    format!(
        "{scheme}://{}:{}@localhost:{}{query}",
        enc(USER),
        enc(password),
        server.addr.port()
    )
}

fn mailer(url: &str, ca: Option<&Path>) -> Mailer {
    let c = EmailConfig {
        from: "Stockhook <stockhook@shop.example>".into(),
        smtp_url: Some(Secret::new(url)),
        smtp_ca_file: ca.map(Path::to_path_buf),
        ..EmailConfig::default()
    };
    Mailer::from_config(&c, Path::new("/nonexistent")).expect("a mailer")
}

fn alerts() -> Vec<Alert> {
    vec![Alert {
        id: Alert::make_id(Rule::LowStock, "acme", "1", 1),
        rule: Rule::LowStock,
        source: "acme".into(),
        platform: "shopify".into(),
        item: "1".into(),
        sku: Some("W-1".into()),
        title: Some("Widget".into()),
        location: None,
        location_name: None,
        available: Some(2),
        previous: Some(6),
        threshold: Some(5),
        quiet_since: None,
        quiet_days: None,
        at: 1_700_000_000_000,
        created_at: 1_700_000_000_000,
        recipients: vec![],
    }]
}

fn to() -> Vec<String> {
    vec!["ops@shop.example".into()]
}

fn no_password(e: &SendError) {
    for shown in [e.to_string(), format!("{e:?}")] {
        assert!(
            !shown.contains(PASSWORD)
                && !shown.contains(&enc(PASSWORD))
                && !shown.contains("hunter2"),
            "the password leaked: {shown}"
        );
    }
}

/// Sends one set and checks the server stored it, logged in as USER.
async fn delivers(server: &TlsSmtp, m: &Mailer) {
    let sent = m
        .send(&alerts(), &to())
        .await
        .expect("the email is accepted");
    let got = server.wait_messages(1, Duration::from_secs(20)).remove(0);
    assert!(
        got.contains(&format!("X-Authenticated-As: {USER}")),
        "{got}"
    );
    assert!(
        got.contains(&format!("Message-ID: {}", sent.message_id)),
        "{got}"
    );
    m.shutdown().await;
}

/// A plain-text server (no STARTTLS), with AUTH required for `login` (never offered: aiosmtpd
/// offers AUTH only over TLS), or no AUTH at all.
fn plain_server(dir: &TestDir, login: Option<(&str, &str)>) -> TlsSmtp {
    TlsSmtp::start(
        dir,
        "a",
        &TlsSmtpOptions {
            tls: ServerTls::None,
            certs: None,
            login,
            mechanisms: "PLAIN,LOGIN",
        },
    )
}

fn server(
    dir: &TestDir,
    tag: &str,
    tls: ServerTls,
    certs: &TestCerts,
    mechanisms: &str,
) -> TlsSmtp {
    TlsSmtp::start(
        dir,
        tag,
        &TlsSmtpOptions {
            tls,
            certs: Some(certs),
            login: Some((USER, PASSWORD)),
            mechanisms,
        },
    )
}

/// A server with `tls` offering only `mechanism`, and a mailer for `scheme`+`query` that trusts
/// its CA: the email arrives, logged in as USER.
async fn round_trip(name: &str, tls: ServerTls, mechanism: &str, scheme: &str, query: &str) {
    let dir = TestDir::new(name);
    let certs = TestCerts::make(dir.path(), "a", &["localhost"]);
    let s = server(&dir, "a", tls, &certs, mechanism);
    let m = mailer(&url(scheme, &s, PASSWORD, query), Some(&certs.ca));
    delivers(&s, &m).await;
}

#[tokio::test]
async fn implicit_tls_with_auth_plain() {
    round_trip("smtps-plain", ServerTls::Implicit, "PLAIN", "smtps", "").await;
}

#[tokio::test]
async fn implicit_tls_with_auth_login() {
    round_trip("smtps-login", ServerTls::Implicit, "LOGIN", "smtps", "").await;
}

#[tokio::test]
async fn starttls_required_with_auth_login() {
    round_trip(
        "starttls-login",
        ServerTls::StartTls,
        "LOGIN",
        "smtp",
        "?tls=required",
    )
    .await;
}

#[tokio::test]
async fn starttls_required_with_auth_plain() {
    round_trip(
        "starttls-plain",
        ServerTls::StartTls,
        "PLAIN",
        "smtp",
        "?tls=required",
    )
    .await;
}

#[tokio::test]
async fn opportunistic_starttls_upgrades_when_offered() {
    // The server requires STARTTLS before anything else: delivery proves the upgrade happened.
    round_trip(
        "starttls-opportunistic",
        ServerTls::StartTls,
        "PLAIN,LOGIN",
        "smtp",
        "?tls=opportunistic",
    )
    .await;
}

#[tokio::test]
async fn opportunistic_starttls_sends_in_plain_text_when_not_offered() {
    let dir = TestDir::new("starttls-opportunistic-plain");
    let s = plain_server(&dir, None);
    let m = mailer(
        &format!("smtp://localhost:{}?tls=opportunistic", s.addr.port()),
        None,
    );
    m.send(&alerts(), &to()).await.expect("sent without TLS");
    let got = s.wait_messages(1, Duration::from_secs(20)).remove(0);
    assert!(
        got.contains("X-Authenticated-As: \n") || got.contains("X-Authenticated-As: \r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn wrong_password_is_permanent_and_names_the_account() {
    let dir = TestDir::new("smtps-535");
    let certs = TestCerts::make(dir.path(), "a", &["localhost"]);
    let s = server(&dir, "a", ServerTls::Implicit, &certs, "PLAIN,LOGIN");
    let wrong = "hunter2 wrong:p@ss";
    let m = mailer(&url("smtps", &s, wrong, ""), Some(&certs.ca));
    let e = m.send(&alerts(), &to()).await.unwrap_err();
    let SendError::Permanent(msg) = &e else {
        panic!("a wrong password is permanent: {e}")
    };
    assert!(msg.contains(USER) && msg.contains("535"), "{msg}");
    assert!(
        msg.contains("check the password") && msg.contains("app password"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("localhost:{}", s.addr.port())),
        "{msg}"
    );
    assert!(
        !msg.contains(wrong) && !msg.contains(&enc(wrong)) && !msg.contains("hunter2"),
        "{msg}"
    );
    assert!(s.messages().is_empty());
}

#[tokio::test]
async fn untrusted_certificate_names_the_host_and_the_fix() {
    let dir = TestDir::new("smtps-untrusted");
    let certs = TestCerts::make(dir.path(), "a", &["localhost"]);
    let s = server(&dir, "a", ServerTls::Implicit, &certs, "PLAIN,LOGIN");
    // No smtp_ca_file: the private CA is unknown to the webpki roots.
    let e = mailer(&url("smtps", &s, PASSWORD, ""), None)
        .send(&alerts(), &to())
        .await
        .unwrap_err();
    no_password(&e);
    let SendError::Permanent(msg) = &e else {
        panic!("an untrusted certificate is permanent: {e}")
    };
    assert!(
        msg.contains(&format!("localhost:{}", s.addr.port())),
        "{msg}"
    );
    assert!(
        msg.contains("not trust") && msg.contains("smtp_ca_file"),
        "{msg}"
    );
    // What the server presented: its names and fingerprint, from a second look.
    assert!(
        msg.contains("presented a certificate for localhost (SHA-256 "),
        "{msg}"
    );
}

#[tokio::test]
async fn untrusted_certificate_over_starttls_says_what_was_presented() {
    let dir = TestDir::new("starttls-untrusted");
    let certs = TestCerts::make(dir.path(), "a", &["localhost", "relay.internal.example"]);
    let s = server(&dir, "a", ServerTls::StartTls, &certs, "PLAIN,LOGIN");
    let e = mailer(&url("smtp", &s, PASSWORD, "?tls=required"), None)
        .send(&alerts(), &to())
        .await
        .unwrap_err();
    no_password(&e);
    let SendError::Permanent(msg) = &e else {
        panic!("an untrusted certificate is permanent: {e}")
    };
    assert!(msg.contains("smtp_ca_file"), "{msg}");
    assert!(
        msg.contains("presented a certificate for localhost, relay.internal.example (SHA-256 "),
        "{msg}"
    );
    assert!(s.messages().is_empty());
}

#[tokio::test]
async fn certificate_for_another_name_says_what_was_presented() {
    let dir = TestDir::new("smtps-name");
    let certs = TestCerts::make(dir.path(), "a", &["mail.other.example"]);
    let s = server(&dir, "a", ServerTls::Implicit, &certs, "PLAIN,LOGIN");
    let e = mailer(&url("smtps", &s, PASSWORD, ""), Some(&certs.ca))
        .send(&alerts(), &to())
        .await
        .unwrap_err();
    no_password(&e);
    let SendError::Permanent(msg) = &e else {
        panic!("a certificate for another name is permanent: {e}")
    };
    assert!(
        msg.contains(&format!("localhost:{}", s.addr.port())),
        "{msg}"
    );
    assert!(
        msg.contains("mail.other.example") && msg.contains("\"localhost\""),
        "{msg}"
    );
}

#[tokio::test]
async fn starttls_required_but_not_offered_says_so() {
    let dir = TestDir::new("starttls-missing");
    let s = plain_server(&dir, None);
    let e = mailer(&url("smtp", &s, PASSWORD, "?tls=required"), None)
        .send(&alerts(), &to())
        .await
        .unwrap_err();
    no_password(&e);
    let SendError::Permanent(msg) = &e else {
        panic!("no STARTTLS when required is permanent: {e}")
    };
    assert!(
        msg.contains("does not offer STARTTLS") && msg.contains("tls=required"),
        "{msg}"
    );
    assert!(s.messages().is_empty());
}

#[tokio::test]
async fn no_auth_offered_says_so() {
    let dir = TestDir::new("auth-missing");
    // AUTH required by the server, but offered only over TLS, and this one speaks plain text.
    let s = plain_server(&dir, Some((USER, PASSWORD)));
    let e = mailer(&url("smtp", &s, PASSWORD, ""), None)
        .send(&alerts(), &to())
        .await
        .unwrap_err();
    no_password(&e);
    let SendError::Permanent(msg) = &e else {
        panic!("no AUTH offered is permanent: {e}")
    };
    assert!(
        msg.contains("offers no AUTH mechanism") && msg.contains(USER),
        "{msg}"
    );
    assert!(s.messages().is_empty());
}
