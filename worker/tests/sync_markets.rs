//! The Amazon SP-API and eBay catalog sync clients against local fake APIs (a hyper server in
//! the test process) answering with the platforms' published responses (`tests/data/amazon/sync`
//! and `tests/data/ebay/sync`, sources in `tests/data/README.md`): several pages, a 429 with
//! rate-limit headers, an access token that expires mid-run and must be refreshed, 401/403,
//! and a 500 then success. The assertions are on the resulting `CatalogBatch`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stockhook_shared::secret::Secret;
use stockhook_worker::catalog::{CatalogBatch, CatalogItem, SaleLine};
use stockhook_worker::sync::amazon::{self, AmazonConfig};
use stockhook_worker::sync::ebay::{self, EbayConfig};
use stockhook_worker::sync::{ApiClient, SyncError};

const US: &str = "ATVPDKIKX0DER";
const CA: &str = "A2EUQ1WTGCTBG2";
const NOW: i64 = 1_764_547_200_000; // 2025-12-01T00:00:00Z

fn data(rel: &str) -> String {
    let p = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {p}: {e}"))
}

fn data_json(rel: &str) -> Value {
    serde_json::from_str(&data(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    body: String,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(self.body.as_bytes())
            .into_owned()
            .collect()
    }
    fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

fn reply(status: u16, body: impl Into<String>) -> Reply {
    Reply {
        status,
        headers: vec![("content-type", "application/json".into())],
        body: body.into(),
    }
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// A local HTTP server answering with `handler`, recording every request.
struct Fake {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An Amazon sync ([`amazon_config`]) against a fake answering with `handler`: the fake (what
/// it was asked) and what the sync returned.
async fn amazon_sync(handler: Handler) -> (Fake, Result<CatalogBatch, SyncError>) {
    let fake = Fake::start(handler).await;
    let got = amazon::fetch(&amazon_config(&fake.base), &ApiClient::new().unwrap(), NOW).await;
    (fake, got)
}

/// [`amazon_sync`] for eBay ([`ebay_config`]).
async fn ebay_sync(handler: Handler) -> (Fake, Result<CatalogBatch, SyncError>) {
    let fake = Fake::start(handler).await;
    let got = ebay::fetch(&ebay_config(&fake.base), &ApiClient::new().unwrap(), NOW).await;
    (fake, got)
}

impl Fake {
    async fn start(handler: Handler) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fake API");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let handler = handler.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                        let handler = handler.clone();
                        let log = log.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_string(),
                                query: parts.uri.query().unwrap_or("").to_string(),
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            let r = handler(&seen);
                            log.lock().unwrap().push(seen);
                            let mut resp = hyper::Response::builder().status(r.status);
                            for (k, v) in r.headers {
                                resp = resp.header(k, v);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(r.body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Fake { base, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.seen().iter().filter(|s| f(s)).count()
    }
}

fn item<'a>(items: &'a [CatalogItem], key: &str) -> &'a CatalogItem {
    items
        .iter()
        .find(|i| i.item == key)
        .unwrap_or_else(|| panic!("no item {key} in {:#?}", items))
}

fn assert_no_secret(err: &SyncError, secrets: &[&str]) {
    let text = format!("{err} {err:?}");
    for s in secrets {
        assert!(!text.contains(s), "error shows a secret: {text}");
    }
}

// --- Amazon --------------------------------------------------------------------------------

const LWA_SECRET: &str = "amzn1.oa2-cs.v1.test-client-secret-0123456789";
const LWA_REFRESH: &str = "Atzr|test-refresh-token-0123456789";

fn amazon_config(base: &str) -> AmazonConfig {
    AmazonConfig {
        source: "amazon-na".into(),
        lwa_client_id: "amzn1.application-oa2-client.test".into(),
        lwa_client_secret: Secret::new(LWA_SECRET),
        refresh_token: Secret::new(LWA_REFRESH),
        marketplace_ids: vec![US.into(), CA.into()],
        seller_id: Some("A2EXAMPLESELLER".into()),
        token_url: format!("{base}/auth/o2/token"),
        api_base: base.into(),
        sales_history_days: 90,
        initial_backoff: Duration::from_millis(20),
    }
}

/// The LWA token answer as published (the JSON after the HTTP head), with a numbered token.
fn lwa_answer(n: u32) -> String {
    let raw = data("amazon/sync/lwa_token_response.http.txt");
    let json_start = raw.find('{').expect("the LWA example has a JSON body");
    let mut v: Value = serde_json::from_str(&raw[json_start..]).unwrap();
    v["access_token"] = json!(format!("Atza|test-access-{n}"));
    v.to_string()
}

const SP_EXPIRED: &str = r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied.","details":"The access token you provided has expired."}]}"#;
const CANCELED_ORDER: &str = "902-0000000-0000001";

/// What a fake API has done so far: tokens issued, calls made with the first one, and whether
/// it has answered its one 429 and its one 500.
#[derive(Default)]
struct FakeState {
    tokens: u32,
    calls_with_first_token: u32,
    throttled: bool,
    failed: bool,
}

/// The fake SP-API: published pages, a 429 on the first inventory call, a 500 on the first
/// listings call, and the first access token expiring after three calls.
fn amazon_handler() -> Handler {
    let st = Arc::new(Mutex::new(FakeState::default()));
    Arc::new(move |r: &Seen| {
        let mut st = st.lock().unwrap();
        if r.path == "/auth/o2/token" {
            let form = r.form();
            let has = |k: &str, v: &str| form.iter().any(|(a, b)| a == k && b == v);
            if !(has("grant_type", "refresh_token")
                && has("refresh_token", LWA_REFRESH)
                && has("client_id", "amzn1.application-oa2-client.test")
                && has("client_secret", LWA_SECRET))
            {
                return reply(400, r#"{"error":"invalid_grant"}"#);
            }
            st.tokens += 1;
            return reply(200, lwa_answer(st.tokens));
        }
        let token = r.header("x-amz-access-token").to_string();
        if token != format!("Atza|test-access-{}", st.tokens) {
            return reply(403, SP_EXPIRED);
        }
        if token == "Atza|test-access-1" {
            st.calls_with_first_token += 1;
            if st.calls_with_first_token > 3 {
                return reply(403, SP_EXPIRED);
            }
        }
        let ok = |body: String| Reply {
            status: 200,
            headers: vec![
                ("content-type", "application/json".into()),
                ("x-amzn-ratelimit-limit", "100.0".into()),
                ("x-amzn-requestid", "test".into()),
            ],
            body,
        };
        if r.path == "/fba/inventory/v1/summaries" {
            if !st.throttled {
                st.throttled = true;
                return Reply {
                    status: 429,
                    headers: vec![
                        ("content-type", "application/json".into()),
                        ("x-amzn-ratelimit-limit", "2.0".into()),
                    ],
                    body: r#"{"errors":[{"code":"QuotaExceeded","message":"You exceeded your quota for the requested resource."}]}"#.into(),
                };
            }
            assert_eq!(r.param("details").as_deref(), Some("true"));
            let mut page = data_json("amazon/sync/getInventorySummaries.json");
            return match (r.param("granularityId").as_deref(), r.param("nextToken")) {
                (Some(US), None) => ok(page.to_string()),
                (Some(US), Some(t)) if t == "seed" => {
                    // Page 2: one more SKU, no nextToken.
                    let mut s = page["payload"]["inventorySummaries"][2].clone();
                    s["sellerSku"] = json!("Silicon Power 64GB");
                    s["asin"] = json!("B00T9QONN7");
                    s["fnSku"] = json!("X00T9QONN7");
                    s["productName"] = json!("Silicon Power 64GB MicroSDXC");
                    s["inventoryDetails"]["fulfillableQuantity"] = json!(4);
                    page["payload"]["inventorySummaries"] = json!([s]);
                    page.as_object_mut().unwrap().remove("pagination");
                    ok(page.to_string())
                }
                (Some(CA), None) => {
                    // The same North American pool seen from Canada: a little less.
                    page["payload"]["granularity"]["granularityId"] = json!(CA);
                    page["payload"]["inventorySummaries"][2]["inventoryDetails"]
                        ["fulfillableQuantity"] = json!(60);
                    page.as_object_mut().unwrap().remove("pagination");
                    ok(page.to_string())
                }
                other => panic!("unexpected inventory request {other:?}"),
            };
        }
        if r.path == "/listings/2021-08-01/items/A2EXAMPLESELLER" {
            if !st.failed {
                st.failed = true;
                return reply(
                    500,
                    r#"{"errors":[{"code":"InternalFailure","message":"We encountered an internal error. Please try again."}]}"#,
                );
            }
            let page = data_json("amazon/sync/searchListingsItems.json");
            return match (r.param("marketplaceIds").as_deref(), r.param("pageToken")) {
                (Some(US), None) => ok(page.to_string()),
                (Some(US), Some(t)) if Some(t.as_str()) == page["pagination"]["nextToken"].as_str() => {
                    ok(json!({"numberOfResults": 1, "pagination": {"previousToken": page["pagination"]["previousToken"]}, "items": []}).to_string())
                }
                (Some(CA), None) => {
                    // An FBA listing: the published item on Amazon's North American network
                    // (`AMAZON_NA`), its quantity the pool's 60 units FBA inventory counts.
                    let mut item = page["items"][0].clone();
                    item["sku"] = json!("Silicon Power 32GB");
                    item["fulfillmentAvailability"] =
                        json!([{"fulfillmentChannelCode": "AMAZON_NA", "quantity": 60}]);
                    ok(json!({"numberOfResults": 1, "items": [item]}).to_string())
                }
                other => panic!("unexpected listings request {other:?}"),
            };
        }
        if r.path == "/orders/v0/orders" {
            assert!(r.param("CreatedAfter").is_some());
            assert_eq!(
                r.param("MarketplaceIds").as_deref(),
                Some("ATVPDKIKX0DER,A2EUQ1WTGCTBG2")
            );
            return match r.param("NextToken") {
                None => {
                    let mut page = data_json("amazon/sync/getOrders_sandbox_TEST_CASE_200.json");
                    let mut canceled = page["payload"]["Orders"][0].clone();
                    canceled["AmazonOrderId"] = json!(CANCELED_ORDER);
                    canceled["OrderStatus"] = json!("Canceled");
                    page["payload"]["Orders"]
                        .as_array_mut()
                        .unwrap()
                        .push(canceled);
                    page["payload"]["NextToken"] = json!("2YgYW55IGNhcm5hbCBwbGVhc3VyZS4");
                    ok(page.to_string())
                }
                Some(t) if t == "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4" => {
                    ok(data("amazon/sync/getOrders_sandbox_NEXT_TOKEN_page2.json"))
                }
                other => panic!("unexpected orders request {other:?}"),
            };
        }
        if let Some(order) = r
            .path
            .strip_prefix("/orders/v0/orders/")
            .and_then(|p| p.strip_suffix("/orderItems"))
        {
            assert_ne!(order, CANCELED_ORDER, "items of a canceled order were read");
            let mut page = data_json("amazon/sync/getOrderItems_example.json");
            page["payload"]["AmazonOrderId"] = json!(order);
            page["payload"].as_object_mut().unwrap().remove("NextToken");
            return ok(page.to_string());
        }
        reply(
            404,
            r#"{"errors":[{"code":"NotFound","message":"no such path"}]}"#,
        )
    })
}

#[tokio::test]
async fn amazon_sync_reads_pages_throttles_refreshes_and_counts_pooled_fba_once() {
    let (fake, batch) = amazon_sync(amazon_handler()).await;
    let batch = batch.expect("amazon sync");

    assert_eq!(batch.source, "amazon-na");
    assert_eq!(batch.platform, "amazon");
    assert_eq!(batch.taken_at, NOW);
    assert!(batch.complete);
    let keys: Vec<&str> = batch.items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(
        keys,
        [
            "EMTEC 1 GB",
            "EMTEC-SdCard-reader",
            "GM-ZDPI-9B4E",
            "Silicon Power 32GB",
            "Silicon Power 64GB"
        ]
    );
    // US 66 and CA 60 are one North American pool: 66 counted once, at the US.
    let sp = item(&batch.items, "Silicon Power 32GB");
    assert_eq!(sp.sku.as_deref(), Some("Silicon Power 32GB"));
    assert_eq!(
        sp.title.as_deref(),
        Some("Silicon Power 32GB up to 85MB/s MicroSDHC UHS-1 Class10, Elite Flash Memory Card with Adaptor (SP032GBSTHBU1V20SP)")
    );
    assert_eq!(sp.aliases, ["asin:B00T9QONN6", "fnsku:B00T9QONN6"]);
    assert_eq!(
        sp.levels,
        [
            ("fba:ATVPDKIKX0DER".to_string(), Some(66)),
            ("fba:A2EUQ1WTGCTBG2".to_string(), None)
        ]
    );
    // Its CA listing on AMAZON_NA (FBA) added no MFN level: the pool is counted once.
    // Page 2 of the US inventory.
    assert_eq!(
        item(&batch.items, "Silicon Power 64GB").levels[0],
        ("fba:ATVPDKIKX0DER".to_string(), Some(4))
    );
    assert_eq!(
        item(&batch.items, "EMTEC 1 GB").levels[0],
        ("fba:ATVPDKIKX0DER".to_string(), Some(0))
    );
    // Merchant-fulfilled, from the listings search.
    let mfn = item(&batch.items, "GM-ZDPI-9B4E");
    assert_eq!(mfn.levels, [("mfn".to_string(), Some(100))]);
    assert_eq!(
        mfn.title.as_deref(),
        Some("Hardside Carry-On Spinner Suitcase Luggage")
    );

    // Three orders across two pages (the canceled one skipped), two lines each.
    let t1 = stockhook_worker::adapters::parse_time("1970-01-19T03:58:30Z").unwrap();
    let t2 = stockhook_worker::adapters::parse_time("2017-01-20T19:49:35Z").unwrap();
    let line = |order: &str, sku: &str, id: &str, q: i64, at: i64| SaleLine {
        item: sku.into(),
        quantity: q,
        order: order.into(),
        line: id.into(),
        at,
    };
    assert_eq!(
        batch.sales,
        [
            line("902-1845936-5435065", "CBA_OTF_1", "68828574383266", 1, t1),
            line("902-1845936-5435065", "CBA_OTF_5", "79039765272157", 2, t1),
            line("902-8745147-1934268", "CBA_OTF_1", "68828574383266", 1, t1),
            line("902-8745147-1934268", "CBA_OTF_5", "79039765272157", 2, t1),
            line("902-3159896-1390916", "CBA_OTF_1", "68828574383266", 1, t2),
            line("902-3159896-1390916", "CBA_OTF_5", "79039765272157", 2, t2),
        ]
    );

    // The token was refreshed once after it expired; the 429 and the 500 were retried.
    assert_eq!(fake.count(|s| s.path == "/auth/o2/token"), 2);
    assert_eq!(
        fake.count(|s| s.path == "/fba/inventory/v1/summaries"),
        // 429, US page 1, US page 2, CA refused (the token expired), CA again.
        5
    );
    assert_eq!(
        fake.count(|s| s.path.starts_with("/listings/")),
        4,
        "500 then success, page 2, CA"
    );
    let second_page = fake
        .seen()
        .into_iter()
        .find(|s| s.param("nextToken").as_deref() == Some("seed"))
        .expect("page 2 asked with nextToken");
    assert!(second_page.header("user-agent").starts_with("stockhook/"));
}

#[tokio::test]
async fn amazon_token_refused_when_fresh_is_unauthorized() {
    let tokens = Arc::new(Mutex::new(0u32));
    let t = tokens.clone();
    let (fake, err) = amazon_sync(Arc::new(move |r: &Seen| {
        if r.path == "/auth/o2/token" {
            *t.lock().unwrap() += 1;
            return reply(200, lwa_answer(1));
        }
        reply(
            403,
            r#"{"errors":[{"code":"Unauthorized","message":"Access to requested resource is denied."}]}"#,
        )
    }))
    .await;
    let err = err.unwrap_err();
    assert!(
        matches!(err, SyncError::Unauthorized { status: 403, .. }),
        "{err:?}"
    );
    // Refused right after a fresh token: the credentials are wrong, no second refresh.
    assert_eq!(*tokens.lock().unwrap(), 1);
    assert_eq!(fake.count(|s| s.path != "/auth/o2/token"), 1);
    assert_no_secret(&err, &[LWA_SECRET, LWA_REFRESH, "Atza|"]);
}

#[tokio::test]
async fn amazon_revoked_refresh_token_stops_before_any_api_call() {
    let (fake, err) = amazon_sync(Arc::new(|r: &Seen| {
        if r.path == "/auth/o2/token" {
            return reply(
                400,
                r#"{"error_description":"The request has an invalid grant parameter : refresh_token","error":"invalid_grant"}"#,
            );
        }
        reply(200, "{}")
    }))
    .await;
    let err = err.unwrap_err();
    assert!(
        matches!(err, SyncError::Unauthorized { status: 400, ref what } if what == "Amazon LWA token"),
        "{err:?}"
    );
    assert_eq!(fake.count(|s| s.path != "/auth/o2/token"), 0);
    assert_no_secret(&err, &[LWA_SECRET, LWA_REFRESH]);
}

// --- eBay ----------------------------------------------------------------------------------

const EBAY_SECRET: &str = "PRD-test-cert-id-0123456789abcdef";
const EBAY_REFRESH: &str = "v^1.1#i^1#r^1#test-refresh-token";

fn ebay_config(base: &str) -> EbayConfig {
    EbayConfig {
        source: "ebay-store".into(),
        client_id: "TestApp-stockhoo-PRD-0123456789-abcdef01".into(),
        client_secret: Secret::new(EBAY_SECRET),
        refresh_token: Secret::new(EBAY_REFRESH),
        api_base: base.into(),
        token_url: format!("{base}/identity/v1/oauth2/token"),
        trading_url: format!("{base}/ws/api.dll"),
        site_id: 0,
        sales_history_days: 90,
        initial_backoff: Duration::from_millis(20),
    }
}

fn ebay_token(n: u32) -> String {
    format!("v^1.1#i^1#test-access-{n}")
}

/// The `<Item>` element of a seller-list fixture whose ItemID is `id`, as a GetItemResponse.
fn get_item_from_list(id: &str) -> Option<String> {
    for f in [
        "ebay/sync/GetSellerList_5items.xml",
        "ebay/sync/GetSellerList_page1of4.xml",
    ] {
        let xml = data(f);
        let mut rest = xml.as_str();
        while let Some(start) = rest.find("<Item>") {
            let end = rest[start..].find("</Item>")? + start + "</Item>".len();
            let block = &rest[start..end];
            if block.contains(&format!("<ItemID>{id}</ItemID>")) {
                return Some(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<GetItemResponse xmlns=\"urn:ebay:apis:eBLBaseComponents\"><Timestamp>2014-05-08T09:26:45.824Z</Timestamp><Ack>Success</Ack>{block}</GetItemResponse>"
                ));
            }
            rest = &rest[end..];
        }
    }
    None
}

fn ebay_handler() -> Handler {
    let st = Arc::new(Mutex::new(FakeState::default()));
    Arc::new(move |r: &Seen| {
        let mut st = st.lock().unwrap();
        if r.path == "/identity/v1/oauth2/token" {
            use base64::Engine;
            let basic = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "TestApp-stockhoo-PRD-0123456789-abcdef01:{EBAY_SECRET}"
                ))
            );
            let form = r.form();
            let ok = r.header("authorization") == basic
                && form.contains(&("grant_type".into(), "refresh_token".into()))
                && form.contains(&("refresh_token".into(), EBAY_REFRESH.into()));
            if !ok {
                return reply(
                    400,
                    r#"{"error":"invalid_client","error_description":"client authentication failed"}"#,
                );
            }
            st.tokens += 1;
            let mut v = data_json("ebay/sync/oauth_refresh_token_response.json");
            v["access_token"] = json!(ebay_token(st.tokens));
            return reply(200, v.to_string());
        }
        let current = ebay_token(st.tokens);
        if r.path == "/ws/api.dll" {
            assert_eq!(r.header("x-ebay-api-iaf-token"), current);
            assert_eq!(r.header("x-ebay-api-siteid"), "0");
            let xml = |body: String| Reply {
                status: 200,
                headers: vec![("content-type", "text/xml".into())],
                body,
            };
            return match r.header("x-ebay-api-call-name") {
                "GetSellerList" if r.body.contains("<PageNumber>1</PageNumber>") => {
                    xml(data("ebay/sync/GetSellerList_5items.xml")
                        .replace("<TotalNumberOfPages>1<", "<TotalNumberOfPages>2<")
                        .replace("<HasMoreItems>false<", "<HasMoreItems>true<"))
                }
                "GetSellerList" if r.body.contains("<PageNumber>2</PageNumber>") => {
                    if !st.failed {
                        st.failed = true;
                        return reply(500, "");
                    }
                    xml(data("ebay/sync/GetSellerList_page1of4.xml")
                        .replace("<TotalNumberOfPages>4<", "<TotalNumberOfPages>2<")
                        .replace("<HasMoreItems>true<", "<HasMoreItems>false<")
                        .replace("<PageNumber>1<", "<PageNumber>2<"))
                }
                "GetItem" => {
                    let id = r
                        .body
                        .split("<ItemID>")
                        .nth(1)
                        .and_then(|s| s.split("</ItemID>").next())
                        .unwrap_or("")
                        .to_string();
                    if id == "110142400319" {
                        xml(data("ebay/GetItemResponse_variations.xml"))
                    } else {
                        xml(get_item_from_list(&id).unwrap_or_else(|| panic!("GetItem {id}")))
                    }
                }
                other => panic!("unexpected Trading call {other}"),
            };
        }
        if r.header("authorization") != format!("Bearer {current}") {
            return reply(401, data("ebay/sync/error_1001_invalid_access_token.json"));
        }
        if r.path == "/sell/inventory/v1/inventory_item" {
            if !st.throttled {
                st.throttled = true;
                return Reply {
                    status: 429,
                    headers: vec![("retry-after", "0".into())],
                    body: r#"{"errors":[{"errorId":2001,"domain":"ACCESS","category":"REQUEST","message":"Too many requests."}]}"#.into(),
                };
            }
            return match r.param("offset").as_deref() {
                Some("0") => reply(200, data("ebay/sync/getInventoryItems_page1.json")),
                Some("2") => reply(200, data("ebay/sync/getInventoryItems_page2.json")),
                other => panic!("unexpected inventory offset {other:?}"),
            };
        }
        if r.path == "/sell/fulfillment/v1/order" {
            // The first token has expired by the time the orders are read.
            if st.tokens == 1 {
                return reply(401, data("ebay/sync/error_1001_invalid_access_token.json"));
            }
            return match r.param("offset").as_deref() {
                Some("0") => {
                    assert!(r.param("filter").unwrap().starts_with("creationdate:["));
                    reply(200, data("ebay/sync/getOrders_page1.json"))
                }
                Some("2") => reply(200, data("ebay/sync/getOrders_page2.json")),
                other => panic!("unexpected orders offset {other:?}"),
            };
        }
        reply(
            404,
            r#"{"errors":[{"errorId":404,"message":"no such path"}]}"#,
        )
    })
}

#[tokio::test]
async fn ebay_sync_reads_listings_variations_inventory_and_orders() {
    let fake = Fake::start(ebay_handler()).await;
    let api = ApiClient::new().unwrap();
    let batch = ebay::fetch(&ebay_config(&fake.base), &api, NOW)
        .await
        .expect("ebay sync");
    assert_eq!(batch.platform, "ebay");
    assert!(batch.complete);
    let keys: Vec<&str> = batch.items.iter().map(|i| i.item.as_str()).collect();
    assert_eq!(
        keys,
        [
            "110141553531",
            "110141989389",
            "110141989458",
            "110142400319:testSku501_B",
            "110142400319:testSku501_W",
            "110142400319:testSku501_Y",
            "110142503362",
            "sku:UNLISTED JACKET 01",
        ]
    );
    let ebay = |q: i64| vec![("ebay".to_string(), Some(q))];
    let shirt = item(&batch.items, "110141553531");
    assert_eq!(shirt.sku.as_deref(), Some("testSku11014"));
    assert_eq!(shirt.title.as_deref(), Some("levis 501 teenager T-Shirt"));
    assert_eq!(shirt.levels, ebay(205 - 5));
    assert_eq!(item(&batch.items, "110141989389").levels, ebay(204 - 1));
    // No SKU: read again with GetItem (a single listing).
    let boots = item(&batch.items, "110141989458");
    assert_eq!(boots.sku, None);
    assert_eq!(
        boots.title.as_deref(),
        Some("levis 501 teenager bootsofspeed")
    );
    assert_eq!(boots.levels, ebay(204));
    // GetItem shows the variations: per variation SKU, Quantity − QuantitySold; the listing's
    // own 900 is only their total and gives no item.
    let black = item(&batch.items, "110142400319:testSku501_B");
    assert_eq!(black.sku.as_deref(), Some("testSku501_B"));
    assert_eq!(
        black.title.as_deref(),
        Some("levis 501 teenager Trousers - Black")
    );
    assert_eq!(black.levels, ebay(300 - 1));
    assert_eq!(
        item(&batch.items, "110142400319:testSku501_W").levels,
        ebay(298)
    );
    assert!(!keys.contains(&"110142400319"));
    // An inventory item no listing carries: catalog only.
    let unlisted = item(&batch.items, "sku:UNLISTED JACKET 01");
    assert_eq!(
        unlisted.title.as_deref(),
        Some("Denim jacket, not yet listed")
    );
    assert!(unlisted.levels.is_empty());

    let at = |s: &str| stockhook_worker::adapters::parse_time(s).unwrap();
    assert_eq!(
        batch.sales,
        [
            SaleLine {
                item: "110141553531".into(),
                quantity: 2,
                order: "110141553531-28000000001".into(),
                line: "28000000001".into(),
                at: at("2026-11-20T10:15:30.000Z"),
            },
            SaleLine {
                item: "110142400319:testSku501_W".into(),
                quantity: 1,
                order: "110142400319-28000000003".into(),
                line: "28000000003".into(),
                at: at("2026-11-25T16:45:00.000Z"),
            },
        ]
    );

    assert_eq!(fake.count(|s| s.path == "/identity/v1/oauth2/token"), 2);
    assert_eq!(
        fake.count(|s| s.path == "/sell/inventory/v1/inventory_item"),
        3,
        "429, page 1, page 2 (relative next)"
    );
    assert_eq!(
        fake.count(|s| s.header("x-ebay-api-call-name") == "GetSellerList"),
        3,
        "page 1, 500, page 2"
    );
    assert_eq!(
        fake.count(|s| s.header("x-ebay-api-call-name") == "GetItem"),
        4
    );
    assert_eq!(
        fake.count(|s| s.path == "/sell/fulfillment/v1/order"),
        3,
        "expired token, page 1, page 2"
    );
    assert!(fake
        .seen()
        .iter()
        .all(|s| s.method == "GET" || s.method == "POST"));
}

/// The item keys sync gives a multi-variation listing are the ones its webhook (an
/// `ItemRevised` Platform Notification carrying the same GetItemResponse) gives.
#[tokio::test]
async fn ebay_sync_keys_match_the_webhook_adapter() {
    let (_fake, batch) = ebay_sync(ebay_handler()).await;
    let batch = batch.unwrap();
    let env = stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(1),
        source: "ebay-store".into(),
        platform: stockhook_shared::config::Platform::Ebay,
        received_at_ms: NOW,
        headers: vec![(
            "soapaction".into(),
            "\"http://developer.ebay.com/notification/ItemRevised\"".into(),
        )],
        body: data("ebay/GetItemResponse_variations.xml").into_bytes(),
    };
    let normalized = stockhook_worker::adapters::ebay::normalize(&env).unwrap();
    let mut webhook_levels = Vec::new();
    for f in &normalized.facts {
        if let stockhook_worker::facts::Fact::InventoryLevel {
            item: key,
            location,
            available,
            ..
        } = f
        {
            webhook_levels.push((key.clone(), location.clone(), *available));
        }
    }
    assert_eq!(webhook_levels.len(), 3);
    for (key, location, available) in webhook_levels {
        let synced = item(&batch.items, &key);
        assert_eq!(synced.levels, [(location, available)], "{key}");
    }
}

/// eBay sale key equality (issue 14): the published getOrders line (legacyItemId
/// 110141553531, lineItemId 28000000001, 2 units) and the `FixedPriceTransaction` Platform
/// Notification of the same sale (a GetItemTransactionsResponse naming that ItemID and
/// TransactionID; eBay: "both legacyItemId and legacyTransactionId are needed to identify an
/// order line item") give one key, so applied both ways it counts 2 units, not 4.
#[tokio::test]
async fn ebay_sale_seen_by_webhook_and_sync_counts_once() {
    use stockhook_worker::catalog::{apply, Origin};
    use stockhook_worker::facts::Fact;
    let (_fake, batch) = ebay_sync(ebay_handler()).await;
    let batch = batch.unwrap();
    let synced = batch
        .sales
        .iter()
        .find(|l| l.line == "28000000001")
        .expect("the published getOrders line");
    assert_eq!(synced.quantity, 2);

    let soap = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Header><ebl:RequesterCredentials xmlns:ebl="urn:ebay:apis:eBLBaseComponents">
    <ebl:NotificationSignature>nXGFQyWyk1bzgM3N5zT9Ag==</ebl:NotificationSignature>
  </ebl:RequesterCredentials></soapenv:Header>
  <soapenv:Body><GetItemTransactionsResponse xmlns="urn:ebay:apis:eBLBaseComponents">
    <Timestamp>2025-12-01T00:05:00.000Z</Timestamp><Ack>Success</Ack>
    <NotificationEventName>FixedPriceTransaction</NotificationEventName>
    <Item><ItemID>110141553531</ItemID><Quantity>10</Quantity>
      <SellingStatus><QuantitySold>2</QuantitySold></SellingStatus><SKU>testSku11014</SKU></Item>
    <TransactionArray><Transaction>
      <QuantityPurchased>2</QuantityPurchased><TransactionID>28000000001</TransactionID>
      <OrderLineItemID>{}</OrderLineItemID>
    </Transaction></TransactionArray>
  </GetItemTransactionsResponse></soapenv:Body>
</soapenv:Envelope>"#,
        "04-10001-20001"
    );
    let env = stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(7),
        source: "ebay-store".into(),
        platform: stockhook_shared::config::Platform::Ebay,
        received_at_ms: NOW + 300_000,
        headers: vec![],
        body: soap.into_bytes(),
    };
    let normalized = stockhook_worker::adapters::ebay::normalize(&env).unwrap();
    let sales: Vec<(String, String, String, i64)> = normalized
        .facts
        .iter()
        .filter_map(|f| match f {
            Fact::Sale {
                item,
                quantity,
                order,
                line,
                ..
            } => Some((item.clone(), order.clone(), line.clone(), *quantity)),
            _ => None,
        })
        .collect();
    assert_eq!(
        sales,
        [(
            synced.item.clone(),
            synced.order.clone(),
            synced.line.clone(),
            synced.quantity
        )]
    );

    // Through the state: the sync, then the webhook, count the 2 units once.
    let dir = tempfile::tempdir().unwrap();
    let state = stockhook_worker::state::SledState::open(&dir.path().join("state")).unwrap();
    let origin = Origin::Sync {
        run_started_at: NOW,
    };
    apply(&state, sync_rules(), &batch, &origin, NOW, false)
        .await
        .unwrap();
    use stockhook_worker::state::StateBackend;
    state
        .apply_batch(
            vec![stockhook_worker::state::Prepared::new(&env, normalized)],
            sync_rules(),
            NOW + 300_000,
            false,
        )
        .await
        .unwrap();
    let items = state.items().await.unwrap();
    let sold = items
        .iter()
        .find(|i| i.source == "ebay-store" && i.item == synced.item)
        .unwrap();
    assert_eq!(sold.sold(), 2, "one sale of 2, seen twice");
}

