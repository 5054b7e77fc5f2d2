//! The worker's dashboard and read API (issue 16) end to end, on both backends: the real
//! receiver and worker binaries on loopback, Shopify deliveries signed as Shopify signs them, and
//! Debian's headless Chromium driven over the DevTools protocol (`stockhook_tests::cdp`).
//!
//! | test | what it shows |
//! |---|---|
//! | `api_*` | 401 without or with a wrong token; items with filters and sort; an item with its history; a scoped user sees only its sources (404 for another's item, its failed events only); a viewer gets 403 on replay and purge; an admin's dry run says what a replay would do and changes nothing; the OpenAPI document; CSP and no-store on every answer |
//! | `browser_*` | log in; the overview; the inventory read and filtered (by status, and by the search form); an item page with its SVG chart; a failed event's payload shown only after a click, the dry-run preview, the replay; a viewer refused (403) on the replay form; a scoped, branded user who never sees the other source in any page; each page at a desktop's and a phone's width (screenshots under `target/tmp/dashboard-screens/`); on the phone no page scrolls sideways, no table cell lies off the screen, every link, button and field is 40 px high or more, and the chart's values and dates are drawn at 11 px or more (at the desktop's width too) |
//!
//! Nothing sleeps to wait: every condition is polled with a deadline.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockhook_test_kit::nats::{self, NatsServer};
use stockhook_tests::cdp::Browser;
use stockhook_tests::http::{self, Resp};
use stockhook_tests::proc::{Proc, TestDir};
use stockhook_tests::{deadline_in, poll_until, sign, ConfigBuilder, SourceSpec};

const SECRET_A: &str = "shpss_dash_a_0123456789abcdef";
const SECRET_B: &str = "shpss_dash_b_0123456789abcdef";
const ADMIN: &str = "admin-token-0123456789abcdef";
const VIEWER: &str = "viewer-token-0123456789abcdef";
const CLIENT: &str = "client-token-0123456789abcdef";
const SETTLE: Duration = Duration::from_secs(60);

/// A running stack: receiver, worker (with its dashboard), maybe nats-server.
struct Stack {
    _nats: Option<NatsServer>,
    dir: TestDir,
    _rx: Proc,
    worker: Proc,
    dash: SocketAddr,
    /// The dead letters: (shop-a's, shop-b's).
    dead: (String, String),
}

fn dashboard_toml() -> String {
    format!(
        r##"[dashboard]
listen = "127.0.0.1:0"
session_ttl = "1h"

[[dashboard.users]]
name = "ops"
role = "admin"
token = "{ADMIN}"

[[dashboard.users]]
name = "watcher"
role = "viewer"
token = "{VIEWER}"

[[dashboard.users]]
name = "acme-client"
role = "viewer"
token = "{CLIENT}"
sources = ["shop-a"]

[dashboard.users.brand]
name = "Acme Agency"
accent = "#1d4ed8"
"##
    )
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000).expect("a time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn post(
    addr: SocketAddr,
    source: &str,
    secret: &str,
    topic: &str,
    body: &[u8],
    delivery: &str,
) -> Resp {
    let h = sign::shopify(secret, body, topic, delivery);
    let r = http::post(addr, &format!("/webhooks/{source}"), &h, body);
    assert_eq!(r.status, 200, "{topic} to {source}: {r:?}");
    r
}

/// (source, secret, inventory item, variant, sku, title, levels over time)
type ItemSpec = (
    &'static str,
    &'static str,
    u64,
    u64,
    &'static str,
    &'static str,
    [i64; 3],
);

/// Days of sales history before today for some items: enough (7+ in-stock days) for a
/// velocity, so the table shows days of cover as a number and the `cover` status.
const HISTORY_DAYS: i64 = 14;
/// (inventory item, units sold each of those days).
const HISTORY: [(u64, i64); 3] = [(101, 2), (201, 1), (202, 1)];
/// Units sold in all: 2 per order, 3 orders per item today, plus the history.
fn units_sold_total() -> i64 {
    5 * 3 * 2 + HISTORY.iter().map(|(_, n)| n * HISTORY_DAYS).sum::<i64>()
}

