//! Every secret the config names, resolved once at load: by value, from an environment variable
//! (`*_env`) or from a file (`*_file`, `${CREDENTIALS_DIRECTORY}` expanded). [`resolve_secret`]
//! is the one resolver every such triple goes through (sources, their platform APIs, the
//! dashboard's users, the SMTP URL, the channels), so they all read the same way. Errors name
//! the variable or the file, never the value.

use super::EnvSource;
use crate::config::{DashboardUser, EmailConfig, ShopifyApiConfig, SourceConfig};
use crate::secret::Secret;
use std::path::{Path, PathBuf};

/// Why a secret that was named could not be had. Callers branch on it: a missing variable may
/// be an error (the dashboard) or only switch a feature off (catalog sync).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SecretError {
    /// The `*_env` variable is unset or empty (and there is no `*_file` to fall back on).
    #[error("environment variable {0} is not set")]
    Unset(String),
    /// The `*_file` holds no secret line.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
    /// The `*_file` cannot be read, or names an unset `$CREDENTIALS_DIRECTORY`.
    #[error("{0}")]
    Unreadable(String),
}

/// One secret from its three ways in: the value, else the variable `var`, else the first secret
/// line of `file`; `Ok(None)` when none of them is given. Surrounding whitespace is never part of
/// a secret from the environment (a file's lines are trimmed the same way).
pub(crate) fn resolve_secret(
    value: Option<&Secret>,
    var: Option<&str>,
    file: Option<&Path>,
    env: &dyn EnvSource,
) -> Result<Option<Secret>, SecretError> {
    if let Some(v) = value {
        return Ok(Some(v.clone()));
    }
    if let Some(var) = var {
        if let Some(v) = env.var(var).filter(|v| !v.trim().is_empty()) {
            return Ok(Some(Secret::new(v.trim())));
        }
        if file.is_none() {
            return Err(SecretError::Unset(var.to_string()));
        }
    }
    let Some(p) = file else {
        return Ok(None);
    };
    let path = expand_credentials_dir(p, env).map_err(SecretError::Unreadable)?;
    match read_secret_file(&path)
        .map_err(SecretError::Unreadable)?
        .into_iter()
        .next()
    {
        Some(s) => Ok(Some(s)),
        None => Err(SecretError::Empty(p.to_path_buf())),
    }
}

/// Replaces `${CREDENTIALS_DIRECTORY}` (systemd's `LoadCredential=`) in a secret file's path.
pub(super) fn expand_credentials_dir(path: &Path, env: &dyn EnvSource) -> Result<PathBuf, String> {
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

/// A webhook source's secrets: `secrets`, plus every set variable of `secrets_env`, plus every
/// line of `secrets_file`; then the eBay keys whose `*_env` wins over the value. `Err` is why the
/// secrets file cannot be read.
pub(super) fn resolve_source(s: &mut SourceConfig, env: &dyn EnvSource) -> Result<(), String> {
    let from_env = |var: Option<&str>| resolve_secret(None, var, None, env).ok().flatten();
    if let Some(names) = &s.secrets_env {
        s.secrets
            .extend(names.names().into_iter().filter_map(|v| from_env(Some(v))));
    }
    if let Some(p) = &s.secrets_file {
        let path = expand_credentials_dir(p, env)?;
        s.secrets.append(&mut read_secret_file(&path)?);
    }
    if let Some(v) = from_env(s.verification_token_env.as_deref()) {
        s.verification_token = Some(v);
    }
    if let Some(v) = from_env(s.cert_id_env.as_deref()) {
        s.cert_id = Some(v);
    }
    if let Some(v) = from_env(s.client_secret_env.as_deref()) {
        s.client_secret = Some(v);
    }
    Ok(())
}

/// `smtp_url_env`, when given, wins over `smtp_url` (it overrides the file's value).
pub(super) fn resolve_smtp_url(email: &mut EmailConfig, env: &dyn EnvSource) -> Result<(), String> {
    match resolve_secret(None, email.smtp_url_env.as_deref(), None, env) {
        Ok(Some(url)) => email.smtp_url = Some(url),
        Ok(None) => {}
        Err(e) => {
            return Err(format!(
                "{e}: export it, or remove smtp_url_env to write emails as files"
            ))
        }
    }
    Ok(())
}

/// A dashboard user's token (exactly one of the three ways was given); `Err` names the key.
pub(super) fn resolve_user_token(
    u: &mut DashboardUser,
    env: &dyn EnvSource,
) -> Result<(), (&'static str, String)> {
    match resolve_secret(
        u.token.as_ref(),
        u.token_env.as_deref(),
        u.token_file.as_deref(),
        env,
    ) {
        Ok(t) => u.token = t,
        Err(e @ SecretError::Unset(_)) => return Err(("token_env", e.to_string())),
        Err(e) => return Err(("token_file", e.to_string())),
    }
    Ok(())
}

/// A Shopify source's Admin API token. One that is not there is a notice, not an error:
/// webhooks still work, and the sync of that source says what is missing.
pub(super) fn resolve_shopify_token(
    source: &str,
    api: &mut ShopifyApiConfig,
    env: &dyn EnvSource,
    notices: &mut Vec<String>,
) {
    let why = match resolve_secret(
        api.access_token.as_ref(),
        api.access_token_env.as_deref(),
        api.access_token_file.as_deref(),
        env,
    ) {
        Ok(Some(token)) => {
            api.access_token = Some(token);
            return;
        }
        Err(SecretError::Empty(p)) => format!("access_token_file {} is empty", p.display()),
        Err(SecretError::Unreadable(m)) => m,
        Ok(None) | Err(SecretError::Unset(_)) => format!(
            "no Shopify access token (access_token, access_token_env{}, access_token_file)",
            api.access_token_env
                .as_deref()
                .map(|v| format!(" {v} is not set"))
                .unwrap_or_default()
        ),
    };
    notices.push(format!("source {source}: {why}; its catalog sync is off"));
}

/// One sync secret. A secret that is not there is `None` (the sync says what is missing); `Err`
/// is a file that cannot be read.
fn sync_secret(
    value: Option<&Secret>,
    var: Option<&str>,
    file: Option<&Path>,
    env: &dyn EnvSource,
) -> Result<Option<Secret>, String> {
    match resolve_secret(value, var, file, env) {
        Ok(v) => Ok(v),
        Err(SecretError::Unset(_) | SecretError::Empty(_)) => Ok(None),
        Err(SecretError::Unreadable(m)) => Err(m),
    }
}

/// One secret field of a sync table with the variable and file it may come from.
type Slot<'a> = (&'a mut Option<Secret>, Option<&'a str>, Option<&'a Path>);

