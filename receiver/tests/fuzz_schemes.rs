//! Seeded mutation fuzzing of every signature scheme, on stable Rust (CI has no nightly; the
//! coverage-guided cargo-fuzz targets in `fuzz/` cover the same functions for whoever has one).
//!
//! What runs: for each scheme, the verifier [`schemes::build`] makes from a source config, fed
//! the real corpora (the published vectors in `shared/fixtures/*.json` and every payload under
//! `shared/fixtures/payloads/`, signed here) after byte flips, insertions, deletions,
//! truncations, splices, header-value mutations, extreme numbers and clocks, deep nesting and
//! invalid UTF-8 (`fuzz/mutator.rs`). Plus the header and body parsers on their own:
//! `ebay::SignatureHeader::parse`, `ebay::signature_kid`, `ebay::parse_public_key`,
//! `ebay_legacy::read_soap`, and `sign()` followed by `verify()` for the schemes that sign.
//!
//! What each iteration asserts:
//! * nothing panics (every call runs under `catch_unwind`; a panic fails the test with the
//!   scheme, the seed, the iteration and the input in hex, and saves the input to a file);
//! * a request that verifies carries a valid credential as computed here, independently of the
//!   receiver's code (HMAC recomputed with the `hmac` crate, ECDSA checked with `p256`, the
//!   Standard Webhooks signed content rebuilt), so a mutated signed request never verifies
//!   unless the mutation left what is signed intact;
//! * in particular, a body mutated under the original signature header never verifies unless it
//!   equals the original bytes (for eBay: unless its compact JSON re-serialization equals the
//!   signed bytes, the one re-reading the scheme allows by design);
//! * a refusal's message is bounded (it is logged) and never contains a configured secret.
//!
//! Iterations per target: `SHTEST_FUZZ_ITERS` (default 1500; the eBay ECDSA target runs a
//! fifth of that, its verification being far dearer than an HMAC), seed
//! `SHTEST_FUZZ_SEED`. CI runs the default, a few seconds. A longer run:
//!
//! ```sh
//! SHTEST_FUZZ_ITERS=5000000 cargo test --release -p stockhook-receiver --test fuzz_schemes
//! SHTEST_FUZZ_SEED=$RANDOM SHTEST_FUZZ_ITERS=1000000 cargo test --release -p stockhook-receiver --test fuzz_schemes
//! ```
//!
//! A failure prints `seed=<s> iteration=<i>`: rerun with `SHTEST_FUZZ_SEED=<s>` and
//! `SHTEST_FUZZ_ITERS=<i + 1>` to replay it (each iteration's choices depend only on the seed,
//! the target and the iteration number).

#[path = "../../fuzz/mutator.rs"]
mod mutator;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use mutator::{iterations, mutate, mutated_pick, no_panic, seed, Rng};
use serde_json::Value;
use sha2::Sha256;
use std::path::{Path, PathBuf};
use stockhook_receiver::schemes::{self, ebay, ebay_legacy, Incoming, Verifier, VerifyError};
use stockhook_shared::config::SourceConfig;
use stockhook_test_kit::fixtures::{self, Fixtures};

const DEFAULT_ITERS: u64 = 1500;

/// Padding-indifferent standard base64, as senders differ on padding.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

// --- corpora ---------------------------------------------------------------------------------

/// The published vectors beside the repository; `None` (after a loud SKIPPED line) when absent.
fn published(test: &str) -> Option<Fixtures> {
    fixtures::shared(test)
}

/// Fuzzes the target `make` builds from the published vectors; skipped (after the SKIPPED line)
/// when they are absent.
fn run_published(test: &str, make: fn(&Fixtures) -> Target) {
    if let Some(fx) = published(test) {
        run(&make(&fx));
    }
}

/// Every seed payload: the suite's own (`tests/data/payloads/`) and, when beside the repository,
/// the published ones (`../shared/fixtures/payloads/`), sorted by path within each.
fn payloads() -> Vec<Vec<u8>> {
    let mut corpora = vec![fixtures::data()];
    corpora.extend(published(
        "fuzz_schemes (the published payloads among the seeds)",
    ));
    let mut out = Vec::new();
    for fx in corpora {
        let root = fx.path("payloads");
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("listing {}: {e}", root.display()))
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for d in dirs {
            let rel = d.strip_prefix(fx.root()).expect("under the root");
            let rel = rel.to_str().expect("UTF-8 path");
            out.extend(fx.payloads(rel).into_iter().map(|(_, body)| body));
        }
    }
    assert!(
        out.len() >= 4,
        "expected the seed payloads, found {}",
        out.len()
    );
    out
}

fn source(fields: Value) -> SourceConfig {
    let mut base = serde_json::json!({"name": "fuzz", "platform": "simple"});
    for (k, v) in fields.as_object().expect("an object") {
        base[k] = v.clone();
    }
    serde_json::from_value(base).expect("a valid source config")
}

