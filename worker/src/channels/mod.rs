//! Where alerts are delivered: the email (`[email]`), Slack incoming webhooks and signed
//! webhooks (`[[channels]]`), behind one `deliver` the outbox sender calls per alert set and
//! channel.
//!
//! Why it exists: the sender owns the outbox's guarantees (planned before sending, a stable id
//! per alert set, backoff, permanent failures for the operator, no resend of what was
//! delivered) once for every channel; this module owns how each channel speaks and which
//! channels an alert goes to ([`route`]). Adding a channel kind is adding a file here.
//!
//! Contract: `deliver` returning `Ok(id)` means the channel took the set (SMTP 2xx or the `.eml`
//! file on disk; HTTP 2xx), `id` being what the delivery carried (Message-ID, or the set id for
//! Slack and webhooks). `Err(Failure)` says transient or permanent, and for HTTP channels how
//! long the server asked to wait (`Retry-After`). Nothing here logs a URL, a secret or a body.

pub mod http;
pub mod route;
pub mod slack;
pub mod smtp;
pub mod smtp_probe;
pub mod webhook;

use crate::alert::{Alert, EMAIL};
use crate::email::{Mailer, SendError};
use std::collections::BTreeMap;
use std::time::Duration;
use stockhook_shared::channels::ChannelKind;
use stockhook_shared::config::Config;
use stockhook_shared::secret::Secret;

/// A delivery that did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: SendError,
    /// The server's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A transient failure of `what` (an endpoint's name), retried not before `retry_after`.
    pub fn retry(what: &str, reason: &str, retry_after: Option<Duration>) -> Failure {
        Failure {
            error: SendError::Transient(format!("{what}: {reason}")),
            retry_after,
        }
    }
}

impl From<SendError> for Failure {
    fn from(error: SendError) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// One `[[channels]]` block, ready to send.
struct Hook {
    kind: HookKind,
    url: Secret,
}

enum HookKind {
    Slack,
    /// The decoded Standard Webhooks key.
    Webhook {
        key: Vec<u8>,
    },
}

/// Every channel of this worker, and the routing table.
pub struct Channels {
    mailer: Mailer,
    /// Where file-transport emails go when no recipients are configured.
    from: String,
    hooks: BTreeMap<String, Hook>,
    poster: http::Poster,
    router: route::Router,
}

impl Channels {
    /// Builds every configured channel. Fails, naming the channel, when a channel some route
    /// uses cannot send (its URL or secret is unset, the secret is not `whsec_<base64>`).
    pub fn from_config(config: &Config, mailer: Mailer) -> Result<Channels, String> {
        let router = route::Router::from_config(config);
        let used = router.used();
        let mut hooks = BTreeMap::new();
        for c in &config.channels {
            if let Some(why) = &c.disabled {
                if used.contains(&c.name) {
                    return Err(format!("{why} (and a route sends alerts to it)"));
                }
                tracing::warn!(channel = %c.name, "channel disabled: {why}");
                continue;
            }
            let Some(url) = c.url.clone() else { continue };
            let kind = match c.kind {
                ChannelKind::Slack => HookKind::Slack,
                ChannelKind::Webhook => {
                    let secret = c.secret.as_ref().map(Secret::expose).unwrap_or_default();
                    let key = stockhook_shared::standard_webhooks::decode_key(secret).ok_or_else(|| {
                        format!(
                            "channels: channel {}: the secret is not base64 after the optional whsec_ prefix \
                             (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw)",
                            c.name
                        )
                    })?;
                    HookKind::Webhook { key }
                }
            };
            hooks.insert(c.name.clone(), Hook { kind, url });
        }
        Ok(Channels {
            mailer,
            from: config.email.from.clone(),
            hooks,
            poster: http::Poster::new()?,
            router,
        })
    }

    /// The channels `alert` goes to, sorted.
    pub fn route(&self, alert: &Alert) -> Vec<String> {
        self.router.route(alert)
    }

    pub fn mailer(&self) -> &Mailer {
        &self.mailer
    }

    /// Delivers `alerts` as one set to `channel`; `recipients` matter to email only.
    pub async fn deliver(
        &self,
        channel: &str,
        alerts: &[Alert],
        recipients: &[String],
    ) -> Result<String, Failure> {
        let ids: Vec<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
        let set = crate::alert::set_id(&ids);
        self.deliver_before(channel, (&set, alerts), recipients, None)
            .await
    }

    /// [`Channels::deliver`] of `alerts` as the alert set `set` (the id every channel carries:
    /// the sender's planned set, [`crate::alert::set_id`]), but a delivery that would begin
    /// after `not_after` does not (a transient failure); for email the check is made right
    /// before the SMTP exchange ([`crate::email::Mailer::send_before`]).
    pub async fn deliver_before(
        &self,
        channel: &str,
        (set, alerts): (&str, &[Alert]),
        recipients: &[String],
        not_after: Option<std::time::Instant>,
    ) -> Result<String, Failure> {
        if not_after.is_some_and(|t| std::time::Instant::now() > t) {
            return Err(SendError::Transient(
                "not sent: the claim to send it may have lapsed before the delivery began".into(),
            )
            .into());
        }
        if channel == EMAIL {
            let to = if recipients.is_empty() && self.mailer.mail_dir().is_some() {
                vec![self.from.clone()]
            } else {
                recipients.to_vec()
            };
            if to.is_empty() {
                return Err(SendError::Permanent(
                    "no recipients: set [alerts] recipients (or EMAIL_RECIPIENTS), or recipients on the source".into(),
                )
                .into());
            }
            return self
                .mailer
                .send_before(set, alerts, &to, not_after)
                .await
                .map(|sent| sent.message_id)
                .map_err(Failure::from);
        }
        let Some(hook) = self.hooks.get(channel) else {
            return Err(SendError::Permanent(format!(
                "channel {channel} is not configured (any more): add its [[channels]] block back, \
                 or route these alerts elsewhere, then `stockhook-worker failed replay`"
            ))
            .into());
        };
        let started = std::time::Instant::now();
        let result = match &hook.kind {
            HookKind::Slack => {
                slack::send(&self.poster, channel, hook.url.expose(), set, alerts).await
            }
            HookKind::Webhook { key } => {
                let now = stockhook_shared::queue::now_ms() / 1000;
                webhook::send(
                    &self.poster,
                    channel,
                    hook.url.expose(),
                    key,
                    (set, alerts),
                    now,
                )
                .await
            }
        };
        let kind = match hook.kind {
            HookKind::Slack => "slack",
            HookKind::Webhook { .. } => "webhook",
        };
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(id) => tracing::info!(
                channel,
                kind,
                set = %id,
                alerts = alerts.len(),
                ms,
                "alert set delivered"
            ),
            Err(f) => tracing::warn!(
                channel,
                kind,
                alerts = alerts.len(),
                ms,
                transient = f.error.is_transient(),
                retry_after_s = f.retry_after.map(|d| d.as_secs()),
                error = %f.error.message(),
                "alert set not delivered"
            ),
        }
        result
    }

    /// Closes pooled connections.
    pub async fn shutdown(&self) {
        self.mailer.shutdown().await;
    }
}
