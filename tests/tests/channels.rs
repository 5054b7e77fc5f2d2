//! Alert channels end to end (issue 22): the real receiver and worker, a real SMTP server
//! (aiosmtpd), and local HTTP endpoints that behave as Slack's incoming webhook and as a
//! Standard Webhooks receiver that verifies signatures (`stockhook_tests::hooks`).
//!
//! | test | what |
//! |---|---|
//! | `one_alert_set_reaches_email_slack_and_a_webhook_exactly_once_...` | every endpoint down first (SMTP refused, webhook 503, Slack 429 + Retry-After), then the worker SIGKILLed while the webhook holds a send; after the restart each channel has accepted the set exactly once, with one id |
//! | `slack_refusals_are_permanent_...` | 400 `invalid_payload` and 404 (revoked) are failed alerts in `failed list`; a replay sends Slack again and never the email already delivered |
//! | `routes_send_out_of_stock_to_slack_and_low_stock_by_email` | routing by rule |
//! | `the_original_notes_variables_...` | `EMAIL_SMTP_SERVER`/`PORT`/`SENDER`/`PASSWORD`: implicit TLS on the port given, logged in as the sender; no password in the logs |
//! | `a_wrong_password_...` | 535: a permanent failure naming the account; the password is in neither the worker's stderr nor `failed list --json` |
//! | `two_workers_on_nats_...` | `backend = "nats"`, two workers: each alert reaches email, Slack and the webhook exactly once (skipped, loudly, without `nats-server`) |
//!
//! Run: `cargo test -p stockhook-tests --test channels`.

use serde_json::json;
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use stockhook_tests::config::toml_str;
use stockhook_tests::hooks::{HookServer, Kind, Reply};
use stockhook_tests::http::{self, Resp};
use stockhook_tests::smtp_tls::{ServerTls, TestCerts, TlsSmtp, TlsSmtpOptions};
use stockhook_tests::stack::{
    expect_within, free_port, maildir_emails, smtp_sink_on, start_worker, stat, stats, unique_id,
    wait_stats, wait_worker_ready, worker_cli_ok, Email,
};
use stockhook_tests::{bins, sign, ConfigBuilder, Proc, SourceSpec, TestDir};

const SHOP: &str = "shop";
const SECRET: &str = "shpss_channels_e2e_0123456789abcdef";
const TO: &str = "inventory@example.com";
const LOCATION: u64 = 655_441_491;
/// The webhook channel's signing secret (Standard Webhooks' documented example).
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SETTLE: Duration = Duration::from_secs(60);

/// One Shopify source, one recipient, short backoff.
fn base(dir: &TestDir) -> ConfigBuilder {
    dir.config()
        .recipients(&[TO])
        .email("max_backoff", "\"2s\"")
        .source(SourceSpec::shopify(SHOP, SECRET))
}

/// Posts a Shopify `inventory_levels/update`; asserts it was accepted.
fn post_level(addr: SocketAddr, item: u64, available: i64) {
    let body = json!({
        "inventory_item_id": item,
        "location_id": LOCATION,
        "available": available,
        "updated_at": "2024-07-01T10:00:00Z",
    })
    .to_string()
    .into_bytes();
    let h = sign::shopify(
        SECRET,
        &body,
        "inventory_levels/update",
        &unique_id("level"),
    );
    let r: Resp = http::post(addr, "/webhooks/shop", &h, &body);
    assert_eq!(r.status, 200, "{r:?}");
}

/// The 32 hex digits of an email's `<hex@stockhook>` Message-ID: the alert set's id.
fn set_id_of(e: &Email) -> String {
    e.message_id()
        .trim_start_matches('<')
        .trim_end_matches("@stockhook>")
        .to_string()
}

fn failed_list(dir: &TestDir, config: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&worker_cli_ok(dir, config, &["failed", "list", "--json"]))
        .expect("failed list --json is JSON")
}

/// Polls `failed list --json` until it lists `n` alerts; returns the list.
fn wait_failed(dir: &TestDir, config: &std::path::Path, n: usize, what: &str) -> serde_json::Value {
    expect_within(SETTLE, what, || {
        let f = failed_list(dir, config);
        (f.as_array().is_some_and(|a| a.len() == n)).then_some(f)
    })
}

