//! The `serve` lifecycle: open the queue, serve its socket, bind HTTP, announce readiness, run
//! until SIGTERM/SIGINT, then shut down in order (stop accepting, finish in-flight requests,
//! drain the committer, flush) and return so the process exits 0.

use crate::routes::{self, AppState};
use crate::server::{self, ConnLimits};
use anyhow::Context as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::Config;
use stockhook_shared::queue::committer::GroupCommitter;
use stockhook_shared::queue::local::LocalQueue;
use stockhook_shared::queue::sled_store::{SledStore, StoreOptions};
use stockhook_shared::queue::{now_ms, server as qserver};
use stockhook_shared::{lifecycle, sdnotify};
use tokio::sync::watch;

/// Queue options from config.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        max_attempts: config.queue.max_attempts,
        retention_ms: config.queue.retention.get().as_millis() as i64,
        dedup_window_ms: config.receiver.dedup_window.get().as_millis() as i64,
        max_queue_bytes: config.receiver.max_queue_bytes,
        min_free_bytes: config.receiver.min_free_bytes,
    }
}

/// Creates `data_dir` (mode 0700 when new: it holds customer payloads).
pub fn ensure_data_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data_dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    Ok(())
}

/// Runs the receiver until a signal. Errors are fatal start-up problems (exit 1).
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let (sources, disabled) = routes::build_sources(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    if sources.is_empty() {
        tracing::warn!("no source is enabled: every webhook will be refused; configure [[sources]] (see deploy/stockhook.toml.example)");
    }
    ensure_data_dir(&config)?;
    let queue_path = config.data_dir.join("queue");
    let store = Arc::new(SledStore::open(&queue_path, store_options(&config))?);
    let (committer, commit_thread) = GroupCommitter::start(store.clone(), 1024, 8192);

    let sock_path = config.data_dir.join("queue.sock");
    let qlistener = qserver::bind(&sock_path)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let qtask = tokio::spawn(qserver::serve(
        qlistener,
        LocalQueue::new(store.clone()),
        stop_rx.clone(),
    ));
    let maint = tokio::spawn(maintenance(store.clone(), stop_rx.clone()));

    let addr: SocketAddr = config.receiver.listen.parse().with_context(|| {
        format!(
            "receiver.listen = {:?} is not an ip:port (e.g. \"127.0.0.1:8080\")",
            config.receiver.listen
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("cannot listen on {addr}: is another process using it? change receiver.listen")
    })?;
    let local = listener.local_addr().context("reading the bound address")?;

    let state = Arc::new(AppState {
        sources,
        disabled,
        sink: committer,
        data_dir: config.data_dir.clone(),
        metrics: Default::default(),
        max_body_bytes: config.receiver.max_body_bytes,
        body_timeout: config.receiver.body_timeout.get(),
        clock: routes::system_clock,
    });
    let limits = ConnLimits {
        max_connections: config.receiver.max_connections,
        header_timeout: config.receiver.header_timeout.get(),
        shutdown_grace: config.receiver.shutdown_grace.get(),
    };
    // The one line scripts and tests wait for.
    println!("ready addr={local}");
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %local, queue = %queue_path.display(), socket = %sock_path.display(), "receiver ready");
    let _ = sdnotify::ready();
    let watchdog = tokio::spawn(lifecycle::watchdog_pings(stop_rx.clone()));

    server::run(
        listener,
        state.clone(),
        limits,
        lifecycle::shutdown_signal(),
    )
    .await;
    let _ = sdnotify::stopping();
    tracing::info!("shutting down: in-flight requests done, draining the queue");
    let _ = stop_tx.send(true);
    let _ = qtask.await;
    let _ = maint.await;
    watchdog.abort();
    // The last sender goes with the state: the commit thread answers what it has, then exits.
    drop(state);
    tokio::task::spawn_blocking(move || commit_thread.join())
        .await
        .ok();
    store.flush_all().context("final flush of the queue")?;
    let _ = std::fs::remove_file(&sock_path);
    tracing::info!("receiver stopped cleanly");
    Ok(())
}

/// Every second: disk usage for the budget check and lease expiry; every minute: retention sweep.
async fn maintenance(store: Arc<SledStore>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        let s = store.clone();
        let sweep = n.is_multiple_of(60);
        let r = tokio::task::spawn_blocking(move || {
            s.refresh_disk_usage();
            s.expire_leases(now_ms());
            if sweep {
                s.sweep(now_ms()).map(Some)
            } else {
                Ok(None)
            }
        })
        .await;
        match r {
            Ok(Ok(Some(purged))) if purged > 0 => {
                tracing::info!(purged, "purged acked events past retention")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "queue maintenance failed"),
            _ => {}
        }
    }
}