/// Catalog, levels over a few hours and sales for five items (some with two weeks of daily
/// sales before that); one bad delivery per source.
fn feed(rx: SocketAddr) -> (String, String) {
    let now = now_ms();
    let hour = 3_600_000;
    let items: [ItemSpec; 5] = [
        (
            "shop-a",
            SECRET_A,
            101,
            1101,
            "MUG-BLUE",
            "Blue mug",
            [40, 30, 24],
        ),
        (
            "shop-a",
            SECRET_A,
            102,
            1102,
            "MUG-RED",
            "Red mug",
            [12, 6, 2],
        ),
        (
            "shop-a",
            SECRET_A,
            103,
            1103,
            "TEE-M",
            "T-shirt M",
            [5, 1, 0],
        ),
        (
            "shop-b",
            SECRET_B,
            201,
            1201,
            "BOLT-9",
            "Secret bolt B",
            [90, 80, 70],
        ),
        (
            "shop-b",
            SECRET_B,
            202,
            1202,
            "NUT-4",
            "Hidden nut B",
            [9, 5, 3],
        ),
    ];
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("dash-{n}")
    };
    for (src, secret, inv, var, sku, title, levels) in items {
        // One signed Shopify delivery of `body` from this item's shop.
        let mut send = |topic: &str, body: serde_json::Value| {
            post(rx, src, secret, topic, body.to_string().as_bytes(), &next());
        };
        let body = serde_json::json!({
            "id": var * 10, "title": title, "updated_at": rfc3339(now - 4 * hour),
            "variants": [{"id": var, "inventory_item_id": inv, "sku": sku, "title": "Default Title", "inventory_quantity": levels[0] + 5}],
        });
        send("products/update", body);
        for (k, available) in levels.iter().enumerate() {
            let body = serde_json::json!({
                "inventory_item_id": inv, "location_id": 1, "available": available,
                "updated_at": rfc3339(now - (3 - k as i64) * hour),
            });
            send("inventory_levels/update", body);
            let order = serde_json::json!({
                "id": inv * 100 + k as u64, "created_at": rfc3339(now - (3 - k as i64) * hour + 60_000),
                "line_items": [{"id": inv * 1000 + k as u64, "variant_id": var, "quantity": 2, "sku": sku}],
            });
            send("orders/create", order);
        }
        let daily = HISTORY.iter().find(|(i, _)| *i == inv).map(|(_, n)| *n);
        for d in 1..=HISTORY_DAYS * i64::from(daily.is_some()) {
            let order = serde_json::json!({
                "id": inv * 100 + 10 + d as u64, "created_at": rfc3339(now - d * 24 * hour),
                "line_items": [{"id": inv * 1000 + 10 + d as u64, "variant_id": var, "quantity": daily, "sku": sku}],
            });
            send("orders/create", order);
        }
    }
    let bad_a = post(
        rx,
        "shop-a",
        SECRET_A,
        "products/update",
        b"not json: customer jane@example.com",
        &next(),
    );
    let bad_b = post(
        rx,
        "shop-b",
        SECRET_B,
        "products/update",
        b"not json either",
        &next(),
    );
    let id = |r: &Resp| r.json()["id"].as_str().expect("an event id").to_string();
    (id(&bad_a), id(&bad_b))
}

/// The dashboard's address, from the worker's `dashboard=` line.
fn dashboard_addr(worker: &Proc) -> SocketAddr {
    poll_until(deadline_in(SETTLE), || {
        worker.stdout().lines().find_map(|l| {
            l.strip_prefix("dashboard=")
                .and_then(|a| a.trim().parse().ok())
        })
    })
    .unwrap_or_else(|| panic!("the worker printed no dashboard= line:\n{}", worker.dump()))
}

fn start(name: &str, nats: bool) -> Option<Stack> {
    let server = if nats {
        let bin = nats::require(name)?;
        Some(NatsServer::start(&bin))
    } else {
        None
    };
    let dir = TestDir::new(name);
    let mut cfg: ConfigBuilder = dir
        .config()
        .recipients(&["seller@example.com"])
        .alerts("low_stock_threshold", "5")
        .source(
            SourceSpec::shopify("shop-a", SECRET_A)
                .with("store_url", "\"https://acme.myshopify.com\""),
        )
        .source(SourceSpec::shopify("shop-b", SECRET_B))
        .raw(&dashboard_toml());
    if let Some(s) = &server {
        cfg = cfg
            .queue("backend", "\"nats\"")
            .queue("nats_url", &format!("\"{}\"", s.url))
            .queue("lease_timeout", "\"5s\"");
    }
    let path = dir.write_config("stockhook.toml", &cfg);
    let rx = dir.receiver(&path);
    let worker = dir.worker(&path);
    let dash = dashboard_addr(&worker);
    let dead = feed(rx.addr());
    let stack = Stack {
        _nats: server,
        dir,
        _rx: rx,
        worker,
        dash,
        dead,
    };
    // Everything processed: every unit sold, both bad events dead.
    poll_until(deadline_in(SETTLE), || {
        let items = api(&stack, ADMIN, "GET", "/api/v1/items");
        let failed = api(&stack, ADMIN, "GET", "/api/v1/failed");
        let sold: i64 = items.json()["items"]
            .as_array()?
            .iter()
            .map(|i| i["units_sold"].as_i64().unwrap_or(0))
            .sum();
        let dead = failed.json()["failed"].as_array().map_or(0, |a| a.len());
        (items.json()["total"] == 5 && sold == units_sold_total() && dead == 2).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not everything processed within {SETTLE:?}: {:?}\n{:?}",
            api(&stack, ADMIN, "GET", "/api/v1/items"),
            api(&stack, ADMIN, "GET", "/api/v1/failed")
        )
    });
    Some(stack)
}