#[test]
fn one_alert_set_reaches_email_slack_and_a_webhook_exactly_once_across_outages_and_a_kill_9() {
    let dir = TestDir::new("ch-exactly-once");
    let smtp_port = free_port();
    let slack = HookServer::start(Kind::Slack);
    let hook = HookServer::start(Kind::StandardWebhooks(WHSEC.into()));
    // Every endpoint is out at first.
    slack.set(Reply::too_many(1));
    hook.set(Reply::status(503, "maintenance"));
    let config = dir.write_config(
        "stockhook.toml",
        &base(&dir)
            .email(
                "smtp_url",
                &toml_str(&format!("smtp://127.0.0.1:{smtp_port}")),
            )
            .alerts("channels", "[\"email\", \"hook\", \"slack\"]")
            .channel(
                "slack",
                "slack",
                &[("url", &toml_str(&slack.url("/services/T0/B0/x")))],
            )
            .channel(
                "hook",
                "webhook",
                &[
                    ("url", &toml_str(&hook.url("/in"))),
                    ("secret", &toml_str(WHSEC)),
                ],
            ),
    );
    let rx = dir.receiver(&config);
    let mut worker = start_worker(&dir, &config);
    post_level(rx.addr(), 700_001, 2);

    // Each endpoint was tried and the alert stays pending (nothing failed).
    expect_within(SETTLE, "an attempt on every channel", || {
        let email_tried = worker.stderr().contains("\"channel\":\"email\"");
        (email_tried && !slack.received().is_empty() && !hook.received().is_empty()).then_some(())
    });
    assert_eq!(
        failed_list(&dir, &config),
        json!([]),
        "outages are not failures"
    );
    assert_eq!(stat(&stats(&dir, &config), "alerts.pending"), 1);

    // The mail server comes back and takes the email. Then the webhook takes the request and
    // never answers: the worker is killed with that send in flight.
    let sink = smtp_sink_on(&dir, smtp_port, &dir.path().join("smtp-mail"));
    expect_within(SETTLE, "the email delivered", || {
        (maildir_emails(&sink).len() == 1).then_some(())
    });
    hook.set(Reply::Hang);
    expect_within(SETTLE, "a webhook send in flight", || {
        hook.received()
            .iter()
            .any(|r| r.answered.is_none())
            .then_some(())
    });
    worker.kill9();

    // Everything up again; the restarted worker finishes the set.
    hook.set(Reply::Ok);
    slack.set(Reply::Ok);
    let _worker = start_worker(&dir, &config);
    let s = wait_stats(
        &dir,
        &config,
        SETTLE,
        "the alert delivered everywhere",
        |s| stat(s, "alerts.sent") == 1 && stat(s, "alerts.pending") == 0,
    );
    assert_eq!(stat(&s, "alerts.failed"), 0, "{s:#}");

    let emails = maildir_emails(&sink);
    assert_eq!(
        emails.len(),
        1,
        "the email was not sent again after the kill"
    );
    let id = set_id_of(&emails[0]);
    assert_eq!(id.len(), 32, "{id}");

    let slack_ok = slack.accepted();
    assert_eq!(
        slack_ok.len(),
        1,
        "Slack accepted the set once: {slack_ok:#?}"
    );
    let text = slack_ok[0].text();
    assert!(text.contains(&format!("alert set {id}")), "{text}");
    assert!(text.contains("700001"), "{text}");
    assert!(
        slack
            .received()
            .iter()
            .all(|r| r.json()["text"] == slack_ok[0].json()["text"]),
        "every try carried the same message"
    );

    let hook_ok = hook.accepted();
    assert_eq!(
        hook_ok.len(),
        1,
        "the webhook accepted the set once: {hook_ok:#?}"
    );
    let got = &hook_ok[0];
    assert!(got.verified, "the signature verified");
    assert_eq!(got.header("webhook-id"), Some(id.as_str()));
    assert!(
        hook.received()
            .iter()
            .all(|r| r.header("webhook-id") == Some(id.as_str())),
        "every try (refused, cut off, accepted) carried the same webhook-id"
    );
    let body = got.json();
    assert_eq!(body["type"], "stockhook.alerts");
    assert_eq!(body["data"]["id"], id.as_str());
    assert_eq!(body["data"]["alerts"][0]["item"], "700001");
    assert_eq!(body["data"]["alerts"][0]["available"], 2);
    assert_eq!(body["data"]["alerts"][0]["rule"], "low_stock");
    assert_eq!(
        body["data"]["alerts"][0]["id"].as_str(),
        emails[0].alert_ids().first().map(String::as_str)
    );
    drop(rx);
}

