//! Alert email: renders a set of alerts as one message and delivers it, by SMTP or as a file.
//!
//! Why it exists: the rules decide *what* to tell a seller; this module decides how it reads
//! (subject, plain-text and HTML bodies) and gets it out of the process. With `email.smtp_url`
//! set it speaks SMTP through lettre (`smtp://`, `smtps://`, `?tls=required` for STARTTLS,
//! `user:pass@` for AUTH), with a 20 s limit on every step and 120 s on a whole send; without it
//! every email is written as an `.eml` file under `<data_dir>/mail/`, so a fresh install works
//! with no mail server. (lettre sets the socket timeouts only after an `smtps://` TLS handshake;
//! the 120 s deadline bounds that too, though the abandoned attempt may then finish in the
//! background, so a retry can deliver a second copy, with the same Message-ID.)
//!
//! SMTP uses lettre's blocking transport on Tokio's blocking pool, not `AsyncSmtpTransport`: in
//! lettre 0.11 the async transport's timeout covers only the TCP connect, so a server that
//! accepts and then stays silent would hang a send forever, and cancelling it from outside
//! would return a mid-command connection to lettre's pool. The blocking transport sets socket
//! read and write timeouts instead.
//!
//! Contract:
//! * [`Mailer::send`] returning [`Sent`] means the SMTP server accepted the message (a 2xx reply
//!   to DATA), or the `.eml` file is durably on disk (written to a temporary name, fsynced, linked
//!   into place, directory fsynced).
//! * Rendering is deterministic: the same alert set (in any order, with the same sender and
//!   recipients) gives byte-identical output, with a Message-ID derived from the sorted alert ids,
//!   a `Date` from the earliest `created_at`, and a MIME boundary derived from the content. A
//!   resend after a crash therefore carries the same Message-ID, and the file transport never
//!   writes the same set twice (the second send finds the file and reports it as sent).
//! * Errors are classified once, in `classify`: [`SendError::Transient`] (retry later:
//!   connection refused, timeouts, TLS and I/O errors, SMTP 4xx, disk errors) or
//!   [`SendError::Permanent`] (SMTP 5xx, an invalid sender or recipient address, a server
//!   lacking what the message needs). Their text never contains the SMTP password: the URL is
//!   never formatted, and every error is scrubbed of the password before it leaves this module.
//!
//! What it never does: log recipients or message bodies. Logs carry the Message-ID, the alert
//! count, the rules and the sources. An SMTP error's text (returned, not logged) is the server's
//! reply, which may quote a recipient address: that is operator configuration, shown to the
//! operator.

pub mod admin_links;
pub mod content;
pub mod sample;

use crate::alert::Alert;
pub use admin_links::Stores;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::SmtpTransport;
use lettre::{Message, Transport as _};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stockhook_shared::config::EmailConfig;

/// One log line about an alert email: its Message-ID and what it carries ([`Summary`]), then
/// `$rest` (the line's own fields and message). Never a recipient or an item.
macro_rules! email_log {
    ($level:ident, $message_id:expr, $summary:expr, $($rest:tt)+) => {
        tracing::$level!(
            message_id = %$message_id,
            alerts = $summary.count,
            rules = %$summary.rules,
            sources = %$summary.sources,
            $($rest)+
        )
    };
}

/// How long one SMTP step (connect, each command, each reply) may take.
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long one whole SMTP send may take, however the steps add up.
pub const SMTP_SEND_DEADLINE: Duration = Duration::from_secs(120);

/// The header listing the alert ids an email carries, space-separated.
pub const ALERT_IDS_HEADER: &str = "X-Stockhook-Alert-Ids";

/// A delivered email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// `<32 hex@stockhook>`, the same for the same alert set on every attempt.
    pub message_id: String,
    /// The file transport: the `.eml` holding it (also when an earlier send had written it).
    pub file: Option<PathBuf>,
}

/// Why an email was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying later with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same message will not help: mark the alerts failed for the operator.
    #[error("permanent: {0}")]
    Permanent(String),
}

