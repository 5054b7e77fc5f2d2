//! Finding, reading, overriding and validating the config file.
//!
//! Order of precedence, lowest first: built-in defaults, the file, the original Flask notes'
//! variables (`LOW_STOCK_THRESHOLD`, `EMAIL_SENDER`, ...), then `STOCKHOOK_<SECTION>_<KEY>`.
//! Secrets referenced by `*_env` and `*_file` are resolved here, once, so nothing downstream reads
//! the environment. Every error names the key, where it came from (file and line, or variable),
//! and what would be valid; the binaries print it and exit 2 before binding anything.

use crate::config::{Backend, Config, SchemeKind, SourceConfig};
use crate::secret::Secret;
use std::fmt;
use std::path::{Path, PathBuf};

/// A loaded, validated config and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The file read, or `None` when running on built-in defaults.
    pub path: Option<PathBuf>,
    /// Things worth one log line at start (disabled sources, insecure sources, legacy variables used).
    pub notices: Vec<String>,
}

/// Why a config could not be used. `Display` is the whole message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source} (pass --config PATH, set STOCKHOOK_CONFIG, or create ./stockhook.toml from deploy/stockhook.toml.example)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: `{key}`: {message}")]
    Invalid {
        /// `path:line`, `path`, an environment variable, or "built-in defaults".
        origin: String,
        key: String,
        message: String,
    },
}

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

/// Loads the config the way both binaries do: `--config`, else `$STOCKHOOK_CONFIG`, else
/// `./stockhook.toml`, else built-in defaults.
pub fn load(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_from(explicit, &ProcessEnv)
}

/// Who is loading: the receiver needs every enabled source's secrets and refuses to start
/// without them; the worker and the ops CLI never verify signatures, so a source whose secret
/// they cannot read (outside systemd's credentials, say) is only marked disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Receiver,
    Worker,
    /// The ops CLI (`failed`, `stats`, `export`, ...): resolves no secret at all (no
    /// `*_env`, `*_file`, `${CREDENTIALS_DIRECTORY}`, `smtp_url_env`), so it runs as the
    /// `stockhook` user outside systemd's credentials and without `secrets.env`.
    Ops,
}

/// [`load`] for the worker and the ops CLI: see [`Role`].
pub fn load_for_worker(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with(explicit, &ProcessEnv, Role::Worker)
}

/// [`load`] for the ops CLI: see [`Role::Ops`].
pub fn load_for_ops(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
    load_with(explicit, &ProcessEnv, Role::Ops)
}

/// [`load`] with an injected environment (tests).
pub fn load_from(explicit: Option<&Path>, env: &dyn EnvSource) -> Result<Loaded, ConfigError> {
    load_with(explicit, env, Role::Receiver)
}

/// [`load`] with an injected environment and role.
pub fn load_with(
    explicit: Option<&Path>,
    env: &dyn EnvSource,
    role: Role,
) -> Result<Loaded, ConfigError> {
    let path = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => match env.var("STOCKHOOK_CONFIG").filter(|v| !v.is_empty()) {
            Some(p) => Some(PathBuf::from(p)),
            None => [
                PathBuf::from("stockhook.toml"),
                PathBuf::from(SYSTEM_CONFIG),
            ]
            .into_iter()
            .find(|p| p.exists()),
        },
    };
    let mut notices = Vec::new();
    let (text, origin) = match &path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            (text, p.display().to_string())
        }
        None => {
            notices.push("no config file (--config, STOCKHOOK_CONFIG, ./stockhook.toml): running on built-in defaults".to_string());
            (DEFAULT_CONFIG.to_string(), "built-in defaults".to_string())
        }
    };

    // First pass over the file alone, so type errors carry the file's line and column.
    let parse_err = |e: toml::de::Error| {
        let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((1, 1));
        let message = readable_type_error(e.message().trim());
        let message = match e.span().and_then(|s| key_at(&text, s.start)) {
            Some(key) => format!("`{key}`: {message}"),
            None => message,
        };
        ConfigError::Parse {
            path: path
                .clone()
                .unwrap_or_else(|| PathBuf::from("<built-in defaults>")),
            line,
            column,
            message,
        }
    };
    toml::from_str::<Config>(&text).map_err(parse_err)?;
    let mut table: toml::Table = toml::from_str(&text).map_err(parse_err)?;

    apply_legacy_env(&mut table, env, &mut notices)?;
    apply_stockhook_env(&mut table, env)?;
    let mut config: Config =
        table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid {
                origin: "environment (STOCKHOOK_* variables)".into(),
                key: "override".into(),
                message: e.message().trim().to_string(),
            })?;

    let lenient = path.is_none() || role != Role::Receiver;
    for source in &mut config.sources {
        source.line = find_source_line(&text, &source.name);
    }
    validate(&mut config, &origin, lenient, role, env, &mut notices)?;
    Ok(Loaded {
        config,
        path,
        notices,
    })
}