#[tokio::test]
async fn ebay_refused_token_is_unauthorized_and_secrets_stay_out_of_errors() {
    let (fake, err) = ebay_sync(Arc::new(|r: &Seen| {
        if r.path == "/identity/v1/oauth2/token" {
            return reply(200, json!({"access_token": ebay_token(1), "expires_in": 7200, "token_type": "User Access Token"}).to_string());
        }
        reply(401, data("ebay/sync/error_1001_invalid_access_token.json"))
    }))
    .await;
    let err = err.unwrap_err();
    assert!(
        matches!(err, SyncError::Unauthorized { status: 401, .. }),
        "{err:?}"
    );
    assert_eq!(fake.count(|s| s.path == "/identity/v1/oauth2/token"), 1);
    assert_eq!(fake.count(|s| s.path != "/identity/v1/oauth2/token"), 1);
    assert_no_secret(&err, &[EBAY_SECRET, EBAY_REFRESH, "test-access"]);
}

// --- Configuration -------------------------------------------------------------------------

/// `[sources.amazon_sync]` / `[sources.ebay_sync]` as the worker loads them: secrets by value,
/// `_env` and `_file`, eBay's keyset defaulting to the source's, the region's endpoint, and a
/// secret that cannot be read reported by the sync, not by the webhook source.
#[test]
fn sync_sections_load_into_client_configs() {
    use stockhook_shared::loader::{load_with, Role};
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("amazon-refresh");
    std::fs::write(&token_file, format!("\n{LWA_REFRESH}\n")).unwrap();
    let config = dir.path().join("stockhook.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[sources]]
name = "amazon-eu"
platform = "amazon"
scheme = "api-key"
signature_header = "x-api-key"
secrets = ["webhook-key-0123456789"]
[sources.amazon_sync]
lwa_client_id = "amzn1.application-oa2-client.test"
lwa_client_secret_env = "TEST_LWA_SECRET"
refresh_token_file = "{}"
marketplace_ids = ["A1PA6795UKMFR9", "A13V1IB3VIYZZH"]

[[sources]]
name = "ebay-store"
platform = "ebay"
scheme = "ebay"
verification_token = "verification-token-0123456789-0123456789"
endpoint_url = "https://hooks.example.com/webhooks/ebay-store"
client_id = "TestApp-stockhoo-PRD-0123456789-abcdef01"
client_secret_env = "TEST_EBAY_SECRET"
[sources.ebay_sync]
refresh_token = "{EBAY_REFRESH}"
api_base = "https://api.sandbox.ebay.com/"

[[sources]]
name = "amazon-na"
platform = "amazon"
scheme = "api-key"
signature_header = "x-api-key"
secrets = ["webhook-key-0123456789"]
[sources.amazon_sync]
lwa_client_id = "x"
lwa_client_secret_file = "/nonexistent/stockhook-test/secret"
refresh_token = "y"
marketplace_ids = ["ATVPDKIKX0DER"]
"#,
            token_file.display()
        ),
    )
    .unwrap();
    let env: Vec<(String, String)> = vec![
        ("TEST_LWA_SECRET".into(), LWA_SECRET.into()),
        ("TEST_EBAY_SECRET".into(), EBAY_SECRET.into()),
    ];
    let loaded = load_with(Some(&config), &env, Role::Worker).expect("config loads");
    let src = |name: &str| {
        loaded
            .config
            .sources
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .clone()
    };

    let a = AmazonConfig::from_source(&src("amazon-eu")).unwrap();
    assert_eq!(a.lwa_client_secret.expose(), LWA_SECRET);
    assert_eq!(a.refresh_token.expose(), LWA_REFRESH);
    assert_eq!(a.api_base, "https://sellingpartnerapi-eu.amazon.com");
    assert_eq!(a.token_url, amazon::DEFAULT_TOKEN_URL);
    assert_eq!(a.sales_history_days, 90);
    assert_eq!(a.seller_id, None);

    let e = EbayConfig::from_source(&src("ebay-store")).unwrap();
    assert_eq!(e.client_id, "TestApp-stockhoo-PRD-0123456789-abcdef01");
    assert_eq!(e.client_secret.expose(), EBAY_SECRET);
    assert_eq!(e.refresh_token.expose(), EBAY_REFRESH);
    assert_eq!(e.api_base, "https://api.sandbox.ebay.com");
    assert_eq!(
        e.token_url,
        "https://api.sandbox.ebay.com/identity/v1/oauth2/token"
    );
    assert_eq!(e.trading_url, "https://api.sandbox.ebay.com/ws/api.dll");

    // The unreadable secret file: the webhook source still works, the sync says why it cannot.
    let na = src("amazon-na");
    assert!(na.disabled.is_none());
    let err = AmazonConfig::from_source(&na).unwrap_err();
    assert!(
        matches!(&err, SyncError::Config(m) if m.contains("/nonexistent/stockhook-test/secret")),
        "{err}"
    );
    assert!(EbayConfig::from_source(&src("amazon-eu")).is_err());

    // check-config's rendering masks every sync secret.
    let shown = loaded.config.render_masked();
    for s in [LWA_SECRET, LWA_REFRESH, EBAY_SECRET, EBAY_REFRESH] {
        assert!(!shown.contains(s), "{shown}");
    }
}

