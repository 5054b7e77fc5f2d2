//! End to end for the channels that do not post like Shopify, and for the operator's `compact`:
//!
//! * eBay Trading API Platform Notifications (SOAP, `ebay-legacy`): a revision and a sale signed
//!   the way eBay signs them (base64 MD5 of Timestamp + DevID + AppID + CertID in the SOAP
//!   header) cross the threshold and end in one email; a wrong CertID is refused;
//! * a SKU sold on Shopify and Amazon with `combine_channels = true`: the per-channel rule and
//!   the cross-channel rule on the sum each speak once;
//! * `stockhook-receiver compact` on a stopped receiver keeps every event and its id, and is
//!   refused while the receiver runs.

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use stockhook_tests::http;
use stockhook_tests::queue::Queue;
use stockhook_tests::stack::{start_worker, stat, wait_eml, wait_stats, worker_cli_ok};
use stockhook_tests::{deadline_in, sign, Proc, SourceSpec, TestDir};

const TO: &str = "seller@example.com";
const SETTLE: Duration = Duration::from_secs(30);

const DEV: &str = "dev-5c1f";
const APP: &str = "app-9a7e";
const CERT: &str = "cert-secret-3d2b";

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formatting now")
}

/// eBay's NotificationSignature: base64(MD5(Timestamp + DevID + AppID + CertID)).
fn legacy_signature(ts: &str, cert: &str) -> String {
    let digest = Md5::digest(format!("{ts}{DEV}{APP}{cert}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// A Platform Notification shaped like eBay's: the call's response in a SOAP envelope, the
/// signature in the header.
fn soap(response: &str, event: &str, ts: &str, cert: &str, inner: &str) -> Vec<u8> {
    let sig = legacy_signature(ts, cert);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">
  <soapenv:Header>
    <ebl:RequesterCredentials soapenv:mustUnderstand="0" xmlns:ebl="urn:ebay:apis:eBLBaseComponents">
      <ebl:NotificationSignature xmlns:ebl="urn:ebay:apis:eBLBaseComponents">{sig}</ebl:NotificationSignature>
    </ebl:RequesterCredentials>
  </soapenv:Header>
  <soapenv:Body>
    <{response} xmlns="urn:ebay:apis:eBLBaseComponents">
      <Timestamp>{ts}</Timestamp>
      <Ack>Success</Ack>
      <NotificationEventName>{event}</NotificationEventName>
      {inner}
    </{response}>
  </soapenv:Body>
</soapenv:Envelope>"#
    )
    .into_bytes()
}

fn item(quantity: i64, sold: i64) -> String {
    format!(
        "<Item><ItemID>110554019341</ItemID><Quantity>{quantity}</Quantity>\
         <SellingStatus><QuantitySold>{sold}</QuantitySold></SellingStatus>\
         <SKU>MUG-RED</SKU><Title>Red mug</Title></Item>"
    )
}

fn post_soap(addr: std::net::SocketAddr, event: &str, body: &[u8]) -> http::Resp {
    let action = format!("\"http://developer.ebay.com/notification/{event}\"");
    let headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "text/xml; charset=utf-8".into()),
        ("SOAPAction".into(), action),
    ];
    http::post(addr, "/webhooks/ebay-trading", &headers, body)
}

#[test]
fn ebay_trading_soap_revision_and_sale_end_in_one_email() {
    let dir = TestDir::new("p-ebay-soap");
    let cfg = dir.config().recipients(&[TO]).source(
        SourceSpec::new("ebay-trading", "ebay", "ebay-legacy", &[])
            .with("dev_id", &format!("{DEV:?}"))
            .with("app_id", &format!("{APP:?}"))
            .with("cert_id", &format!("{CERT:?}")),
    );
    let config = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&config);
    let _worker = start_worker(&dir, &config);

    // Plenty: 10 listed, 3 sold.
    let ts = now_rfc3339();
    let r = post_soap(
        rx.addr(),
        "ItemRevised",
        &soap("GetItemResponse", "ItemRevised", &ts, CERT, &item(10, 3)),
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Signed with another CertID: refused, stored nowhere.
    let forged = soap(
        "GetItemResponse",
        "ItemRevised",
        &ts,
        "not-the-cert",
        &item(10, 9),
    );
    let r = post_soap(rx.addr(), "ItemRevised", &forged);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["error"], "signature_mismatch", "{r:?}");
    // A sale of 5 more: 10 - 8 = 2 left, below the threshold of 5.
    let ts = now_rfc3339();
    let sale = format!(
        "{}<TransactionArray><Transaction><QuantityPurchased>5</QuantityPurchased>\
         <TransactionID>2911</TransactionID><OrderLineItemID>110554019341-2911</OrderLineItemID>\
         </Transaction></TransactionArray>",
        item(10, 8)
    );
    let r = post_soap(
        rx.addr(),
        "FixedPriceTransaction",
        &soap(
            "GetItemTransactionsResponse",
            "FixedPriceTransaction",
            &ts,
            CERT,
            &sale,
        ),
    );
    assert_eq!(r.status, 200, "{r:?}");

    let emails = wait_eml(&dir.data_dir(), 1, SETTLE);
    assert_eq!(emails.len(), 1);
    let e = &emails[0];
    assert_eq!(e.subject(), "Low stock: 1 item at ebay-trading");
    assert_eq!(
        e.field_for("110554019341", "Available").as_deref(),
        Some("2"),
        "{}",
        e.text()
    );
    assert_eq!(
        e.field_for("110554019341", "SKU").as_deref(),
        Some("MUG-RED"),
        "{}",
        e.text()
    );
    let s = wait_stats(&dir, &config, SETTLE, "both events processed", |s| {
        stat(s, "events.processed") == 2
    });
    assert_eq!(stat(&s, "queue.dead"), 0, "{s:#}");
    let csv = worker_cli_ok(&dir, &config, &["export", "--csv"]);
    let row = csv
        .lines()
        .find(|l| l.contains("110554019341"))
        .unwrap_or_else(|| panic!("no row: {csv}"));
    // units_sold is the 10th column.
    assert_eq!(row.split(',').nth(9), Some("5"), "{row}");
}