/// Where a packaged install keeps the config: read when there is no `--config`,
/// `$STOCKHOOK_CONFIG` or `./stockhook.toml`.
pub const SYSTEM_CONFIG: &str = "/etc/stockhook/stockhook.toml";

/// The config used when there is no file: one source per platform, each enabled once its secret
/// variable is set.
pub const DEFAULT_CONFIG: &str = r#"
[[sources]]
name = "shopify"
platform = "shopify"
scheme = "shopify-hmac"
secrets_env = "SHOPIFY_WEBHOOK_SECRET"

[[sources]]
name = "amazon"
platform = "amazon"
scheme = "api-key"
signature_header = "x-api-key"
secrets_env = "AMAZON_WEBHOOK_SECRET"

[[sources]]
name = "ebay"
platform = "ebay"
scheme = "ebay"
verification_token_env = "EBAY_VERIFICATION_TOKEN"
"#;

/// The dotted key whose value starts at byte `offset` of the file (`alerts.low_stock_threshold`,
/// `sources[1].rate_limit.burst`), from the table headers above it and the `key =` before it on
/// its line; `None` when the offset is not in a value (a syntax error).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for l in text.get(..line_start)?.lines() {
        let l = l.trim();
        if let Some(name) = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|x| x.0)
        {
            let name = name.trim().to_string();
            let n = match counts.iter_mut().find(|(k, _)| *k == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    counts.push((name.clone(), 0));
                    0
                }
            };
            table = format!("{name}[{n}]");
        } else if let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|x| x.0)
        {
            let name = name.trim();
            // A sub-table of the last array element (`[sources.rate_limit]`) stays under it.
            table = match counts
                .iter()
                .find(|(k, _)| name.starts_with(&format!("{k}.")))
            {
                Some((k, n)) => format!("{k}[{n}]{}", &name[k.len()..]),
                None => name.to_string(),
            };
        }
    }
    // On the value's own line: the key before the last `=` (inside an inline table, the inner
    // key, under the line's own key).
    let head = &before[line_start..];
    let unquote = |k: &str| k.trim().trim_matches('"').to_string();
    let first = head.split_once('=').map(|(k, _)| unquote(k))?;
    let inner = head
        .rsplit(['{', ','])
        .next()
        .and_then(|seg| seg.rsplit_once('='))
        .map(|(k, _)| unquote(k))
        .filter(|k| !k.is_empty() && *k != first);
    let mut key = if table.is_empty() {
        first
    } else {
        format!("{table}.{first}")
    };
    if let Some(inner) = inner {
        key = format!("{key}.{inner}");
    }
    (!key.is_empty()).then_some(key)
}

