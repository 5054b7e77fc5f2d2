use super::env::{env_name, Kind, OVERRIDABLE};
use super::*;
use crate::config::{Platform, SchemeKind};
use std::io::Write;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

/// The file `f` loaded with no environment, which must succeed.
fn load_ok(f: &tempfile::NamedTempFile) -> Loaded {
    load_from(Some(f.path()), &env(&[])).unwrap()
}

/// Why the file `f` with the environment `vars` is refused.
fn refusal_with_env(f: &tempfile::NamedTempFile, vars: &[(&str, &str)]) -> String {
    load_from(Some(f.path()), &env(vars))
        .unwrap_err()
        .to_string()
}

/// Why the file `f` with no environment is refused.
fn refusal(f: &tempfile::NamedTempFile) -> String {
    refusal_with_env(f, &[])
}

/// Asserts the file `f` with no environment is refused saying every one of `parts`.
#[track_caller]
fn refused_with(f: &tempfile::NamedTempFile, parts: &[&str]) {
    stockhook_test_kit::assert_contains(&refusal(f), parts);
}

#[test]
fn defaults_enable_only_sources_with_secrets() {
    let loaded = load_from(Some(Path::new("/nonexistent/for/sure.toml")), &env(&[]));
    assert!(matches!(loaded, Err(ConfigError::Read { .. })));

    let e = env(&[("SHOPIFY_WEBHOOK_SECRET", "s3cret")]);
    let dir = tempfile::tempdir().unwrap();
    let prev = std::env::current_dir().unwrap();
    // No file anywhere: the built-in defaults apply. (load_from only looks at ./stockhook.toml
    // when nothing else is given; the test runs where that file does not exist.)
    assert!(!prev.join("stockhook.toml").exists());
    let loaded = load_from(None, &e).unwrap();
    drop(dir);
    assert!(loaded.path.is_none());
    let names: Vec<_> = loaded
        .config
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.disabled.is_some()))
        .collect();
    assert_eq!(
        names,
        vec![("shopify", false), ("amazon", true), ("ebay", true)]
    );
    assert_eq!(loaded.config.sources[0].secrets[0].expose(), "s3cret");
    assert!(loaded
        .notices
        .iter()
        .any(|n| n.contains("AMAZON_WEBHOOK_SECRET")));
}

#[test]
fn parse_error_names_file_line_and_valid_values() {
    let f = write("data_dir = \"/tmp\"\n\n[[sources]]\nname = \"a\"\nplatform = \"shopfy\"\nscheme = \"shopify-hmac\"\n");
    let err = refusal(&f);
    stockhook_test_kit::assert_contains(&err, &[&format!("{}:5:", f.path().display())]);
    assert!(err.contains("shopify"), "lists valid platforms: {err}");
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let f = write("[receiver]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n");
    refused_with(&f, &[":3:", "max_body"]);
}

#[test]
fn missing_secret_in_a_file_is_an_error_naming_the_variable() {
    let f = write("[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets_env = \"ACME_SECRET\"\n");
    let err = refusal(&f);
    stockhook_test_kit::assert_contains(&err, &["ACME_SECRET"]);
    assert!(err.contains(":2"), "points at the source: {err}");
    let ok = load_from(Some(f.path()), &env(&[("ACME_SECRET", "x")])).unwrap();
    assert_eq!(ok.config.sources[0].secrets.len(), 1);
}

#[test]
fn secrets_file_with_credentials_directory_and_rotation() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme"), "old-secret\nnew-secret\n\n").unwrap();
    let f = write("[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets_file = \"${CREDENTIALS_DIRECTORY}/acme\"\n");
    let e = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
    let loaded = load_from(Some(f.path()), &e).unwrap();
    let got: Vec<_> = loaded.config.sources[0]
        .secrets
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    assert_eq!(got, vec!["old-secret", "new-secret"]);
    refused_with(&f, &["CREDENTIALS_DIRECTORY"]);
}

#[test]
fn none_scheme_needs_insecure() {
    let f = write("[[sources]]\nname = \"dev\"\nplatform = \"simple\"\nscheme = \"none\"\n");
    refused_with(&f, &["insecure = true"]);
    let f = write(
        "[[sources]]\nname = \"dev\"\nplatform = \"simple\"\nscheme = \"none\"\ninsecure = true\n",
    );
    let loaded = load_ok(&f);
    assert_eq!(loaded.config.sources[0].scheme, SchemeKind::None);
    assert_eq!(loaded.config.sources[0].platform, Platform::Simple);
    assert!(loaded.notices.iter().any(|n| n.contains("UNSIGNED")));
}

