//! `stockhook-receiver sign`: prints the headers, and a curl line, that make a valid request for a
//! configured source, signed the way its platform signs. The operator's way to test a setup end to
//! end without the platform.

use std::fmt::Write as _;
use std::path::Path;
use stockhook_shared::config::{Config, Platform};

#[derive(Debug)]
pub enum SignError {
    /// Bad arguments or config (exit 2).
    Usage(String),
    /// Could not read the body (exit 1).
    Io(anyhow::Error),
}

pub fn run(
    config: &Config,
    source: &str,
    file: &Path,
    topic: Option<&str>,
) -> Result<String, SignError> {
    let Some(src) = config.sources.iter().find(|s| s.name == source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(SignError::Usage(format!(
            "no source {source:?} in the config; configured: {}",
            names.join(", ")
        )));
    };
    if let Some(why) = &src.disabled {
        return Err(SignError::Usage(format!(
            "source {source} is disabled: {why}"
        )));
    }
    let body = std::fs::read(file)
        .map_err(|e| SignError::Io(anyhow::anyhow!("cannot read {}: {e}", file.display())))?;
    let verifier = crate::schemes::build(src, None).map_err(SignError::Usage)?;
    let now = crate::routes::system_clock();
    let delivery = format!("sign-{}-{}", now, std::process::id());
    let mut headers = verifier.sign(&body, now, &delivery);
    if headers.is_empty() && src.scheme != stockhook_shared::config::SchemeKind::None {
        return Err(SignError::Usage(format!(
            "scheme {} cannot be signed here (it needs the platform's private key); send a real notification instead",
            src.scheme
        )));
    }
    if let Some(t) = topic {
        let name = match src.platform {
            Platform::Shopify => "X-Shopify-Topic",
            _ => "X-Stockhook-Topic",
        };
        headers.push((name.to_string(), t.to_string()));
    }
    headers.push(("Content-Type".into(), "application/json".into()));
    let url = format!("http://{}/webhooks/{}", config.receiver.listen, src.name);
    let mut out = String::new();
    for (k, v) in &headers {
        let _ = writeln!(out, "{k}: {v}");
    }
    let _ = writeln!(out);
    let mut curl = format!("curl -sS -X POST {url}");
    for (k, v) in &headers {
        let _ = write!(curl, " -H '{k}: {v}'");
    }
    let _ = write!(curl, " --data-binary @{}", file.display());
    let _ = writeln!(out, "{curl}");
    Ok(out)
}