#[test]
fn a_sku_shared_across_channels_alerts_on_the_sum_too() {
    const SHOP_SECRET: &str = "shpss_cross_channel_secret";
    const AMZ_KEY: &str = "amz-cross-channel-key-0123456789";
    let dir = TestDir::new("p-cross");
    let cfg = dir
        .config()
        .recipients(&[TO])
        .alerts("combine_channels", "true")
        .source(SourceSpec::shopify("shop", SHOP_SECRET))
        .source(SourceSpec::api_key("amz", "x-api-key", AMZ_KEY));
    let config = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&config);
    let _worker = start_worker(&dir, &config);

    let product = |qty: i64, at: &str| {
        json!({"id": 7001, "title": "Mug", "updated_at": at, "variants": [
            {"id": 8001, "product_id": 7001, "title": "Default Title", "sku": "MUG-1",
             "inventory_item_id": 9001, "inventory_quantity": qty, "inventory_management": "shopify",
             "updated_at": at}
        ]})
        .to_string()
        .into_bytes()
    };
    let post_shop = |body: &[u8], id: &str| {
        let h = sign::shopify(SHOP_SECRET, body, "products/update", id);
        let r = http::post(rx.addr(), "/webhooks/shop", &h, body);
        assert_eq!(r.status, 200, "{r:?}");
    };
    let mfn = |qty: i64, id: &str| {
        json!({"NotificationVersion": "1.0", "NotificationType": "LISTINGS_ITEM_MFN_QUANTITY_CHANGE",
               "PayloadVersion": "1.0", "EventTime": "2026-01-02T10:00:00Z",
               "Payload": {"SellerId": "A3TH9S8BH6GOGM", "FulfillmentChannelCode": "DEFAULT", "Sku": "MUG-1", "Quantity": qty},
               "NotificationMetadata": {"ApplicationId": "app", "SubscriptionId": "sub", "PublishTime": "2026-01-02T10:00:01Z", "NotificationId": id}})
        .to_string()
        .into_bytes()
    };
    let post_amz = |body: &[u8]| {
        let r = http::post(
            rx.addr(),
            "/webhooks/amz",
            &sign::api_key("x-api-key", AMZ_KEY),
            body,
        );
        assert_eq!(r.status, 200, "{r:?}");
    };

    // Shopify full (40), Amazon low (2): Amazon's own rule speaks; the sum (42) is fine.
    post_shop(&product(40, "2026-01-02T09:00:00Z"), "x-1");
    post_amz(&mfn(2, "n-1"));
    let first = wait_eml(&dir.data_dir(), 1, SETTLE);
    assert_eq!(first[0].subject(), "Low stock: 1 item at amz");
    // Shopify drops to 1: Shopify's rule, and the sum (3) is low across channels.
    post_shop(&product(1, "2026-01-02T11:00:00Z"), "x-2");
    let s = wait_stats(&dir, &config, SETTLE, "three alerts sent", |s| {
        stat(s, "alerts.sent") == 3
    });
    assert_eq!(stat(&s, "alerts.created"), 3, "{s:#}");
    let emails = wait_eml(&dir.data_dir(), 2, SETTLE);
    let subjects: Vec<String> = emails.iter().map(|e| e.subject().to_string()).collect();
    let all_text: String = emails.iter().map(|e| e.text()).collect();
    assert!(
        subjects.iter().any(|s| s.contains("across channels"))
            || all_text.contains("Low stock across channels"),
        "no cross-channel alert in {subjects:?}"
    );
    assert!(all_text.contains("MUG-1"), "{all_text}");
}