#[test]
fn slack_refusals_are_permanent_shown_in_failed_list_and_replay_sends_only_what_failed() {
    let dir = TestDir::new("ch-slack-refusals");
    let slack = HookServer::start(Kind::Slack);
    slack.set(Reply::status(400, "invalid_payload"));
    let config = dir.write_config(
        "stockhook.toml",
        &base(&dir)
            .alerts("channels", "[\"email\", \"team\"]")
            .channel(
                "team",
                "slack",
                &[("url", &toml_str(&slack.url("/services/T/B/y")))],
            ),
    );
    let rx = dir.receiver(&config);
    let _worker = start_worker(&dir, &config);
    post_level(rx.addr(), 700_101, 1);
    let failed = wait_failed(&dir, &config, 1, "the alert failed for Slack");
    let err = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("team") && err.contains("400 invalid_payload"),
        "{failed:#}"
    );
    assert_eq!(slack.received().len(), 1, "a 400 is not retried");
    // `failed show` tells the channels apart: the email went, Slack refused.
    let id = failed[0]["id"].as_str().unwrap_or_default().to_string();
    let shown: serde_json::Value = serde_json::from_str(&worker_cli_ok(
        &dir,
        &config,
        &["failed", "show", &id, "--json"],
    ))
    .expect("failed show --json is JSON");
    assert_eq!(shown["status"], "failed", "{shown:#}");
    assert_eq!(shown["channels"]["email"]["status"], "sent", "{shown:#}");
    assert_eq!(shown["channels"]["team"]["status"], "failed", "{shown:#}");
    assert_eq!(shown["channels"]["team"]["attempts"], 1, "{shown:#}");

    slack.set(Reply::status(404, "no_service"));
    post_level(rx.addr(), 700_102, 1);
    let failed = wait_failed(&dir, &config, 2, "the second alert failed for Slack");
    let revoked = failed
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["item"] == "700102")
        .expect("the second alert is listed");
    let err = revoked["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("revoked") && err.contains("404 no_service"),
        "{failed:#}"
    );

    // The emails went out; only Slack failed.
    let emails = stockhook_tests::stack::wait_eml(&dir.data_dir(), 2, SETTLE);
    assert_eq!(emails.len(), 2);

    // Fixed: a replay sends to Slack only, once per set.
    slack.set(Reply::Ok);
    let out = worker_cli_ok(&dir, &config, &["failed", "replay", "--all", "--yes"]);
    assert!(!out.is_empty());
    wait_stats(
        &dir,
        &config,
        SETTLE,
        "both alerts sent after the replay",
        |s| stat(s, "alerts.sent") == 2 && stat(s, "alerts.failed") == 0,
    );
    // Replayed together, the two alerts make one new set: one message naming both items.
    let posted: Vec<String> = slack
        .received()
        .iter()
        .map(|r| {
            let text = r.text();
            format!("{:?} {text}", r.answered)
        })
        .collect();
    let accepted = slack.accepted();
    assert_eq!(accepted.len(), 1, "{posted:#?}");
    let text = accepted[0].text();
    assert!(
        text.contains("700101") && text.contains("700102"),
        "{posted:#?}"
    );
    assert_eq!(
        slack.received().len(),
        3,
        "two refusals, one delivery: {posted:#?}"
    );
    assert_eq!(
        stockhook_tests::proc::mail_files(&dir.data_dir()).len(),
        2,
        "the replay sent no email again"
    );
    assert_eq!(failed_list(&dir, &config), json!([]));
}

#[test]
fn routes_send_out_of_stock_to_slack_and_low_stock_by_email() {
    let dir = TestDir::new("ch-routes");
    let slack = HookServer::start(Kind::Slack);
    let config = dir.write_config(
        "stockhook.toml",
        &base(&dir)
            .alerts("routes", "{ out_of_stock = [\"ops\"] }")
            .channel("ops", "slack", &[("url", &toml_str(&slack.url("/s")))]),
    );
    let rx = dir.receiver(&config);
    let _worker = start_worker(&dir, &config);
    post_level(rx.addr(), 700_201, 0);
    post_level(rx.addr(), 700_202, 3);
    wait_stats(&dir, &config, SETTLE, "both alerts sent", |s| {
        stat(s, "alerts.sent") == 2
    });
    let emails = stockhook_tests::stack::eml_emails(&dir.data_dir());
    assert_eq!(emails.len(), 1, "{emails:#?}");
    assert_eq!(emails[0].items(), vec!["700202".to_string()]);
    let posted = slack.accepted();
    assert_eq!(posted.len(), 1);
    let text = posted[0].text();
    assert!(
        text.contains("700201") && text.contains("Out of stock"),
        "{text}"
    );
    assert!(!text.contains("700202"), "{text}");
}