impl SendError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SendError::Transient(_))
    }
    /// The explanation without the `transient:`/`permanent:` prefix.
    pub fn message(&self) -> &str {
        match self {
            SendError::Transient(m) | SendError::Permanent(m) => m,
        }
    }
    pub(crate) fn map_message(self, f: impl FnOnce(String) -> String) -> SendError {
        match self {
            SendError::Transient(m) => SendError::Transient(f(m)),
            SendError::Permanent(m) => SendError::Permanent(f(m)),
        }
    }
}

/// Sends alert emails; build one per process with [`Mailer::from_config`] and share it.
pub struct Mailer {
    from: String,
    transport: Transport,
    /// Each source's store address, for the links into the platform's admin.
    stores: Stores,
}

enum Transport {
    Smtp {
        /// lettre's blocking transport, run on Tokio's blocking pool: it sets read and write
        /// timeouts on the socket, where the async one (lettre 0.11) times only the connect and
        /// would wait forever for a server that accepts and never answers.
        transport: SmtpTransport,
        /// The URL and its password (as written and percent-decoded), scrubbed from errors.
        redact: Vec<String>,
        deadline: Duration,
        /// Server, login and TLS mode, for error messages (no password).
        endpoint: crate::channels::smtp::Endpoint,
    },
    Files {
        dir: PathBuf,
    },
}

/// Never shows the URL or the credentials.
impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mailer");
        d.field("from", &self.from);
        match &self.transport {
            Transport::Smtp { .. } => d.field("transport", &"smtp"),
            Transport::Files { dir } => d.field("mail_dir", dir),
        };
        d.finish()
    }
}

impl Mailer {
    /// SMTP when `email.smtp_url` is set, else `.eml` files under `<data_dir>/mail/` (created,
    /// mode 0700). Fails, with a message naming the key, on an invalid `email.from` or URL, or
    /// when the mail directory cannot be created. Never opens a connection: the first send does
    /// (connections are then pooled and reused). Needs no Tokio runtime.
    pub fn from_config(email: &EmailConfig, data_dir: &Path) -> Result<Mailer, String> {
        Mailer::build(email, data_dir, SMTP_TIMEOUT, SMTP_SEND_DEADLINE)
    }

