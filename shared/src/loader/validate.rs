//! Checking a parsed config before anything binds: every key's value, the backend's keys, the
//! sources (names, schemes and what each still lacks to verify) and the dashboard's users. Each
//! error names the key and what would be valid; secrets are resolved here through [`secrets`].

use super::{secrets, ConfigError, EnvSource, Role};
use crate::config::{Backend, Config, SchemeKind, SourceConfig};

fn needs_secrets(scheme: SchemeKind) -> bool {
    matches!(
        scheme,
        SchemeKind::ShopifyHmac
            | SchemeKind::StandardWebhooks
            | SchemeKind::HmacSha256
            | SchemeKind::ApiKey
            | SchemeKind::BasicAuth
    )
}

pub(super) fn validate(
    config: &mut Config,
    origin: &str,
    lenient: bool,
    role: Role,
    env: &dyn EnvSource,
    notices: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let at = |line: Option<usize>| match line {
        Some(l) => format!("{origin}:{l}"),
        None => origin.to_string(),
    };
    validate_queue_backend(config, origin)?;
    match crate::channels::validate(config, env) {
        Ok(mut n) => notices.append(&mut n),
        Err(e) => {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: e.key,
                message: e.message,
            })
        }
    }
    validate_dashboard(config, origin, role != Role::Ops, env)?;
    if config.receiver.max_body_bytes == 0 {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            key: "receiver.max_body_bytes".into(),
            message: "must be above 0 (default 2097152)".into(),
        });
    }
    if config.queue.max_attempts == 0 {
        return Err(ConfigError::Invalid {
            origin: origin.to_string(),
            key: "queue.max_attempts".into(),
            message: "must be at least 1 (default 10)".into(),
        });
    }
    let resolve_secrets = role != Role::Ops;
    if resolve_secrets {
        secrets::resolve_smtp_url(&mut config.email, env).map_err(|message| {
            ConfigError::Invalid {
                origin: origin.to_string(),
                key: "email.smtp_url_env".into(),
                message,
            }
        })?;
    }
    if let Some(url) = &config.email.smtp_url {
        let u = url.expose();
        if !(u.starts_with("smtp://") || u.starts_with("smtps://")) {
            return Err(ConfigError::Invalid {
                origin: origin.to_string(),
                key: "email.smtp_url".into(),
                message: "must start with smtp:// (add ?tls=required for STARTTLS) or smtps://"
                    .into(),
            });
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, s) in config.sources.iter_mut().enumerate() {
        if resolve_secrets {
            secrets::resolve_sync_secrets(s, env);
        }
        if let Err((k, m)) = validate_api(s, resolve_secrets, env, notices) {
            return Err(ConfigError::Invalid {
                origin: at(s.line),
                key: format!("sources[{i}].{k} (source \"{}\")", s.name),
                message: m,
            });
        }
        let name = s.name.clone();
        let key = |k: &str| format!("sources[{i}].{k} (source \"{name}\")");
        let where_ = at(s.line);
        let invalid = |k: String, message: String| ConfigError::Invalid {
            origin: where_.clone(),
            key: k,
            message,
        };
        if s.name.is_empty()
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid(
                key("name"),
                "a source name is its URL path /webhooks/<name>: use letters, digits, '-', '_' or '.' (e.g. \"acme-shop\")".into(),
            ));
        }
        if !seen.insert(s.name.clone()) {
            return Err(invalid(
                key("name"),
                "two sources have this name; each needs its own URL".into(),
            ));
        }
        // Resolve secrets once, here (never for the ops CLI, which verifies nothing).
        if !resolve_secrets {
            continue;
        }
        match secrets::resolve_source(s, env) {
            Ok(()) => {}
            Err(m) if lenient => {
                s.disabled = Some(m);
                continue;
            }
            Err(m) => return Err(invalid(key("secrets_file"), m)),
        }
        let missing = missing_credential(s);
        if let Some(what) = missing {
            if lenient {
                let msg = format!("source {} is disabled: {what}", s.name);
                notices.push(msg.clone());
                s.disabled = Some(what);
            } else {
                return Err(invalid(key("secrets"), what));
            }
        }
        if s.scheme == SchemeKind::None {
            if !s.insecure {
                return Err(invalid(
                    key("scheme"),
                    "scheme \"none\" accepts unsigned requests from anyone: set insecure = true on this source if it is a local test, or pick a signing scheme".into(),
                ));
            }
            notices.push(format!(
                "source {} accepts UNSIGNED requests (scheme none, insecure = true): never expose it",
                s.name
            ));
        }
        if let Some(rl) = &s.rate_limit {
            if rl.per_second.is_nan() || rl.per_second <= 0.0 || rl.burst == 0 {
                return Err(invalid(
                    key("rate_limit"),
                    "needs per_second > 0 and burst >= 1, e.g. rate_limit = { per_second = 50, burst = 200 }".into(),
                ));
            }
        }
    }
    Ok(())
}

