//! `serve` with `[queue] backend = "nats"`: the same HTTP server, request path and answers as
//! on sled ([`crate::app::serve_on`]), with [`NatsSink`] as the [`EventSink`]: a 200 is sent
//! once JetStream acked the publish (the stream's replicas hold the event). There is no local
//! queue database and no `queue.sock`: workers and the ops CLI talk to NATS themselves.
//!
//! [`EventSink`]: stockhook_shared::queue::EventSink

use crate::app::{serve_on, Prepared, Stopped};
use anyhow::Context as _;
use stockhook_shared::config::Config;
use stockhook_shared::queue::nats::{NatsOptions, NatsSink};
use tokio::sync::watch;

/// Runs the receiver on NATS until a signal; called by [`crate::app::serve`] once the sources
/// and TLS are built and the data dir exists.
pub async fn serve(config: Config, prepared: Prepared) -> anyhow::Result<()> {
    let opts = NatsOptions::from_config(&config, "stockhook-receiver");
    let urls = opts.display_urls();
    let sink = NatsSink::connect(opts)
        .await
        .with_context(|| format!("queue.backend = \"nats\": cannot use JetStream at {urls}"))?;
    let client = sink.client().clone();
    let (stop_tx, _) = watch::channel(false);
    // JetStream reports no storage failure here: a failed publish is a 503 for that request.
    let failed = std::future::pending::<Option<String>>();
    let queue = format!("nats {urls}");
    serve_on(&config, prepared, sink, &queue, failed, stop_tx)
        .await
        .map_err(Stopped::into_error)?;
    // Every request that got its answer had its publish acked; flush what else is buffered.
    let _ = client.flush().await;
    Ok(())
}