    fn build(
        email: &EmailConfig,
        data_dir: &Path,
        timeout: Duration,
        deadline: Duration,
    ) -> Result<Mailer, String> {
        email.from.parse::<Mailbox>().map_err(|e| {
            format!(
                "email.from {:?} is not a valid address ({e}); e.g. \"Stockhook <alerts@example.com>\"",
                email.from
            )
        })?;
        let transport = match &email.smtp_url {
            Some(url) => {
                let url = url.expose();
                let redact = redactions(url);
                let (transport, endpoint) =
                    crate::channels::smtp::transport(url, email.smtp_ca_file.as_deref(), timeout)
                        .map_err(|e| scrub(&e, &redact))?;
                Transport::Smtp {
                    transport,
                    redact,
                    deadline,
                    endpoint,
                }
            }
            None => {
                let dir = data_dir.join("mail");
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| format!("creating the mail directory {}: {e}", dir.display()))?;
                // Its entry must survive a power cut before a file in it counts as sent.
                stockhook_shared::durable::sync_parent(&dir).map_err(|e| e.to_string())?;
                sweep_stale_temp_files(&dir);
                Transport::Files { dir }
            }
        };
        Ok(Mailer {
            from: email.from.clone(),
            transport,
            stores: Stores::default(),
        })
    }

    /// The store addresses the email's admin links are built from (`[[sources]] store_url`).
    pub fn with_stores(mut self, stores: Stores) -> Mailer {
        self.stores = stores;
        self
    }

    /// Where emails are written, when there is no SMTP server.
    pub fn mail_dir(&self) -> Option<&Path> {
        match &self.transport {
            Transport::Files { dir } => Some(dir),
            Transport::Smtp { .. } => None,
        }
    }

    /// Renders `alerts` as one email to every one of `recipients` and delivers it. See the
    /// module doc for what `Ok` promises and how errors are classified.
    pub async fn send(&self, alerts: &[Alert], recipients: &[String]) -> Result<Sent, SendError> {
        let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        self.send_before(&crate::alert::set_id(&ids), alerts, recipients, None)
            .await
    }

    /// [`Mailer::send`] as the alert set `set` (its Message-ID: [`crate::alert::message_id`]),
    /// but an SMTP exchange that would begin after `not_after` does not begin (a transient
    /// error): the sender's claim on these alerts may have lapsed meanwhile (the process was
    /// stopped), and another worker may be sending them.
    pub async fn send_before(
        &self,
        set: &str,
        alerts: &[Alert],
        recipients: &[String],
        not_after: Option<std::time::Instant>,
    ) -> Result<Sent, SendError> {
        let message = render_set(set, alerts, &self.from, recipients, &self.stores)?;
        let message_id = message_id_of(&message);
        let summary = Summary::of(alerts);
        match &self.transport {
            Transport::Smtp {
                transport,
                redact,
                deadline,
                endpoint,
            } => {
                let t = transport.clone();
                let task = tokio::task::spawn_blocking(move || {
                    // Checked on the thread that then speaks SMTP: as late as it can be.
                    let late = not_after.is_some_and(|t| std::time::Instant::now() > t);
                    (!late).then(|| t.send(&message))
                });
                let outcome = match tokio::time::timeout(*deadline, task).await {
                    Ok(Ok(Some(outcome))) => outcome,
                    Ok(Ok(None)) => {
                        return Err(SendError::Transient(
                            "not sent: the claim to send it may have lapsed before the SMTP exchange began"
                                .into(),
                        ))
                    }
                    Ok(Err(e)) => {
                        return Err(SendError::Transient(format!("the SMTP task failed: {e}")))
                    }
                    Err(_) => {
                        email_log!(
                            warn,
                            message_id,
                            summary,
                            deadline_secs = deadline.as_secs(),
                            "alert email: the SMTP send did not finish in time"
                        );
                        return Err(SendError::Transient(format!(
                            "the SMTP send did not finish within {deadline:?}"
                        )));
                    }
                };
                match outcome {
                    Ok(response) => {
                        email_log!(
                            info,
                            message_id,
                            summary,
                            code = %response.code(),
                            "alert email accepted by the SMTP server"
                        );
                        Ok(Sent {
                            message_id,
                            file: None,
                        })
                    }
                    Err(e) => {
                        let err = crate::channels::smtp::explain(&e, endpoint)
                            .await
                            .unwrap_or_else(|| classify(&e))
                            .map_message(|m| scrub(&m, redact));
                        email_log!(
                            warn,
                            message_id,
                            summary,
                            transient = err.is_transient(),
                            error = %scrub(&log_detail(&e), redact),
                            "alert email not sent"
                        );
                        Err(err)
                    }
                }
            }
            Transport::Files { dir } => {
                let name = file_name(alerts, &message_id);
                let bytes = message.formatted();
                let dir = dir.clone();
                let written = tokio::task::spawn_blocking(move || write_once(&dir, &name, &bytes))
                    .await
                    .map_err(|e| {
                        SendError::Transient(format!("the file writer task failed: {e}"))
                    })?;
                match written {
                    Ok((path, fresh)) => {
                        email_log!(
                            info,
                            message_id,
                            summary,
                            file = %path.display(),
                            already_written = !fresh,
                            "alert email written to a file"
                        );
                        Ok(Sent {
                            message_id,
                            file: Some(path),
                        })
                    }
                    Err(e) => {
                        let err = SendError::Transient(format!("writing the email file: {e}"));
                        email_log!(
                            warn,
                            message_id,
                            summary,
                            error = %e,
                            "alert email not written"
                        );
                        Err(err)
                    }
                }
            }
        }
    }

    /// Closes pooled SMTP connections (politely, with QUIT). Nothing to do for files.
    pub async fn shutdown(&self) {
        if let Transport::Smtp { transport, .. } = &self.transport {
            let t = transport.clone();
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
    }
}