/// The verifier of a `source` with these scheme fields.
fn verifier(fields: Value) -> Box<dyn Verifier> {
    schemes::build(&source(fields), None).expect("builds")
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

// --- requests --------------------------------------------------------------------------------

/// A request as the fuzzer holds it: header values as bytes (they may become invalid).
#[derive(Clone, Debug, PartialEq)]
struct Req {
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    now: i64,
}

impl Req {
    fn new(headers: &[(String, String)], body: &[u8], now: i64) -> Req {
        Req {
            headers: headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                .collect(),
            body: body.to_vec(),
            now,
        }
    }

    /// The header map hyper would hand the receiver: invalid names are dropped, and a value
    /// keeps only the bytes an HTTP/1 parser lets through (no CTLs but tab; obs-text stays).
    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in &self.headers {
            let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
                continue;
            };
            let clean: Vec<u8> = v
                .iter()
                .copied()
                .filter(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f))
                .collect();
            if let Ok(value) = HeaderValue::from_bytes(&clean) {
                map.append(name, value);
            }
        }
        map
    }

    /// The request as one byte string, for a failure report.
    fn dump(&self) -> Vec<u8> {
        let mut out = format!("now={}\n", self.now).into_bytes();
        for (k, v) in &self.headers {
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v);
            out.extend_from_slice(b"\n");
        }
        out.extend_from_slice(b"\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// The first value of `name`, trimmed, if it is visible ASCII (what the schemes read).
fn first(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

// --- the driver ------------------------------------------------------------------------------

/// How an iteration changed its seed request.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Change {
    Body,
    Header,
    Both,
    Clock,
    Junk,
}

/// Does the request carry a valid credential for its body at its clock?
type Oracle = Box<dyn Fn(&HeaderMap, &[u8], i64) -> bool>;
/// May a body changed under the original headers (original, changed) still verify?
type BodyEquivalence = Box<dyn Fn(&[u8], &[u8]) -> bool>;

struct Target {
    name: &'static str,
    verifier: Box<dyn Verifier>,
    seeds: Vec<Req>,
    /// The scheme's own headers: the ones mutated, removed, duplicated and added.
    headers: &'static [&'static str],
    /// Secrets that must never appear in an error message.
    secrets: Vec<String>,
    /// Independent check: does the request carry a valid credential for its body at its clock?
    valid: Oracle,
    /// When only the body changed under the original headers, may it still verify? (`None`:
    /// the scheme does not sign the body: api-key, basic-auth, ebay-legacy.)
    body_equivalent: Option<BodyEquivalence>,
    iterations: u64,
}

fn fail(target: &str, seed: u64, i: u64, what: &str, input: &[u8]) -> ! {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    mutator::fail(&dir, target, seed, i, what, input)
}

fn mutate_headers(rng: &mut Rng, req: &mut Req, names: &[&str], donors: &[&[u8]]) {
    let name = if !req.headers.is_empty() && rng.chance(3, 4) {
        req.headers[rng.below(req.headers.len())].0.clone()
    } else {
        rng.pick(names).to_string()
    };
    let pos = req
        .headers
        .iter()
        .position(|(k, _)| k.eq_ignore_ascii_case(&name));
    match (rng.below(8), pos) {
        // Mutate the value in place.
        (0..=3, Some(p)) => mutate(rng, &mut req.headers[p].1, donors, 3),
        // Remove it.
        (4, Some(p)) => {
            req.headers.remove(p);
        }
        // A second copy with a mutated value, before or after the original.
        (5, Some(p)) => {
            let mut v = req.headers[p].1.clone();
            mutate(rng, &mut v, donors, 2);
            let at = if rng.chance(1, 2) { p } else { p + 1 };
            req.headers.insert(at, (name, v));
        }
        // Empty or whitespace only.
        (6, Some(p)) => req.headers[p].1 = rng.pick(&[&b""[..], b" ", b"\t \t"]).to_vec(),
        // Replace with a donor (another header's value, a body slice, a token).
        (_, Some(p)) => {
            let mut v = rng.pick(donors).to_vec();
            v.truncate(rng.small_len(200));
            req.headers[p].1 = v;
        }
        // Absent: add it with junk.
        (_, None) => {
            let mut v = rng.pick(donors).to_vec();
            v.truncate(rng.small_len(200));
            mutate(rng, &mut v, donors, 2);
            req.headers.push((name, v));
        }
    }
}

fn extreme_clock(rng: &mut Rng, now: i64, tolerance: i64) -> i64 {
    match rng.below(9) {
        0 => i64::MIN,
        1 => i64::MAX,
        2 => 0,
        3 => -1,
        4 => now.saturating_add(tolerance),
        5 => now.saturating_sub(tolerance),
        6 => now.saturating_add(tolerance + 1),
        7 => now.saturating_sub(tolerance + 1),
        _ => rng.next_u64() as i64,
    }
}

