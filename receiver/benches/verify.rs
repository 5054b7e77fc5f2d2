//! Each signature scheme's `verify` on a valid, fixture-like request: the per-request cost the
//! receiver pays before anything touches the disk. Bodies: the Shopify `products/update` sample
//! (2.2 KiB) for the HMAC schemes, eBay's signed test notification for `ebay`, a Trading API
//! SOAP notification for `ebay-legacy`. Figures: docs/PERFORMANCE.md.
//!
//! `cargo bench -p stockhook-receiver --bench verify`; CI runs it once as a test
//! (`cargo test --benches`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::hint::black_box;
use stockhook_receiver::schemes::{self, Incoming, Verifier};
use stockhook_shared::config::SourceConfig;

fn fixture(rel: &str) -> String {
    let path = format!("{}/../../shared/fixtures/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn source(fields: serde_json::Value) -> SourceConfig {
    let mut base = serde_json::json!({"name": "bench", "platform": "simple"});
    for (k, v) in fields.as_object().expect("object") {
        base[k] = v.clone();
    }
    serde_json::from_value(base).expect("valid bench source")
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).expect("header name"),
            HeaderValue::from_str(v).expect("header value"),
        );
    }
    h
}

/// One scheme's verifier with a request it accepts.
struct Case {
    name: &'static str,
    verifier: Box<dyn Verifier>,
    headers: HeaderMap,
    body: Vec<u8>,
    now: i64,
}

/// A case whose headers come from the scheme's own `sign()`, as `stockhook-receiver sign` makes them.
fn signed(name: &'static str, fields: serde_json::Value, body: &[u8], now: i64) -> Case {
    let verifier = schemes::build(&source(fields), None).expect("bench source builds");
    let headers = header_map(&verifier.sign(body, now, "b1c2d3e4-0000-4000-8000-000000000001"));
    Case {
        name,
        verifier,
        headers,
        body: body.to_vec(),
        now,
    }
}

const SOAP_TS: &str = "2024-01-02T03:04:05.000Z";
const SOAP_TS_UNIX: i64 = 1_704_164_645;

fn soap(signature: &str) -> String {
    use stockhook_test_kit::ebay_soap::{notification, ITEM_SOLD};
    notification("GetItemResponse", signature, SOAP_TS, ITEM_SOLD)
}

fn cases() -> Vec<Case> {
    let product = fixture("payloads/shopify/products_update.json").into_bytes();
    let now = 1_700_000_000;
    let mut out = vec![
        signed(
            "shopify-hmac",
            serde_json::json!({"scheme": "shopify-hmac", "platform": "shopify", "secrets": ["shpss_0123456789abcdef0123456789abcdef"]}),
            &product,
            now,
        ),
        signed(
            "standard-webhooks",
            serde_json::json!({"scheme": "standard-webhooks", "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}),
            &product,
            now,
        ),
        signed(
            "hmac-sha256 (WooCommerce, base64)",
            serde_json::json!({"scheme": "hmac-sha256", "signature_header": "X-WC-Webhook-Signature", "signature_encoding": "base64", "secrets": ["woo-secret"]}),
            &product,
            now,
        ),
        signed(
            "hmac-sha256 (GitHub-style, sha256=hex)",
            serde_json::json!({"scheme": "hmac-sha256", "signature_header": "X-Hub-Signature-256", "signature_encoding": "hex", "signature_prefix": "sha256=", "secrets": ["It's a Secret to Everybody"]}),
            &product,
            now,
        ),
        signed(
            "api-key",
            serde_json::json!({"scheme": "api-key", "platform": "amazon", "signature_header": "x-api-key", "secrets": ["k3y-0123456789abcdef0123456789abcdef"]}),
            fixture("payloads/amazon/order_change.json").as_bytes(),
            now,
        ),
        signed(
            "basic-auth",
            serde_json::json!({"scheme": "basic-auth", "platform": "amazon", "secrets": ["eventbridge:0123456789abcdef"]}),
            fixture("payloads/amazon/order_change.json").as_bytes(),
            now,
        ),
        signed(
            "none (insecure)",
            serde_json::json!({"scheme": "none", "insecure": true}),
            &product,
            now,
        ),
    ];

    // eBay Notification API: the fixture's real signature over the compact test message.
    let sig: serde_json::Value =
        serde_json::from_str(&fixture("ebay_signature.json")).expect("ebay fixture");
    let v = sig["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["id"] == "ebay-valid")
        .expect("ebay-valid vector")
        .clone();
    let headers: Vec<(String, String)> = v["headers"]
        .as_object()
        .expect("headers")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("string").to_string()))
        .collect();
    out.push(Case {
        name: "ebay (ECDSA P-256)",
        verifier: schemes::build(
            &source(serde_json::json!({
                "scheme": "ebay", "platform": "ebay",
                "public_keys": {v["kid"].as_str().expect("kid"): v["public_key_response"]["key"]}
            })),
            None,
        )
        .expect("ebay source builds"),
        headers: header_map(&headers),
        body: v["signed_bytes_utf8"]
            .as_str()
            .expect("signed bytes")
            .as_bytes()
            .to_vec(),
        now,
    });

    // eBay Trading API (SOAP): the signature sits in the body, computed by the scheme's sign().
    let legacy = schemes::build(
        &source(serde_json::json!({
            "scheme": "ebay-legacy", "platform": "ebay",
            "dev_id": "dev-123", "app_id": "app-456", "cert_id": "cert-789"
        })),
        None,
    )
    .expect("ebay-legacy source builds");
    let signature = legacy
        .sign(soap("placeholder").as_bytes(), 0, "")
        .into_iter()
        .next()
        .expect("ebay-legacy signs a SOAP body")
        .1;
    out.push(Case {
        name: "ebay-legacy (SOAP, MD5)",
        verifier: legacy,
        headers: HeaderMap::new(),
        body: soap(&signature).into_bytes(),
        now: SOAP_TS_UNIX,
    });
    out
}

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for case in cases() {
        let req = Incoming {
            headers: &case.headers,
            body: &case.body,
            now_unix: case.now,
        };
        case.verifier
            .verify(&req)
            .unwrap_or_else(|e| panic!("{}: the bench request must verify: {e}", case.name));
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(case.name, |b| {
            b.iter(|| case.verifier.verify(black_box(&req)))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