/// The worker with the original notes' variables, over implicit TLS to a server whose CA the
/// config trusts (`smtp_ca_file`: the notes' smtplib did not verify certificates at all;
/// stockhook always does).
fn legacy_worker(dir: &TestDir, config: &std::path::Path, port: u16, password: &str) -> Proc {
    let port = port.to_string();
    let args = [
        OsStr::new("--config"),
        config.as_os_str(),
        OsStr::new("run"),
    ];
    let mut p = dir.spawn_env(
        bins::worker(),
        &args,
        &[
            ("EMAIL_SMTP_SERVER", "localhost"),
            ("EMAIL_SMTP_PORT", &port),
            ("EMAIL_SENDER", "alerts@shop.example"),
            ("EMAIL_PASSWORD", password),
            ("EMAIL_RECIPIENTS", TO),
        ],
    );
    wait_worker_ready(&mut p);
    p
}

fn legacy_setup(name: &str, password: &str) -> (TestDir, TlsSmtp, PathBuf, Proc, Proc) {
    let dir = TestDir::new(name);
    let certs = TestCerts::make(dir.path(), "smtp", &["localhost"]);
    let server = TlsSmtp::start(
        &dir,
        "smtp",
        &TlsSmtpOptions {
            tls: ServerTls::Implicit,
            certs: Some(&certs),
            login: Some(("alerts@shop.example", "correct horse:battery@staple")),
            mechanisms: "PLAIN,LOGIN",
        },
    );
    let config = dir.write_config(
        "stockhook.toml",
        &dir.config()
            .email("smtp_ca_file", &toml_str(&certs.ca.display().to_string()))
            .source(SourceSpec::shopify(SHOP, SECRET)),
    );
    let rx = dir.receiver(&config);
    let worker = legacy_worker(&dir, &config, server.addr.port(), password);
    (dir, server, config, rx, worker)
}

#[test]
fn the_original_notes_variables_send_over_implicit_tls_logging_in_as_the_sender() {
    let password = "correct horse:battery@staple";
    let (dir, server, config, rx, worker) = legacy_setup("ch-legacy-vars", password);
    post_level(rx.addr(), 700_301, 1);
    let got = server.wait_messages(1, SETTLE).remove(0);
    assert!(
        got.contains("X-Authenticated-As: alerts@shop.example"),
        "{got}"
    );
    assert!(got.contains("From: alerts@shop.example"), "{got}");
    assert!(got.contains(&format!("X-RcptTo: {TO}")), "{got}");
    wait_stats(&dir, &config, SETTLE, "the alert sent", |s| {
        stat(s, "alerts.sent") == 1
    });
    let logs = worker.stderr() + &worker.stdout();
    assert!(
        !logs.contains("horse"),
        "the password is in the worker's output"
    );
}

#[test]
fn a_wrong_password_fails_permanently_and_never_shows_the_password() {
    let wrong = "Tr0ub4dor&3 wrong:pass@word";
    let (dir, server, config, rx, worker) = legacy_setup("ch-legacy-535", wrong);
    post_level(rx.addr(), 700_401, 1);
    let failed = wait_failed(&dir, &config, 1, "the alert failed");
    let err = failed[0]["error"].as_str().unwrap_or_default();
    assert!(
        err.contains("alerts@shop.example") && err.contains("535") && err.contains("app password"),
        "{failed:#}"
    );
    let listed = worker_cli_ok(&dir, &config, &["failed", "list", "--json"])
        + &worker_cli_ok(&dir, &config, &["failed", "list"]);
    let logs = worker.stderr() + &worker.stdout();
    for secret in ["Tr0ub4dor", "Tr0ub4dor%263", "wrong:pass", "wrong%3Apass"] {
        assert!(
            !listed.contains(secret),
            "failed list shows the password: {listed}"
        );
        assert!(
            !logs.contains(secret),
            "the worker's output shows the password"
        );
    }
    assert!(logs.contains("refused the login"), "the log says why");
    assert!(server.messages().is_empty());
}