fn run(t: &Target) {
    let seed = seed();
    // Every seed verifies as given: the corpus is right before it is mutated.
    for (k, s) in t.seeds.iter().enumerate() {
        let h = s.header_map();
        let r = t.verifier.verify(&Incoming {
            headers: &h,
            body: &s.body,
            now_unix: s.now,
        });
        assert_eq!(r, Ok(()), "{}: seed request #{k} does not verify", t.name);
        assert!(
            (t.valid)(&h, &s.body, s.now),
            "{}: the independent check refuses seed request #{k}",
            t.name
        );
    }
    let mut donors: Vec<&[u8]> = Vec::new();
    for s in &t.seeds {
        donors.push(&s.body);
        for (_, v) in &s.headers {
            donors.push(v);
        }
    }
    let mut verified = 0u64;
    for i in 0..t.iterations {
        let mut rng = Rng::for_iteration(seed, t.name, i);
        let base = rng.pick(&t.seeds).clone();
        let mut req = base.clone();
        let change = match rng.below(20) {
            0..=7 => Change::Body,
            8..=13 => Change::Header,
            14..=15 => Change::Both,
            16..=17 => Change::Clock,
            _ => Change::Junk,
        };
        match change {
            Change::Body => mutate(&mut rng, &mut req.body, &donors, 4),
            Change::Header => mutate_headers(&mut rng, &mut req, t.headers, &donors),
            Change::Both => {
                mutate(&mut rng, &mut req.body, &donors, 2);
                mutate_headers(&mut rng, &mut req, t.headers, &donors);
            }
            Change::Clock => req.now = extreme_clock(&mut rng, base.now, 300),
            Change::Junk => {
                let n = rng.small_len(4096);
                req.body = (0..n).map(|_| rng.byte()).collect();
                req.headers.retain(|_| rng.chance(1, 2));
                mutate_headers(&mut rng, &mut req, t.headers, &donors);
            }
        }
        let h = req.header_map();
        let result = no_panic(|| {
            t.verifier.verify(&Incoming {
                headers: &h,
                body: &req.body,
                now_unix: req.now,
            })
        });
        match result {
            Err(p) => fail(
                t.name,
                seed,
                i,
                &format!("verify panicked: {p}"),
                &req.dump(),
            ),
            Ok(Ok(())) => {
                verified += 1;
                if !(t.valid)(&h, &req.body, req.now) {
                    fail(
                        t.name,
                        seed,
                        i,
                        &format!(
                            "verified a {change:?}-mutated request whose credential the \
                             independent check refuses"
                        ),
                        &req.dump(),
                    );
                }
                if let (Change::Body, Some(eq)) = (change, &t.body_equivalent) {
                    if req.body != base.body && !eq(&base.body, &req.body) {
                        fail(
                            t.name,
                            seed,
                            i,
                            "a mutated body verified under the original signature header",
                            &req.dump(),
                        );
                    }
                }
            }
            Ok(Err(e)) => check_error(t, seed, i, &e, &req),
        }
        // sign() reads the body too (ebay-legacy parses it): it must not panic either.
        if rng.chance(1, 8) {
            if let Err(p) = no_panic(|| t.verifier.sign(&req.body, req.now, "fuzz-delivery")) {
                fail(t.name, seed, i, &format!("sign panicked: {p}"), &req.dump());
            }
        }
    }
    eprintln!(
        "fuzz {}: {} iterations (seed {seed:#x}), {verified} mutated requests verified, all \
         with a valid credential",
        t.name, t.iterations
    );
}

fn check_error(t: &Target, seed: u64, i: u64, e: &VerifyError, req: &Req) {
    let msg = no_panic(|| e.to_string()).unwrap_or_else(|p| {
        fail(
            t.name,
            seed,
            i,
            &format!("Display panicked: {p}"),
            &req.dump(),
        )
    });
    let code = e.code();
    assert!(
        [
            "missing_header",
            "malformed_signature",
            "signature_mismatch",
            "stale_timestamp",
            "unknown_key",
            "empty_body"
        ]
        .contains(&code),
        "{}: unknown code {code}",
        t.name
    );
    if msg.len() > 1024 {
        fail(
            t.name,
            seed,
            i,
            &format!(
                "refusal message of {} bytes (it is logged and returned): {:?}...",
                msg.len(),
                &msg.chars().take(200).collect::<String>()
            ),
            &req.dump(),
        );
    }
    for s in &t.secrets {
        if s.len() >= 4 && msg.contains(s.as_str()) {
            fail(
                t.name,
                seed,
                i,
                &format!("refusal message contains a secret: {msg}"),
                &req.dump(),
            );
        }
    }
}

// --- Shopify ---------------------------------------------------------------------------------

fn shopify_target(fx: &Fixtures) -> Target {
    let v = fx.vector("shopify_hmac.json", "shopify-api-js-validate-valid");
    let secret = v["secret"].as_str().expect("secret").to_string();
    let mut seeds = vec![Req::new(
        &fixtures::vector_headers(&v),
        v["body_utf8"].as_str().expect("body").as_bytes(),
        0,
    )];
    for (n, body) in payloads().iter().enumerate() {
        let sig = STANDARD.encode(hmac_sha256(secret.as_bytes(), &[body]));
        // Half with the prefixed header, half with the newer unprefixed one.
        let name = if n % 2 == 0 {
            "X-Shopify-Hmac-Sha256"
        } else {
            "shopify-hmac-sha256"
        };
        seeds.push(Req::new(
            &[
                (name.into(), sig),
                ("X-Shopify-Topic".into(), "orders/create".into()),
                ("X-Shopify-Webhook-Id".into(), format!("wh-{n}")),
            ],
            body,
            0,
        ));
    }
    let key = secret.clone();
    Target {
        name: "shopify-hmac",
        verifier: verifier(
            serde_json::json!({"scheme": "shopify-hmac", "platform": "shopify", "secrets": [secret]}),
        ),
        seeds,
        headers: &[
            "x-shopify-hmac-sha256",
            "shopify-hmac-sha256",
            "x-shopify-topic",
        ],
        secrets: vec![secret],
        valid: Box::new(move |h, body, _| {
            let want = hmac_sha256(key.as_bytes(), &[body]);
            !body.is_empty()
                && ["x-shopify-hmac-sha256", "shopify-hmac-sha256"]
                    .iter()
                    .filter_map(|n| first(h, n))
                    .any(|v| B64.decode(v).is_ok_and(|d| d == want))
        }),
        body_equivalent: Some(Box::new(|a, b| a == b)),
        iterations: iterations(DEFAULT_ITERS),
    }
}

