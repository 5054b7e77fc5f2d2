//! What the environment contributes to the config: the `EnvSource` seam (the process, or a fixed
//! list in tests), `STOCKHOOK_<SECTION>_<KEY>` overrides and the Flask-era variables.

use super::ConfigError;

/// Where environment variables come from: the process, or a fixed list in tests.
pub trait EnvSource {
    fn var(&self, name: &str) -> Option<String>;
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

impl EnvSource for Vec<(String, String)> {
    fn var(&self, name: &str) -> Option<String> {
        self.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.clone()
    }
}

/// Every key an environment variable may override, by section, and how its text is read.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Text,
    Number,
    Bool,
    List,
}

pub(super) const OVERRIDABLE: &[(&str, &str, Kind)] = &[
    ("", "data_dir", Kind::Text),
    ("", "log_level", Kind::Text),
    ("", "log_format", Kind::Text),
    ("receiver", "listen", Kind::Text),
    ("receiver", "max_body_bytes", Kind::Number),
    ("receiver", "max_queue_bytes", Kind::Number),
    ("receiver", "min_free_bytes", Kind::Number),
    ("receiver", "dedup_window", Kind::Text),
    ("receiver", "header_timeout", Kind::Text),
    ("receiver", "body_timeout", Kind::Text),
    ("receiver", "max_connections", Kind::Number),
    ("receiver", "shutdown_grace", Kind::Text),
    ("receiver", "tls_cert", Kind::Text),
    ("receiver", "tls_key", Kind::Text),
    ("receiver", "metrics_listen", Kind::Text),
    ("queue", "backend", Kind::Text),
    ("queue", "lease_timeout", Kind::Text),
    ("queue", "max_attempts", Kind::Number),
    ("queue", "retention", Kind::Text),
    ("queue", "nats_url", Kind::List),
    ("queue", "nats_credentials", Kind::Text),
    ("queue", "nats_nkey_seed_file", Kind::Text),
    ("queue", "nats_tls_ca", Kind::Text),
    ("queue", "nats_tls_cert", Kind::Text),
    ("queue", "nats_tls_key", Kind::Text),
    ("queue", "nats_replicas", Kind::Number),
    ("queue", "sled_segments", Kind::Bool),
    ("worker", "batch_size", Kind::Number),
    ("worker", "metrics_listen", Kind::Text),
    ("alerts", "low_stock_threshold", Kind::Number),
    ("alerts", "no_sales_days", Kind::Number),
    ("alerts", "no_sales_check", Kind::Text),
    ("alerts", "recipients", Kind::List),
    ("alerts", "digest_window", Kind::Text),
    ("alerts", "combine_channels", Kind::Bool),
    ("alerts", "cover_days", Kind::Number),
    ("alerts", "safety_days", Kind::Number),
    ("email", "from", Kind::Text),
    ("email", "smtp_url", Kind::Text),
    ("email", "smtp_url_env", Kind::Text),
    ("email", "max_backoff", Kind::Text),
    ("email", "give_up_after", Kind::Text),
    ("events", "future_tolerance", Kind::Text),
    ("events", "max_quantity", Kind::Number),
    ("events", "min_quantity", Kind::Number),
    ("email", "smtp_ca_file", Kind::Text),
    ("sync", "interval", Kind::Text),
];

pub(super) fn env_name(section: &str, key: &str) -> String {
    if section.is_empty() {
        format!("STOCKHOOK_{}", key.to_uppercase())
    } else {
        format!(
            "STOCKHOOK_{}_{}",
            section.to_uppercase(),
            key.to_uppercase()
        )
    }
}

fn typed_value(var: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
    let bad = |what: &str| ConfigError::Invalid {
        origin: format!("environment variable {var}"),
        key: var.to_string(),
        message: format!("`{raw}` is not {what}"),
    };
    Ok(match kind {
        Kind::Text => toml::Value::String(raw.to_string()),
        Kind::Number => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("a whole number"))?)
        }
        Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => toml::Value::Boolean(true),
            "0" | "false" | "no" | "off" | "" => toml::Value::Boolean(false),
            _ => return Err(bad("true or false")),
        },
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: toml::Value) {
    let target = if section.is_empty() {
        table
    } else {
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        entry.as_table_mut().expect("made a table just above")
    };
    target.insert(key.to_string(), value);
}

