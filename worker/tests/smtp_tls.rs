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

/// Percent-encoded as URL userinfo (the loader's own encoder, as the Flask-era variables use).
fn enc(s: &str) -> String {
    stockhook_shared::loader::percent_encode_userinfo(s)
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
        cover: None,
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
    stockhook_test_kit::assert_contains(
        &got,
        &[
            &format!("X-Authenticated-As: {USER}"),
            &format!("Message-ID: {}", sent.message_id),
        ],
    );
    m.shutdown().await;
}

/// One scenario: a server (with TLS and a certificate for `names`, or in plain text) in its own
/// directory, and mailers against it.
struct Case {
    _dir: TestDir,
    certs: Option<TestCerts>,
    server: TlsSmtp,
}

impl Case {
    /// A server with `tls` and a certificate for `names` from a private CA, requiring AUTH
    /// (USER, PASSWORD) with `mechanisms`.
    fn tls(name: &str, tls: ServerTls, names: &[&str], mechanisms: &str) -> Case {
        let dir = TestDir::new(name);
        let certs = TestCerts::make(dir.path(), "a", names);
        let server = TlsSmtp::start(
            &dir,
            "a",
            &TlsSmtpOptions {
                tls,
                certs: Some(&certs),
                login: Some((USER, PASSWORD)),
                mechanisms,
            },
        );
        Case {
            _dir: dir,
            certs: Some(certs),
            server,
        }
    }

    /// A plain-text server (no STARTTLS), with AUTH required for `login` (never offered:
    /// aiosmtpd offers AUTH only over TLS), or no AUTH at all.
    fn plain(name: &str, login: Option<(&str, &str)>) -> Case {
        let dir = TestDir::new(name);
        let server = TlsSmtp::start(
            &dir,
            "a",
            &TlsSmtpOptions {
                tls: ServerTls::None,
                certs: None,
                login,
                mechanisms: "PLAIN,LOGIN",
            },
        );
        Case {
            _dir: dir,
            certs: None,
            server,
        }
    }

    /// A mailer for `scheme://USER:password@localhost:<port><query>`, trusting the private CA
    /// when `trust`.
    fn mailer(&self, scheme: &str, password: &str, query: &str, trust: bool) -> Mailer {
        let ca = self
            .certs
            .as_ref()
            .filter(|_| trust)
            .map(|c| c.ca.as_path());
        mailer(&url(scheme, &self.server, password, query), ca)
    }

    /// The permanent failure of sending one set through `m` (`what` says why it must be
    /// permanent), checked free of the password and of any stored message.
    async fn refused(&self, m: Mailer, what: &str) -> String {
        let e = m.send(&alerts(), &to()).await.unwrap_err();
        no_password(&e);
        let SendError::Permanent(msg) = e else {
            panic!("{what} is permanent: {e}")
        };
        assert!(
            self.server.messages().is_empty(),
            "{what}: a message arrived"
        );
        msg
    }

    /// `localhost:<port>`, as errors name the server.
    fn at(&self) -> String {
        format!("localhost:{}", self.server.addr.port())
    }
}

/// A server with `tls` offering only `mechanism`, and a mailer for `scheme`+`query` that trusts
/// its CA: the email arrives, logged in as USER.
async fn round_trip(name: &str, tls: ServerTls, mechanism: &str, scheme: &str, query: &str) {
    let c = Case::tls(name, tls, &["localhost"], mechanism);
    delivers(&c.server, &c.mailer(scheme, PASSWORD, query, true)).await;
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
    let c = Case::plain("starttls-opportunistic-plain", None);
    let m = mailer(&format!("smtp://{}?tls=opportunistic", c.at()), None);
    m.send(&alerts(), &to()).await.expect("sent without TLS");
    let got = c.server.wait_messages(1, Duration::from_secs(20)).remove(0);
    assert!(
        got.contains("X-Authenticated-As: \n") || got.contains("X-Authenticated-As: \r\n"),
        "{got}"
    );
}

#[tokio::test]
async fn wrong_password_is_permanent_and_names_the_account() {
    let c = Case::tls(
        "smtps-535",
        ServerTls::Implicit,
        &["localhost"],
        "PLAIN,LOGIN",
    );
    let wrong = "hunter2 wrong:p@ss";
    let msg = c
        .refused(c.mailer("smtps", wrong, "", true), "a wrong password")
        .await;
    stockhook_test_kit::assert_contains(
        &msg,
        &[USER, "535", "check the password", "app password", &c.at()],
    );
    assert!(
        !msg.contains(wrong) && !msg.contains(&enc(wrong)) && !msg.contains("hunter2"),
        "{msg}"
    );
}

#[tokio::test]
async fn untrusted_certificate_names_the_host_and_the_fix() {
    let c = Case::tls(
        "smtps-untrusted",
        ServerTls::Implicit,
        &["localhost"],
        "PLAIN,LOGIN",
    );
    // No smtp_ca_file: the private CA is unknown to the webpki roots.
    let msg = c
        .refused(
            c.mailer("smtps", PASSWORD, "", false),
            "an untrusted certificate",
        )
        .await;
    stockhook_test_kit::assert_contains(&msg, &[&c.at(), "not trust", "smtp_ca_file"]);
    // What the server presented: its names and fingerprint, from a second look.
    stockhook_test_kit::assert_contains(&msg, &["presented a certificate for localhost (SHA-256 "]);
}

#[tokio::test]
async fn untrusted_certificate_over_starttls_says_what_was_presented() {
    let c = Case::tls(
        "starttls-untrusted",
        ServerTls::StartTls,
        &["localhost", "relay.internal.example"],
        "PLAIN,LOGIN",
    );
    let m = c.mailer("smtp", PASSWORD, "?tls=required", false);
    let msg = c.refused(m, "an untrusted certificate").await;
    stockhook_test_kit::assert_contains(
        &msg,
        &[
            "smtp_ca_file",
            "presented a certificate for localhost, relay.internal.example (SHA-256 ",
        ],
    );
}

#[tokio::test]
async fn certificate_for_another_name_says_what_was_presented() {
    let c = Case::tls(
        "smtps-name",
        ServerTls::Implicit,
        &["mail.other.example"],
        "PLAIN,LOGIN",
    );
    let m = c.mailer("smtps", PASSWORD, "", true);
    let msg = c.refused(m, "a certificate for another name").await;
    stockhook_test_kit::assert_contains(&msg, &[&c.at(), "mail.other.example", "\"localhost\""]);
}

#[tokio::test]
async fn starttls_required_but_not_offered_says_so() {
    let c = Case::plain("starttls-missing", None);
    let m = c.mailer("smtp", PASSWORD, "?tls=required", false);
    let msg = c.refused(m, "no STARTTLS when required").await;
    stockhook_test_kit::assert_contains(&msg, &["does not offer STARTTLS", "tls=required"]);
}

#[tokio::test]
async fn no_auth_offered_says_so() {
    // AUTH required by the server, but offered only over TLS, and this one speaks plain text.
    let c = Case::plain("auth-missing", Some((USER, PASSWORD)));
    let m = c.mailer("smtp", PASSWORD, "", false);
    let msg = c.refused(m, "no AUTH offered").await;
    stockhook_test_kit::assert_contains(&msg, &["offers no AUTH mechanism", USER]);
}