// --- End to end through the rules ----------------------------------------------------------

fn sync_rules() -> Arc<stockhook_worker::state::RuleConfig> {
    Arc::new(stockhook_worker::state::RuleConfig::example())
}

/// The Amazon and eBay batches go through `catalog::apply` into state: the empty FBA SKUs raise
/// low-stock alerts naming their titles; pooled stock is 66, not 126; applying the same batch
/// again changes nothing; and a later `ItemRevised` webhook for the multi-variation listing
/// lands on the synced records instead of creating new ones.
async fn synced_batches_meet_their_webhooks<S: stockhook_worker::state::StateBackend>(state: &S) {
    use stockhook_worker::catalog::{apply, Origin};
    use stockhook_worker::state::Applied;
    let rules = sync_rules();
    let api = ApiClient::new().unwrap();

    let fake = Fake::start(amazon_handler()).await;
    let batch = amazon::fetch(&amazon_config(&fake.base), &api, NOW)
        .await
        .unwrap();
    let origin = Origin::Sync {
        run_started_at: NOW,
    };
    let applied = apply(state, rules.clone(), &batch, &origin, NOW, false)
        .await
        .unwrap();
    let mut low: Vec<(String, Option<String>, Option<i64>)> = applied
        .iter()
        .flat_map(|a| match a {
            Applied::Done { alerts } => alerts
                .iter()
                .map(|al| (al.item.clone(), al.title.clone(), al.available))
                .collect(),
            Applied::AlreadyProcessed => Vec::new(),
        })
        .collect();
    low.sort();
    assert_eq!(
        low,
        [
            (
                "EMTEC 1 GB".to_string(),
                Some("EMTEC 1 GB 60x SD Flash Memory Card with USB 2.0 Card Reader".to_string()),
                Some(0)
            ),
            (
                "EMTEC-SdCard-reader".to_string(),
                Some("EMTEC 1 GB 60x SD Flash Memory Card with USB 2.0 Card Reader".to_string()),
                Some(0)
            ),
            (
                "Silicon Power 64GB".to_string(),
                Some("Silicon Power 64GB MicroSDXC".to_string()),
                Some(4)
            ),
        ]
    );
    let again = apply(state, rules.clone(), &batch, &origin, NOW, false)
        .await
        .unwrap();
    assert!(again.iter().all(|a| matches!(a, Applied::AlreadyProcessed)));
    let items = state.items().await.unwrap();
    let sp = items
        .iter()
        .find(|i| i.item == "Silicon Power 32GB")
        .unwrap();
    assert_eq!(sp.total(), Some(66));
    assert_eq!(sp.sold(), 0);
    let sold = items.iter().find(|i| i.item == "CBA_OTF_5").unwrap();
    assert_eq!(sold.sold(), 6, "three orders of 2");

    let fake = Fake::start(ebay_handler()).await;
    let batch = ebay::fetch(&ebay_config(&fake.base), &api, NOW)
        .await
        .unwrap();
    apply(state, rules.clone(), &batch, &origin, NOW, false)
        .await
        .unwrap();
    let before = state.items().await.unwrap().len();
    let env = stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(42),
        source: "ebay-store".into(),
        platform: stockhook_shared::config::Platform::Ebay,
        received_at_ms: NOW + 60_000,
        headers: vec![(
            "soapaction".into(),
            "\"http://developer.ebay.com/notification/ItemRevised\"".into(),
        )],
        body: data("ebay/GetItemResponse_variations.xml")
            .replace("2014-05-02T18:15:03.095Z", "2025-12-01T00:01:00.000Z")
            .replace(
                "<QuantitySold>1</QuantitySold>",
                "<QuantitySold>297</QuantitySold>",
            )
            .into_bytes(),
    };
    let normalized = stockhook_worker::adapters::ebay::normalize(&env).unwrap();
    let applied = state
        .apply_batch(
            vec![stockhook_worker::state::Prepared::new(&env, normalized)],
            rules.clone(),
            NOW + 60_000,
            false,
        )
        .await
        .unwrap();
    let items = state.items().await.unwrap();
    assert_eq!(items.len(), before, "the webhook named synced items");
    let black = items
        .iter()
        .find(|i| i.source == "ebay-store" && i.item == "110142400319:testSku501_B")
        .unwrap();
    assert_eq!(black.total(), Some(3));
    assert_eq!(
        black.title.as_deref(),
        Some("levis 501 teenager Trousers - Black")
    );
    let alerted: Vec<String> = applied
        .iter()
        .flat_map(|a| match a {
            Applied::Done { alerts } => alerts.iter().map(|al| al.item.clone()).collect(),
            Applied::AlreadyProcessed => Vec::new(),
        })
        .collect();
    assert!(
        alerted.contains(&"110142400319:testSku501_B".to_string()),
        "{alerted:?}"
    );
}