/// A source's platform API table (`[sources.shopify_sync]`): on the right platform, with a sane
/// version, and (except for the ops CLI) its access token resolved from `access_token_env` or
/// `access_token_file`. A token that is not there is a notice, not an error: webhooks still
/// work, and the sync of that source says what is missing.
fn validate_api(
    s: &mut SourceConfig,
    resolve: bool,
    env: &dyn EnvSource,
    notices: &mut Vec<String>,
) -> Result<(), (String, String)> {
    let Some(api) = s.shopify_sync.as_mut() else {
        return Ok(());
    };
    if s.platform != crate::config::Platform::Shopify {
        return Err((
            "shopify_sync".into(),
            format!(
                "a [sources.shopify_sync] table belongs to a source with platform = \"shopify\", not \"{}\"",
                s.platform
            ),
        ));
    }
    let d = api.shop_domain.trim();
    if d.is_empty() || d.contains('/') || d.contains(':') {
        return Err((
            "shopify_sync.shop_domain".into(),
            "the shop's domain without scheme or path, e.g. \"acme.myshopify.com\"".into(),
        ));
    }
    let v = api.api_version.as_bytes();
    let dated = v.len() == 7
        && v[4] == b'-'
        && v.iter()
            .enumerate()
            .all(|(i, b)| i == 4 || b.is_ascii_digit());
    if !dated && api.api_version != "unstable" {
        return Err((
            "shopify_sync.api_version".into(),
            format!(
                "a Shopify API version is YYYY-MM, e.g. \"{}\"",
                crate::config::SHOPIFY_API_VERSION
            ),
        ));
    }
    if let Some(b) = &api.api_base {
        if !(b.starts_with("http://") || b.starts_with("https://")) {
            return Err((
                "shopify_sync.api_base".into(),
                "a base URL, e.g. \"http://127.0.0.1:9000\"".into(),
            ));
        }
    }
    if resolve {
        secrets::resolve_shopify_token(&s.name, api, env, notices);
    }
    Ok(())
}

