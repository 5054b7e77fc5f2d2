//! Signers for the schemes the receiver verifies, written here from the platforms' documentation
//! and **independently of the receiver's code** (never call into `stockhook-receiver`): a bug
//! shared by the signer and the verifier would otherwise pass unnoticed. Each is checked against
//! the published vectors in `shared/fixtures/` by this module's tests.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of `parts` concatenated, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Shopify's `X-Shopify-Hmac-Sha256`: base64 of the HMAC of the raw body under the app secret.
pub fn shopify_hmac(secret: &str, body: &[u8]) -> String {
    B64.encode(hmac_sha256(secret.as_bytes(), &[body]))
}

/// The headers of a Shopify delivery of `body`: HMAC, topic, webhook (delivery) id, shop domain,
/// API version, triggered-at, and JSON content type.
pub fn shopify(secret: &str, body: &[u8], topic: &str, webhook_id: &str) -> Vec<(String, String)> {
    vec![
        ("X-Shopify-Hmac-Sha256".into(), shopify_hmac(secret, body)),
        ("X-Shopify-Topic".into(), topic.into()),
        ("X-Shopify-Webhook-Id".into(), webhook_id.into()),
        (
            "X-Shopify-Shop-Domain".into(),
            "stockhook-test.myshopify.com".into(),
        ),
        ("X-Shopify-API-Version".into(), "2024-01".into()),
        (
            "X-Shopify-Triggered-At".into(),
            "2024-01-01T00:00:00.000000000Z".into(),
        ),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// The HMAC key of a Standard Webhooks secret: base64 after the optional `whsec_` prefix.
pub fn standard_webhooks_key(secret: &str) -> Vec<u8> {
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    B64.decode(b64)
        .unwrap_or_else(|e| panic!("Standard Webhooks secret is not base64 after whsec_: {e}"))
}

/// `v1,<base64 HMAC of "id.timestamp.body">`.
pub fn standard_webhooks_signature(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = hmac_sha256(
        &standard_webhooks_key(secret),
        &[id.as_bytes(), b".", ts.as_bytes(), b".", body],
    );
    format!("v1,{}", B64.encode(sig))
}

/// `webhook-id`, `webhook-timestamp`, `webhook-signature` for `body`, and JSON content type.
pub fn standard_webhooks(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Vec<(String, String)> {
    vec![
        ("webhook-id".into(), id.into()),
        ("webhook-timestamp".into(), timestamp.to_string()),
        (
            "webhook-signature".into(),
            standard_webhooks_signature(secret, id, timestamp, body),
        ),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// GitHub-style: `header: <prefix><lowercase hex HMAC of the body>`.
pub fn hmac_hex(header: &str, prefix: &str, secret: &str, body: &[u8]) -> Vec<(String, String)> {
    vec![
        (
            header.into(),
            format!(
                "{prefix}{}",
                hex::encode(hmac_sha256(secret.as_bytes(), &[body]))
            ),
        ),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// An API key in `header`.
pub fn api_key(header: &str, key: &str) -> Vec<(String, String)> {
    vec![
        (header.into(), key.into()),
        ("Content-Type".into(), "application/json".into()),
    ]
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn shopify_matches_the_published_vector() {
        let Some(fx) = fixtures::shared("sign::shopify_matches_the_published_vector") else {
            return;
        };
        let v = fx.vector("shopify_hmac.json", "shopify-api-js-validate-valid");
        let body = v["body_utf8"].as_str().expect("body_utf8");
        assert_eq!(
            shopify_hmac(v["secret"].as_str().expect("secret"), body.as_bytes()),
            v["expected_signature"]
                .as_str()
                .expect("expected_signature")
        );
    }

    #[test]
    fn standard_webhooks_matches_the_published_vectors() {
        let Some(fx) = fixtures::shared("sign::standard_webhooks_matches_the_published_vectors")
        else {
            return;
        };
        let f = fx.json("standard_webhooks.json");
        let vectors: Vec<&serde_json::Value> = f["vectors"]
            .as_array()
            .expect("vectors")
            .iter()
            .filter(|v| v.get("expected_signature").is_some())
            .collect();
        assert_eq!(vectors.len(), 2, "the fixture's signed vectors");
        for v in vectors {
            let h = &v["headers"];
            let ts: i64 = h["webhook-timestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("timestamp");
            assert_eq!(
                standard_webhooks_signature(
                    v["secret"].as_str().expect("secret"),
                    h["webhook-id"].as_str().expect("id"),
                    ts,
                    v["body_utf8"].as_str().expect("body").as_bytes(),
                ),
                v["expected_signature"].as_str().expect("signature"),
                "vector {}",
                v["id"]
            );
        }
    }

    #[test]
    fn github_matches_the_published_vector() {
        let Some(fx) = fixtures::shared("sign::github_matches_the_published_vector") else {
            return;
        };
        let v = fx.vector("github_sha256.json", "github-docs");
        let h = hmac_hex(
            "X-Hub-Signature-256",
            "sha256=",
            v["secret"].as_str().expect("secret"),
            v["body_utf8"].as_str().expect("body").as_bytes(),
        );
        assert_eq!(
            h[0].1,
            v["expected_signature"]
                .as_str()
                .expect("expected_signature")
        );
    }
}
