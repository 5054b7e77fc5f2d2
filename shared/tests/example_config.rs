//! `deploy/stockhook.toml.example` is what install.sh copies to /etc/stockhook/stockhook.toml, so
//! it must parse with the real schema (`deny_unknown_fields` everywhere), load with secrets
//! resolved the way systemd provides them, and mention every key the schema has.

use std::path::{Path, PathBuf};
use stockhook_shared::config::{Config, Platform, SchemeKind};
use stockhook_shared::loader;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/stockhook.toml.example")
}

fn example_text() -> String {
    std::fs::read_to_string(example_path()).expect("deploy/stockhook.toml.example exists")
}

#[test]
fn example_parses_with_the_schema() {
    let config: Config = toml::from_str(&example_text()).expect("the example parses");
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/stockhook"));
    assert_eq!(config.receiver.listen, "127.0.0.1:8080");
    assert_eq!(config.alerts.low_stock_threshold, 5);
    assert_eq!(
        config.alerts.recipients,
        vec!["inventory@example.com".to_string()]
    );
    assert!(config.email.smtp_url.is_none() && config.email.smtp_url_env.is_none());

    let got: Vec<(&str, Platform, SchemeKind)> = config
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.platform, s.scheme))
        .collect();
    assert_eq!(
        got,
        vec![
            ("main-store", Platform::Shopify, SchemeKind::ShopifyHmac),
            (
                "partner-feed",
                Platform::Simple,
                SchemeKind::StandardWebhooks
            ),
            ("woo-store", Platform::Woocommerce, SchemeKind::HmacSha256),
            ("warehouse", Platform::Simple, SchemeKind::HmacSha256),
            ("amazon-eu", Platform::Amazon, SchemeKind::ApiKey),
            ("amazon-us", Platform::Amazon, SchemeKind::BasicAuth),
            ("ebay-store", Platform::Ebay, SchemeKind::Ebay),
            ("ebay-trading", Platform::Ebay, SchemeKind::EbayLegacy),
        ]
    );

    let woo = &config.sources[2];
    assert_eq!(
        woo.signature_header.as_deref(),
        Some("X-WC-Webhook-Signature")
    );
    assert_eq!(
        woo.signature_encoding,
        Some(stockhook_shared::config::SignatureEncoding::Base64)
    );
    let gh = &config.sources[3];
    assert_eq!(gh.signature_header.as_deref(), Some("X-Hub-Signature-256"));
    assert_eq!(gh.signature_prefix.as_deref(), Some("sha256="));
    assert_eq!(
        config.sources[0].secrets_file.as_deref(),
        Some(Path::new(
            "${CREDENTIALS_DIRECTORY}/stockhook_shopify-secret"
        ))
    );
    assert!(config.sources[0].rate_limit.is_some());
    let ebay = &config.sources[6];
    assert_eq!(
        ebay.verification_token_env.as_deref(),
        Some("EBAY_VERIFICATION_TOKEN")
    );
    assert!(ebay
        .endpoint_url
        .as_deref()
        .unwrap()
        .ends_with("/webhooks/ebay-store"));
    assert!(ebay.client_id.is_some() && ebay.client_secret_env.is_some());
    let legacy = &config.sources[7];
    assert!(legacy.dev_id.is_some() && legacy.app_id.is_some() && legacy.cert_id_env.is_some());
}