#[test]
fn env_overrides_file_and_legacy_variables_apply() {
    let f = write("data_dir = \"/from/file\"\n[receiver]\nlisten = \"127.0.0.1:1\"\n[alerts]\nlow_stock_threshold = 3\n");
    let e = env(&[
        ("STOCKHOOK_RECEIVER_LISTEN", "127.0.0.1:9999"),
        ("STOCKHOOK_RECEIVER_MAX_BODY_BYTES", "1024"),
        ("LOW_STOCK_THRESHOLD", "7"),
        ("NO_SALES_DAYS", "30"),
        ("EMAIL_SENDER", "shop@example.com"),
        ("EMAIL_RECIPIENTS", "a@example.com, b@example.com"),
        ("EMAIL_SMTP_SERVER", "mail.example.com"),
        ("EMAIL_SMTP_PORT", "465"),
        ("EMAIL_PASSWORD", "p@ss:word"),
        ("DEBUG_MODE", "true"),
    ]);
    let c = load_from(Some(f.path()), &e).unwrap().config;
    assert_eq!(c.data_dir, PathBuf::from("/from/file"));
    assert_eq!(c.receiver.listen, "127.0.0.1:9999");
    assert_eq!(c.receiver.max_body_bytes, 1024);
    assert_eq!(c.alerts.low_stock_threshold, 7);
    assert_eq!(c.alerts.no_sales_days, 30);
    assert_eq!(c.alerts.recipients, vec!["a@example.com", "b@example.com"]);
    assert_eq!(c.email.from, "shop@example.com");
    assert_eq!(
        c.email.smtp_url.as_ref().map(|s| s.expose()),
        Some("smtps://shop%40example.com:p%40ss%3Aword@mail.example.com:465")
    );
    assert_eq!(c.log_level, "debug");
    // STOCKHOOK_* beats the legacy variable.
    let e = env(&[
        ("LOW_STOCK_THRESHOLD", "7"),
        ("STOCKHOOK_ALERTS_LOW_STOCK_THRESHOLD", "9"),
    ]);
    assert_eq!(
        load_from(Some(f.path()), &e)
            .unwrap()
            .config
            .alerts
            .low_stock_threshold,
        9
    );
}

#[test]
fn unknown_or_bad_env_override_is_named() {
    let f = write("");
    let err = refusal_with_env(&f, &[("STOCKHOOK_RECEIVER_LISTN", "x")]);
    stockhook_test_kit::assert_contains(
        &err,
        &["STOCKHOOK_RECEIVER_LISTN", "STOCKHOOK_RECEIVER_LISTEN"],
    );
    let err = refusal_with_env(&f, &[("STOCKHOOK_RECEIVER_MAX_BODY_BYTES", "lots")]);
    stockhook_test_kit::assert_contains(&err, &["whole number"]);
}

#[test]
fn every_overridable_key_exists_in_the_schema() {
    for (section, key, kind) in OVERRIDABLE {
        let value = match kind {
            Kind::Number => "1",
            Kind::Bool => "true",
            Kind::List => "a@example.com",
            Kind::Text => match *key {
                "log_format" => "json",
                "backend" => "sled",
                "smtp_url" => "smtp://localhost:25",
                "smtp_url_env" => continue,
                k if k.ends_with("timeout")
                    || k.ends_with("window")
                    || k.ends_with("grace")
                    || k.ends_with("retention")
                    || k.ends_with("backoff")
                    || k.ends_with("after")
                    || k.ends_with("check")
                    || k.ends_with("tolerance")
                    || k.ends_with("interval") =>
                {
                    "5s"
                }
                _ => "x",
            },
        };
        let var = env_name(section, key);
        let f = write("");
        load_from(Some(f.path()), &env(&[(var.as_str(), value)]))
            .unwrap_or_else(|e| panic!("{var}: {e}"));
    }
}

#[test]
fn nats_backend_needs_a_url_and_sane_replicas() {
    let f = write("[queue]\nbackend = \"nats\"\n");
    refused_with(&f, &["queue.nats_url"]);
    let f = write("[queue]\nbackend = \"kafka\"\n");
    refused_with(&f, &["\"sled\", \"nats\""]);
    let f = write("[queue]\nbackend = \"nats\"\nnats_url = \"http://x:4222\"\n");
    refused_with(&f, &["not a NATS URL"]);
    let f = write(
            "[queue]\nbackend = \"nats\"\nnats_url = [\"nats://a:4222\", \"nats://b:4222\"]\nnats_replicas = 3\n",
        );
    let c = load_ok(&f).config;
    assert_eq!(
        c.queue.nats_url.as_ref().unwrap().names(),
        vec!["nats://a:4222", "nats://b:4222"]
    );
    assert_eq!(c.queue.nats_replicas, 3);
    let err = refusal_with_env(&f, &[("STOCKHOOK_QUEUE_NATS_REPLICAS", "7")]);
    stockhook_test_kit::assert_contains(&err, &["nats_replicas"]);
    // The URL list from the environment; STOCKHOOK_REQUIRE_NATS is the tests' switch, not
    // a setting.
    let f = write("");
    let c = load_from(
        Some(f.path()),
        &env(&[
            ("STOCKHOOK_QUEUE_BACKEND", "nats"),
            ("STOCKHOOK_QUEUE_NATS_URL", "nats://a:1, nats://b:2"),
            ("STOCKHOOK_REQUIRE_NATS", "1"),
        ]),
    )
    .unwrap()
    .config;
    assert_eq!(c.backend(), Backend::Nats);
    assert_eq!(
        c.queue.nats_url.as_ref().unwrap().names(),
        vec!["nats://a:1", "nats://b:2"]
    );
    let f = write("[queue]\nbackend = \"nats\"\nnats_url = \"nats://a:1\"\nnats_credentials = \"/nonexistent.creds\"\n");
    refused_with(&f, &["queue.nats_credentials"]);
    let f = write("[queue]\nbackend = \"nats\"\nnats_url = \"nats://a:1\"\nnats_nkey_seed_file = \"/nonexistent.nk\"\n");
    refused_with(&f, &["queue.nats_nkey_seed_file"]);
    let seed = write("SUAEXAMPLE\n");
    let creds = write("jwt and seed\n");
    let f = write(&format!(
        "[queue]\nbackend = \"nats\"\nnats_url = \"nats://a:1\"\nnats_credentials = {:?}\nnats_nkey_seed_file = {:?}\n",
        creds.path(),
        seed.path()
    ));
    refused_with(&f, &["not both"]);
}

