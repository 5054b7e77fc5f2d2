//! The HTTPS setup both servers use (the receiver's webhook listener, the worker's dashboard):
//! rustls with the ring provider from a PEM certificate chain and key, with errors that name
//! the config key and the file and say what is wrong.

use anyhow::{anyhow, bail, Context as _};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// rustls with the ring provider, the safe default protocol versions (TLS 1.2 and 1.3), ALPN
/// http/1.1 only, one certificate chain and its key.
pub fn server_config(
    cert: &Path,
    key: &Path,
    section: &str,
) -> anyhow::Result<rustls::ServerConfig> {
    let c = cert.display();
    let k = key.display();
    let cert_pem = std::fs::read(cert)
        .map_err(|e| anyhow!("{section}.tls_cert = {c}: cannot read it: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{section}.tls_cert = {c}: not a valid PEM file: {e}"))?;
    if chain.is_empty() {
        bail!(
            "{section}.tls_cert = {c}: holds no certificate (expected -----BEGIN CERTIFICATE----- \
             blocks: the server's certificate first, then its intermediates, e.g. fullchain.pem)"
        );
    }
    let key_pem =
        std::fs::read(key).map_err(|e| anyhow!("{section}.tls_key = {k}: cannot read it: {e}"))?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "{section}.tls_key = {k}: holds no private key (expected -----BEGIN PRIVATE KEY-----, \
             -----BEGIN EC PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----, e.g. privkey.pem)"
        ),
        e => anyhow!("{section}.tls_key = {k}: not a valid PEM file: {e}"),
    })?;
    if let Ok(meta) = std::fs::metadata(key) {
        if meta.permissions().mode() & 0o004 != 0 {
            tracing::warn!(file = %k, section, "tls_key is readable by every user: chmod o-r it");
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("setting up TLS")?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)
    .map_err(|e| {
        anyhow!(
            "{section}.tls_cert = {c} and {section}.tls_key = {k} do not make a usable pair: {e} \
             (is the key the one the certificate was issued for?)"
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// `${CREDENTIALS_DIRECTORY}` (systemd's LoadCredential=) in a path, expanded.
pub fn expand_credentials_dir(path: &Path, key: &str) -> anyhow::Result<PathBuf> {
    let text = path.to_string_lossy();
    if !text.contains("${CREDENTIALS_DIRECTORY}") && !text.contains("$CREDENTIALS_DIRECTORY") {
        return Ok(path.to_path_buf());
    }
    let dir = std::env::var("CREDENTIALS_DIRECTORY")
        .ok()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{key} = {text} uses $CREDENTIALS_DIRECTORY, which is unset: run under systemd \
                 with LoadCredential=, or write the full path"
            )
        })?;
    Ok(PathBuf::from(
        text.replace("${CREDENTIALS_DIRECTORY}", &dir)
            .replace("$CREDENTIALS_DIRECTORY", &dir),
    ))
}