/// The one place SMTP errors are sorted into retry-later and give-up.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        // 5xx: the server refused the sender, a recipient, or the message.
        SendError::Permanent(format!("the SMTP server refused the email: {e}"))
    } else if e.is_transient() {
        // 4xx: greylisting, mailbox busy, server overloaded.
        SendError::Transient(format!("the SMTP server deferred the email: {e}"))
    } else if e.is_timeout() {
        SendError::Transient(format!("the SMTP server did not answer in time: {e}"))
    } else if e.is_tls() {
        SendError::Transient(format!("TLS with the SMTP server failed: {e}"))
    } else if e.is_client() {
        // lettre refusing to go on: the server lacks SMTPUTF8 for a non-ASCII address, offers no
        // usable AUTH mechanism, or no STARTTLS when `tls=required`. Resending the same message
        // to the same server gives the same answer; the operator fixes the setup and replays.
        SendError::Permanent(format!("the SMTP server cannot take this email: {e}"))
    } else {
        // Connection refused or reset, DNS, network I/O, a garbled reply, a pool shut down.
        SendError::Transient(format!("could not talk to the SMTP server: {e}"))
    }
}

/// What the logs say about an SMTP error: the reply code, not the server's text (which may quote
/// a recipient); other errors in full (connection refused, timeouts, TLS).
fn log_detail(e: &lettre::transport::smtp::Error) -> String {
    match e.status() {
        Some(code) if e.is_permanent() => format!("SMTP permanent error {code}"),
        Some(code) => format!("SMTP transient error {code}"),
        None if e.is_response() => "unreadable SMTP reply".into(),
        None => e.to_string(),
    }
}

/// The strings to scrub from errors: the URL itself and its password, raw and percent-decoded.
fn redactions(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, pw)| pw);
    if let Some(pw) = password.filter(|p| !p.is_empty()) {
        out.push(pw.to_string());
        let decoded = percent_encoding::percent_decode_str(pw)
            .decode_utf8_lossy()
            .into_owned();
        if decoded != pw && !decoded.is_empty() {
            out.push(decoded);
        }
    }
    // Longest first, so the URL goes before the password inside it.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

fn scrub(text: &str, redact: &[String]) -> String {
    redact.iter().fold(text.to_string(), |t, secret| {
        t.replace(secret.as_str(), "[redacted]")
    })
}

/// What the logs say about an alert set (no recipients, no bodies).
struct Summary {
    count: usize,
    rules: String,
    sources: String,
}

