//! The `serve` lifecycle: open the queue, serve its socket, bind HTTP, announce readiness, run
//! until SIGTERM/SIGINT (SIGHUP reloads the config: [`crate::reload`]), then shut down in order
//! (stop accepting, finish in-flight requests, drain the committer, flush) and return so the
//! process exits 0. The HTTP part is written once over any [`EventSink`] ([`serve_on`]); the
//! sled queue here and NATS in [`crate::app_nats`] only open and close their sink. Nothing here
//! exits the process: errors go back to main.
//!
//! With `[receiver] tls_cert` and `tls_key` the receiver serves HTTPS itself (rustls, ring,
//! ALPN http/1.1): both files are loaded and checked before anything is opened or bound, and a
//! problem is a start-up error naming the key, the file and what is wrong.

use crate::reload::{Reloader, SourceTable, SwappableCert};
use crate::routes::{self, AppState, Sources};
use crate::server::{self, ConnLimits};
use anyhow::{bail, Context as _};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stockhook_shared::config::{Backend, Config};
use stockhook_shared::queue::committer::GroupCommitter;
use stockhook_shared::queue::local::LocalQueue;
use stockhook_shared::queue::sled_store::{SledStore, StoreOptions};
use stockhook_shared::queue::{now_ms, server as qserver, EventSink};
use stockhook_shared::{lifecycle, sdnotify};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Queue options from config.
pub fn store_options(config: &Config) -> StoreOptions {
    StoreOptions {
        max_attempts: config.queue.max_attempts,
        retention_ms: config.queue.retention.get().as_millis() as i64,
        dedup_window_ms: config.receiver.dedup_window.get().as_millis() as i64,
        max_queue_bytes: config.receiver.max_queue_bytes,
        min_free_bytes: config.receiver.min_free_bytes,
        segment_log: config.queue.sled_segments,
    }
}

/// Creates `data_dir` (mode 0700 when new: it holds customer payloads).
pub fn ensure_data_dir(config: &Config) -> anyhow::Result<()> {
    let dir = &config.data_dir;
    if !dir.exists() {
        stockhook_shared::durable::create_dir_all(dir)
            .with_context(|| format!("creating data_dir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", dir.display()))?;
    }
    Ok(())
}

/// The TLS acceptor for `[receiver] tls_cert` + `tls_key`, `None` when neither is set (plain
/// HTTP). `${CREDENTIALS_DIRECTORY}` in either path is expanded, as in `secrets_file`. Errors
/// name the key and the file and say what is wrong.
pub fn tls_acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    Ok(tls_acceptor_config(config)?.map(|c| TlsAcceptor::from(Arc::new(c))))
}

/// The rustls config behind [`tls_acceptor`], `None` for plain HTTP; also what a SIGHUP reload
/// builds to check a renewed certificate pair before it takes it.
pub fn tls_acceptor_config(config: &Config) -> anyhow::Result<Option<rustls::ServerConfig>> {
    let r = &config.receiver;
    let (cert, key) = match (&r.tls_cert, &r.tls_key) {
        (None, None) => return Ok(None),
        (Some(_), None) => bail!(
            "receiver.tls_key is not set: receiver.tls_cert is, and HTTPS needs both (tls_key = \
             the PEM private key of the certificate), or unset tls_cert to serve plain HTTP"
        ),
        (None, Some(_)) => bail!(
            "receiver.tls_cert is not set: receiver.tls_key is, and HTTPS needs both (tls_cert = \
             the PEM certificate chain), or unset tls_key to serve plain HTTP"
        ),
        (Some(c), Some(k)) => (
            expand_credentials_dir(c, "receiver.tls_cert")?,
            expand_credentials_dir(k, "receiver.tls_key")?,
        ),
    };
    tls_server_config(&cert, &key).map(Some)
}

/// rustls for `[receiver] tls_cert` + `tls_key` (see [`stockhook_shared::tls::server_config`]).
pub fn tls_server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    stockhook_shared::tls::server_config(cert, key, "receiver")
}

fn expand_credentials_dir(path: &Path, key: &str) -> anyhow::Result<PathBuf> {
    stockhook_shared::tls::expand_credentials_dir(path, key)
}