/// The [`Slot`] of a secret field and its `_env` and `_file` fields.
fn slot<'a>(
    value: &'a mut Option<Secret>,
    var: &'a Option<String>,
    file: &'a Option<PathBuf>,
) -> Slot<'a> {
    (value, var.as_deref(), file.as_deref())
}

/// Resolves a sync table's secrets in place; the first that cannot be read goes to `problem`
/// instead, and then none is changed.
fn resolve_slots(slots: [Slot<'_>; 2], problem: &mut Option<String>, env: &dyn EnvSource) {
    let read: Result<Vec<_>, String> = slots
        .iter()
        .map(|(value, var, file)| sync_secret(value.as_ref(), *var, *file, env))
        .collect();
    match read {
        Ok(values) => {
            for ((slot, ..), value) in slots.into_iter().zip(values) {
                *slot = value;
            }
        }
        Err(m) => *problem = Some(m),
    }
}

/// Resolves `[sources.amazon_sync]` and `[sources.ebay_sync]` secrets (issue 14). A secret
/// that cannot be read is recorded in the section's `problem`, which the sync reports: the
/// webhook source itself works without them.
pub(super) fn resolve_sync_secrets(s: &mut SourceConfig, env: &dyn EnvSource) {
    if let Some(a) = &mut s.amazon_sync {
        let secret = slot(
            &mut a.lwa_client_secret,
            &a.lwa_client_secret_env,
            &a.lwa_client_secret_file,
        );
        let token = slot(
            &mut a.refresh_token,
            &a.refresh_token_env,
            &a.refresh_token_file,
        );
        resolve_slots([secret, token], &mut a.problem, env);
    }
    if let Some(e) = &mut s.ebay_sync {
        let secret = slot(
            &mut e.client_secret,
            &e.client_secret_env,
            &e.client_secret_file,
        );
        let token = slot(
            &mut e.refresh_token,
            &e.refresh_token_env,
            &e.refresh_token_file,
        );
        resolve_slots([secret, token], &mut e.problem, env);
        if e.problem.is_none() && e.client_secret.is_none() {
            // The source's own Cert ID (`client_secret_env`) is the default.
            e.client_secret = s.client_secret.clone().or_else(|| {
                sync_secret(None, s.client_secret_env.as_deref(), None, env)
                    .ok()
                    .flatten()
            });
        }
        if e.client_id.is_none() {
            e.client_id = s.client_id.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn value_then_variable_then_file_and_errors_name_never_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::File::create(&file)
            .unwrap()
            .write_all(b"# comment\n\n  from-file-value  \nsecond\n")
            .unwrap();
        let e = env(&[("TOKEN", " from-env-value\n"), ("BLANK", "  ")]);
        let v = Secret::new("by-value");
        let got = |value, var, file: Option<&Path>| {
            resolve_secret(value, var, file, &e).map(|s| s.map(|s| s.expose().to_string()))
        };
        assert_eq!(
            got(Some(&v), Some("TOKEN"), Some(&file)),
            Ok(Some("by-value".into()))
        );
        assert_eq!(
            got(None, Some("TOKEN"), Some(&file)),
            Ok(Some("from-env-value".into()))
        );
        // An unset or blank variable falls back on the file, or is an error naming it.
        assert_eq!(
            got(None, Some("BLANK"), Some(&file)),
            Ok(Some("from-file-value".into()))
        );
        assert_eq!(
            got(None, Some("BLANK"), None),
            Err(SecretError::Unset("BLANK".into()))
        );
        assert_eq!(got(None, None, None), Ok(None));

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n# only a comment\n").unwrap();
        assert_eq!(
            got(None, None, Some(&empty)),
            Err(SecretError::Empty(empty.clone()))
        );
        let missing = dir.path().join("missing");
        let Err(SecretError::Unreadable(m)) = got(None, None, Some(&missing)) else {
            panic!("a missing file is unreadable");
        };
        assert!(m.contains(&missing.display().to_string()), "{m}");

        let creds = Path::new("${CREDENTIALS_DIRECTORY}/token");
        let Err(SecretError::Unreadable(m)) = got(None, None, Some(creds)) else {
            panic!("an unset $CREDENTIALS_DIRECTORY is an error");
        };
        assert!(m.contains("LoadCredential"), "{m}");
        let with_dir = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        let r = resolve_secret(None, None, Some(creds), &with_dir).unwrap();
        assert_eq!(r.unwrap().expose(), "from-file-value");
    }
}