#[test]
fn type_errors_name_the_key_the_file_and_the_line() {
    // Issue 13, item 10: `expected i64` alone, with no key.
    let cases = [
            (
                "data_dir = \"/tmp\"\n[alerts]\nlow_stock_threshold = \"five\"\n",
                ":3:",
                "`alerts.low_stock_threshold`",
                "a whole number",
            ),
            (
                "[receiver]\nmax_body_bytes = \"2MB\"\n",
                ":2:",
                "`receiver.max_body_bytes`",
                "a whole number",
            ),
            (
                "[[sources]]\nname = \"a\"\nplatform = \"simple\"\nscheme = \"none\"\ninsecure = true\n\
                 [[sources]]\nname = \"b\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\n\
                 secrets = [\"s\"]\nlow_stock_threshold = 2.5\n",
                ":11:",
                "`sources[1].low_stock_threshold`",
                "a whole number",
            ),
            (
                "[[sources]]\nname = \"b\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\n\
                 secrets = [\"s\"]\nrate_limit = { per_second = 5.0, burst = \"lots\" }\n",
                ":6:",
                "`sources[0].rate_limit.burst`",
                "a whole number",
            ),
            (
                "[alerts]\ncombine_channels = \"yes\"\n",
                ":2:",
                "`alerts.combine_channels`",
                "true or false",
            ),
        ];
    for (text, line, key, valid) in cases {
        let f = write(text);
        let err = refusal(&f);
        let file = f.path().display().to_string();
        assert!(err.starts_with(&format!("{file}{line}")), "{err}");
        stockhook_test_kit::assert_contains(&err, &[key, valid]);
    }
    // A syntax error has no key to name, and still names the place.
    let f = write("[alerts\n");
    refused_with(&f, &[":1:"]);
}

#[test]
fn shopify_api_token_is_resolved_and_a_missing_one_is_a_notice() {
    let text = "[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets = [\"s\"]\n[sources.shopify_sync]\nshop_domain = \"acme.myshopify.com\"\naccess_token_env = \"ACME_TOKEN\"\n";
    let f = write(text);
    let ok = load_from(Some(f.path()), &env(&[("ACME_TOKEN", "shpat_x")])).unwrap();
    let api = ok.config.sources[0].shopify_sync.as_ref().unwrap();
    assert_eq!(
        api.access_token.as_ref().map(|t| t.expose()),
        Some("shpat_x")
    );
    assert_eq!(api.api_version, crate::config::SHOPIFY_API_VERSION);
    assert_eq!(api.sales_history_days, 90);
    assert_eq!(
        api.graphql_url(),
        format!(
            "https://acme.myshopify.com/admin/api/{}/graphql.json",
            crate::config::SHOPIFY_API_VERSION
        )
    );
    let unset = load_ok(&f);
    assert!(unset.config.sources[0]
        .shopify_sync
        .as_ref()
        .unwrap()
        .access_token
        .is_none());
    assert!(
        unset
            .notices
            .iter()
            .any(|n| n.contains("ACME_TOKEN is not set")),
        "{:?}",
        unset.notices
    );
    let wrong = write(
        &text
            .replace("\"shopify\"\nscheme", "\"amazon\"\nscheme")
            .replace("\"shopify-hmac\"", "\"api-key\"\nsignature_header = \"x\""),
    );
    refused_with(&wrong, &["shopify_sync", "platform = \"shopify\""]);
    let bad = write(&text.replace(
        "access_token_env",
        "api_version = \"26-10\"\naccess_token_env",
    ));
    refused_with(&bad, &["YYYY-MM"]);
}

#[test]
fn check_config_output_masks_secrets() {
    let f = write("[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets = [\"super-secret-value-123\"]\n[email]\nsmtp_url = \"smtps://u:hunter2@mail:465\"\n");
    let loaded = load_ok(&f);
    let shown = loaded.to_string();
    assert!(!shown.contains("super-secret-value-123"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("acme"));
    assert!(shown.contains("redacted"));
}
