//! The SMTP connection behind the alert email: TLS mode, trust, login, and what each failure
//! tells the operator.
//!
//! Why it exists: sellers send through Gmail, Microsoft 365, SES, Postmark or Mailgun with a
//! login, over implicit TLS (`smtps://`, port 465) or STARTTLS (`?tls=required`, port 587), and
//! agencies through a private relay whose CA the system does not know. lettre speaks all of
//! that; this module builds its transport from `[email] smtp_url` plus `smtp_ca_file` (a PEM
//! bundle trusted in addition to the webpki roots), and turns lettre's terse errors into
//! sentences that name the server, the account and the fix:
//! * 535 on AUTH: permanent, naming the account, "check the password or app password";
//! * a certificate that is not trusted, or not valid for the host: naming the host and what the
//!   server presented (the names its certificate is valid for, when rustls says);
//! * no AUTH mechanism offered, or no STARTTLS when the URL requires it: exactly that.
//!
//! Never: a password in any string it returns (the URL is never formatted; every message is
//! scrubbed of the password, raw and percent-decoded, by the caller's `scrub`).

use crate::email::SendError;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::SmtpTransport;
use std::path::Path;
use std::time::Duration;

/// How the connection is secured, from the URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// `smtp://` without `tls=`: plain text (local relays only).
    None,
    /// `smtp://...?tls=opportunistic`: STARTTLS when the server offers it.
    Opportunistic,
    /// `smtp://...?tls=required`: STARTTLS or no send.
    Required,
    /// `smtps://`: TLS from the first byte (port 465).
    Implicit,
}

/// What error messages may say about the server: never the password.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`.
    pub server: String,
    pub host: String,
    pub port: u16,
    /// The login, when the URL has one.
    pub user: Option<String>,
    pub tls: TlsMode,
}

/// lettre's blocking transport for `url`, with `ca_file`'s certificates trusted besides the
/// webpki roots, and `timeout` on every step. `Err` names the key and never the password.
pub fn transport(
    url: &str,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<(SmtpTransport, Endpoint), String> {
    let endpoint = endpoint(url)?;
    let mut builder = SmtpTransport::from_url(url).map_err(|e| {
        format!(
            "email.smtp_url is not a usable SMTP URL ({e}); expected smtp://host:25, \
             smtp://user:pass@host:587?tls=required or smtps://user:pass@host:465"
        )
    })?;
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("email.smtp_ca_file: cannot read {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            format!(
                "email.smtp_ca_file: {} is not a PEM certificate bundle ({e})",
                path.display()
            )
        })?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(format!(
                "email.smtp_ca_file: {} holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)",
                path.display()
            ));
        }
        let params = TlsParameters::builder(endpoint.host.clone())
            .add_root_certificate(cert)
            .build_rustls()
            .map_err(|e| format!("email.smtp_ca_file: {}: {e}", path.display()))?;
        builder = match endpoint.tls {
            TlsMode::Implicit => builder.tls(Tls::Wrapper(params)),
            TlsMode::Required => builder.tls(Tls::Required(params)),
            TlsMode::Opportunistic => builder.tls(Tls::Opportunistic(params)),
            // Plain text: nothing to trust. Not an error, so a CA file can stay configured
            // while a local relay is used.
            TlsMode::None => builder,
        };
    }
    Ok((builder.timeout(Some(timeout)).build(), endpoint))
}

/// Host, port, login and TLS mode of an SMTP URL.
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let u = url::Url::parse(url).map_err(|e| {
        format!(
            "email.smtp_url is not a URL ({e}); expected smtp://host:25, \
             smtp://user:pass@host:587?tls=required or smtps://user:pass@host:465"
        )
    })?;
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("email.smtp_url has no host; e.g. smtps://user:pass@smtp.example.com:465")?
        .to_string();
    let tls_param = u
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = match (u.scheme(), tls_param.as_deref()) {
        ("smtps", _) => TlsMode::Implicit,
        ("smtp", Some("required")) => TlsMode::Required,
        ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
        ("smtp", None) => TlsMode::None,
        (s, t) => {
            return Err(format!(
                "email.smtp_url: scheme {s:?} with tls={t:?} is not supported; use smtps:// \
                 (implicit TLS), smtp://...?tls=required (STARTTLS), smtp://...?tls=opportunistic \
                 or plain smtp://"
            ))
        }
    };
    let default_port = match tls {
        TlsMode::Implicit => 465,
        TlsMode::Required | TlsMode::Opportunistic => 587,
        TlsMode::None => 25,
    };
    let port = u.port().unwrap_or(default_port);
    let user = (!u.username().is_empty()).then(|| percent_decode(u.username()));
    Ok(Endpoint {
        server: format!("{host}:{port}"),
        host,
        port,
        user,
        tls,
    })
}

