//! What both long-running processes do the same way around their main loop: wait for SIGTERM or
//! SIGINT, listen for SIGHUP (reload), and ping systemd's watchdog while they live.

use crate::sdnotify;
use tokio::sync::watch;

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; only Ctrl-C will stop the process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The SIGHUP stream that asks for a config reload. Install it before announcing readiness:
/// until it exists, a SIGHUP's default action ends the process.
pub fn reload_signals() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// The keys among `checks` (key, whether the new config's value differs) that changed: what a
/// reload names as needing a restart.
pub fn changed_keys(checks: &[(&'static str, bool)]) -> Vec<&'static str> {
    checks
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(key, _)| *key)
        .collect()
}

/// Runs `reload` on every SIGHUP until `stop`, the same way in both processes: tells systemd
/// (`RELOADING=1`, then `READY=1`, so `systemctl reload` returns once it is done), and logs one
/// line: `SIGHUP: <what> reloaded` with `reload`'s summary (and a warning naming the keys that
/// need a restart), or `SIGHUP: new config refused` with the error (the old config stays).
pub async fn reload_on_sighup<F>(
    mut hup: tokio::signal::unix::Signal,
    config_path: Option<std::path::PathBuf>,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    mut reload: F,
) where
    F: FnMut() -> Result<(String, Vec<&'static str>), String>,
{
    let shown = config_path.as_ref().map_or_else(
        || "<default search path>".to_string(),
        |p| p.display().to_string(),
    );
    loop {
        tokio::select! {
            s = hup.recv() => if s.is_none() { return },
            _ = stop.changed() => return,
        }
        let _ = sdnotify::reloading();
        match reload() {
            Ok((summary, need_restart)) => {
                tracing::info!(config = %shown, %summary, "SIGHUP: {what} reloaded");
                if !need_restart.is_empty() {
                    tracing::warn!(keys = ?need_restart, "SIGHUP: these keys changed but keep their running value until a restart");
                }
            }
            Err(error) => {
                tracing::error!(config = %shown, %error, "SIGHUP: new config refused; the old one stays in force")
            }
        }
        let _ = sdnotify::ready();
    }
}

/// Sends WATCHDOG=1 every half `WatchdogSec` until `stop` turns true; nothing when systemd asked
/// for no watchdog.
pub async fn watchdog_pings(mut stop: watch::Receiver<bool>) {
    let Some(every) = sdnotify::watchdog_interval() else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => { let _ = sdnotify::watchdog(); }
            _ = stop.changed() => return,
        }
    }
}