/// Two workers on one JetStream state: every alert reaches each channel exactly once, whichever
/// worker claims it (the claim is taken again before each channel of a set).
#[test]
fn two_workers_on_nats_deliver_each_alert_once_to_every_channel() {
    let Some(nats) = stockhook_test_kit::nats::start_required() else {
        return;
    };
    let dir = TestDir::new("ch-nats");
    let slack = HookServer::start(Kind::Slack);
    let hook = HookServer::start(Kind::StandardWebhooks(WHSEC.into()));
    let config = |name: &str| {
        let cfg = ConfigBuilder::new(&dir.path().join(name))
            .queue("backend", "\"nats\"")
            .queue("nats_url", &toml_str(&nats.url))
            .queue("lease_timeout", "\"5s\"")
            .recipients(&[TO])
            .email("max_backoff", "\"2s\"")
            .source(SourceSpec::shopify(SHOP, SECRET))
            .alerts("channels", "[\"email\", \"hook\", \"slack\"]")
            .channel("slack", "slack", &[("url", &toml_str(&slack.url("/s")))])
            .channel(
                "hook",
                "webhook",
                &[
                    ("url", &toml_str(&hook.url("/in"))),
                    ("secret", &toml_str(WHSEC)),
                ],
            );
        dir.write_config(&format!("{name}.toml"), &cfg)
    };
    let (rc, w1, w2) = (config("r"), config("w1"), config("w2"));
    let rx = dir.receiver(&rc);
    let _w1 = start_worker(&dir, &w1);
    let _w2 = start_worker(&dir, &w2);
    const ITEMS: u64 = 60;
    for i in 0..ITEMS {
        post_level(rx.addr(), 1000 + i, 2);
    }
    wait_stats(&dir, &w1, SETTLE, "every alert sent", |s| {
        stat(s, "alerts.sent") == ITEMS as i64 && stat(s, "alerts.pending") == 0
    });

    let mut emailed: std::collections::BTreeMap<String, usize> = Default::default();
    for w in ["w1", "w2"] {
        for e in stockhook_tests::stack::eml_emails(&dir.path().join(w)) {
            for id in e.alert_ids() {
                *emailed.entry(id).or_default() += 1;
            }
        }
    }
    assert_eq!(emailed.len(), ITEMS as usize, "{emailed:?}");
    assert!(
        emailed.values().all(|n| *n == 1),
        "emailed twice: {emailed:?}"
    );

    let mut hooked: std::collections::BTreeMap<String, usize> = Default::default();
    let mut ids = std::collections::BTreeSet::new();
    for r in hook.accepted() {
        assert!(r.verified);
        assert!(ids.insert(r.header("webhook-id").unwrap_or_default().to_string()));
        for a in r.json()["data"]["alerts"].as_array().into_iter().flatten() {
            *hooked
                .entry(a["id"].as_str().unwrap_or_default().to_string())
                .or_default() += 1;
        }
    }
    assert_eq!(
        hooked, emailed,
        "the webhook got each alert once, as the email did"
    );

    let texts: Vec<String> = slack.accepted().iter().map(|r| r.text()).collect();
    // A Slack message lists at most 40 alerts and counts the rest ("…and N more"), so each
    // message's own count is checked against its lines, and the counts add up to one per item.
    let mut sets = std::collections::BTreeSet::new();
    let mut counted = 0;
    for t in &texts {
        let set = t.rsplit("_stockhook alert set ").next().unwrap_or_default();
        assert!(sets.insert(set.to_string()), "set posted twice: {texts:#?}");
        let count = number_after(t, "*Stock alerts: ");
        let more = if t.contains("…and ") {
            number_after(t, "…and ")
        } else {
            0
        };
        assert_eq!(t.matches("• Low stock: item ").count() + more, count, "{t}");
        counted += count;
    }
    assert_eq!(counted, ITEMS as usize, "{texts:#?}");
    for i in 0..ITEMS {
        let line = format!("• Low stock: item {}, ", 1000 + i);
        let n: usize = texts.iter().map(|t| t.matches(&line).count()).sum();
        assert!(
            n <= 1,
            "item {} in {n} Slack messages: {texts:#?}",
            1000 + i
        );
    }
}

/// The whole number that follows `prefix` in `text` (a count in a Slack message).
fn number_after(text: &str, prefix: &str) -> usize {
    let rest = text.split(prefix).nth(1).unwrap_or_default();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number after {prefix:?} in {text}"))
}