/// The commented-out blocks are valid too once uncommented: the insecure local source, the
/// per-SKU thresholds, eBay's pinned public keys, and every `# key = default` line.
#[test]
fn example_with_everything_uncommented_parses() {
    let text: String = example_text()
        .lines()
        .map(|l| {
            let rest = l.strip_prefix("# ").unwrap_or(l);
            let looks_like_toml = rest.starts_with('[')
                || rest == "\"\"\""
                || (rest.starts_with('"') && rest.contains("\" = "))
                || rest.starts_with("-----BEGIN ")
                || rest.starts_with("-----END ")
                || rest.starts_with("MFkw")
                || rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                });
            // Keep the prose of the header comment block (keys shown as prose there start with
            // two spaces after '#').
            if l.starts_with("# ") && looks_like_toml && !l.starts_with("#   ") {
                format!("{rest}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    // Uncommenting gives `smtp_url` and `smtp_url_env` both, and `verification_token` next to
    // its `_env` twin: the schema accepts that (the loader decides which wins).
    let config: Config = toml::from_str(&text)
        .unwrap_or_else(|e| panic!("uncommented example does not parse: {e}\n{text}"));
    let local = config.sources.last().unwrap();
    assert_eq!(
        (local.name.as_str(), local.scheme, local.insecure),
        ("local-test", SchemeKind::None, true)
    );
    assert_eq!(config.alerts.sku_thresholds.get("MUG-BLUE-12OZ"), Some(&20));
    assert!(config.receiver.tls_cert.is_some());
    let ebay = config
        .sources
        .iter()
        .find(|s| s.name == "ebay-store")
        .unwrap();
    assert_eq!(ebay.public_keys.len(), 1);
}

/// Loads it as the service does: secrets from `$CREDENTIALS_DIRECTORY` (files named as
/// `LoadCredential=stockhook:/etc/stockhook/credentials` names them) and from secrets.env.
#[test]
fn example_loads_with_systemd_credentials() {
    let creds = tempfile::tempdir().unwrap();
    for name in [
        "shopify-secret",
        "partner-feed-secret",
        "woo-secret",
        "warehouse-secret",
        "amazon-eu-key",
        "amazon-us-basic",
    ] {
        let value = match name {
            "partner-feed-secret" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string(),
            "amazon-us-basic" => "eventbridge:correct-horse-battery".to_string(),
            other => format!("{other}-value-0123456789"),
        };
        std::fs::write(
            creds.path().join(format!("stockhook_{name}")),
            format!("{value}\n"),
        )
        .unwrap();
    }
    let env: Vec<(String, String)> = [
        ("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap()),
        (
            "EBAY_VERIFICATION_TOKEN",
            "a-verification-token-of-32-chars-or-more",
        ),
        ("EBAY_CLIENT_SECRET", "PRD-client-secret"),
        ("EBAY_CERT_ID", "PRD-cert-id"),
        ("STOCKHOOK_DATA_DIR", "/var/lib/stockhook"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let loaded = loader::load_from(Some(&example_path()), &env)
        .unwrap_or_else(|e| panic!("the example does not load: {e}"));
    let c = &loaded.config;
    assert_eq!(c.sources.len(), 8);
    assert!(c.sources.iter().all(|s| s.disabled.is_none()));
    assert_eq!(c.sources[0].secrets.len(), 1);
    assert_eq!(
        c.sources[0].secrets[0].expose(),
        "shopify-secret-value-0123456789"
    );
    assert!(c.sources[6].verification_token.is_some());
    assert!(c.sources[7].cert_id.is_some());
}

/// Every key the schema deserializes appears in the example (as `key =`, `# key =`, or a table
/// header), so a key added to config/*.rs without documenting it here fails this test.
#[test]
fn example_mentions_every_schema_key() {
    let schema = [
        include_str!("../src/config/mod.rs"),
        include_str!("../src/config/sync.rs"),
    ]
    .join("\n");
    let example = example_text();
    let mut skipped_next = false;
    let mut missing = Vec::new();
    for line in schema.lines() {
        let t = line.trim();
        if t.starts_with("#[serde(skip") {
            skipped_next = true;
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub ") {
            if let Some((name, _)) = rest.split_once(':') {
                let is_field =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if is_field && !skipped_next {
                    let mentioned = example.contains(&format!("{name} ="))
                        || example.contains(&format!("[{name}]"))
                        || example.contains(&format!("[[{name}]]"))
                        || example.contains(&format!(".{name}]"));
                    if !mentioned {
                        missing.push(name.to_string());
                    }
                }
            }
        }
        if !t.starts_with("#[") && !t.starts_with("///") && !t.is_empty() {
            skipped_next = false;
        }
    }
    assert!(
        missing.is_empty(),
        "keys of config/*.rs not in deploy/stockhook.toml.example: {missing:?}"
    );
}

/// Every environment variable the documentation tells someone to set, and every one the tests
/// and fuzz harnesses read, is accepted by the config loader (issue 13, item 9: the README's
/// `STOCKHOOK_SEED`, `STOCKHOOK_SOAK`, `STOCKHOOK_FUZZ_ITERS` made every binary exit 2, since
/// `STOCKHOOK_*` is the config overrides' namespace).
#[test]
fn documented_and_test_variables_do_not_break_the_loader() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut texts: Vec<(PathBuf, String)> = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !name.starts_with('.') && name != "target" || name == ".ci" {
                    dirs.push(p);
                }
            } else if name.ends_with(".md") || name.ends_with(".rs") || name == "run" {
                texts.push((p.clone(), std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    let mut names: Vec<(String, PathBuf)> = Vec::new();
    for (path, text) in &texts {
        let is_rs = path.extension().is_some_and(|e| e == "rs");
        for (i, _) in text.match_indices("STOCKHOOK_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let after = &text[i + name.len()..];
            let before = &text[..i];
            // Documentation: `NAME=value`; code: `env::var("NAME")`.
            let used = if is_rs {
                before.ends_with("env::var(\"") && after.starts_with('"')
            } else {
                after.starts_with('=')
            };
            if used && name != "STOCKHOOK_CONFIG" && !names.iter().any(|(n, _)| *n == name) {
                names.push((name, path.clone()));
            }
        }
    }
    assert!(
        names.iter().any(|(n, _)| n == "STOCKHOOK_DATA_DIR"),
        "the scan found the README's override examples: {names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stockhook.toml");
    std::fs::write(&file, "").unwrap();
    for (name, path) in names {
        let env: Vec<(String, String)> = vec![(name.clone(), "1".into())];
        if let Err(e) = loader::load_from(Some(&file), &env) {
            let msg = e.to_string();
            assert!(
                !msg.contains("no such setting"),
                "{name} (named in {}) is refused by the config loader: {msg}",
                path.display()
            );
        }
    }
}