impl Summary {
    fn of(alerts: &[Alert]) -> Summary {
        let rules: BTreeSet<&str> = alerts.iter().map(|a| a.rule.as_str()).collect();
        let sources: BTreeSet<&str> = alerts.iter().map(|a| a.source.as_str()).collect();
        let ids: BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        Summary {
            count: ids.len(),
            rules: rules.into_iter().collect::<Vec<_>>().join(","),
            sources: sources.into_iter().collect::<Vec<_>>().join(","),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------------

/// Builds the email for `alerts` from `from` to every one of `recipients`, its admin links
/// from `stores`. Deterministic: the
/// same set (in any order; duplicates by id are dropped) gives byte-identical
/// `Message::formatted()` output. An invalid `from` or recipient is a `Permanent` error naming
/// the address (operator configuration, not customer data); so are no alerts or no recipients.
pub fn render(
    alerts: &[Alert],
    from: &str,
    recipients: &[String],
    stores: &Stores,
) -> Result<Message, SendError> {
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    render_set(
        &crate::alert::set_id(&ids),
        alerts,
        from,
        recipients,
        stores,
    )
}

/// [`render`] as the alert set `set`: the Message-ID is the set's
/// ([`crate::alert::message_id`]), whatever part of it `alerts` is (a set planned before a
/// crash, some of whose alerts were delivered by another email since, keeps its id).
pub fn render_set(
    set: &str,
    alerts: &[Alert],
    from: &str,
    recipients: &[String],
    stores: &Stores,
) -> Result<Message, SendError> {
    let alerts = content::order(alerts);
    if alerts.is_empty() {
        return Err(SendError::Permanent("no alerts to send".into()));
    }
    if recipients.is_empty() {
        return Err(SendError::Permanent(
            "no recipients: set [alerts] recipients, or the source's recipients".into(),
        ));
    }
    let from: Mailbox = from.parse().map_err(|e| {
        SendError::Permanent(format!(
            "the sender address (email.from) {from:?} is invalid: {e}"
        ))
    })?;
    let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    let items = content::items(&alerts);
    let subject = content::subject(&items);
    let text = content::text(&items, &subject, stores);
    let html = content::html(&items, &subject, stores);
    let earliest = alerts.iter().map(|a| a.created_at).min().unwrap_or(0);

    let mut builder = Message::builder()
        .from(from)
        .subject(subject)
        .message_id(Some(crate::alert::message_id(set)))
        .date(UNIX_EPOCH + Duration::from_millis(u64::try_from(earliest).unwrap_or(0)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str(ALERT_IDS_HEADER),
            ids.join(" "),
        ));
    for r in recipients {
        let mailbox: Mailbox = r.trim().parse().map_err(|e| {
            SendError::Permanent(format!("the recipient address {r:?} is invalid: {e}"))
        })?;
        builder = builder.to(mailbox);
    }
    // lettre picks a random boundary unless told; derive it from the content instead, so it is
    // stable and (being a hash of the bodies) cannot occur inside them.
    let mut h = Sha256::new();
    h.update(text.as_bytes());
    h.update([0]);
    h.update(html.as_bytes());
    let boundary = format!("=_stockhook_{}", &hex::encode(h.finalize())[..40]);
    let body = MultiPart::alternative()
        .boundary(boundary)
        .singlepart(SinglePart::plain(crlf(&text)))
        .singlepart(SinglePart::html(crlf(&html)));
    builder
        .multipart(body)
        .map_err(|e| SendError::Permanent(format!("building the email: {e}")))
}

/// `s` with a CR put before every LF that lacks one, in one pass: what lettre does to a text
/// body, without its cost. lettre inserts each CR in place (`String::insert`), copying the rest of
/// the body once per line: a 200-alert email spent most of its rendering there (the sender's
/// largest cost once it fell behind, PERFORMANCE.md section 16). Given CRLF already, it inserts
/// nothing, and the message's bytes are the same as before.
fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut prev = '\0';
    for c in s.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

fn message_id_of(message: &Message) -> String {
    message
        .headers()
        .get_raw("Message-ID")
        .unwrap_or_default()
        .to_string()
}

/// `<earliest created_at, unix ms>-<first 16 hex of the ids digest>.eml`: sorts by time, and
/// is the same for the same alert set.
fn file_name(alerts: &[Alert], message_id: &str) -> String {
    let earliest = alerts
        .iter()
        .map(|a| a.created_at)
        .min()
        .unwrap_or(0)
        .max(0);
    let hash: String = message_id
        .trim_start_matches('<')
        .chars()
        .take(16)
        .collect();
    format!("{earliest:013}-{hash}.eml")
}

/// RFC 3339 UTC of a unix-ms instant.
pub(crate) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms after the Unix epoch"))
}

// ---------------------------------------------------------------------------------------------
// File transport
// ---------------------------------------------------------------------------------------------

/// Writes `bytes` as `dir/name` exactly once: to a unique temporary name, fsynced, then linked
/// into place (which fails if the name exists, so two writers cannot both "send"), then the
/// directory fsynced. Returns the path and whether this call wrote it.
fn write_once(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<(PathBuf, bool)> {
    let path = dir.join(name);
    if fs::symlink_metadata(&path).is_ok() {
        return Ok((path, false));
    }
    let tmp = dir.join(temp_name(name));
    let result = write_then_link(&tmp, &path, bytes);
    // The temporary name is gone after a rename, and a leftover after a link or an error.
    let _ = fs::remove_file(&tmp);
    let fresh = result?;
    if fresh {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok((path, fresh))
}

fn write_then_link(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    match fs::hard_link(tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) => {
            // A filesystem without hard links: check, then rename (atomic, but a concurrent
            // writer of the same set could both succeed; the worker sends each set once).
            if fs::symlink_metadata(path).is_ok() {
                return Ok(false);
            }
            fs::rename(tmp, path)?;
            Ok(true)
        }
    }
}

/// `.<name>.<pid>.<nanos>.<n>.tmp`: hidden, and unique per process and call.
fn temp_name(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".{name}.{}.{nanos}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes temporary files a crash left behind (older than an hour, so a send in progress in
/// another process is never disturbed). Best effort.
fn sweep_stale_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > Duration::from_secs(3600));
        if old {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests;