#[test]
fn compact_keeps_every_event_and_id_and_refuses_while_running() {
    let dir = TestDir::new("p-compact");
    let cfg = dir
        .config()
        .source(SourceSpec::shopify("shop", "shpss_compact"));
    let config: PathBuf = dir.write_config("stockhook.toml", &cfg);
    let mut rx = dir.receiver(&config);
    let mut ids = Vec::new();
    for i in 0..50 {
        let body = format!("{{\"inventory_item_id\": {i}, \"location_id\": 1, \"available\": 9}}")
            .into_bytes();
        let h = sign::shopify(
            "shpss_compact",
            &body,
            "inventory_levels/update",
            &format!("c-{i}"),
        );
        let r = http::post(rx.addr(), "/webhooks/shop", &h, &body);
        assert_eq!(r.status, 200, "{r:?}");
        ids.push(r.json()["id"].as_str().expect("id").to_string());
    }
    // Running: the database is locked.
    let bin = stockhook_tests::bins::receiver();
    let cfg_arg = config.to_str().expect("utf-8 path");
    let mut busy = dir.run(
        bin,
        &["--config", cfg_arg, "compact"],
        Duration::from_secs(30),
    );
    assert!(
        !busy
            .wait_exit(deadline_in(Duration::from_secs(1)))
            .success(),
        "compact ran beside a live receiver"
    );
    assert!(busy.stderr().contains("locked"), "{}", busy.stderr());

    rx.sigterm();
    assert!(rx.wait_exit(deadline_in(Duration::from_secs(15))).success());
    let mut out = dir.run(
        bin,
        &["--config", cfg_arg, "compact"],
        Duration::from_secs(60),
    );
    assert!(
        out.wait_exit(deadline_in(Duration::from_secs(1))).success(),
        "{}",
        out.stderr()
    );
    assert!(out.stdout().contains("compacted"), "{}", out.stdout());

    let rx: Proc = dir.receiver(&config);
    let q = Queue::connect(&dir.data_dir());
    let leased = q.lease_all(60_000);
    let got: Vec<String> = leased.iter().map(|l| l.envelope.id.to_string()).collect();
    assert_eq!(got, ids, "every event, same ids, same order");
    // New ids keep increasing after the swap.
    let body = b"{\"inventory_item_id\": 999, \"location_id\": 1, \"available\": 9}".to_vec();
    let h = sign::shopify("shpss_compact", &body, "inventory_levels/update", "c-new");
    let r = http::post(rx.addr(), "/webhooks/shop", &h, &body);
    let new_id = r.json()["id"].as_str().expect("id").to_string();
    assert!(
        new_id > ids[ids.len() - 1],
        "{new_id} after {}",
        ids[ids.len() - 1]
    );
}

#[test]
fn ebay_account_deletion_is_applied_counted_and_purges_retained_events() {
    let Some(fx) = stockhook_tests::fixtures::shared(
        "ebay_account_deletion_is_applied_counted_and_purges_retained_events",
    ) else {
        return;
    };
    let v = fx.vector("ebay_signature.json", "ebay-valid");
    let kid = v["kid"].as_str().expect("kid");
    let pem = v["public_key_response"]["key"].as_str().expect("key");
    let signature = v["headers"]["X-EBAY-SIGNATURE"]
        .as_str()
        .expect("signature");
    let body = fx.bytes("payloads/ebay/marketplace_account_deletion.signed_compact.json");
    let dir = TestDir::new("p-ebay-deletion");
    let cfg = dir.config().recipients(&[TO]).source(
        SourceSpec::new("ebay", "ebay", "ebay", &[])
            .with(
                "verification_token",
                "\"token-0123456789-abcdefghij-0123456789\"",
            )
            .with(
                "endpoint_url",
                "\"https://hooks.example.com/webhooks/ebay\"",
            )
            .with("public_keys", &format!("{{ {kid:?} = {pem:?} }}")),
    );
    let config = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&config);
    let headers: Vec<(String, String)> = vec![
        ("X-EBAY-SIGNATURE".into(), signature.into()),
        ("Content-Type".into(), "application/json".into()),
    ];
    // A tampered copy is refused.
    let mut tampered = body.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let r = http::post(rx.addr(), "/webhooks/ebay", &headers, &tampered);
    assert_eq!(r.status, 401, "{r:?}");
    let r = http::post(rx.addr(), "/webhooks/ebay", &headers, &body);
    assert_eq!(r.status, 200, "{r:?}");
    let worker = start_worker(&dir, &config);
    let s = wait_stats(&dir, &config, SETTLE, "the deletion applied", |s| {
        stat(s, "ebay.account_deletions") == 1
    });
    // The notice named the user: once processed it is not kept.
    assert_eq!(stat(&s, "queue.acked_retained"), 0, "{s:#}");
    assert_eq!(stat(&s, "queue.dead"), 0, "{s:#}");
    // The worker's log names the user id, never the username.
    let log = worker.stderr();
    assert!(
        log.contains("ma8vp1jySJC"),
        "the deletion is logged by user id: {log}"
    );
    assert!(!log.contains("test_user"), "username in the worker log");
}
