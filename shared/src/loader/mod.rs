//! Finding, reading, overriding and validating the config file.
//!
//! Order of precedence, lowest first: built-in defaults, the file, the original Flask notes'
//! variables (`LOW_STOCK_THRESHOLD`, `EMAIL_SENDER`, ...), then `STOCKHOOK_<SECTION>_<KEY>`.
//! Secrets referenced by `*_env` and `*_file` are resolved here, once (`secrets.rs`), so nothing
//! downstream reads the environment. Every error names the key, where it came from (file and line, or variable),
//! and what would be valid; the binaries print it and exit 2 before binding anything.

mod env;
mod locate;
pub(crate) mod secrets;
#[cfg(test)]
mod tests;
mod validate;

pub use env::{percent_encode_userinfo, EnvSource, ProcessEnv};

use crate::config::{Backend, Config};
use env::{apply_legacy_env, apply_stockhook_env};
use locate::{find_source_line, key_at, line_col, readable_type_error};
use std::fmt;
use std::path::{Path, PathBuf};
use validate::{parse_backend, validate};

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

impl fmt::Display for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => writeln!(f, "# config: {}", p.display())?,
            None => writeln!(f, "# config: built-in defaults (no file)")?,
        }
        f.write_str(&self.config.render_masked())
    }
}
