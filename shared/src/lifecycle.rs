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