/// A URL's user name as written (`%40` for `@`); `+` stays `+`.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// How long the look at an untrusted certificate may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator-facing explanation of the failures this module knows, or `None` for the
/// caller's generic classification. For a certificate from an unknown issuer it connects once
/// more to see what the server presents ([`super::smtp_probe`]).
pub async fn explain(e: &lettre::transport::smtp::Error, at: &Endpoint) -> Option<SendError> {
    let explained = explain_text(e, at)?;
    let unknown_issuer = e.to_string().contains("UnknownIssuer");
    if !unknown_issuer || at.tls == TlsMode::None {
        return Some(explained);
    }
    let (host, port, starttls) = (at.host.clone(), at.port, at.tls != TlsMode::Implicit);
    let seen = tokio::task::spawn_blocking(move || {
        super::smtp_probe::presented(&host, port, starttls, PROBE_TIMEOUT)
    })
    .await
    .ok()
    .flatten();
    Some(match seen {
        Some(p) => explained.map_message(|m| format!("{m}; the server presented {p}")),
        None => explained,
    })
}

/// [`explain`] from the error alone.
fn explain_text(e: &lettre::transport::smtp::Error, at: &Endpoint) -> Option<SendError> {
    let text = e.to_string();
    let server = &at.server;
    let code = e.status().map(|c| c.to_string());
    if matches!(code.as_deref(), Some("535") | Some("534")) {
        let who = at.user.as_deref().unwrap_or("(no user in the URL)");
        return Some(SendError::Permanent(format!(
            "the SMTP server {server} refused the login for {who} ({}): check the password, \
             or use an app password if the account has 2-step verification (Gmail, Microsoft 365)",
            code.unwrap_or_default()
        )));
    }
    if text.contains("STARTTLS is not supported") {
        return Some(SendError::Permanent(format!(
            "the SMTP server {server} does not offer STARTTLS, and email.smtp_url requires it \
             (?tls=required): use the server's TLS port with smtps://, or a server that offers STARTTLS"
        )));
    }
    if text.contains("No compatible authentication mechanism") {
        let who = at.user.as_deref().unwrap_or("?");
        let hint = match at.tls {
            TlsMode::None | TlsMode::Opportunistic => {
                " (many servers offer AUTH only over TLS: use ?tls=required or smtps://)"
            }
            _ => "",
        };
        return Some(SendError::Permanent(format!(
            "the SMTP server {server} offers no AUTH mechanism stockhook can use (PLAIN or LOGIN) \
             to log in as {who}{hint}"
        )));
    }
    if let Some(why) = certificate_problem(&text) {
        let msg = format!("TLS with the SMTP server {server} failed: {why}");
        // An expired certificate is usually renewed soon: keep trying. A certificate for
        // another name or from an unknown issuer is configuration: fix, then replay.
        return Some(if why.contains("expired") {
            SendError::Transient(msg)
        } else {
            SendError::Permanent(msg)
        });
    }
    None
}

/// A certificate the client refused, said in words, from rustls' error text.
fn certificate_problem(text: &str) -> Option<String> {
    let cert = text.find("invalid peer certificate: ")?;
    let detail = &text[cert + "invalid peer certificate: ".len()..];
    Some(
        if let Some(i) = detail.find("certificate not valid for name") {
            // rustls: `certificate not valid for name "x"; certificate is only valid for ...`.
            format!(
                "the server presented a {}; check the host name in email.smtp_url",
                &detail[i + "certificate ".len()..]
                    .replace("not valid for name", "certificate not valid for the name")
            )
        } else if detail.contains("UnknownIssuer") || detail.contains("unknown issuer") {
            "its certificate is signed by an issuer this client does not trust (self-signed, or a \
         private CA): put that CA's PEM in email.smtp_ca_file"
                .to_string()
        } else if detail.contains("xpired") {
            format!("the server presented an expired certificate ({detail})")
        } else {
            format!("the server presented a certificate this client refuses ({detail})")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_urls() {
        let e = endpoint("smtps://alerts%40shop.example:pw@smtp.gmail.com").unwrap();
        assert_eq!(
            (e.server.as_str(), e.user.as_deref(), e.tls),
            (
                "smtp.gmail.com:465",
                Some("alerts@shop.example"),
                TlsMode::Implicit
            )
        );
        let e = endpoint("smtp://u:p@smtp.office365.com:587?tls=required").unwrap();
        assert_eq!(
            (e.server.as_str(), e.tls),
            ("smtp.office365.com:587", TlsMode::Required)
        );
        let e = endpoint("smtp://relay?tls=opportunistic").unwrap();
        assert_eq!(
            (e.server.as_str(), e.user, e.tls),
            ("relay:587", None, TlsMode::Opportunistic)
        );
        let e = endpoint("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (e.server.as_str(), e.tls),
            ("127.0.0.1:2525", TlsMode::None)
        );
        assert!(endpoint("smtp://h?tls=maybe").is_err());
        assert!(endpoint("http://h").is_err());
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        let e = transport("smtps://h:465", Some(&p), Duration::from_secs(1)).unwrap_err();
        assert!(
            e.contains("email.smtp_ca_file") && e.contains("ca.pem"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = transport("smtps://h:465", Some(&missing), Duration::from_secs(1)).unwrap_err();
        assert!(
            e.contains("cannot read") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