/// Applies `facts` as one webhook event of `source` received at `at`.
async fn apply_webhook<S: stockhook_worker::state::StateBackend>(
    state: &S,
    source: &str,
    id: u64,
    at: i64,
    normalized: stockhook_worker::facts::Normalized,
) {
    let env = stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(id),
        source: source.into(),
        platform: stockhook_shared::config::Platform::Amazon,
        received_at_ms: at,
        headers: vec![],
        body: Vec::new(),
    };
    state
        .apply_batch(
            vec![stockhook_worker::state::Prepared::new(&env, normalized)],
            sync_rules(),
            at,
            false,
        )
        .await
        .unwrap();
}

/// (location, units) of an item's held levels.
async fn held_levels<S: stockhook_worker::state::StateBackend>(
    state: &S,
    source: &str,
    item: &str,
) -> (Option<i64>, Vec<(String, Option<i64>)>) {
    let items = state.items().await.unwrap();
    let st = items
        .iter()
        .find(|i| i.source == source && i.item == item)
        .unwrap_or_else(|| panic!("{source}/{item} not held"));
    let levels = st
        .levels
        .iter()
        .map(|(l, r)| (l.clone(), r.available))
        .collect();
    (st.total(), levels)
}

/// Amazon counted once (issue 14): levels an older version or an older report left under keys
/// the platform no longer reports (the North American pool's CA view counted on its own; an
/// `AMAZON_NA` listing quantity stored as MFN stock) are cleared by a complete sync, which
/// replaces the item's Amazon levels; a level newer than the sync stays; and an `AMAZON_NA`
/// quantity change after it (the published notification shape) does not count FBA twice.
async fn a_complete_amazon_sync_replaces_stale_levels<S: stockhook_worker::state::StateBackend>(
    state: &S,
) {
    use stockhook_worker::facts::{Fact, Normalized};
    let source = "amazon-upgraded";
    let sku = "Silicon Power 32GB";
    let level = |location: &str, n: i64, at: i64| Fact::InventoryLevel {
        item: sku.into(),
        location: location.into(),
        available: Some(n),
        at,
    };
    let old = |facts: Vec<Fact>| Normalized {
        topic: "FBA_INVENTORY_AVAILABILITY_CHANGES".into(),
        facts,
        ignored: false,
    };
    // Before the sync: what an older stockhook stored. After its snapshot time: a DEFAULT
    // (merchant) quantity change, which the sync must not undo.
    apply_webhook(
        state,
        source,
        1,
        NOW - 3_600_000,
        old(vec![
            level(&format!("fba:{CA}"), 60, NOW - 3_600_000),
            level("mfn:AMAZON_NA", 66, NOW - 3_600_000),
        ]),
    )
    .await;
    apply_webhook(
        state,
        source,
        2,
        NOW + 30_000,
        old(vec![level("mfn", 7, NOW + 30_000)]),
    )
    .await;
    assert_eq!(
        held_levels(state, source, sku).await.0,
        Some(133),
        "60 + 66 + 7"
    );

    let fake = Fake::start(amazon_handler()).await;
    let mut batch = amazon::fetch(&amazon_config(&fake.base), &ApiClient::new().unwrap(), NOW)
        .await
        .unwrap();
    batch.source = source.into();
    let origin = stockhook_worker::catalog::Origin::Sync {
        run_started_at: NOW,
    };
    stockhook_worker::catalog::apply(state, sync_rules(), &batch, &origin, NOW, false)
        .await
        .unwrap();
    let (total, levels) = held_levels(state, source, sku).await;
    assert_eq!(total, Some(66 + 7), "{levels:?}");
    assert_eq!(
        levels,
        [
            (format!("fba:{CA}"), None),
            (format!("fba:{US}"), Some(66)),
            ("mfn".to_string(), Some(7)),
            ("mfn:AMAZON_NA".to_string(), None),
        ]
    );

    // LISTINGS_ITEM_MFN_QUANTITY_CHANGE on Amazon's own channel: FBA units, counted already.
    let mut note = data_json("amazon/listings_item_mfn_quantity_change.json");
    note["Payload"]["Sku"] = json!(sku);
    note["Payload"]["FulfillmentChannelCode"] = json!("AMAZON_NA");
    note["Payload"]["Quantity"] = json!(66);
    note["EventTime"] = json!("2025-12-01T00:02:00Z");
    let env = stockhook_shared::envelope::Envelope {
        id: stockhook_shared::envelope::EventId(3),
        source: source.into(),
        platform: stockhook_shared::config::Platform::Amazon,
        received_at_ms: NOW + 120_000,
        headers: vec![],
        body: note.to_string().into_bytes(),
    };
    let normalized = stockhook_worker::adapters::amazon::normalize(&env).unwrap();
    apply_webhook(state, source, 3, NOW + 120_000, normalized).await;
    assert_eq!(held_levels(state, source, sku).await.0, Some(66 + 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_batches_apply_through_the_rules_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let sled = stockhook_worker::state::SledState::open(&dir.path().join("state")).unwrap();
    synced_batches_meet_their_webhooks(&sled).await;
    a_complete_amazon_sync_replaces_stale_levels(&sled).await;
    if let Some(server) = stockhook_test_kit::nats::start_required() {
        let mut c = stockhook_shared::config::Config::default();
        c.queue.backend = "nats".into();
        c.queue.nats_url = Some(stockhook_shared::config::OneOrMany::One(server.url.clone()));
        let nats = stockhook_worker::state::NatsState::connect(&c)
            .await
            .unwrap();
        synced_batches_meet_their_webhooks(&nats).await;
        a_complete_amazon_sync_replaces_stale_levels(&nats).await;
    }
}

// --- Size ----------------------------------------------------------------------------------

/// By hand, for the figures in the report (not a timed test): an Amazon account of 20,000 FBA
/// SKUs in two North American marketplaces, 50 summaries a page (the API's page size), read
/// from the fake SP-API. `cargo test --release -p stockhook-worker --test sync_markets
/// amazon_sync_size -- --ignored --nocapture`
#[tokio::test]
#[ignore]
async fn amazon_sync_size() {
    const SKUS: usize = 20_000;
    const PAGE: usize = 50;
    let template = data_json("amazon/sync/getInventorySummaries.json")["payload"]
        ["inventorySummaries"][2]
        .clone();
    let fake = Fake::start(Arc::new(move |r: &Seen| {
        if r.path == "/auth/o2/token" {
            return reply(200, lwa_answer(1));
        }
        let ok = |body: String| Reply {
            status: 200,
            headers: vec![("x-amzn-ratelimit-limit", "1000.0".into())],
            body,
        };
        if r.path == "/fba/inventory/v1/summaries" {
            let start: usize = r.param("nextToken").map_or(0, |t| t.parse().unwrap());
            let end = (start + PAGE).min(SKUS);
            let summaries: Vec<Value> = (start..end)
                .map(|i| {
                    let mut s = template.clone();
                    s["sellerSku"] = json!(format!("SKU-{i:06}"));
                    s["inventoryDetails"]["fulfillableQuantity"] = json!(i % 97);
                    s
                })
                .collect();
            let mut page = json!({"payload": {"granularity": {"granularityType": "Marketplace", "granularityId": r.param("granularityId")}, "inventorySummaries": summaries}});
            if end < SKUS {
                page["pagination"] = json!({"nextToken": end.to_string()});
            }
            return ok(page.to_string());
        }
        if r.path.starts_with("/listings/") {
            return ok(json!({"numberOfResults": 0, "items": []}).to_string());
        }
        ok(json!({"payload": {"Orders": []}}).to_string())
    }))
    .await;
    let api = ApiClient::new().unwrap();
    let started = std::time::Instant::now();
    let batch = amazon::fetch(&amazon_config(&fake.base), &api, NOW)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(batch.items.len(), SKUS);
    assert!(batch.items.iter().all(|i| i.levels.len() == 2));
    println!(
        "amazon sync: {SKUS} SKUs x 2 marketplaces, {} pages, in {took:?}",
        fake.count(|s| s.path == "/fba/inventory/v1/summaries")
    );
}