fn api(s: &Stack, token: &str, method: &str, path: &str) -> Resp {
    let auth = format!("Bearer {token}");
    http::request(
        s.dash,
        method,
        path,
        &[("Authorization", auth.as_str())],
        b"",
    )
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| i["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn api_checks(s: &Stack) {
    // No token, a wrong one: 401, and nothing else said.
    let r = http::get(s.dash, "/api/v1/items");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer"));
    assert_eq!(
        api(s, "not-a-token-at-all-000", "GET", "/api/v1/items").status,
        401
    );
    assert!(!r.text().contains("shop-a"));

    // Filters and sort, as the page has them.
    let low = api(s, ADMIN, "GET", "/api/v1/items?status=low&sort=available").json();
    assert_eq!(ids(&low), vec!["shop-a:102", "shop-b:202"], "{low:#}");
    let first = &low["items"][0];
    for k in ["id", "source", "sku", "title", "available", "status"] {
        assert!(first.get(k).is_some(), "item has {k}: {first:#}");
    }
    assert_eq!(first["available"], 2);
    assert_eq!(first["status"], "low");
    let out = api(s, ADMIN, "GET", "/api/v1/items?status=out").json();
    assert_eq!(ids(&out), vec!["shop-a:103"]);
    let q = api(
        s,
        ADMIN,
        "GET",
        "/api/v1/items?q=mug&sort=available&dir=desc",
    )
    .json();
    assert_eq!(ids(&q), vec!["shop-a:101", "shop-a:102"]);
    // Days of cover from two weeks of daily sales: the nut (3 left, 1 a day) and the mug (24
    // left, 2 a day) have fewer than the 14-day lead time; the bolt (70 left) has plenty; items
    // without history have none.
    let cover = api(s, ADMIN, "GET", "/api/v1/items?status=cover&sort=cover").json();
    assert_eq!(ids(&cover), vec!["shop-b:202", "shop-a:101"], "{cover:#}");
    let by_cover = api(s, ADMIN, "GET", "/api/v1/items?sort=cover").json();
    assert_eq!(
        ids(&by_cover)[..3],
        ["shop-b:202", "shop-a:101", "shop-b:201"],
        "{by_cover:#}"
    );
    let days = |i: usize| by_cover["items"][i]["days_of_cover"].as_f64();
    assert!(
        days(0).is_some_and(|d| d < 5.0)
            && days(1).is_some_and(|d| d < 14.0)
            && days(2).is_some_and(|d| d > 14.0),
        "{by_cover:#}"
    );
    assert_eq!(days(3), None, "{by_cover:#}");

    // One item with its history: 3 level reports (+1 from the catalog) and 3 sales.
    let item = api(s, ADMIN, "GET", "/api/v1/items/shop-a:102").json();
    assert_eq!(item["title"], "Red mug", "{item:#}");
    assert_eq!(
        item["history"]["stock"].as_array().map(Vec::len),
        Some(4),
        "{item:#}"
    );
    assert_eq!(
        item["history"]["sales"].as_array().map(Vec::len),
        Some(3),
        "{item:#}"
    );
    assert_eq!(item["units_sold"], 6);

    // The scoped client: its source only, everywhere.
    let mine = api(s, CLIENT, "GET", "/api/v1/items").json();
    assert_eq!(
        ids(&mine),
        vec!["shop-a:103", "shop-a:102", "shop-a:101"],
        "{mine:#}"
    );
    assert_eq!(
        api(s, CLIENT, "GET", "/api/v1/items/shop-b:201").status,
        404
    );
    assert_eq!(
        api(s, CLIENT, "GET", "/api/v1/items?source=shop-b").json()["total"],
        0
    );
    let failed = api(s, CLIENT, "GET", "/api/v1/failed").json();
    let fids: Vec<&str> = failed["failed"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(fids, vec![s.dead.0.as_str()], "{failed:#}");
    assert_eq!(
        api(s, CLIENT, "GET", &format!("/api/v1/failed/{}", s.dead.1)).status,
        404
    );
    let stats = api(s, CLIENT, "GET", "/api/v1/stats");
    assert!(!stats.text().contains("shop-b"), "{stats:?}");
    for path in [
        "/api/v1/alerts",
        "/api/v1/stats",
        "/api/v1/items",
        "/api/v1/failed",
    ] {
        let t = api(s, CLIENT, "GET", path).text();
        assert!(
            !t.contains("shop-b") && !t.contains("Secret bolt"),
            "{path}: {t}"
        );
    }

    // Viewers change nothing: 403 on replay, purge, resend; the event is still there.
    for token in [VIEWER, CLIENT] {
        for verb in ["replay", "purge"] {
            let r = api(
                s,
                token,
                "POST",
                &format!("/api/v1/failed/{}/{verb}", s.dead.0),
            );
            assert_eq!(r.status, 403, "{verb} as viewer: {r:?}");
        }
    }
    // An admin's dry run: what would happen, nothing done.
    let dry = api(
        s,
        ADMIN,
        "POST",
        &format!("/api/v1/failed/{}/replay?dry_run=true", s.dead.0),
    );
    assert_eq!(dry.status, 200, "{dry:?}");
    let summary = dry.json()["outcome"][0]["summary"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(summary.starts_with("Dry run: would fail again"), "{dry:?}");
    assert_eq!(
        api(s, ADMIN, "GET", "/api/v1/failed").json()["failed"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    // The payload only when asked for.
    let d = api(s, ADMIN, "GET", &format!("/api/v1/failed/{}", s.dead.0));
    assert!(
        d.json().get("payload").is_none() && !d.text().contains("jane@"),
        "{d:?}"
    );
    let d = api(
        s,
        ADMIN,
        "GET",
        &format!("/api/v1/failed/{}?payload=true", s.dead.0),
    );
    assert!(d.text().contains("jane@example.com"), "{d:?}");

    // Alerts: the low and out ones, with recipients.
    let alerts = api(s, ADMIN, "GET", "/api/v1/alerts").json();
    let list = alerts["alerts"].as_array().expect("alerts");
    assert!(!list.is_empty(), "{alerts:#}");
    assert!(
        list.iter()
            .all(|a| a["recipients"][0] == "seller@example.com"),
        "{alerts:#}"
    );
    // One page at a time, newest first: following `next` walks the same list, each alert once.
    let mut paged: Vec<Value> = Vec::new();
    let mut path = "/api/v1/alerts?limit=1".to_string();
    loop {
        let page = api(s, ADMIN, "GET", &path).json();
        let got = page["alerts"].as_array().expect("alerts").clone();
        assert!(got.len() <= 1, "{page:#}");
        paged.extend(got);
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/alerts?limit=1&before={next}"),
            None => break,
        }
        assert!(paged.len() <= list.len(), "paging does not end: {paged:#?}");
    }
    assert!(list.len() >= 2, "{alerts:#}");
    assert_eq!(&paged, list, "pages of one = the whole list, in order");

    // OpenAPI, headers.
    let doc = http::get(s.dash, "/api/v1/openapi.json").json();
    for p in [
        "/api/v1/items",
        "/api/v1/items/{id}",
        "/api/v1/alerts",
        "/api/v1/failed",
        "/api/v1/failed/{id}/replay",
        "/api/v1/stats",
    ] {
        assert!(doc["paths"].get(p).is_some(), "openapi has {p}");
    }
    let r = api(s, ADMIN, "GET", "/api/v1/items");
    let csp = r.header("Content-Security-Policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(r.header("Cache-Control"), Some("no-store"));

    // The worker's log names routes and users, never a token or a payload.
    let log = s.worker.stderr();
    assert!(log.contains("dashboard request"), "requests are logged");
    for secret in [ADMIN, VIEWER, CLIENT, "jane@example.com", "not json"] {
        assert!(!log.contains(secret), "the log holds {secret:?}");
    }

    // The replay itself: the event leaves the dead letters, is read again, fails again (still
    // not JSON) and is a dead letter again, with one more attempt on record.
    let r = api(
        s,
        ADMIN,
        "POST",
        &format!("/api/v1/failed/{}/replay", s.dead.1),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["replayed"][0], s.dead.1.as_str());
    poll_until(deadline_in(SETTLE), || {
        let f = api(s, ADMIN, "GET", "/api/v1/failed").json();
        let shop_b: Vec<&Value> = f["failed"]
            .as_array()?
            .iter()
            .filter(|d| d["source"] == "shop-b")
            .collect();
        (shop_b.len() == 1
            && shop_b[0]["attempts"].as_i64() >= Some(1)
            && s.worker
                .stderr()
                .matches("event dead-lettered: cannot be read")
                .count()
                == 3)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the replayed event did not fail again: {}",
            s.worker.stderr()
        )
    });
}

#[test]
fn api_scopes_roles_filters_and_dry_run_on_sled() {
    let Some(s) = start("dash-api-sled", false) else {
        return;
    };
    api_checks(&s);
    assert_dashboard_threads_idle_class(&s.worker);
}

/// Linux's `SCHED_IDLE` policy number (`sched.h`).
const SCHED_IDLE: u32 = 5;

/// The worker's threads named `dashboard` (pages and snapshots) are in the idle scheduling
/// class, and its other threads are not: a page load may take only a core that nothing else
/// wants (docs/PERFORMANCE.md section 19). Read from `/proc/<pid>/task/*/stat` (the 41st field is
/// the policy); the pages loaded before this started the dashboard's runtime.
fn assert_dashboard_threads_idle_class(worker: &Proc) {
    let tasks = std::fs::read_dir(format!("/proc/{}/task", worker.pid()))
        .unwrap_or_else(|e| panic!("reading the worker's threads: {e}"));
    let (mut idle, mut other) = (Vec::new(), Vec::new());
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        // Fields after the name start at the 3rd; the policy is the 41st.
        let policy: Option<u32> = stat[close + 2..]
            .split_whitespace()
            .nth(41 - 3)
            .and_then(|p| p.parse().ok());
        if name == "dashboard" {
            idle.push(policy);
        } else {
            other.push((name, policy));
        }
    }
    assert!(!idle.is_empty(), "no dashboard thread in the worker");
    assert!(
        idle.iter().all(|p| *p == Some(SCHED_IDLE)),
        "dashboard threads' policies: {idle:?}"
    );
    assert!(
        other.iter().all(|(_, p)| *p != Some(SCHED_IDLE)),
        "an event thread in the idle class: {other:?}"
    );
}

#[test]
fn api_scopes_roles_filters_and_dry_run_on_nats() {
    let Some(s) = start("dash-api-nats", true) else {
        return;
    };
    api_checks(&s);
}

fn screens(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard-screens")
        .join(backend)
}

fn login(b: &mut Browser, s: &Stack, token: &str) {
    b.goto(&format!("http://{}/", s.dash));
    b.wait_loaded("/login");
    b.fill("#token", token);
    b.click_to("form.card button", "/");
}

fn logout(b: &mut Browser) {
    b.click_to("form.logout button", "/login");
}

/// The texts around and in the item chart (its axis values and dates) as `(text, px)`: each
/// one's font size as it is drawn, i.e. times the drawing's scale for text inside the SVG
/// (which shrinks with it).
fn chart_label_sizes(b: &mut Browser) -> Vec<(String, f64)> {
    let js =
        "[...(document.querySelector('svg.chart')?.parentElement?.querySelectorAll('*') ?? [])]\
        .filter(e => e.children.length === 0 && e.tagName !== 'title' && e.textContent.trim())\
        .map(e => { const m = e.ownerSVGElement ? e.getScreenCTM() : null; \
            const scale = m ? Math.min(Math.abs(m.a), Math.abs(m.d)) : 1; \
            return [e.textContent.trim(), parseFloat(getComputedStyle(e).fontSize) * scale] })";
    let v = b.eval(js).unwrap_or_else(|e| panic!("chart labels: {e}"));
    serde_json::from_value(v).unwrap_or_else(|e| panic!("chart labels: {e}"))
}

/// Asserts the item page's chart shows its highest value, 0 and two dates, each drawn at 11
/// CSS px or more.
fn assert_chart_labels_readable(b: &mut Browser, width: u32) {
    let labels = chart_label_sizes(b);
    assert!(
        labels.len() >= 4 && labels.iter().any(|(t, _)| t == "0"),
        "{width} px: the chart's labels: {labels:?}"
    );
    for (text, px) in &labels {
        assert!(
            *px >= 11.0,
            "{width} px: chart label {text:?} drawn at {px:.1} px: {labels:?}"
        );
    }
}

/// What a phone's reader would find broken on the current page, in words (empty: nothing):
/// the page wider than the screen, a table cell past the screen's edge (hidden in a scroller;
/// a header hidden for screen readers only does not count), a link, button or field under
/// 40 px high.
fn phone_problems(b: &mut Browser) -> Vec<String> {
    let js = "(() => { const w = innerWidth, out = []; \
        if (document.documentElement.scrollWidth > w) out.push('page is ' + document.documentElement.scrollWidth + ' px wide'); \
        for (const c of document.querySelectorAll('td, th')) { const r = c.getBoundingClientRect(); \
            const head = c.closest('thead'); if (head && head.getBoundingClientRect().width <= 1) continue; \
            if (r.width > 0 && r.right > w + 0.5) out.push('cell ' + JSON.stringify(c.innerText.slice(0, 40)) + ' ends at ' + Math.round(r.right) + ' px'); } \
        for (const e of document.querySelectorAll('header a, nav a, button, .button, input:not([type=hidden]), select, table a')) { \
            const r = e.getBoundingClientRect(); \
            if (r.width > 0 && r.height < 40) out.push(e.tagName.toLowerCase() + ' ' + JSON.stringify((e.innerText || e.name || '').slice(0, 40)) + ' is ' + Math.round(r.height) + ' px high'); } \
        return out })()";
    let v = b.eval(js).unwrap_or_else(|e| panic!("phone checks: {e}"));
    serde_json::from_value(v).unwrap_or_else(|e| panic!("phone checks: {e}"))
}

/// Table rows' `data-source` of the inventory page.
fn row_sources(b: &mut Browser) -> Vec<String> {
    let v = b
        .eval("[...document.querySelectorAll('#inventory tbody tr')].map(r => r.dataset.source)")
        .unwrap_or_default();
    serde_json::from_value(v).unwrap_or_default()
}

/// Asserts the page's text holds each of `words` and none of `never` (the page's text if not).
fn assert_shows(b: &mut Browser, words: &[&str], never: &[&str]) {
    let t = b.text();
    let missing: Vec<&&str> = words.iter().filter(|w| !t.contains(**w)).collect();
    let unwanted: Vec<&&str> = never.iter().filter(|w| t.contains(**w)).collect();
    assert!(
        missing.is_empty() && unwanted.is_empty(),
        "missing {missing:?}, unwanted {unwanted:?} in the page: {t}"
    );
}

fn browser_checks(s: &Stack, backend: &str) {
    let Some(mut b) = Browser::launch(1280, 900) else {
        return;
    };
    let shots = screens(backend);
    let base = format!("http://{}", s.dash);

    // Not logged in: the login page; a wrong token is refused.
    b.goto(&format!("{base}/inventory"));
    b.wait_loaded("/login");
    b.screenshot(&shots.join("login.png"));
    b.fill("#token", "wrong-token-000000000000");
    b.click_to("form.card button", "/login");
    assert_shows(&mut b, &["not valid"], &[]);

    // The admin.
    login(&mut b, s, ADMIN);
    assert_shows(&mut b, &["shop-a", "shop-b", "Overview"], &[]);
    b.screenshot(&shots.join("overview.png"));

    b.goto(&format!("{base}/inventory"));
    assert_eq!(row_sources(&mut b).len(), 5);
    b.screenshot(&shots.join("inventory.png"));
    // Filter by status with the form's select, then search.
    b.eval("document.querySelector('#status').value = 'low', true")
        .expect("select");
    b.click_to("form.filters button", "/inventory");
    assert_shows(&mut b, &["Red mug", "Hidden nut B"], &["Blue mug"]);
    assert_eq!(row_sources(&mut b).len(), 2);
    b.screenshot(&shots.join("inventory-low.png"));
    // Low days of cover: a number of days, and the status the seller filters on.
    b.goto(&format!("{base}/inventory?status=cover&sort=cover"));
    assert_eq!(row_sources(&mut b), vec!["shop-b", "shop-a"]);
    assert_shows(&mut b, &["Hidden nut B", "Blue mug"], &[]);
    b.screenshot(&shots.join("inventory-cover.png"));
    // Its item page: how fast it sells, when it runs out, how much to reorder.
    b.goto(&format!("{base}/items/shop-a%3A101"));
    assert_shows(&mut b, &["Days of cover", "Runs out", "Low cover"], &[]);
    b.screenshot(&shots.join("item-cover.png"));
    b.goto(&format!("{base}/inventory"));
    b.eval("document.querySelector('#status').value = '', true")
        .expect("select");
    b.fill("#q", "tee");
    b.click_to("form.filters button", "/inventory");
    assert_eq!(row_sources(&mut b), vec!["shop-a"]);
    assert!(b.text().contains("T-shirt M"));

    // An item with its chart and its admin link.
    b.click_to("#inventory tbody a", "/items/shop-a%3A103");
    let svg = b
        .eval("(() => { const s = document.querySelector('svg.chart'); return s ? s.querySelector('path.stock').getAttribute('d').length + ':' + s.querySelectorAll('rect.sale').length : '' })()")
        .expect("chart");
    let svg = svg.as_str().unwrap_or("").to_string();
    let (path_len, bars) = svg
        .split_once(':')
        .unwrap_or_else(|| panic!("no chart: {}", b.html()));
    assert!(path_len.parse::<usize>().unwrap_or(0) > 10, "{svg}");
    assert_eq!(bars, "3", "three sales as bars");
    let html = b.html();
    assert!(
        html.contains("https://acme.myshopify.com/admin/products/inventory?query=TEE-M"),
        "admin link"
    );
    assert_chart_labels_readable(&mut b, 1280);
    b.screenshot(&shots.join("item.png"));

    b.goto(&format!("{base}/alerts"));
    assert!(b.text().contains("seller@example.com"));
    // On a desktop the alerts stay a table (the phone's stacked rows are for narrow screens).
    let display = b
        .eval("getComputedStyle(document.querySelector('table.alerts tbody tr')).display")
        .expect("alert row");
    assert_eq!(display, "table-row");
    b.screenshot(&shots.join("alerts.png"));
    // The first page links to no newer page; a later one links back to the newest alerts.
    let first_link = "(() => { const a = document.querySelector('nav.pager a[rel=first]'); return a ? a.getAttribute('href') : 'none' })()";
    assert_eq!(b.eval(first_link).expect("pager"), "none");
    let next = api(s, ADMIN, "GET", "/api/v1/alerts?limit=1").json()["next"]
        .as_str()
        .expect("more than one alert")
        .to_string();
    b.goto(&format!("{base}/alerts?status=sent&before={next}"));
    assert_eq!(b.eval(first_link).expect("pager"), "/alerts?status=sent");
    b.screenshot(&shots.join("alerts-older.png"));

    // A failed event: payload hidden until asked, preview, replay.
    b.goto(&format!("{base}/failed"));
    b.screenshot(&shots.join("failed.png"));
    b.goto(&format!("{base}/failed/{}", s.dead.0));
    assert!(
        !b.html().contains("jane@example.com"),
        "payload shown before the click"
    );
    b.click_to("#show-payload", &format!("/failed/{}", s.dead.0));
    assert!(
        b.text().contains("jane@example.com"),
        "payload after the click"
    );
    b.click_to("#preview", &format!("/failed/{}", s.dead.0));
    assert_shows(&mut b, &["Dry run: would fail again"], &[]);
    b.screenshot(&shots.join("failed-detail.png"));
    b.click_to("#replay", "/failed");
    assert_shows(&mut b, &["replayed"], &[]);
    logout(&mut b);

    // A viewer: no replay button, and the form posted anyway is refused.
    login(&mut b, s, VIEWER);
    b.goto(&format!("{base}/failed/{}", s.dead.1));
    assert!(
        !b.html().contains("id=\"replay\""),
        "viewer sees no replay button"
    );
    let js = format!(
        "(() => {{ const f = document.createElement('form'); f.method = 'post'; f.action = '/failed/{}/replay'; \
         const i = document.createElement('input'); i.name = 'csrf'; i.value = document.querySelector('form.logout input[name=csrf]').value; \
         f.appendChild(i); document.body.appendChild(f); f.submit(); return true }})()",
        s.dead.1
    );
    b.eval_navigating(&js);
    b.wait_loaded(&format!("/failed/{}/replay", s.dead.1));
    let status = b
        .eval("performance.getEntriesByType('navigation')[0].responseStatus")
        .expect("status");
    assert_eq!(status, 403, "{}", b.text());
    assert!(b.text().contains("Only an admin"));
    // A form without the CSRF token is refused too (before the role is even looked at).
    b.goto(&format!("{base}/"));
    b.eval_navigating("(() => { const f = document.createElement('form'); f.method = 'post'; f.action = '/logout'; document.body.appendChild(f); f.submit(); return true })()");
    b.wait_loaded("/logout");
    assert_shows(&mut b, &["CSRF"], &[]);
    b.goto(&format!("{base}/"));
    logout(&mut b);

    // The scoped, branded client: never shop-b, in any page.
    login(&mut b, s, CLIENT);
    assert!(b.text().contains("Acme Agency"), "brand name shown");
    for path in [
        "/",
        "/inventory",
        "/alerts",
        "/failed",
        "/inventory?source=shop-b",
    ] {
        b.goto(&format!("{base}{path}"));
        let html = b.html();
        assert!(
            !html.contains("shop-b")
                && !html.contains("Secret bolt")
                && !html.contains("Hidden nut"),
            "{path}: {html}"
        );
    }
    b.goto(&format!("{base}/items/shop-b%3A201"));
    assert!(b.text().contains("Not found"));
    b.goto(&format!("{base}/failed/{}", s.dead.1));
    assert!(b.text().contains("Not found"));
    // On a phone.
    b.viewport(390, 844, true);
    let failed = format!("/failed/{}", s.dead.0);
    for (path, name) in [
        ("/", "phone-overview.png"),
        ("/inventory", "phone-inventory.png"),
        ("/items/shop-a%3A101", "phone-item-cover.png"),
        ("/items/shop-a%3A102", "phone-item.png"),
        ("/alerts", "phone-alerts.png"),
        ("/failed", "phone-failed.png"),
        (failed.as_str(), "phone-failed-detail.png"),
    ] {
        b.goto(&format!("{base}{path}"));
        b.screenshot(&shots.join(name));
        if path.starts_with("/items/") {
            assert_chart_labels_readable(&mut b, 390);
        }
        // Everything on the screen: no sideways page, no table cell off its edge, every
        // target big enough for a thumb.
        let problems = phone_problems(&mut b);
        assert!(
            problems.is_empty(),
            "{path} on a 390 px phone: {problems:#?}"
        );
    }
    // The alerts are all there on the phone, as stacked rows.
    b.goto(&format!("{base}/alerts"));
    let t = b.text();
    assert!(
        t.contains("seller@example.com") && t.contains("@stockhook>"),
        "{t}"
    );
    eprintln!("screenshots in {}", shots.display());
    let _ = &s.dir;
}

#[test]
fn browser_login_inventory_item_replay_and_scopes_on_sled() {
    let Some(s) = start("dash-browser-sled", false) else {
        return;
    };
    browser_checks(&s, "sled");
}

#[test]
fn browser_login_inventory_item_replay_and_scopes_on_nats() {
    let Some(s) = start("dash-browser-nats", true) else {
        return;
    };
    browser_checks(&s, "nats");
}

/// One HTTP/1.1 request over TLS to `addr`, trusting only `ca` (PEM): the raw answer.
fn https(addr: SocketAddr, ca: &Path, request: &str) -> String {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("the test CA") {
        roots.add(cert.expect("a CA certificate")).expect("trusted");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
        let mut tls = tokio::time::timeout(SETTLE, connector.connect(name, tcp))
            .await
            .expect("handshake in time")
            .expect("TLS handshake with the dashboard");
        tls.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(SETTLE, tls.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// `[dashboard] tls_cert` + `tls_key`: the login over HTTPS sets a `Secure` session cookie that
/// opens the overview, a wrong token gets none, and plain HTTP to the TLS port gets no page.
#[test]
fn https_login_sets_a_secure_cookie_and_plain_http_gets_no_page() {
    let dir = TestDir::new("dash-https");
    let certs =
        stockhook_tests::smtp_tls::TestCerts::make(dir.path(), "dash", &["localhost", "127.0.0.1"]);
    let tls = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    let cfg = dir
        .config()
        .recipients(&["seller@example.com"])
        .source(SourceSpec::shopify("shop-a", SECRET_A))
        .raw(&dashboard_toml().replacen(
            "session_ttl = \"1h\"\n",
            &format!("session_ttl = \"1h\"\n{tls}"),
            1,
        ));
    let path = dir.write_config("stockhook.toml", &cfg);
    let _rx = dir.receiver(&path);
    let worker = dir.worker(&path);
    let dash = dashboard_addr(&worker);

    let login = |token: &str| {
        let body = format!("token={token}");
        https(
            dash,
            &certs.ca,
            &format!(
                "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
    };
    let ok = login(ADMIN);
    assert!(ok.starts_with("HTTP/1.1 303"), "{ok}");
    let cookie = ok
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Set-Cookie: {ok}"));
    let attrs: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for a in ["Secure", "HttpOnly", "SameSite=Strict"] {
        assert!(attrs.contains(&a), "{a} missing: {cookie}");
    }
    let session = attrs[0];
    let page = https(
        dash,
        &certs.ca,
        &format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nCookie: {session}\r\nConnection: close\r\n\r\n"
        ),
    );
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains("<h1>Overview</h1>") && page.contains("shop-a"),
        "{page}"
    );
    // Without the cookie: to the login page.
    let anon = https(
        dash,
        &certs.ca,
        "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        anon.starts_with("HTTP/1.1 303") && anon.contains("/login"),
        "{anon}"
    );
    let bad = login("wrong-token-000000000000");
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    assert!(!bad.to_ascii_lowercase().contains("set-cookie"), "{bad}");

    // Plain HTTP to the TLS port: no HTTP answer (the handshake fails, the connection closes).
    use std::io::{Read, Write};
    let mut plain = std::net::TcpStream::connect(dash).expect("connect");
    plain
        .set_read_timeout(Some(SETTLE))
        .expect("a read timeout");
    plain
        .write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {}",
        String::from_utf8_lossy(&got)
    );
    let _ = &dir;
}