#[test]
fn fuzz_shopify_hmac() {
    run_published("fuzz_shopify_hmac", shopify_target);
}

// --- Standard Webhooks -----------------------------------------------------------------------

fn standard_webhooks_target(fx: &Fixtures) -> Target {
    let f = fx.json("standard_webhooks.json");
    let mut seeds = Vec::new();
    // The two signed vectors use different secrets: the source has both, as in a rotation.
    let mut secrets: Vec<String> = Vec::new();
    for v in f["vectors"].as_array().expect("vectors") {
        if v.get("expected_signature").is_none() {
            continue;
        }
        secrets.push(v["secret"].as_str().expect("secret").to_string());
        let headers = fixtures::vector_headers(v);
        let ts: i64 = v["headers"]["webhook-timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        seeds.push(Req::new(
            &headers,
            v["body_utf8"].as_str().expect("body").as_bytes(),
            ts,
        ));
    }
    assert_eq!(seeds.len(), 2, "the fixture's two signed vectors");
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .map(|s| {
            B64.decode(s.strip_prefix("whsec_").unwrap_or(s))
                .expect("secret is base64")
        })
        .collect();
    let now = 1_700_000_000i64;
    for (n, body) in payloads().iter().enumerate() {
        let id = format!("msg_fuzz{n}");
        let ts = (now - 100 + n as i64 * 17).to_string();
        let key = &keys[n % keys.len()];
        let sig = hmac_sha256(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
        // Some with a rotation list: a v1a entry and a wrong v1 entry before the right one.
        let list = if n % 3 == 0 {
            format!(
                "v1a,bm90IGFzeW1tZXRyaWM= v1,{} v1,{}",
                STANDARD.encode([7u8; 32]),
                STANDARD.encode(sig)
            )
        } else {
            format!("v1,{}", STANDARD.encode(sig))
        };
        seeds.push(Req::new(
            &[
                ("webhook-id".into(), id),
                ("webhook-timestamp".into(), ts),
                ("webhook-signature".into(), list),
            ],
            body,
            now,
        ));
    }
    let mut never_logged = secrets.clone();
    never_logged.extend(secrets.iter().map(|s| s["whsec_".len()..].to_string()));
    Target {
        name: "standard-webhooks",
        verifier: verifier(serde_json::json!({"scheme": "standard-webhooks", "secrets": secrets})),
        seeds,
        headers: &["webhook-id", "webhook-timestamp", "webhook-signature"],
        secrets: never_logged,
        valid: Box::new(move |h, body, now| {
            let (Some(id), Some(ts), Some(list)) = (
                first(h, "webhook-id"),
                first(h, "webhook-timestamp"),
                first(h, "webhook-signature"),
            ) else {
                return false;
            };
            let Ok(t) = ts.parse::<i64>() else {
                return false;
            };
            if (i128::from(now) - i128::from(t)).abs() > 300 {
                return false;
            }
            let wants: Vec<[u8; 32]> = keys
                .iter()
                .map(|k| hmac_sha256(k, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]))
                .collect();
            list.split_ascii_whitespace()
                .filter_map(|e| e.strip_prefix("v1,"))
                .filter_map(|s| B64.decode(s).ok())
                .any(|d| wants.iter().any(|w| d == w))
        }),
        body_equivalent: Some(Box::new(|a, b| a == b)),
        iterations: iterations(DEFAULT_ITERS),
    }
}

#[test]
fn fuzz_standard_webhooks() {
    run_published("fuzz_standard_webhooks", standard_webhooks_target);
}

// --- hmac-sha256: WooCommerce (base64) and GitHub-style (hex, prefix) ------------------------