/// Binds `receiver.metrics_listen` when set (a start-up error if it cannot be bound) and serves
/// `/metrics`, `/healthz` and `/readyz` there until `stop`; the webhook listener then answers
/// those paths 404 (`AppState::serve_ops`).
pub async fn metrics_listener<S: EventSink>(
    config: &Config,
    state: &Arc<AppState<S>>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    use http_body_util::BodyExt as _;
    use stockhook_shared::metrics_http;
    let Some(addr) = &config.receiver.metrics_listen else {
        return Ok(None);
    };
    let listener = metrics_http::bind(addr, "receiver.metrics_listen").await?;
    tracing::info!(addr = %listener.local_addr().context("reading the metrics address")?, "metrics, healthz and readyz on their own listener");
    let state = state.clone();
    let handler = move |path: String| {
        let state = state.clone();
        async move {
            let r = routes::ops(&state, &path).await;
            let status = r.status().as_u16();
            let ctype = if path == "/metrics" {
                metrics_http::PROMETHEUS_TEXT
            } else {
                "application/json"
            };
            let body = match r.into_body().collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(never) => match never {},
            };
            (status, ctype, body)
        }
    };
    Ok(Some(tokio::spawn(metrics_http::serve(
        listener, handler, stop,
    ))))
}

/// What SIGHUP needs while serving: the signal stream (installed before readiness, so a SIGHUP
/// never ends the process) and the [`Reloader`].
pub type Hangup = (tokio::signal::unix::Signal, Reloader);

/// What every backend's receiver needs, built and checked before any queue is opened or any
/// port bound: a bad source or certificate leaves no trace.
pub struct Prepared {
    sources: Sources,
    tls: Option<TlsAcceptor>,
    hangup: Hangup,
}

/// The queue storage failed while serving: sled cannot be trusted after an I/O error, so the
/// receiver stops without waiting for it (main exits 1 and systemd's Restart=on-failure
/// restarts it, which reopens and recovers the database). Everything answered 200 was synced
/// before its answer.
#[derive(Debug, thiserror::Error)]
#[error("queue storage failed ({0}): exiting with status 1 so the receiver restarts and recovers the database; free disk space if it is full")]
pub struct StorageFailed(pub String);

/// Runs the receiver until a signal. Errors are fatal start-up problems, or [`StorageFailed`];
/// main exits 1 on either. `config_path` is the file `config` came from, read again on SIGHUP.
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let sources = routes::build_sources(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Before anything is opened or bound: a bad certificate leaves no trace.
    let (tls, cert) = match tls_acceptor_config(&config)? {
        Some(mut c) => {
            let slot = SwappableCert::install(&mut c);
            (Some(TlsAcceptor::from(Arc::new(c))), Some(slot))
        }
        None => (None, None),
    };
    if sources.0.is_empty() {
        tracing::warn!("no source is enabled: every webhook will be refused; configure [[sources]] (see deploy/stockhook.toml.example)");
    }
    ensure_data_dir(&config)?;
    let hangup: Hangup = (
        lifecycle::reload_signals().context("listening for SIGHUP (config reload)")?,
        Reloader {
            config_path,
            running: config.clone(),
            cert,
        },
    );
    let prepared = Prepared {
        sources,
        tls,
        hangup,
    };
    match config.backend() {
        Backend::Nats => crate::app_nats::serve(config, prepared).await?,
        Backend::Sled => serve_sled(config, prepared).await?,
    }
    tracing::info!("receiver stopped cleanly");
    Ok(())
}

/// The sled queue: the database, its group committer, `queue.sock` and the maintenance task
/// around [`serve_on`].
async fn serve_sled(config: Config, prepared: Prepared) -> anyhow::Result<()> {
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
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<String>();
    let maint = tokio::spawn(maintenance(store.clone(), stop_rx.clone(), failed_tx));
    let failed = async move { failed_rx.await.ok() };
    let queue = format!("{} (socket {})", queue_path.display(), sock_path.display());
    let stopped = serve_on(&config, prepared, committer, &queue, failed, stop_tx).await;
    if let Err(Stopped::StorageFailed(why)) = stopped {
        // Do not wait for sled, nor let its destructor flush: it may never answer again.
        std::mem::forget(store);
        let _ = std::fs::remove_file(&sock_path);
        tracing::error!(error = %why, "queue storage failed: exiting so the receiver restarts and recovers the database; free disk space if it is full");
        return Err(StorageFailed(why).into());
    }
    let serve_result = stopped.map_err(Stopped::into_error);
    let _ = qtask.await;
    let _ = maint.await;
    // The last sender went with the server's state: the commit thread answers what it has, then
    // exits.
    tokio::task::spawn_blocking(move || commit_thread.join())
        .await
        .ok();
    let flushed = store.flush_all().context("final flush of the queue");
    let _ = std::fs::remove_file(&sock_path);
    serve_result?;
    flushed?;
    Ok(())
}

