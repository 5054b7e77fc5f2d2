//! SIGHUP: the worker takes a changed config's alert rules (thresholds, per-SKU and per-source
//! overrides, recipients, no-sales days, digest window) and its catalog sync schedule (`[sync]
//! interval`, sources with API credentials) without a restart.
//!
//! Why: `systemctl reload` after editing a threshold or a recipient must not stop the drain
//! loop, lose a leased batch or interrupt an email being sent. The rules live in a [`RulesSlot`];
//! each batch (and each no-sales run, each replay) takes the rules current when it starts, so a
//! batch is evaluated under one config from start to end.
//!
//! Invariant: a reload is all or nothing. An invalid file is logged and changes nothing. Keys the
//! running worker cannot take (data_dir, the queue backend, the email transport, batch size,
//! metrics_listen) are named in a warning and keep their value until a restart.

use crate::state::RuleConfig;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use stockhook_shared::config::{self, Config};
use stockhook_shared::lifecycle;
use tokio::sync::watch;

/// The rules in force, swapped whole by a reload.
pub struct RulesSlot(RwLock<Arc<RuleConfig>>);

impl RulesSlot {
    pub fn new(rules: RuleConfig) -> RulesSlot {
        RulesSlot(RwLock::new(Arc::new(rules)))
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<RuleConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn replace(&self, rules: RuleConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(rules);
    }
}

/// Loads `path` again and puts its rules in force; returns the keys that changed but need a
/// restart. On error nothing changes.
pub fn reload(
    path: Option<&std::path::Path>,
    running: &mut Config,
    slot: &RulesSlot,
) -> Result<Vec<&'static str>, config::ConfigError> {
    let new = config::load_for_worker(path)?.config;
    let (old_mail, new_mail) = (&running.email, &new.email);
    let smtp_url = |e: &config::EmailConfig| e.smtp_url.as_ref().map(|s| s.expose().to_string());
    let need_restart = lifecycle::changed_keys(&[
        ("data_dir", running.data_dir != new.data_dir),
        ("queue", running.queue.backend != new.queue.backend),
        (
            "email (transport)",
            old_mail.from != new_mail.from
                || old_mail.smtp_url_env != new_mail.smtp_url_env
                || smtp_url(old_mail) != smtp_url(new_mail),
        ),
        (
            "worker.batch_size",
            running.worker.batch_size != new.worker.batch_size,
        ),
        (
            "worker.metrics_listen",
            running.worker.metrics_listen != new.worker.metrics_listen,
        ),
    ]);
    slot.replace(RuleConfig::from_config(&new));
    *running = new;
    Ok(need_restart)
}

/// Reloads on every SIGHUP until `stop` ([`lifecycle::reload_on_sighup`]).
pub async fn on_sighup(
    hup: tokio::signal::unix::Signal,
    slot: Arc<RulesSlot>,
    path: Option<PathBuf>,
    mut running: Config,
    configs: watch::Sender<Arc<Config>>,
    stop: watch::Receiver<bool>,
) {
    let shown = path.clone();
    lifecycle::reload_on_sighup(hup, shown, stop, "alert rules", move || {
        let need_restart =
            reload(path.as_deref(), &mut running, &slot).map_err(|e| e.to_string())?;
        // The catalog sync schedule follows (`crate::sync::runner::schedule`).
        configs.send_replace(Arc::new(running.clone()));
        Ok((
            "thresholds, recipients and the sync schedule".to_string(),
            need_restart,
        ))
    })
    .await
}