fn hmac_target(
    name: &'static str,
    header: &'static str,
    hex: bool,
    prefix: &'static str,
    secret: String,
    vector_body: &[u8],
) -> Target {
    let encode = move |mac: [u8; 32]| {
        if hex {
            format!("{prefix}{}", ::hex::encode(mac))
        } else {
            format!("{prefix}{}", STANDARD.encode(mac))
        }
    };
    let mut bodies = vec![vector_body.to_vec()];
    bodies.extend(payloads());
    let seeds = bodies
        .iter()
        .map(|b| {
            Req::new(
                &[(
                    header.to_string(),
                    encode(hmac_sha256(secret.as_bytes(), &[b])),
                )],
                b,
                0,
            )
        })
        .collect();
    let mut cfg = serde_json::json!({
        "scheme": "hmac-sha256", "secrets": [secret], "signature_header": header,
        "signature_encoding": if hex { "hex" } else { "base64" },
    });
    if !prefix.is_empty() {
        cfg["signature_prefix"] = Value::String(prefix.into());
    }
    let key = secret.clone();
    let lc = header.to_ascii_lowercase();
    Target {
        name,
        verifier: verifier(cfg),
        seeds,
        headers: if hex {
            &["x-hub-signature-256", "x-github-delivery"]
        } else {
            &["x-wc-webhook-signature", "x-wc-webhook-delivery-id"]
        },
        secrets: vec![secret],
        valid: Box::new(move |h, body, _| {
            let Some(v) = first(h, &lc) else {
                return false;
            };
            let Some(rest) = v
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .and_then(|_| v.get(prefix.len()..))
            else {
                return false;
            };
            let decoded = if hex {
                ::hex::decode(rest).ok()
            } else {
                B64.decode(rest).ok()
            };
            decoded.is_some_and(|d| d == hmac_sha256(key.as_bytes(), &[body]))
        }),
        body_equivalent: Some(Box::new(|a, b| a == b)),
        iterations: iterations(DEFAULT_ITERS),
    }
}

#[test]
fn fuzz_hmac_sha256_woocommerce_base64() {
    let Some(fx) = published("fuzz_hmac_sha256_woocommerce_base64") else {
        return;
    };
    let v = fx.vector("woocommerce_hmac.json", "wc-test_generate_signature");
    // WooCommerce's default secret is the empty string: the vector uses it.
    let secret = v["secret"].as_str().expect("secret").to_string();
    run(&hmac_target(
        "hmac-sha256-woocommerce",
        "X-WC-Webhook-Signature",
        false,
        "",
        secret,
        v["body_utf8"].as_str().expect("body").as_bytes(),
    ));
}

#[test]
fn fuzz_hmac_sha256_github_hex() {
    let Some(fx) = published("fuzz_hmac_sha256_github_hex") else {
        return;
    };
    let v = fx.vector("github_sha256.json", "github-docs");
    run(&hmac_target(
        "hmac-sha256-github",
        "X-Hub-Signature-256",
        true,
        "sha256=",
        v["secret"].as_str().expect("secret").to_string(),
        v["body_utf8"].as_str().expect("body").as_bytes(),
    ));
}

// --- api-key and basic-auth (credentials; the body is not signed) ----------------------------

#[test]
fn fuzz_api_key() {
    const KEY: &str = "sk_live_7f3a9c2e41b8d6f0";
    const OLD: &str = "sk_live_rotated_out_0001";
    let seeds = payloads()
        .iter()
        .enumerate()
        .map(|(n, b)| Req::new(&[("x-api-key".into(), [KEY, OLD][n % 2].into())], b, 0))
        .collect();
    run(&Target {
        name: "api-key",
        verifier: verifier(
            serde_json::json!({"scheme": "api-key", "platform": "amazon", "secrets": [KEY, OLD]}),
        ),
        seeds,
        headers: &["x-api-key", "authorization"],
        secrets: vec![KEY.into(), OLD.into()],
        valid: Box::new(|h, _, _| first(h, "x-api-key").is_some_and(|v| v == KEY || v == OLD)),
        body_equivalent: None,
        iterations: iterations(DEFAULT_ITERS),
    });
}

#[test]
fn fuzz_basic_auth() {
    const CRED: &str = "stockhook:s3cr3t-passw0rd";
    let seeds = payloads()
        .iter()
        .map(|b| {
            Req::new(
                &[(
                    "Authorization".into(),
                    format!("Basic {}", STANDARD.encode(CRED)),
                )],
                b,
                0,
            )
        })
        .collect();
    run(&Target {
        name: "basic-auth",
        verifier: verifier(
            serde_json::json!({"scheme": "basic-auth", "platform": "amazon", "secrets": [CRED]}),
        ),
        seeds,
        headers: &["authorization", "x-api-key"],
        secrets: vec![CRED.into(), STANDARD.encode(CRED), "s3cr3t-passw0rd".into()],
        valid: Box::new(|h, _, _| {
            let Some(v) = first(h, "authorization") else {
                return false;
            };
            let Some((scheme, rest)) = v.split_once(' ') else {
                return false;
            };
            scheme.eq_ignore_ascii_case("basic")
                && B64.decode(rest.trim()).is_ok_and(|d| d == CRED.as_bytes())
        }),
        body_equivalent: None,
        iterations: iterations(DEFAULT_ITERS),
    });
}

// --- eBay Notification API (ECDSA) -----------------------------------------------------------

const EBAY_KID: &str = "9936261a-7d7b-4621-a0f1-96ccb428af49";

fn ebay_pem(fx: &Fixtures) -> String {
    fx.json("payloads/ebay/getPublicKey_response.json")["key"]
        .as_str()
        .expect("key")
        .to_string()
}

fn compact(body: &[u8]) -> Option<Vec<u8>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    serde_json::to_vec(&v).ok()
}

