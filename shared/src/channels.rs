//! Alert channels beyond email (`[[channels]]`) and the routes that pick them, as the config
//! file spells them, and their validation.
//!
//! Why a file of its own: the worker sends alerts to Slack incoming webhooks and to the
//! operator's own Standard-Webhooks endpoints as well as by email; which alert goes where is
//! configuration (by rule, by source). This module owns the schema of that configuration and
//! checks it once at load: every route names `"email"` or a configured channel, every rule
//! named exists, each channel has what its kind needs. Secrets (`url`, `secret`) are resolved
//! here from `*_env` / `*_file`; a channel whose secret is missing is marked `disabled` with the
//! reason (the ops CLI still works), and the worker refuses to run with it.

use crate::config::Config;
use crate::loader::secrets::resolve_secret;
use crate::loader::EnvSource;
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The built-in channel: the alert email (`[email]`).
pub const EMAIL: &str = "email";

/// The rule names a route may use (the worker's `Rule::as_str`).
pub const RULES: &[&str] = &[
    "low_stock",
    "out_of_stock",
    "no_sales",
    "combined_low_stock",
    "cover",
];

/// One `[[channels]]` block.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// What routes call it: letters, digits, '-', '_', '.'; not "email".
    pub name: String,
    pub kind: ChannelKind,
    /// Where to POST: Slack's incoming-webhook URL (a secret: whoever has it can post), or the
    /// operator's endpoint. By value, or from `url_env` / `url_file`.
    #[serde(default)]
    pub url: Option<Secret>,
    #[serde(default)]
    pub url_env: Option<String>,
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// `webhook`: the Standard Webhooks signing secret, `whsec_<base64>`. By value, or from
    /// `secret_env` / `secret_file`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Set at load: why this channel cannot send (its URL or secret is unset), or `None`.
    #[serde(skip_deserializing)]
    pub disabled: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// A Slack incoming webhook: `{"text": ...}`, answered `ok`.
    Slack,
    /// A JSON POST signed with Standard Webhooks (`webhook-id`, `-timestamp`, `-signature`).
    Webhook,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Slack => "slack",
            ChannelKind::Webhook => "webhook",
        }
    }
}

/// The error the loader turns into `ConfigError::Invalid`: which key, and what is wrong.
pub struct Invalid {
    pub key: String,
    pub message: String,
}

fn invalid(key: String, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

/// Checks `[[channels]]` and every route, and resolves the channels' secrets. Returns notices
/// (a channel disabled for a missing secret).
pub fn validate(config: &mut Config, env: &dyn EnvSource) -> Result<Vec<String>, Invalid> {
    let mut notices = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, c) in config.channels.iter_mut().enumerate() {
        let key = |k: &str| format!("channels[{i}].{k} (channel \"{}\")", c.name);
        let ok_name = !c.name.is_empty()
            && c.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !ok_name || c.name == EMAIL {
            return Err(invalid(
                key("name"),
                "use letters, digits, '-', '_' or '.', and not \"email\" (the built-in channel), e.g. \"ops-slack\"",
            ));
        }
        if !names.insert(c.name.clone()) {
            return Err(invalid(key("name"), "two channels have this name"));
        }
        match resolve(&c.url, &c.url_env, &c.url_file, env) {
            Ok(Some(url)) => {
                let u = url.expose().trim();
                if !(u.starts_with("https://") || u.starts_with("http://")) {
                    return Err(invalid(
                        key("url"),
                        "must be an http:// or https:// URL, e.g. https://hooks.slack.com/services/T000/B000/XXXX",
                    ));
                }
                c.url = Some(Secret::new(u));
            }
            Ok(None) => {
                c.disabled = Some(format!(
                    "channel {} has no URL: set url, url_env or url_file",
                    c.name
                ))
            }
            Err(m) => c.disabled = Some(format!("channel {}: {m}", c.name)),
        }
        if c.kind == ChannelKind::Webhook {
            match resolve(&c.secret, &c.secret_env, &c.secret_file, env) {
                Ok(Some(s)) => c.secret = Some(s),
                Ok(None) => {
                    c.disabled.get_or_insert(format!(
                        "channel {} (webhook) has no signing secret: set secret, secret_env or secret_file (whsec_<base64>)",
                        c.name
                    ));
                }
                Err(m) => {
                    c.disabled.get_or_insert(format!("channel {}: {m}", c.name));
                }
            }
        } else if c.secret.is_some() || c.secret_env.is_some() || c.secret_file.is_some() {
            return Err(invalid(
                key("secret"),
                "a slack channel has no signing secret (the URL is the secret); remove it",
            ));
        }
        if let Some(why) = &c.disabled {
            notices.push(format!("{why}; alerts routed to it will not be sent"));
        }
    }
    let known = |n: &str| n == EMAIL || names.contains(n);
    let check_list = |key: String, list: &[String]| -> Result<(), Invalid> {
        if list.is_empty() {
            return Err(invalid(
                key,
                "an empty route would send these alerts nowhere; name at least one channel, e.g. [\"email\"]",
            ));
        }
        for n in list {
            if !known(n) {
                let mut valid: Vec<&str> = vec![EMAIL];
                valid.extend(names.iter().map(String::as_str));
                valid.sort();
                return Err(invalid(
                    key,
                    format!(
                        "no channel is named {n:?}; valid: {valid:?} (add a [[channels]] block)"
                    ),
                ));
            }
        }
        Ok(())
    };
    let check_routes = |prefix: &str,
                        routes: &std::collections::BTreeMap<String, Vec<String>>|
     -> Result<(), Invalid> {
        for (rule, list) in routes {
            if !RULES.contains(&rule.as_str()) {
                return Err(invalid(
                    format!("{prefix}routes.{rule}"),
                    format!("no rule is named {rule:?}; valid: {RULES:?}"),
                ));
            }
            check_list(format!("{prefix}routes.{rule}"), list)?;
        }
        Ok(())
    };
    if let Some(list) = &config.alerts.channels {
        check_list("alerts.channels".into(), list)?;
    }
    check_routes("alerts.", &config.alerts.routes)?;
    for (i, s) in config.sources.iter().enumerate() {
        let prefix = format!("sources[{i}] (source \"{}\").", s.name);
        if let Some(list) = &s.channels {
            check_list(format!("{prefix}channels"), list)?;
        }
        check_routes(&prefix, &s.routes)?;
    }
    Ok(notices)
}