/// serde's "invalid type: string \"five\", expected i64", with what would be valid in words.
fn readable_type_error(message: &str) -> String {
    let Some((got, want)) = message.split_once(", expected ") else {
        return message.to_string();
    };
    let words = match want.trim() {
        "i64" | "u64" | "usize" | "u32" | "i32" | "u16" | "u8" => {
            "a whole number, without quotes (for example 5)"
        }
        "f64" | "f32" => "a number, without quotes (for example 1.5)",
        "a boolean" | "bool" => "true or false, without quotes",
        "a string" => "text in double quotes",
        "a sequence" => "a list in brackets (for example [\"a\", \"b\"])",
        other => return format!("{got}, expected {other}"),
    };
    format!("{got}; expected {words}")
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

fn find_source_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with("name")
                && l.split_once('=')
                    .map(|(k, v)| k.trim() == "name" && v.trim().trim_matches(['"', '\'']) == name)
                    .unwrap_or(false)
        })
        .map(|i| i + 1)
}

/// Every key an environment variable may override, by section, and how its text is read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Number,
    Bool,
    List,
}

const OVERRIDABLE: &[(&str, &str, Kind)] = &[
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

fn env_name(section: &str, key: &str) -> String {
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

fn apply_stockhook_env(table: &mut toml::Table, env: &dyn EnvSource) -> Result<(), ConfigError> {
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

/// The original Flask notes' variables, so a user of that system can move over unchanged.
fn apply_legacy_env(
    table: &mut toml::Table,
    env: &dyn EnvSource,
    notices: &mut Vec<String>,
) -> Result<(), ConfigError> {
    let get = |n: &str| env.var(n).filter(|v| !v.trim().is_empty());
    let mut used = Vec::new();
    if let Some(v) = get("LOW_STOCK_THRESHOLD") {
        set(
            table,
            "alerts",
            "low_stock_threshold",
            typed_value("LOW_STOCK_THRESHOLD", &v, Kind::Number)?,
        );
        used.push("LOW_STOCK_THRESHOLD");
    }
    if let Some(v) = get("NO_SALES_DAYS") {
        set(
            table,
            "alerts",
            "no_sales_days",
            typed_value("NO_SALES_DAYS", &v, Kind::Number)?,
        );
        used.push("NO_SALES_DAYS");
    }
    if let Some(v) = get("EMAIL_SENDER") {
        set(
            table,
            "email",
            "from",
            toml::Value::String(v.trim().to_string()),
        );
        used.push("EMAIL_SENDER");
    }
    if let Some(v) = get("EMAIL_RECIPIENTS") {
        set(
            table,
            "alerts",
            "recipients",
            typed_value("EMAIL_RECIPIENTS", &v, Kind::List)?,
        );
        used.push("EMAIL_RECIPIENTS");
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
            (Some(u), Some(p)) => format!("{}:{}@", percent_encode(u.trim()), percent_encode(&p)),
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
fn percent_encode(s: &str) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, USERINFO).to_string()
}

fn expand_credentials_dir(path: &Path, env: &dyn EnvSource) -> Result<PathBuf, String> {
    let text = path.to_string_lossy();
    if !text.contains("${CREDENTIALS_DIRECTORY}") && !text.contains("$CREDENTIALS_DIRECTORY") {
        return Ok(path.to_path_buf());
    }
    let dir = env.var("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        format!("{text} uses $CREDENTIALS_DIRECTORY, which is unset: run under systemd with LoadCredential=, or write the full path")
    })?;
    Ok(PathBuf::from(
        text.replace("${CREDENTIALS_DIRECTORY}", &dir)
            .replace("$CREDENTIALS_DIRECTORY", &dir),
    ))
}

/// Every non-empty line of a secrets file is one secret (several during rotation).
fn read_secret_file(path: &Path) -> Result<Vec<Secret>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read secrets file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(Secret::new)
        .collect())
}

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