/// ECDSA P-256 / SHA-1 over the raw body or its compact form, checked with `p256` directly.
fn ebay_valid(key: &p256::ecdsa::VerifyingKey, h: &HeaderMap, body: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    use sha1::Digest;
    let Some(v) = first(h, "x-ebay-signature") else {
        return false;
    };
    let Some(json) = B64.decode(v).ok() else {
        return false;
    };
    let Ok(j) = serde_json::from_slice::<Value>(&json) else {
        return false;
    };
    let field = |k: &str| j.get(k).and_then(Value::as_str).map(str::to_string);
    let (Some(alg), Some(kid), Some(sig), Some(digest)) = (
        field("alg"),
        field("kid"),
        field("signature"),
        field("digest"),
    ) else {
        return false;
    };
    if !alg.eq_ignore_ascii_case("ecdsa") || !digest.eq_ignore_ascii_case("sha1") || kid != EBAY_KID
    {
        return false;
    }
    let Some(sig) = B64
        .decode(sig)
        .ok()
        .and_then(|d| p256::ecdsa::Signature::from_der(&d).ok())
    else {
        return false;
    };
    let ok = |b: &[u8]| key.verify_prehash(&sha1::Sha1::digest(b), &sig).is_ok();
    !body.is_empty() && (ok(body) || compact(body).is_some_and(|c| ok(&c)))
}

#[test]
fn fuzz_ebay_ecdsa() {
    use p256::pkcs8::DecodePublicKey;
    let Some(fx) = published("fuzz_ebay_ecdsa") else {
        return;
    };
    let f = fx.json("ebay_signature.json");
    let v = &f["vectors"][0];
    assert_eq!(v["id"], "ebay-valid");
    let header = v["headers"]["X-EBAY-SIGNATURE"]
        .as_str()
        .expect("signature")
        .to_string();
    let signed = v["signed_bytes_utf8"].as_str().expect("bytes").as_bytes();
    // The signed compact bytes, the pretty-printed payload of the same message (verifies through
    // the compact re-serialization), both under the one real signature.
    let pretty = fx.bytes("payloads/ebay/marketplace_account_deletion.json");
    let seeds = vec![
        Req::new(&[("X-EBAY-SIGNATURE".into(), header.clone())], signed, 0),
        Req::new(&[("X-EBAY-SIGNATURE".into(), header.clone())], &pretty, 0),
    ];
    let pem = ebay_pem(&fx);
    let der: String = pem
        .replace("-----BEGIN PUBLIC KEY-----", "")
        .replace("-----END PUBLIC KEY-----", "")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let key = p256::ecdsa::VerifyingKey::from_public_key_der(&B64.decode(der).expect("base64"))
        .expect("a P-256 key");
    let signed_compact = compact(signed).expect("the signed bytes are JSON");
    run(&Target {
        name: "ebay",
        verifier: verifier(serde_json::json!({
            "scheme": "ebay", "platform": "ebay", "public_keys": {EBAY_KID: pem}
        })),
        seeds,
        headers: &["x-ebay-signature"],
        secrets: Vec::new(),
        valid: Box::new(move |h, body, _| ebay_valid(&key, h, body)),
        body_equivalent: Some(Box::new(move |_, b| {
            compact(b).is_some_and(|c| c == signed_compact)
        })),
        iterations: (iterations(DEFAULT_ITERS) / 5).max(1),
    });
}