/// How [`serve_on`] ended other than by a signal.
pub enum Stopped {
    /// Before readiness: the listener could not be bound, and so on.
    Start(anyhow::Error),
    /// The sink's storage failed while serving.
    StorageFailed(String),
}

impl Stopped {
    /// As the error `serve` returns.
    pub fn into_error(self) -> anyhow::Error {
        match self {
            Stopped::Start(e) => e,
            Stopped::StorageFailed(why) => StorageFailed(why).into(),
        }
    }
}

/// The receiver's HTTP life on any sink, written once: bind `receiver.listen`, announce
/// readiness, serve until SIGTERM/SIGINT or until `failed` names a storage failure, then stop
/// the tasks of `stop` and return once in-flight requests are answered and the server's state
/// (with `sink`) is dropped. `queue` describes the queue on the ready log line.
pub async fn serve_on<S: EventSink>(
    config: &Config,
    prepared: Prepared,
    sink: S,
    queue: &str,
    failed: impl std::future::Future<Output = Option<String>> + Send + 'static,
    stop_tx: watch::Sender<bool>,
) -> Result<(), Stopped> {
    let Prepared {
        sources,
        tls,
        hangup,
    } = prepared;
    let start = |e: anyhow::Error| Stopped::Start(e);
    let addr: SocketAddr = config
        .receiver
        .listen
        .parse()
        .with_context(|| {
            format!(
                "receiver.listen = {:?} is not an ip:port (e.g. \"127.0.0.1:8080\")",
                config.receiver.listen
            )
        })
        .map_err(start)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| {
            format!("cannot listen on {addr}: is another process using it? change receiver.listen")
        })
        .map_err(start)?;
    let local = listener
        .local_addr()
        .context("reading the bound address")
        .map_err(start)?;
    let stop_rx = stop_tx.subscribe();
    let state = Arc::new(AppState {
        sources: SourceTable::new(sources),
        sink,
        data_dir: config.data_dir.clone(),
        metrics: Default::default(),
        serve_ops: config.receiver.metrics_listen.is_none(),
        max_body_bytes: config.receiver.max_body_bytes,
        body_timeout: config.receiver.body_timeout.get(),
        clock: routes::system_clock,
    });
    let limits = ConnLimits {
        max_connections: config.receiver.max_connections,
        header_timeout: config.receiver.header_timeout.get(),
        shutdown_grace: config.receiver.shutdown_grace.get(),
    };
    let metrics_task = metrics_listener(config, &state, stop_rx.clone())
        .await
        .map_err(start)?;
    // The one line scripts and tests wait for.
    println!("ready addr={local}");
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %local, tls = tls.is_some(), queue = %queue, "receiver ready");
    let _ = sdnotify::ready();
    let watchdog = tokio::spawn(lifecycle::watchdog_pings(stop_rx.clone()));
    let reload = tokio::spawn(crate::reload::on_sighup(
        hangup.0,
        state.clone(),
        hangup.1,
        stop_rx.clone(),
    ));

    // Stop on a signal, or when the queue's storage failed.
    let failure = Arc::new(std::sync::Mutex::new(None::<String>));
    let failure_slot = failure.clone();
    let stop_when = async move {
        tokio::select! {
            _ = lifecycle::shutdown_signal() => {}
            Some(why) = failed => {
                *failure_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            }
        }
    };
    server::run_with_tls(listener, state.clone(), limits, tls, stop_when).await;
    let _ = sdnotify::stopping();
    if let Some(why) = failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        // The storage cannot be trusted to answer: no orderly drain.
        std::mem::forget(state);
        return Err(Stopped::StorageFailed(why));
    }
    tracing::info!("shutting down: in-flight requests done, draining the queue");
    let _ = stop_tx.send(true);
    let _ = reload.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    watchdog.abort();
    drop(state);
    Ok(())
}

/// Every second: disk usage for the budget check, lease expiry, and a look for a storage failure
/// (reported once on `failed`); every minute: retention sweep.
async fn maintenance(
    store: Arc<SledStore>,
    mut stop: watch::Receiver<bool>,
    failed: tokio::sync::oneshot::Sender<String>,
) {
    let mut failed = Some(failed);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        n += 1;
        if let Some(why) = store.failure() {
            if let Some(tx) = failed.take() {
                let _ = tx.send(why);
            }
            continue;
        }
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