fn validate(
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
    if let Some(var) = config
        .email
        .smtp_url_env
        .clone()
        .filter(|_| resolve_secrets)
    {
        match env.var(&var).filter(|v| !v.is_empty()) {
            Some(v) => config.email.smtp_url = Some(Secret::new(v)),
            None => {
                return Err(ConfigError::Invalid {
                    origin: origin.to_string(),
                    key: "email.smtp_url_env".into(),
                    message: format!("environment variable {var} is not set: export it, or remove smtp_url_env to write emails as files"),
                })
            }
        }
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
            resolve_sync_secrets(s, env);
        }
        if let Err((k, m)) = validate_api(s, resolve_secrets, env, notices) {
            return Err(ConfigError::Invalid {
                origin: at(s.line),
                key: format!("sources[{i}].{k} (source \"{}\")", s.name),
                message: m,
            });
        }
        let key = |k: &str| format!("sources[{i}].{k} (source \"{}\")", s.name);
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
        if let Some(names) = &s.secrets_env {
            for var in names.names() {
                if let Some(v) = env.var(var).filter(|v| !v.is_empty()) {
                    s.secrets.push(Secret::new(v));
                }
            }
        }
        if let Some(p) = &s.secrets_file {
            let read = expand_credentials_dir(p, env).and_then(|p| read_secret_file(&p));
            match read {
                Ok(mut from_file) => s.secrets.append(&mut from_file),
                Err(m) if lenient => {
                    s.disabled = Some(m);
                    continue;
                }
                Err(m) => return Err(invalid(key("secrets_file"), m)),
            }
        }
        if let Some(var) = &s.verification_token_env {
            if let Some(v) = env.var(var).filter(|v| !v.is_empty()) {
                s.verification_token = Some(Secret::new(v));
            }
        }
        if let Some(var) = &s.cert_id_env {
            if let Some(v) = env.var(var).filter(|v| !v.is_empty()) {
                s.cert_id = Some(Secret::new(v));
            }
        }
        if let Some(var) = &s.client_secret_env {
            if let Some(v) = env.var(var).filter(|v| !v.is_empty()) {
                s.client_secret = Some(Secret::new(v));
            }
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
    if !resolve || api.access_token.is_some() {
        return Ok(());
    }
    if let Some(var) = &api.access_token_env {
        if let Some(v) = env.var(var).filter(|v| !v.trim().is_empty()) {
            api.access_token = Some(Secret::new(v.trim()));
        }
    }
    if api.access_token.is_none() {
        if let Some(p) = &api.access_token_file {
            let read = expand_credentials_dir(p, env).and_then(|p| read_secret_file(&p));
            match read {
                Ok(mut v) if !v.is_empty() => api.access_token = Some(v.remove(0)),
                Ok(_) => notices.push(format!(
                    "source {}: access_token_file {} is empty; its catalog sync is off",
                    s.name,
                    p.display()
                )),
                Err(m) => notices.push(format!("source {}: {m}; its catalog sync is off", s.name)),
            }
        }
    }
    if api.access_token.is_none()
        && (api.access_token_env.is_some() || api.access_token_file.is_none())
    {
        notices.push(format!(
            "source {}: no Shopify access token (access_token, access_token_env{}, access_token_file); its catalog sync is off",
            s.name,
            api.access_token_env.as_deref().map(|v| format!(" {v} is not set")).unwrap_or_default()
        ));
    }
    Ok(())
}

/// `[queue] backend` and, for `nats`, the keys it needs.
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
        let key = |k: &str| format!("dashboard.users[{i}].{k} (user \"{}\")", u.name);
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
        if let Some(var) = &u.token_env {
            match env.var(var).filter(|v| !v.is_empty()) {
                Some(v) => u.token = Some(Secret::new(v)),
                None => {
                    return Err(invalid(
                        key("token_env"),
                        format!("environment variable {var} is not set"),
                    ))
                }
            }
        }
        if let Some(p) = &u.token_file {
            let read = expand_credentials_dir(p, env).and_then(|p| read_secret_file(&p));
            match read.map(|v| v.into_iter().next()) {
                Ok(Some(t)) => u.token = Some(t),
                Ok(None) => return Err(invalid(key("token_file"), "the file is empty".into())),
                Err(m) => return Err(invalid(key("token_file"), m)),
            }
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
fn parse_backend(name: &str) -> Option<Backend> {
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

impl Config {
    /// The backend `[queue] backend` names. A loaded config was validated; a config built in
    /// code with a name this build does not have falls back to sled.
    pub fn backend(&self) -> Backend {
        parse_backend(&self.queue.backend).unwrap_or(Backend::Sled)
    }

    /// The effective config as TOML, every secret masked: what `check-config` prints.
    pub fn render_masked(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// One sync secret: by value, else `*_env`, else the first non-empty line of `*_file`. `Err`
/// names what could not be read (never the value).
fn sync_secret(
    value: &Option<Secret>,
    var: &Option<String>,
    file: &Option<PathBuf>,
    env: &dyn EnvSource,
) -> Result<Option<Secret>, String> {
    if value.is_some() {
        return Ok(value.clone());
    }
    if let Some(var) = var {
        return Ok(env.var(var).filter(|v| !v.is_empty()).map(Secret::new));
    }
    if let Some(p) = file {
        let p = expand_credentials_dir(p, env)?;
        return Ok(read_secret_file(&p)?.into_iter().next());
    }
    Ok(None)
}

/// Resolves `[sources.amazon_sync]` and `[sources.ebay_sync]` secrets (issue 14). A secret
/// that cannot be read is recorded in the section's `problem`, which the sync reports: the
/// webhook source itself works without them.
fn resolve_sync_secrets(s: &mut SourceConfig, env: &dyn EnvSource) {
    if let Some(a) = &mut s.amazon_sync {
        let secret = sync_secret(
            &a.lwa_client_secret,
            &a.lwa_client_secret_env,
            &a.lwa_client_secret_file,
            env,
        );
        let token = sync_secret(
            &a.refresh_token,
            &a.refresh_token_env,
            &a.refresh_token_file,
            env,
        );
        match (secret, token) {
            (Ok(secret), Ok(token)) => {
                a.lwa_client_secret = secret;
                a.refresh_token = token;
            }
            (Err(m), _) | (_, Err(m)) => a.problem = Some(m),
        }
    }
    if let Some(e) = &mut s.ebay_sync {
        let secret = sync_secret(
            &e.client_secret,
            &e.client_secret_env,
            &e.client_secret_file,
            env,
        );
        let token = sync_secret(
            &e.refresh_token,
            &e.refresh_token_env,
            &e.refresh_token_file,
            env,
        );
        match (secret, token) {
            (Ok(secret), Ok(token)) => {
                let source_secret = || {
                    let var = s.client_secret_env.as_ref()?;
                    env.var(var).filter(|v| !v.is_empty()).map(Secret::new)
                };
                e.client_secret = secret
                    .or_else(|| s.client_secret.clone())
                    .or_else(source_secret);
                e.refresh_token = token;
            }
            (Err(m), _) | (_, Err(m)) => e.problem = Some(m),
        }
        if e.client_id.is_none() {
            e.client_id = s.client_id.clone();
        }
    }
}

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => writeln!(f, "# config: {}", p.display())?,
            None => writeln!(f, "# config: built-in defaults (no file)")?,
        }
        f.write_str(&self.config.render_masked())
    }
}

#[cfg(test)]
mod tests {
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
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{}:5:", f.path().display())), "{err}");
        assert!(err.contains("shopify"), "lists valid platforms: {err}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let f = write("[receiver]\nlisten = \"127.0.0.1:1\"\nmax_body = 5\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":3:"), "{err}");
        assert!(err.contains("max_body"), "{err}");
    }

    #[test]
    fn missing_secret_in_a_file_is_an_error_naming_the_variable() {
        let f = write("[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets_env = \"ACME_SECRET\"\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ACME_SECRET"), "{err}");
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
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CREDENTIALS_DIRECTORY"), "{err}");
    }

    #[test]
    fn none_scheme_needs_insecure() {
        let f = write("[[sources]]\nname = \"dev\"\nplatform = \"simple\"\nscheme = \"none\"\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("insecure = true"), "{err}");
        let f = write("[[sources]]\nname = \"dev\"\nplatform = \"simple\"\nscheme = \"none\"\ninsecure = true\n");
        let loaded = load_from(Some(f.path()), &env(&[])).unwrap();
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
        let err = load_from(Some(f.path()), &env(&[("STOCKHOOK_RECEIVER_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("STOCKHOOK_RECEIVER_LISTN") && err.contains("STOCKHOOK_RECEIVER_LISTEN"),
            "{err}"
        );
        let err = load_from(
            Some(f.path()),
            &env(&[("STOCKHOOK_RECEIVER_MAX_BODY_BYTES", "lots")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("whole number"), "{err}");
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
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.nats_url"), "{err}");
        let f = write("[queue]\nbackend = \"kafka\"\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"sled\", \"nats\""), "{err}");
        let f = write("[queue]\nbackend = \"nats\"\nnats_url = \"http://x:4222\"\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a NATS URL"), "{err}");
        let f = write(
            "[queue]\nbackend = \"nats\"\nnats_url = [\"nats://a:4222\", \"nats://b:4222\"]\nnats_replicas = 3\n",
        );
        let c = load_from(Some(f.path()), &env(&[])).unwrap().config;
        assert_eq!(
            c.queue.nats_url.as_ref().unwrap().names(),
            vec!["nats://a:4222", "nats://b:4222"]
        );
        assert_eq!(c.queue.nats_replicas, 3);
        let err = load_from(
            Some(f.path()),
            &env(&[("STOCKHOOK_QUEUE_NATS_REPLICAS", "7")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("nats_replicas"), "{err}");
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
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.nats_credentials"), "{err}");
        let f = write("[queue]\nbackend = \"nats\"\nnats_url = \"nats://a:1\"\nnats_nkey_seed_file = \"/nonexistent.nk\"\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("queue.nats_nkey_seed_file"), "{err}");
        let seed = write("SUAEXAMPLE\n");
        let creds = write("jwt and seed\n");
        let f = write(&format!(
            "[queue]\nbackend = \"nats\"\nnats_url = \"nats://a:1\"\nnats_credentials = {:?}\nnats_nkey_seed_file = {:?}\n",
            creds.path(),
            seed.path()
        ));
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
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
            let err = load_from(Some(f.path()), &env(&[]))
                .unwrap_err()
                .to_string();
            let file = f.path().display().to_string();
            assert!(err.starts_with(&format!("{file}{line}")), "{err}");
            assert!(err.contains(key), "{err}");
            assert!(err.contains(valid), "{err}");
        }
        // A syntax error has no key to name, and still names the place.
        let f = write("[alerts\n");
        let err = load_from(Some(f.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(":1:"), "{err}");
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
        let unset = load_from(Some(f.path()), &env(&[])).unwrap();
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
        let e = load_from(Some(wrong.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shopify_sync") && e.contains("platform = \"shopify\""),
            "{e}"
        );
        let bad = write(&text.replace(
            "access_token_env",
            "api_version = \"26-10\"\naccess_token_env",
        ));
        let e = load_from(Some(bad.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("YYYY-MM"), "{e}");
    }

    #[test]
    fn check_config_output_masks_secrets() {
        let f = write("[[sources]]\nname = \"acme\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets = [\"super-secret-value-123\"]\n[email]\nsmtp_url = \"smtps://u:hunter2@mail:465\"\n");
        let loaded = load_from(Some(f.path()), &env(&[])).unwrap();
        let shown = loaded.to_string();
        assert!(!shown.contains("super-secret-value-123"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("acme"));
        assert!(shown.contains("redacted"));
    }
}