/// `X-EBAY-SIGNATURE` parsing alone, mutating the base64 text and, structure-aware, the JSON
/// inside it (re-encoded), so mutations reach the JSON and the field checks.
#[test]
fn fuzz_ebay_signature_header_parse() {
    let Some(fx) = published("fuzz_ebay_signature_header_parse") else {
        return;
    };
    let f = fx.json("ebay_signature.json");
    let headers: Vec<String> = f["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .filter_map(|v| {
            v["headers"]["X-EBAY-SIGNATURE"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(headers.len() >= 3);
    let decoded: Vec<Vec<u8>> = headers
        .iter()
        .map(|h| B64.decode(h).expect("base64"))
        .collect();
    let donors: Vec<&[u8]> = headers
        .iter()
        .map(|h| h.as_bytes())
        .chain(decoded.iter().map(|d| d.as_slice()))
        .collect();
    let seed = seed();
    let n = iterations(DEFAULT_ITERS) * 2;
    let (mut parsed, mut kids) = (0u64, 0u64);
    for i in 0..n {
        let mut rng = Rng::for_iteration(seed, "ebay-header", i);
        let k = rng.below(headers.len());
        let text: Vec<u8> = if rng.chance(1, 2) {
            let mut json = decoded[k].clone();
            mutate(&mut rng, &mut json, &donors, 3);
            STANDARD.encode(json).into_bytes()
        } else {
            let mut t = headers[k].clone().into_bytes();
            mutate(&mut rng, &mut t, &donors, 3);
            t
        };
        let s = String::from_utf8_lossy(&text).into_owned();
        match no_panic(|| ebay::SignatureHeader::parse(&s)) {
            Err(p) => fail(
                "ebay-header",
                seed,
                i,
                &format!("parse panicked: {p}"),
                &text,
            ),
            Ok(Ok(h)) => {
                parsed += 1;
                assert!(
                    h.alg.eq_ignore_ascii_case("ecdsa") && h.digest.eq_ignore_ascii_case("sha1"),
                    "parse accepted alg {:?} digest {:?}",
                    h.alg,
                    h.digest
                );
            }
            Ok(Err(e)) => {
                let m = e.to_string();
                if m.len() > 1024 {
                    fail("ebay-header", seed, i, "refusal message over 1 KiB", &text);
                }
            }
        }
        let req = Req {
            headers: vec![("x-ebay-signature".into(), text.clone())],
            body: Vec::new(),
            now: 0,
        };
        let hm = req.header_map();
        match no_panic(|| ebay::signature_kid(&hm)) {
            Err(p) => fail(
                "ebay-header",
                seed,
                i,
                &format!("signature_kid panicked: {p}"),
                &text,
            ),
            Ok(Some(_)) => kids += 1,
            Ok(None) => {}
        }
    }
    eprintln!("fuzz ebay-header: {n} iterations, {parsed} parsed, {kids} kids read");
}

/// The public key parser reads configuration, not requests, but it must not panic either.
#[test]
fn fuzz_ebay_parse_public_key() {
    let Some(fx) = published("fuzz_ebay_parse_public_key") else {
        return;
    };
    let pem = ebay_pem(&fx);
    let donors: Vec<&[u8]> = vec![pem.as_bytes()];
    let seed = seed();
    let n = iterations(DEFAULT_ITERS) / 2;
    for i in 0..n {
        let mut rng = Rng::for_iteration(seed, "ebay-pem", i);
        let mut t = pem.clone().into_bytes();
        mutate(&mut rng, &mut t, &donors, 3);
        let s = String::from_utf8_lossy(&t).into_owned();
        if let Err(p) = no_panic(|| ebay::parse_public_key(&s)) {
            fail("ebay-pem", seed, i, &format!("panicked: {p}"), &t);
        }
    }
}

// --- eBay Trading API Platform Notifications (SOAP, MD5 of the timestamp) --------------------

const LEGACY_DEV: &str = "dev-123";
const LEGACY_APP: &str = "app-456";
const LEGACY_CERT: &str = "cert-789-fuzz";
const LEGACY_TS: &str = "2024-01-02T03:04:05.000Z";
const LEGACY_NOW: i64 = 1_704_164_645;

fn legacy_md5(ts: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for p in [ts, LEGACY_DEV, LEGACY_APP, LEGACY_CERT] {
        h.update(p.as_bytes());
    }
    h.finalize().into()
}

/// Platform Notifications shaped as eBay sends them, signed for [`LEGACY_TS`].
fn soap_seeds() -> Vec<Vec<u8>> {
    let sig = STANDARD.encode(legacy_md5(LEGACY_TS));
    let envelope = |response: &str, inner: &str| {
        stockhook_test_kit::ebay_soap::notification(response, &sig, LEGACY_TS, inner).into_bytes()
    };
    let item = r#"<Item><ItemID>110554019341</ItemID><Quantity>10</Quantity>
     <SellingStatus><QuantitySold>3</QuantitySold></SellingStatus><SKU>MUG-RED</SKU>
     <Title>Mug &amp; Saucer <![CDATA[<Red>]]></Title></Item>"#;
    vec![
        envelope("GetItemResponse", item),
        envelope(
            "GetItemTransactionsResponse",
            &format!(
                "{item}<TransactionArray><Transaction><QuantityPurchased>2</QuantityPurchased>\
                 <TransactionID>1843950001</TransactionID><Buyer><Email>buyer@example.com</Email>\
                 <BuyerInfo><ShippingAddress><Name>Jane Q. Buyer</Name><Street1>1 Main St</Street1>\
                 </ShippingAddress></BuyerInfo></Buyer></Transaction></TransactionArray>"
            ),
        ),
    ]
}

#[test]
fn fuzz_ebay_legacy_soap() {
    let seeds = soap_seeds()
        .iter()
        .map(|b| {
            Req::new(
                &[("SOAPAction".into(), "\"ItemSold\"".into())],
                b,
                LEGACY_NOW,
            )
        })
        .collect();
    run(&Target {
        name: "ebay-legacy",
        verifier: verifier(serde_json::json!({
            "scheme": "ebay-legacy", "platform": "ebay", "dev_id": LEGACY_DEV,
            "app_id": LEGACY_APP, "cert_id": LEGACY_CERT, "tolerance_secs": 300
        })),
        seeds,
        headers: &["soapaction", "content-type"],
        secrets: vec![LEGACY_CERT.into()],
        // eBay signs the timestamp and the keyset, not the body: what must hold is that the
        // signature is the MD5 of the timestamp the verifier read, and that it is in tolerance.
        valid: Box::new(|_, body, now| {
            let Ok(f) = ebay_legacy::read_soap(body) else {
                return false;
            };
            let (Some(sig), Some(ts)) = (f.signature, f.timestamp) else {
                return false;
            };
            let Ok(t) =
                time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339)
            else {
                return false;
            };
            (i128::from(now) - i128::from(t.unix_timestamp())).abs() <= 300
                && B64.decode(sig).is_ok_and(|d| d == legacy_md5(&ts))
        }),
        body_equivalent: None,
        iterations: iterations(DEFAULT_ITERS),
    });
}

/// The SOAP reader alone, over the SOAP seeds and every JSON payload (not XML at all).
#[test]
fn fuzz_ebay_legacy_read_soap() {
    let mut corpus = soap_seeds();
    corpus.extend(payloads());
    let donors: Vec<&[u8]> = corpus.iter().map(|c| c.as_slice()).collect();
    let seed = seed();
    let n = iterations(DEFAULT_ITERS) * 2;
    let mut both = 0u64;
    for i in 0..n {
        let (_, body) = mutated_pick(seed, "read-soap", i, &corpus, &donors, 4);
        match no_panic(|| ebay_legacy::read_soap(&body)) {
            Err(p) => fail("read-soap", seed, i, &format!("panicked: {p}"), &body),
            Ok(Ok(f)) => {
                if f.signature.is_some() && f.timestamp.is_some() {
                    both += 1;
                }
            }
            Ok(Err(e)) => {
                let m = e.to_string();
                if m.len() > 1024 {
                    fail("read-soap", seed, i, "error message over 1 KiB", &body);
                }
            }
        }
    }
    eprintln!("fuzz read-soap: {n} iterations, {both} with signature and timestamp");
}

// --- sign() then verify() --------------------------------------------------------------------

/// For every scheme that signs (and `none`): the headers `sign()` gives for any (non-empty)
/// body, clock and delivery id verify at that clock. A verifier that refuses what its own signer made would
/// break the `sign` CLI command and every test built on it.
#[test]
fn fuzz_sign_then_verify_round_trip() {
    // Any Standard Webhooks secret: `whsec_` + base64 of 24 random bytes (made for this test).
    let whsec = "whsec_c3RvY2tob29rLWZ1enotcm91bmQtdHJpcA==".to_string();
    let verifiers: Vec<(&str, Box<dyn Verifier>)> = vec![
        (
            "shopify-hmac",
            serde_json::json!({"scheme": "shopify-hmac", "secrets": ["s1", "s2"]}),
        ),
        (
            "standard-webhooks",
            serde_json::json!({"scheme": "standard-webhooks", "secrets": [whsec]}),
        ),
        (
            "hmac-sha256",
            serde_json::json!({"scheme": "hmac-sha256", "secrets": [""], "signature_header": "X-WC-Webhook-Signature"}),
        ),
        (
            "hmac-sha256-hex",
            serde_json::json!({"scheme": "hmac-sha256", "secrets": ["k"], "signature_header": "X-Hub-Signature-256", "signature_encoding": "hex", "signature_prefix": "sha256="}),
        ),
        (
            "api-key",
            serde_json::json!({"scheme": "api-key", "secrets": ["key-1"]}),
        ),
        (
            "basic-auth",
            serde_json::json!({"scheme": "basic-auth", "secrets": ["u:p"]}),
        ),
        // Signs nothing, accepts anything: only for local tests, and never without `insecure`.
        (
            "none",
            serde_json::json!({"scheme": "none", "insecure": true}),
        ),
    ]
    .into_iter()
    .map(|(n, cfg)| (n, verifier(cfg)))
    .collect();
    let corpus = payloads();
    let donors: Vec<&[u8]> = corpus.iter().map(|c| c.as_slice()).collect();
    let seed = seed();
    let n = iterations(DEFAULT_ITERS);
    for i in 0..n {
        let mut rng = Rng::for_iteration(seed, "sign-verify", i);
        let (name, v) = rng.pick(&verifiers);
        let mut body = rng.pick(&corpus).clone();
        mutate(&mut rng, &mut body, &donors, 3);
        if body.is_empty() {
            body.push(b'{');
        }
        let now = match rng.below(4) {
            0 => 0,
            1 => i64::from(u32::MAX),
            2 => -(rng.below(1 << 40) as i64),
            _ => rng.below(1 << 40) as i64,
        };
        let id = format!("msg_{:x}", rng.next_u64());
        let headers = match no_panic(|| v.sign(&body, now, &id)) {
            Ok(h) => h,
            Err(p) => fail(name, seed, i, &format!("sign panicked: {p}"), &body),
        };
        let req = Req::new(&headers, &body, now);
        let hm = req.header_map();
        match no_panic(|| {
            v.verify(&Incoming {
                headers: &hm,
                body: &body,
                now_unix: now,
            })
        }) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => fail(
                name,
                seed,
                i,
                &format!("its own signature does not verify: {e}"),
                &req.dump(),
            ),
            Err(p) => fail(name, seed, i, &format!("verify panicked: {p}"), &req.dump()),
        }
    }
}

/// KNOWN PRODUCT BUG, pinned: a SOAP body whose end tag is long and mismatched makes
/// `ebay-legacy` refuse with a reason quoting the whole tag (quick-xml's error text), so the 401
/// body reflects up to `max_body_bytes` of request bytes, while every other reason is bounded
/// (`for_log`: 64 characters). Expected: the reason is bounded like the others. Un-ignore once
/// `read_soap` passes its parser errors through `for_log`.
#[test]
fn ebay_legacy_refusal_message_is_bounded() {
    let tag = "A".repeat(10_000);
    let body = format!(
        "<soapenv:Envelope><soapenv:Header><NotificationSignature>x</{tag}></soapenv:Header></soapenv:Envelope>"
    );
    let e = ebay_legacy::read_soap(body.as_bytes()).expect_err("mismatched end tag");
    let msg = e.to_string();
    assert!(
        msg.len() <= 1024,
        "reason of {} bytes: {}...",
        msg.len(),
        &msg[..200]
    );
}