/// `[dashboard]`: TLS in pairs, an accent colour the CSS can take, users with one token each
/// (resolved here from `token_env`/`token_file`, once) and sources that exist.
fn validate_dashboard(
    config: &mut Config,
    origin: &str,
    resolve: bool,
    env: &dyn EnvSource,
) -> Result<(), ConfigError> {
    let invalid = |key: String, message: String| ConfigError::Invalid {
        origin: origin.to_string(),
        key,
        message,
    };
    let sources: std::collections::HashSet<String> =
        config.sources.iter().map(|s| s.name.clone()).collect();
    let d = &mut config.dashboard;
    if d.tls_cert.is_some() != d.tls_key.is_some() {
        return Err(invalid(
            "dashboard.tls_cert".into(),
            "tls_cert and tls_key go together (both, or neither for plain HTTP)".into(),
        ));
    }
    let accent_ok = |a: &str| {
        a.len() == 7 && a.starts_with('#') && a[1..].bytes().all(|b| b.is_ascii_hexdigit())
    };
    if let Some(a) = d.brand.as_ref().and_then(|b| b.accent.as_deref()) {
        if !accent_ok(a) {
            return Err(invalid(
                "dashboard.brand.accent".into(),
                format!("{a:?} is not a colour: write it as \"#rrggbb\" (e.g. \"#0b6e4f\")"),
            ));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, u) in d.users.iter_mut().enumerate() {
        let name = u.name.clone();
        let key = |k: &str| format!("dashboard.users[{i}].{k} (user \"{name}\")");
        if u.name.is_empty() || !names.insert(u.name.clone()) {
            return Err(invalid(
                key("name"),
                "each user needs its own, non-empty name".into(),
            ));
        }
        let ways = [
            u.token.is_some(),
            u.token_env.is_some(),
            u.token_file.is_some(),
        ];
        if ways.iter().filter(|w| **w).count() != 1 {
            return Err(invalid(
                key("token"),
                "give exactly one of token, token_env or token_file".into(),
            ));
        }
        if let Some(a) = u.brand.as_ref().and_then(|b| b.accent.as_deref()) {
            if !accent_ok(a) {
                return Err(invalid(
                    key("brand.accent"),
                    format!("{a:?} is not \"#rrggbb\""),
                ));
            }
        }
        for s in u.sources.iter().flatten() {
            if !sources.contains(s) {
                return Err(invalid(
                    key("sources"),
                    format!("no source named {s:?} in [[sources]]"),
                ));
            }
        }
        if !resolve {
            continue;
        }
        if let Err((k, m)) = secrets::resolve_user_token(u, env) {
            return Err(invalid(key(k), m));
        }
        if u.token.as_ref().is_some_and(|t| t.expose().len() < 16) {
            return Err(invalid(
                key("token"),
                "at least 16 characters (e.g. `openssl rand -hex 24`)".into(),
            ));
        }
    }
    Ok(())
}

/// `[queue] backend` and, for `nats`, the keys it needs.
fn validate_queue_backend(config: &Config, origin: &str) -> Result<(), ConfigError> {
    let q = &config.queue;
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        origin: origin.to_string(),
        key: format!("queue.{key}"),
        message,
    };
    match parse_backend(&q.backend) {
        Some(Backend::Sled) => Ok(()),
        Some(Backend::Nats) => {
            let urls = q.nats_url.as_ref().map(|u| u.names()).unwrap_or_default();
            if urls.iter().all(|u| u.trim().is_empty()) {
                return Err(invalid(
                    "nats_url",
                    "backend \"nats\" needs the server's URL: nats_url = \"nats://127.0.0.1:4222\" (or a list of a cluster's URLs)".into(),
                ));
            }
            for u in urls {
                let u = u.trim();
                let scheme_ok = !u.contains("://")
                    || ["nats://", "tls://", "ws://", "wss://"]
                        .iter()
                        .any(|s| u.starts_with(s));
                if u.is_empty() || !scheme_ok {
                    return Err(invalid(
                        "nats_url",
                        format!(
                            "`{u}` is not a NATS URL: use nats://host:port (or tls://host:port)"
                        ),
                    ));
                }
            }
            if !(1..=5).contains(&q.nats_replicas) {
                return Err(invalid(
                    "nats_replicas",
                    format!(
                        "{} replicas: JetStream keeps 1 to 5 copies; use 1 on one server, 3 on a cluster",
                        q.nats_replicas
                    ),
                ));
            }
            if q.nats_tls_cert.is_some() != q.nats_tls_key.is_some() {
                return Err(invalid(
                    "nats_tls_cert",
                    "a client certificate needs both nats_tls_cert and nats_tls_key".into(),
                ));
            }
            if q.nats_credentials.is_some() && q.nats_nkey_seed_file.is_some() {
                return Err(invalid(
                    "nats_nkey_seed_file",
                    "set nats_credentials (a .creds file: user JWT and seed) or nats_nkey_seed_file (a bare NKey seed), not both".into(),
                ));
            }
            for (key, path) in [
                ("nats_credentials", &q.nats_credentials),
                ("nats_nkey_seed_file", &q.nats_nkey_seed_file),
                ("nats_tls_ca", &q.nats_tls_ca),
                ("nats_tls_cert", &q.nats_tls_cert),
                ("nats_tls_key", &q.nats_tls_key),
            ] {
                if let Some(p) = path {
                    if !p.is_file() {
                        return Err(invalid(
                            key,
                            format!("{} does not exist or is not a file", p.display()),
                        ));
                    }
                }
            }
            Ok(())
        }
        None => Err(invalid(
            "backend",
            format!(
                "`{}` is not a backend this build has; valid: \"sled\", \"nats\"",
                q.backend
            ),
        )),
    }
}

/// The one place the backend's name is read.
pub(super) fn parse_backend(name: &str) -> Option<Backend> {
    match name {
        "sled" => Some(Backend::Sled),
        "nats" => Some(Backend::Nats),
        _ => None,
    }
}

/// What a source still lacks to verify anything, phrased as what to set.
fn missing_credential(s: &SourceConfig) -> Option<String> {
    if needs_secrets(s.scheme) && s.secrets.is_empty() {
        let how = match (&s.secrets_env, &s.secrets_file) {
            (Some(names), _) => format!(
                "environment variable {} is unset or empty",
                names.names().join(" / ")
            ),
            (None, Some(p)) => format!("secrets file {} holds no secret", p.display()),
            (None, None) => "no secret configured".to_string(),
        };
        return Some(format!(
            "{how}: scheme {} needs a secret (secrets = [...], secrets_env = \"VAR\" or secrets_file = \"/path\")",
            s.scheme
        ));
    }
    match s.scheme {
        SchemeKind::Ebay if s.verification_token.is_none() => Some(format!(
            "scheme ebay needs verification_token (or verification_token_env{})",
            s.verification_token_env
                .as_ref()
                .map(|v| format!(": {v} is unset"))
                .unwrap_or_default()
        )),
        SchemeKind::EbayLegacy
            if s.dev_id.is_none() || s.app_id.is_none() || s.cert_id.is_none() =>
        {
            Some("scheme ebay-legacy needs dev_id, app_id and cert_id (or cert_id_env)".into())
        }
        _ => None,
    }
}