/// A channel's secret through the loader's one resolver; a blank value counts as not given.
fn resolve(
    value: &Option<Secret>,
    var: &Option<String>,
    file: &Option<PathBuf>,
    env: &dyn EnvSource,
) -> Result<Option<Secret>, String> {
    let value = value.as_ref().filter(|v| !v.expose().trim().is_empty());
    resolve_secret(value, var.as_deref(), file.as_deref(), env).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::loader::load_from;
    use std::io::Write as _;

    const SOURCE: &str = "[[sources]]\nname = \"shop\"\nplatform = \"shopify\"\nscheme = \"shopify-hmac\"\nsecrets = [\"s3cret-0123456789\"]\n";

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        load_from(Some(f.path()), &env)
            .map(|l| l.config)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn channels_resolve_their_secrets_and_routes_name_them() {
        let c = load(
            &format!(
                "[alerts]\nchannels = [\"email\", \"erp\"]\n[alerts.routes]\nout_of_stock = [\"ops\"]\n{SOURCE}channels = [\"ops\"]\n\
                 [[channels]]\nname = \"ops\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n\
                 [[channels]]\nname = \"erp\"\nkind = \"webhook\"\nurl = \"https://erp.example.com/h\"\nsecret_env = \"ERP_SECRET\"\n"
            ),
            &[
                ("SLACK_URL", " https://hooks.slack.com/services/T/B/x "),
                ("ERP_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ],
        )
        .unwrap();
        assert_eq!(
            c.channels[0].url.as_ref().map(|u| u.expose()),
            Some("https://hooks.slack.com/services/T/B/x")
        );
        assert!(c.channels.iter().all(|ch| ch.disabled.is_none()));
        assert!(c.channels[1].secret.is_some());
    }

    #[test]
    fn a_missing_secret_disables_the_channel_and_says_which_variable() {
        let c = load(
            &format!(
                "{SOURCE}[[channels]]\nname = \"ops\"\nkind = \"slack\"\nurl_env = \"SLACK_URL\"\n"
            ),
            &[],
        )
        .unwrap();
        let why = c.channels[0].disabled.clone().unwrap_or_default();
        assert!(why.contains("SLACK_URL") && why.contains("ops"), "{why}");
    }

    #[test]
    fn bad_channels_and_routes_are_refused_naming_the_key() {
        let cases = [
            (
                "[alerts]\nchannels = [\"slack\"]\n".to_string(),
                "alerts.channels",
                "no channel is named \"slack\"",
            ),
            (
                "[alerts.routes]\nlow_stok = [\"email\"]\n".to_string(),
                "alerts.routes.low_stok",
                "no rule is named",
            ),
            (
                "[alerts.routes]\nno_sales = []\n".to_string(),
                "alerts.routes.no_sales",
                "nowhere",
            ),
            (
                format!("{SOURCE}routes = {{ out_of_stock = [\"pager\"] }}\n"),
                "routes.out_of_stock",
                "\"pager\"",
            ),
            (
                "[[channels]]\nname = \"email\"\nkind = \"slack\"\nurl = \"https://x\"\n".into(),
                "channels[0].name",
                "built-in",
            ),
            (
                "[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"ftp://x\"\n".into(),
                "channels[0].url",
                "http",
            ),
            (
                "[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x\"\nsecret = \"whsec_AA\"\n"
                    .into(),
                "channels[0].secret",
                "slack",
            ),
            (
                "[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://x\"\n[[channels]]\nname = \"a\"\nkind = \"slack\"\nurl = \"https://y\"\n".into(),
                "channels[1].name",
                "two channels",
            ),
        ];
        for (text, key, says) in cases {
            let e = load(&text, &[]).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{text}\n-> {e}");
        }
    }
}
