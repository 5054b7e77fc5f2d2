//! SIGHUP: what the receiver can change while it serves, and the one function that changes it.
//!
//! Why: an operator adds a source, rotates a secret or renews the TLS certificate with `systemctl
//! reload` (or `kill -HUP`), and no connection, in-flight request or queued event may be lost on
//! the way. So the sources and the certificate live behind swappable handles ([`SourceTable`],
//! [`SwappableCert`]): a request takes the table that is current when it arrives and keeps it to
//! its answer; a TLS handshake asks for the certificate that is current when it starts. Nothing is
//! restarted, no socket is closed.
//!
//! Invariant: a reload is all or nothing. The new file is loaded and validated, every source is
//! built and the certificate pair is checked before anything is swapped; any error is logged and
//! the old config stays in force. Keys that cannot change without a restart (the listen address,
//! HTTP vs HTTPS, the queue backend, data_dir, limits) are reported as such and keep their value.

use crate::app;
use crate::routes::{self, Source, Sources};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use stockhook_shared::config::{self, Config};
use stockhook_shared::lifecycle;
use stockhook_shared::queue::EventSink;
use tokio::sync::watch;

/// The configured sources: enabled ones by name, and disabled ones with the reason.
pub struct SourceSet {
    pub enabled: HashMap<String, Source>,
    pub disabled: HashMap<String, String>,
}

impl SourceSet {
    /// The name as a metric label and log field: a configured name (enabled or disabled) as
    /// it is, anything else (a name taken from a request's URL) as `<unknown>`, so requests
    /// cannot make new series or fill logs with what they choose.
    pub fn label<'a>(&self, name: &'a str) -> &'a str {
        if self.enabled.contains_key(name) || self.disabled.contains_key(name) {
            name
        } else {
            "<unknown>"
        }
    }
}

/// The current [`SourceSet`], swapped whole by a reload. Readers clone an `Arc` (one read lock,
/// held for that clone only), so a reload never waits for a request and vice versa.
pub struct SourceTable(RwLock<Arc<SourceSet>>);

impl SourceTable {
    pub fn new((enabled, disabled): Sources) -> SourceTable {
        SourceTable(RwLock::new(Arc::new(SourceSet { enabled, disabled })))
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<SourceSet> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `sources` in force for every request that arrives from now on.
    pub fn replace(&self, (enabled, disabled): Sources) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) =
            Arc::new(SourceSet { enabled, disabled });
    }
}

/// The server certificate, swappable: the rustls `ServerConfig` (and so the acceptor every
/// connection uses) stays the same, and each handshake asks this resolver for the certificate
/// in force at that moment.
#[derive(Debug)]
pub struct SwappableCert(RwLock<Arc<dyn ResolvesServerCert>>);

impl SwappableCert {
    /// Takes over `config`'s certificate and puts itself in its place.
    pub fn install(config: &mut rustls::ServerConfig) -> Arc<SwappableCert> {
        let slot = Arc::new(SwappableCert(RwLock::new(config.cert_resolver.clone())));
        config.cert_resolver = slot.clone();
        slot
    }

    /// Serves `config`'s certificate from the next handshake on.
    pub fn replace_from(&self, config: &rustls::ServerConfig) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = config.cert_resolver.clone();
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = self.0.read().unwrap_or_else(|p| p.into_inner()).clone();
        current.resolve(hello)
    }
}

/// What a reload needs besides the request state: where the config came from, the config in
/// force (to tell which changed keys need a restart) and the certificate slot when serving HTTPS.
pub struct Reloader {
    pub config_path: Option<PathBuf>,
    pub running: Config,
    pub cert: Option<Arc<SwappableCert>>,
}

/// What a successful reload changed, for the log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    pub sources: usize,
    pub tls: bool,
    /// Keys that changed in the file but keep their running value until a restart.
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    /// Loads the config again and puts its sources (and certificate) in force; on any error
    /// nothing changes and the error says why.
    pub fn reload(&mut self, table: &SourceTable) -> anyhow::Result<Reloaded> {
        let loaded = config::load(self.config_path.as_deref())
            .map_err(|e| anyhow::anyhow!("config error: {e}"))?;
        let new = loaded.config;
        let sources =
            routes::build_sources(&new).map_err(|e| anyhow::anyhow!("config error: {e}"))?;
        let need_restart = restart_only_changes(&self.running, &new);
        let tls_config = match (&self.cert, &new.receiver.tls_cert, &new.receiver.tls_key) {
            (Some(_), Some(_), Some(_)) => app::tls_acceptor_config(&new)?,
            _ => None,
        };
        // Everything is built and checked: swap.
        let count = sources.0.len();
        table.replace(sources);
        let tls = match (&self.cert, &tls_config) {
            (Some(slot), Some(c)) => {
                slot.replace_from(c);
                true
            }
            _ => false,
        };
        for n in &loaded.notices {
            tracing::warn!("{n}");
        }
        self.running = new;
        Ok(Reloaded {
            sources: count,
            tls,
            need_restart,
        })
    }
}

/// The keys a running receiver cannot take over, among those that differ.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let (o, n) = (&old.receiver, &new.receiver);
    lifecycle::changed_keys(&[
        ("data_dir", old.data_dir != new.data_dir),
        ("queue.backend", old.queue.backend != new.queue.backend),
        ("receiver.listen", o.listen != n.listen),
        (
            "receiver.tls_cert/tls_key (HTTP <-> HTTPS)",
            o.tls_cert.is_some() != n.tls_cert.is_some(),
        ),
        (
            "receiver.max_body_bytes",
            o.max_body_bytes != n.max_body_bytes,
        ),
        (
            "receiver.max_connections",
            o.max_connections != n.max_connections,
        ),
        (
            "receiver.metrics_listen",
            o.metrics_listen != n.metrics_listen,
        ),
    ])
}

/// Reloads on every SIGHUP until `stop` ([`lifecycle::reload_on_sighup`]).
pub async fn on_sighup<S: EventSink>(
    hup: tokio::signal::unix::Signal,
    state: Arc<routes::AppState<S>>,
    mut reloader: Reloader,
    stop: watch::Receiver<bool>,
) {
    let path = reloader.config_path.clone();
    lifecycle::reload_on_sighup(hup, path, stop, "config", move || {
        let r = reloader
            .reload(&state.sources)
            .map_err(|e| format!("{e:#}"))?;
        let tls = if r.tls {
            ", TLS certificate reloaded"
        } else {
            ""
        };
        Ok((format!("{} sources{tls}", r.sources), r.need_restart))
    })
    .await
}