pub(super) fn apply_stockhook_env(
    table: &mut toml::Table,
    env: &dyn EnvSource,
) -> Result<(), ConfigError> {
    let known: Vec<(String, &str, &str, Kind)> = OVERRIDABLE
        .iter()
        .map(|(s, k, kind)| (env_name(s, k), *s, *k, *kind))
        .collect();
    let mut vars = env.vars();
    vars.sort();
    for (name, raw) in vars {
        if !name.starts_with("STOCKHOOK_")
            || name == "STOCKHOOK_CONFIG"
            || name.starts_with("STOCKHOOK_TEST")
            || name == "STOCKHOOK_REQUIRE_NATS"
        {
            continue;
        }
        match known.iter().find(|(n, ..)| *n == name) {
            Some((_, section, key, kind)) => {
                set(table, section, key, typed_value(&name, &raw, *kind)?)
            }
            None => {
                let valid: Vec<&str> = known.iter().map(|(n, ..)| n.as_str()).collect();
                return Err(ConfigError::Invalid {
                    origin: format!("environment variable {name}"),
                    key: name.clone(),
                    message: format!(
                        "no such setting; STOCKHOOK_* variables that exist: {} (sources' secrets use secrets_env in the file)",
                        valid.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The original notes' variables that each set one key: name, section, key, type.
const LEGACY_KEYS: &[(&str, &str, &str, Kind)] = &[
    (
        "LOW_STOCK_THRESHOLD",
        "alerts",
        "low_stock_threshold",
        Kind::Number,
    ),
    ("NO_SALES_DAYS", "alerts", "no_sales_days", Kind::Number),
    ("EMAIL_SENDER", "email", "from", Kind::Text),
    ("EMAIL_RECIPIENTS", "alerts", "recipients", Kind::List),
];

/// The original Flask notes' variables, so a user of that system can move over unchanged.
pub(super) fn apply_legacy_env(
    table: &mut toml::Table,
    env: &dyn EnvSource,
    notices: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let get = |n: &str| env.var(n).filter(|v| !v.trim().is_empty());
    let mut used = Vec::new();
    for (var, section, key, kind) in LEGACY_KEYS {
        if let Some(v) = get(var) {
            set(table, section, key, typed_value(var, v.trim(), *kind)?);
            used.push(*var);
        }
    }
    if let Some(server) = get("EMAIL_SMTP_SERVER") {
        let port: u16 = match get("EMAIL_SMTP_PORT") {
            Some(p) => p.trim().parse().map_err(|_| ConfigError::Invalid {
                origin: "environment variable EMAIL_SMTP_PORT".into(),
                key: "EMAIL_SMTP_PORT".into(),
                message: format!("`{p}` is not a port number (e.g. 587)"),
            })?,
            // The original notes' default: smtplib.SMTP_SSL's port.
            None => 465,
        };
        let user = get("EMAIL_SENDER");
        let password = get("EMAIL_PASSWORD");
        let auth = match (user, password) {
            (Some(u), Some(p)) => format!(
                "{}:{}@",
                percent_encode_userinfo(u.trim()),
                percent_encode_userinfo(&p)
            ),
            _ => String::new(),
        };
        // The original notes sent with smtplib.SMTP_SSL(server, port): implicit TLS on whatever
        // port is given, logging in as the sender. Exactly that, so their settings keep working.
        let url = format!("smtps://{auth}{}:{port}", server.trim());
        set(table, "email", "smtp_url", toml::Value::String(url));
        used.push("EMAIL_SMTP_SERVER");
    }
    if let Some(v) = get("DEBUG_MODE") {
        if matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        ) {
            set(table, "", "log_level", toml::Value::String("debug".into()));
        }
        used.push("DEBUG_MODE");
    }
    if !used.is_empty() {
        notices.push(format!(
            "using the original notes' variables: {}",
            used.join(", ")
        ));
    }
    Ok(())
}

/// Percent-encodes all but RFC 3986's unreserved characters, as a URL's userinfo needs.
pub fn percent_encode_userinfo(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, USERINFO).to_string()
}
