//! What certificate an SMTP server presents, for the error that says it is not trusted.
//!
//! Why it exists: when the client refuses a server's certificate because no trusted CA signed
//! it, rustls says only "UnknownIssuer", and the operator needs to know what the server actually
//! showed (a self-signed certificate? the relay's private CA? a captive proxy?) to decide what
//! to put in `smtp_ca_file`. This module makes one more connection to the server, does the same
//! TLS handshake (implicit, or after `EHLO` + `STARTTLS`), records the certificate chain without
//! trusting it, and closes: nothing is authenticated or sent over that connection. It reports
//! the names the leaf certificate is valid for, its SHA-256 fingerprint and the chain's length.
//!
//! Never: sends a credential or a message on the probe connection; blocks longer than its
//! timeout. Blocking I/O: call it on the blocking pool.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The names (DNS names, IP addresses) the leaf certificate is valid for.
    pub names: Vec<String>,
    /// SHA-256 of the leaf certificate, `AB:CD:...`.
    pub sha256: String,
    /// Certificates in the chain the server sent.
    pub chain: usize,
}

impl std::fmt::Display for Presented {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = if self.names.is_empty() {
            "no names".to_string()
        } else {
            self.names.join(", ")
        };
        write!(
            f,
            "a certificate for {names} (SHA-256 {}, a chain of {})",
            self.sha256, self.chain
        )
    }
}

/// Connects to `host:port` (STARTTLS first when `starttls`) and returns what the server
/// presents, or `None` when it cannot be found out within `timeout`.
pub fn presented(host: &str, port: u16, starttls: bool, timeout: Duration) -> Option<Presented> {
    let addr = (host, port).to_socket_addrs().ok()?.next()?;
    let mut tcp = TcpStream::connect_timeout(&addr, timeout).ok()?;
    tcp.set_read_timeout(Some(timeout)).ok()?;
    tcp.set_write_timeout(Some(timeout)).ok()?;
    if starttls {
        let mut r = BufReader::new(tcp.try_clone().ok()?);
        reply(&mut r, "220")?;
        tcp.write_all(b"EHLO stockhook-probe\r\n").ok()?;
        reply(&mut r, "250")?;
        tcp.write_all(b"STARTTLS\r\n").ok()?;
        reply(&mut r, "220")?;
    }
    let seen = Arc::new(Recorder::default());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .ok()?
    .dangerous()
    .with_custom_certificate_verifier(seen.clone())
    .with_no_client_auth();
    let name = ServerName::try_from(host.to_string()).ok()?;
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).ok()?;
    while conn.is_handshaking() {
        if conn.complete_io(&mut tcp).is_err() {
            break;
        }
    }
    let chain = seen.chain.lock().ok()?.clone();
    let leaf = chain.first()?;
    Some(Presented {
        names: names_of(leaf),
        sha256: Sha256::digest(leaf.as_ref())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        chain: chain.len(),
    })
}

/// Reads one (possibly multi-line) SMTP reply; `Some` when its code is `code`.
fn reply(r: &mut impl BufRead, code: &str) -> Option<()> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 || !line.starts_with(code) {
            return None;
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Some(());
        }
    }
}

/// The names a certificate is valid for, as webpki reads its subjectAltName: asking it to
/// match a name no certificate has makes it list them.
fn names_of(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    let Ok(nobody) = ServerName::try_from("stockhook-probe.invalid") else {
        return Vec::new();
    };
    match ee.verify_is_valid_for_subject_name(&nobody) {
        // webpki spells them `DnsName("mail.example.com")`, `IpAddress(..)`: keep the name.
        Err(webpki::Error::CertNotValidForName(ctx)) => ctx
            .presented
            .into_iter()
            .map(|n| {
                n.strip_prefix("DnsName(\"")
                    .and_then(|r| r.strip_suffix("\")"))
                    .map(str::to_string)
                    .unwrap_or(n)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Accepts any certificate chain and remembers it (the probe only looks), but checks the
/// handshake signatures against the leaf.
#[derive(Debug, Default)]
struct Recorder {
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Ok(mut c) = self.chain.lock() {
            c.push(end_entity.clone().into_owned());
            c.extend(intermediates.iter().map(|i| i.clone().into_owned()));
        }
        Ok(ServerCertVerified::assertion())
    }

    // The chain is not trusted, but the handshake's signatures are checked: the fingerprint
    // reported is then of a certificate whose key the server holds, not one a relay replayed.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algorithms())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algorithms())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        algorithms().supported_schemes()
    }
}

/// The signature algorithms rustls's ring provider verifies (the ones the SMTP client uses).
fn algorithms() -> rustls::crypto::WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}
