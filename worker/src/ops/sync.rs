//! `sync` and `connect`: the commands that reach a platform's API for a source (a catalog sync
//! on demand, registering the webhooks).

use super::{control, OpsError};
use crate::control::Control;
use crate::state::StateError;
use stockhook_shared::config::Config;

/// `sync`: a catalog sync of one source (or all with an API) now. Through the running worker
/// when there is one (it holds the state and the credentials), else on the state directly.
/// Fails (exit 1) when any source's sync failed, after printing every report.
pub async fn sync(
    config: &Config,
    source: Option<String>,
    dry_run: bool,
    as_json: bool,
) -> Result<String, OpsError> {
    use crate::sync::runner::sync_all;
    stockhook_shared::durable::create_dir_all(&config.data_dir).map_err(|e| {
        OpsError::Failed(anyhow::anyhow!(
            "creating data_dir {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let c = control(config).await?;
    let reports = match &c {
        Control::Remote(..) => c.sync(source, dry_run).await.map_err(|e| match e {
            StateError::Storage { message, .. } => OpsError::Failed(anyhow::anyhow!(message)),
            other => OpsError::Failed(other.into()),
        })?,
        Control::Local(store, rules) => {
            sync_all(config, &**store, rules.clone(), source.as_deref(), dry_run)
                .await
                .map_err(|m| OpsError::Failed(anyhow::anyhow!(m)))?
        }
        Control::Nats(store, rules) => {
            sync_all(config, &**store, rules.clone(), source.as_deref(), dry_run)
                .await
                .map_err(|m| OpsError::Failed(anyhow::anyhow!(m)))?
        }
    };
    let text = if as_json {
        serde_json::to_string_pretty(&reports).map_err(anyhow::Error::from)? + "\n"
    } else {
        reports.iter().map(|r| r.line()).collect()
    };
    if let Some(failed) = reports.iter().find(|r| !r.ok) {
        print!("{text}");
        return Err(OpsError::Failed(anyhow::anyhow!(
            "the sync of {} failed{}",
            failed.source,
            if failed.unauthorized {
                ": credentials refused, nothing in state was changed or deleted"
            } else {
                ""
            }
        )));
    }
    Ok(text)
}

/// `connect`: the Shopify webhook subscriptions of `source` at `url` (created unless `check`
/// or `dry_run`). `check` fails (exit 1) when a topic is missing.
pub async fn connect(
    config: &Config,
    source: &str,
    url: Option<&str>,
    check: bool,
    dry_run: bool,
    as_json: bool,
) -> Result<String, OpsError> {
    use crate::sync::connect;
    use stockhook_shared::config::SourceApi;
    let s = config
        .sources
        .iter()
        .find(|s| s.name == source)
        .ok_or_else(|| OpsError::Usage(format!("no source named {source} in the config")))?;
    let Some(SourceApi::Shopify(api_cfg)) = s.api() else {
        return Err(OpsError::Usage(format!(
            "source {source} has no [sources.shopify_sync] table (shop_domain and an access token): connect registers Shopify webhooks only"
        )));
    };
    if url.is_none() && !check {
        return Err(OpsError::Usage(format!(
            "--url https://<your host>/webhooks/{source} is needed (or --check to list what is registered)"
        )));
    }
    if let Some(u) = url {
        let path = format!("/webhooks/{source}");
        if !u.starts_with("https://") || !u.ends_with(&path) {
            return Err(OpsError::Usage(format!(
                "--url must be the public HTTPS address of this source, ending in {path} (Shopify delivers to HTTPS only), e.g. https://hooks.example.com{path}"
            )));
        }
    }
    let api = crate::sync::ApiClient::new().map_err(|e| OpsError::Failed(e.into()))?;
    let states = connect::connect(api_cfg, &api, url, check, dry_run)
        .await
        .map_err(|e| OpsError::Failed(e.into()))?;
    let text = if as_json {
        serde_json::to_string_pretty(&states).map_err(anyhow::Error::from)? + "\n"
    } else {
        connect::render(&states)
    };
    let missing = states.iter().filter(|s| s.status == "missing").count();
    if check && missing > 0 {
        print!("{text}");
        return Err(OpsError::Failed(anyhow::anyhow!(
            "{missing} of {} topics are not registered{}: run `stockhook-worker connect --source {source} --url URL`",
            states.len(),
            url.map(|u| format!(" at {u}")).unwrap_or_default()
        )));
    }
    Ok(text)
}
