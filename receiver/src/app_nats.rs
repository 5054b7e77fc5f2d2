//! `serve` with `[queue] backend = "nats"`: the same HTTP server, request path and answers as
//! on sled ([`crate::app`]), with [`NatsSink`] as the [`EventSink`]: a 200 is sent once
//! JetStream acked the publish (the stream's replicas hold the event). There is no local queue
//! database and no `queue.sock`: workers and the ops CLI talk to NATS themselves.
//!
//! [`EventSink`]: stockhook_shared::queue::EventSink

use crate::reload::SourceTable;
use crate::routes::{self, AppState, Source};
use crate::server::{self, ConnLimits};
use anyhow::Context as _;
use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use stockhook_shared::config::Config;
use stockhook_shared::queue::nats::{NatsOptions, NatsSink};
use stockhook_shared::{lifecycle, sdnotify};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Runs the receiver on NATS until a signal; called by [`crate::app::serve`] once the sources
/// and TLS are built and the data dir exists.
pub async fn serve(
    config: Config,
    sources: HashMap<String, Source>,
    disabled: HashMap<String, String>,
    tls: Option<TlsAcceptor>,
    hangup: crate::app::Hangup,
) -> anyhow::Result<()> {
    let opts = NatsOptions::from_config(&config, "stockhook-receiver");
    let urls = opts.display_urls();
    let sink = NatsSink::connect(opts)
        .await
        .with_context(|| format!("queue.backend = \"nats\": cannot use JetStream at {urls}"))?;

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
    let client = sink.client().clone();
    let state = Arc::new(AppState {
        sources: SourceTable::new((sources, disabled)),
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
    let (stop_tx, stop_rx) = watch::channel(false);
    let metrics_task = crate::app::metrics_listener(&config, &state, stop_rx.clone()).await?;
    // The one line scripts and tests wait for.
    println!("ready addr={local}");
    let _ = std::io::stdout().flush();
    tracing::info!(addr = %local, tls = tls.is_some(), queue = "nats", nats = %urls, "receiver ready");
    let _ = sdnotify::ready();
    let watchdog = tokio::spawn(lifecycle::watchdog_pings(stop_rx.clone()));
    let reload = tokio::spawn(crate::reload::on_sighup(
        hangup.0,
        state.clone(),
        hangup.1,
        stop_rx.clone(),
    ));
    server::run_with_tls(
        listener,
        state.clone(),
        limits,
        tls,
        lifecycle::shutdown_signal(),
    )
    .await;
    let _ = sdnotify::stopping();
    let _ = stop_tx.send(true);
    let _ = reload.await;
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    watchdog.abort();
    drop(state);
    // Every request that got its answer had its publish acked; flush what else is buffered.
    let _ = client.flush().await;
    tracing::info!("receiver stopped cleanly");
    Ok(())
}
