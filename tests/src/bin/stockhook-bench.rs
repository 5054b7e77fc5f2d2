//! `stockhook-bench`: the load generator behind docs/PERFORMANCE.md.
//!
//! Three modes, one binary:
//! * `load` (default): N keep-alive connections POST Shopify-like JSON bodies (`--body-size`,
//!   ~1.5 KiB by default) to `--url`, each request with its own item id, its own
//!   `X-Shopify-Webhook-Id` and its own `X-Shopify-Hmac-Sha256` (signed per request, as a
//!   platform does; `--target bare` skips signing, for the bare-hyper ceiling). Closed loop by
//!   default (each connection sends its next request when the previous answer arrives);
//!   `--rate R` is open loop (wrk2-style: each connection has a fixed schedule and latency is
//!   measured from the scheduled send time, so a stall is not hidden by coordinated omission).
//!   Prints req/s, p50/p90/p99/p99.9/max, the status mix and errors; `--pid` samples that
//!   process's VmRSS/VmHWM during the run.
//! * `e2e`: `inventory_levels/update` events at a steady `--rate` (default 2000/s), each for a
//!   fresh `inventory_item_id` with `available = 1` (below the default low-stock threshold 5;
//!   `--mix one-in-ten`: the backlog's mix, one level in ten under it, the rest 5..49),
//!   records the time each alerting event's 200 arrived, polls `<data_dir>/mail/` for the
//!   `.eml` files naming the items, and reports the "200 -> email file" latency (by file mtime, and as observed by the
//!   poll) with the queue depth from `/healthz` over time.
//!   With `--browse-url` (the worker's dashboard) and `--browse-token` it measures twice in the
//!   same run: idle, then while `--browse-connections` loops load dashboard pages back to back
//!   (issue 16: browsing must not slow event processing); `--prefill N` first puts N items in
//!   the state.
//! * `backlog`: with the worker stopped, appends `--events` events through the receiver, then
//!   starts `--worker-bin --config C run`, times until `/healthz` shows nothing pending or leased,
//!   reports events/s and the worker's VmHWM, and stops the worker (SIGTERM).
//!
//! The client is raw HTTP/1.1 over tokio TCP streams on a current-thread runtime: no client
//! library, no per-request allocation beyond the body and header text, so one core of load keeps
//! one core of server busy. Traffic goes only where `--url` points (loopback in every documented
//! command), every loop is bounded by `--duration` or `--events`, and the tool stops by itself.

use anyhow::{anyhow, bail, Context as _};
use base64::Engine as _;
use clap::{Parser, ValueEnum};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stockhook_tests::proc::{cpu_split, status_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Load generator for stockhook-receiver (and the bare-hyper ceiling).
#[derive(Parser, Debug, Clone)]
#[command(name = "stockhook-bench", about, long_about = None)]
struct Args {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Mode::Load)]
    mode: Mode,
    /// The webhook URL (http only), e.g. http://127.0.0.1:8080/webhooks/bench.
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/bench")]
    url: String,
    /// The source's Shopify secret (signs every request).
    #[arg(long, env = "BENCH_SECRET", default_value = "bench-secret")]
    secret: String,
    /// `stockhook` signs every request; `bare` sends the same bodies unsigned (the ceiling).
    #[arg(long, value_enum, default_value_t = Target::Stockhook)]
    target: Target,
    /// Concurrent keep-alive connections.
    #[arg(long, short = 'c', default_value_t = 32)]
    connections: usize,
    /// How long to send (load, e2e): "10s", "500ms", "1m".
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Not counted in the figures: the first part of the run (connections warming up).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop at this many requests per second in total (default: closed loop; e2e: 2000).
    #[arg(long)]
    rate: Option<f64>,
    /// load: stop after this many requests instead of after --duration (e.g. under callgrind).
    #[arg(long)]
    requests: Option<u64>,
    /// Approximate body size in bytes (products/update bodies are padded to it).
    #[arg(long, default_value_t = 1536)]
    body_size: usize,
    /// The Shopify topic of the generated bodies.
    #[arg(long, value_enum, default_value_t = Topic::ProductsUpdate)]
    topic: Topic,
    /// Sample VmRSS/VmHWM of this process (the receiver) during the run.
    #[arg(long)]
    pid: Option<u32>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
    /// e2e: the receiver's data_dir (emails are read from <data_dir>/mail/).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// e2e: how long to wait after the last send for the last email.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// e2e: how often the mail directory is listed.
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    poll: Duration,
    /// e2e: send this many events (fresh items, unmeasured) first and wait for the queue to
    /// drain, so the state holds that many items before the measured phase(s).
    #[arg(long, default_value_t = 0)]
    prefill: u64,
    /// e2e: the worker's dashboard (http), e.g. http://127.0.0.1:18081. Then e2e runs twice in
    /// the same run, idle and while `--browse-connections` loops load dashboard pages.
    #[arg(long)]
    browse_url: Option<String>,
    /// e2e: an admin token of the dashboard (with --browse-url).
    #[arg(long, env = "BENCH_DASHBOARD_TOKEN")]
    browse_token: Option<String>,
    /// e2e: how many page-loading loops run at once while browsing (each back to back).
    #[arg(long, default_value_t = 2)]
    browse_connections: usize,
    /// e2e with --browse-url: a page the loops load (repeat the flag for several, loaded in
    /// turn). Default: the overview, five inventory views and the alerts, as a seller clicks
    /// around. A diagnostic: which pages cost event processing (docs/PERFORMANCE.md, 23).
    #[arg(long = "browse-path")]
    browse_paths: Vec<String>,
    /// e2e with --browse-url: pages a second, all loops together, each loop starting its
    /// pages on a fixed schedule (a page that takes longer delays the next, none is skipped).
    /// 0 (default): back to back, as fast as the dashboard answers: then a faster dashboard
    /// is simply loaded more (docs/PERFORMANCE.md, 23).
    #[arg(long, default_value_t = 0.0)]
    browse_rate: f64,
    /// e2e with --browse-url: the loops run in the idle scheduling class, so that their own CPU
    /// time (a browser's, on another machine in real use) is told from the dashboard's.
    #[arg(long)]
    browse_idle_class: bool,
    /// e2e with --browse-url, a diagnostic: instead of loading pages, each loop burns what
    /// core 1 (the worker's in docs/bench-e2e-browse.sh) leaves, in the idle class, reading
    /// and writing this many MiB over and over: what idle-class work alone, with that much
    /// memory, costs event processing (docs/PERFORMANCE.md, 23).
    #[arg(long)]
    browse_burn_mib: Option<usize>,
    /// e2e with --browse-url: a third phase, idle again after browsing, so that a drift over
    /// the run (a fuller state, a fuller mail directory) is told apart from browsing's cost.
    #[arg(long)]
    idle_after: bool,
    /// e2e with --browse-url: after the first idle phase, this many rounds of (browsing, idle
    /// again), and a last line comparing each browsing phase's p99 with the idle phases on
    /// both sides of it: a drift over the run then shows in the idle phases, not as browsing's
    /// cost. 0 (default): one browsing phase (and one idle phase after it with --idle-after).
    #[arg(long, default_value_t = 0)]
    alternate: u32,
    /// e2e: which events raise an alert. `all-low` (default): every event (`available = 1`),
    /// so every event ends in an email. `one-in-ten`: the backlog's mix (`available = n % 50`,
    /// one level in ten under the low-stock threshold 5); latency is measured on those.
    #[arg(long, value_enum, default_value_t = Mix::AllLow)]
    mix: Mix,
    /// backlog: how many events to append before the worker starts.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// backlog: the worker binary (started as `<bin> --config <config> run`).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// backlog: the config file the worker is started with.
    #[arg(long)]
    config: Option<PathBuf>,
    /// backlog: run the worker under `taskset -c <cpus>` (e.g. "1").
    #[arg(long)]
    worker_cpus: Option<String>,
    /// backlog: give up waiting for the drain after this long.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    backlog_timeout: Duration,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    Load,
    E2e,
    Backlog,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    Stockhook,
    Bare,
}

/// e2e: which events raise an alert (see `--mix`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Mix {
    AllLow,
    OneInTen,
}

/// The worker's default low-stock threshold: an event with `available` under it alerts.
const LOW_STOCK_THRESHOLD: i64 = 5;

/// The backlog's (and `--mix one-in-ten`'s) levels: one in ten under the threshold.
fn one_in_ten_low(n: u64) -> i64 {
    (n % 50) as i64
}

impl Mix {
    fn available(self) -> fn(u64) -> i64 {
        match self {
            Mix::AllLow => |_| 1,
            Mix::OneInTen => one_in_ten_low,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Mix::AllLow => "available=1 (every event alerts)",
            Mix::OneInTen => "available=n%50 (one event in ten alerts; latency of those)",
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Topic {
    #[value(name = "products/update")]
    ProductsUpdate,
    #[value(name = "inventory_levels/update")]
    InventoryLevelsUpdate,
}

impl Topic {
    fn as_str(self) -> &'static str {
        match self {
            Topic::ProductsUpdate => "products/update",
            Topic::InventoryLevelsUpdate => "inventory_levels/update",
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unit must be ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

// ------------------------------------------------------------------------------------------------
// Request generation

/// Everything needed to write one request: path and host, the signing key, the body shape.
#[derive(Clone)]
struct RequestMaker {
    path: String,
    host: String,
    topic: Topic,
    mac: Option<Hmac<Sha256>>,
    body_size: usize,
    /// Distinguishes this run's delivery ids and item ids from earlier runs' (dedup window).
    nonce: u64,
    /// First item id of this run: 13 digits, so the e2e mail scan finds them by length.
    item_base: u64,
    updated_at: String,
}

/// The padding that brings a products/update body to `--body-size`.
const PAD: &str = "Soft ring-spun cotton tee with a relaxed fit, taped neck and shoulders, double-needle hems. Pre-shrunk. Machine wash cold, tumble dry low. ";

impl RequestMaker {
    fn new(args: &Args, url: &Url) -> RequestMaker {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let nonce = (now.as_nanos() as u64) ^ ((std::process::id() as u64) << 40);
        let mac = match args.target {
            Target::Stockhook => Some(
                Hmac::<Sha256>::new_from_slice(args.secret.as_bytes())
                    .expect("HMAC takes keys of any length"),
            ),
            Target::Bare => None,
        };
        let updated_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| "2025-01-01T00:00:00Z".into());
        RequestMaker {
            path: url.path.clone(),
            host: url.host_header.clone(),
            topic: args.topic,
            mac,
            body_size: args.body_size,
            nonce,
            // 7_xxx_xxx_000_000 + seq: 13 digits for a million items per run.
            item_base: 7_000_000_000_000 + (now.as_secs() % 1_000_000) * 1_000_000,
            updated_at,
        }
    }

    fn item_id(&self, seq: u64) -> u64 {
        self.item_base + seq % 1_000_000
    }

    /// Writes the body for request `seq` into `body`.
    fn body(&self, seq: u64, available: i64, body: &mut Vec<u8>) {
        use std::io::Write as _;
        body.clear();
        let item = self.item_id(seq);
        match self.topic {
            Topic::InventoryLevelsUpdate => {
                let _ = write!(
                    body,
                    r#"{{"inventory_item_id":{item},"location_id":24826418,"available":{available},"updated_at":"{u}","admin_graphql_api_id":"gid://shopify/InventoryLevel/24826418?inventory_item_id={item}"}}"#,
                    u = self.updated_at
                );
            }
            Topic::ProductsUpdate => {
                let product = 8_000_000_000_000 + (item - 7_000_000_000_000);
                let variant = 9_000_000_000_000 + (item - 7_000_000_000_000);
                let _ = write!(
                    body,
                    r#"{{"admin_graphql_api_id":"gid://shopify/Product/{product}","created_at":"2024-03-01T10:00:00-05:00","handle":"bench-tee-{item}","id":{product},"product_type":"Shirts","published_at":"2024-03-01T10:00:00-05:00","template_suffix":null,"title":"Bench Tee {item}","updated_at":"{u}","vendor":"Acme","status":"active","published_scope":"web","tags":"bench, mens, t-shirt","variants":[{{"admin_graphql_api_id":"gid://shopify/ProductVariant/{variant}","barcode":null,"compare_at_price":"24.99","created_at":"2024-03-01T10:00:00-05:00","id":{variant},"inventory_policy":"deny","position":1,"price":"19.99","product_id":{product},"sku":"TEE-{item}","taxable":true,"title":"Medium","updated_at":"{u}","option1":"Medium","option2":null,"option3":null,"image_id":null,"inventory_item_id":{item},"inventory_quantity":{available},"old_inventory_quantity":{old}}}],"options":[],"images":[],"image":null,"body_html":""#,
                    u = self.updated_at,
                    old = available + 1,
                );
                let tail = br#"","category":null}"#;
                let mut i = 0;
                while body.len() + tail.len() < self.body_size {
                    let room = self.body_size - body.len() - tail.len();
                    let take = room.min(PAD.len() - i);
                    body.extend_from_slice(&PAD.as_bytes()[i..i + take]);
                    i = (i + take) % PAD.len();
                }
                body.extend_from_slice(tail);
            }
        }
    }

    /// Writes request `seq` (head and body) into `out`.
    fn request(
        &self,
        conn: usize,
        seq: u64,
        available: i64,
        body: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        use std::io::Write as _;
        self.body(seq, available, body);
        out.clear();
        let _ = write!(
            out,
            "POST {} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nx-shopify-topic: {}\r\nx-shopify-shop-domain: bench.myshopify.com\r\nx-shopify-api-version: 2025-01\r\nx-shopify-webhook-id: {:016x}-{:04x}-{:012x}\r\ncontent-length: {}\r\n",
            self.path,
            self.host,
            self.topic.as_str(),
            self.nonce,
            conn,
            seq,
            body.len()
        );
        if let Some(mac) = &self.mac {
            let mut m = mac.clone();
            m.update(body);
            let sig = base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes());
            let _ = write!(out, "x-shopify-hmac-sha256: {sig}\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
}

// ------------------------------------------------------------------------------------------------
// A minimal HTTP/1.1 client connection

#[derive(Clone, Debug)]
struct Url {
    addr: SocketAddr,
    host_header: String,
    path: String,
}

fn parse_url(s: &str) -> anyhow::Result<Url> {
    let rest = s.strip_prefix("http://").ok_or_else(|| {
        anyhow!("--url {s:?}: only http:// URLs (TLS belongs to the proxy in front)")
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let hp = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let hp = hp.replace("localhost", "127.0.0.1");
    let addr: SocketAddr = hp
        .parse()
        .with_context(|| format!("--url {s:?}: the host must be an IP address and port"))?;
    Ok(Url {
        addr,
        host_header: hostport.to_string(),
        path: path.to_string(),
    })
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

struct Response {
    status: u16,
    close: bool,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// Sends one request and reads its response. `keep_body` copies the response body out.
    async fn round_trip(&mut self, req: &[u8], keep_body: bool) -> std::io::Result<Response> {
        self.stream.write_all(req).await?;
        loop {
            if let Some((status, close, head_len, body_len)) = parse_head(&self.buf)? {
                let total = head_len + body_len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                let body = if keep_body {
                    self.buf[head_len..total].to_vec()
                } else {
                    Vec::new()
                };
                self.buf.drain(..total);
                return Ok(Response {
                    status,
                    close,
                    body,
                });
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> std::io::Result<()> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }
}

/// Status, connection-close, head length and body length, once the head is complete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<(u16, bool, usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err(std::io::Error::other("response head over 64 KiB"));
        }
        return Ok(None);
    };
    let head = &buf[..end];
    let bad = || std::io::Error::other("malformed response status line");
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return Err(bad());
    }
    let status: u16 = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let mut len = 0usize;
    let mut close = false;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            len = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad content-length"))?;
        } else if name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(std::io::Error::other(
                "chunked responses are not supported by this client",
            ));
        }
    }
    Ok(Some((status, close, end + 4, len)))
}

/// GET `path` on a fresh connection; the body as JSON.
async fn get_json(url: &Url, path: &str) -> anyhow::Result<serde_json::Value> {
    let mut c = Conn::open(url.addr).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n\r\n",
        url.host_header
    );
    let r = c.round_trip(req.as_bytes(), true).await?;
    if r.status != 200 {
        bail!("GET {path}: status {}", r.status);
    }
    Ok(serde_json::from_slice(&r.body)?)
}

/// (pending, leased) from /healthz.
async fn queue_depth(url: &Url) -> anyhow::Result<(u64, u64)> {
    let v = get_json(url, "/healthz").await?;
    let q = &v["queue"];
    Ok((
        q["pending"].as_u64().unwrap_or(0),
        q["leased"].as_u64().unwrap_or(0),
    ))
}

// ------------------------------------------------------------------------------------------------
// Running connections and collecting figures

/// What one connection measured.
#[derive(Default)]
struct ConnStats {
    /// Microseconds, only requests that finished inside the measured window.
    latencies: Vec<u32>,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    /// (item id, unix micros when its 200 arrived), e2e only.
    accepted: Vec<(u64, i64)>,
    bytes: u64,
}

struct Plan {
    url: Url,
    connections: usize,
    /// Stop sending at this instant (load, e2e) ...
    until: Option<Instant>,
    /// ... or after this many requests (backlog).
    max_requests: Option<u64>,
    /// Count only what finishes after this instant.
    measure_from: Instant,
    /// Open loop: seconds between two sends of one connection.
    interval: Option<Duration>,
    /// What `available` each request carries.
    available: fn(u64) -> i64,
    /// Record (item, 200 time) per request that alerts (`available` under the threshold): the
    /// items whose emails the e2e mode waits for.
    record_accepted: bool,
}

fn now_unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

async fn run_connection(
    id: usize,
    plan: Arc<Plan>,
    maker: RequestMaker,
    seq: Arc<AtomicU64>,
    start: Instant,
) -> ConnStats {
    let mut st = ConnStats::default();
    let mut conn: Option<Conn> = None;
    let mut body = Vec::with_capacity(maker.body_size + 256);
    let mut req = Vec::with_capacity(maker.body_size + 1024);
    // Spread the open-loop schedules of the connections over one interval.
    let mut next = plan
        .interval
        .map(|i| start + i.mul_f64(id as f64 / plan.connections as f64));
    loop {
        if let Some(t) = next {
            if plan.until.is_some_and(|u| t >= u) {
                break;
            }
            tokio::time::sleep_until(t.into()).await;
        } else if plan.until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let n = seq.fetch_add(1, Ordering::Relaxed);
        if plan.max_requests.is_some_and(|m| n >= m) {
            break;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::open(plan.url.addr).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    *st.errors
                        .entry(format!("connect: {}", e.kind()))
                        .or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    if let Some(t) = &mut next {
                        *t += plan.interval.unwrap_or_default();
                    }
                    continue;
                }
            },
        };
        let available = (plan.available)(n);
        maker.request(id, n, available, &mut body, &mut req);
        // Open loop measures from the scheduled time (coordinated omission), closed from now.
        let sent = next.unwrap_or_else(Instant::now);
        let r = c.round_trip(&req, false).await;
        let done = Instant::now();
        match r {
            Ok(resp) => {
                if done >= plan.measure_from {
                    st.latencies
                        .push(done.duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
                    *st.status.entry(resp.status).or_default() += 1;
                    st.bytes += body.len() as u64;
                }
                if plan.record_accepted && resp.status == 200 && available < LOW_STOCK_THRESHOLD {
                    st.accepted.push((maker.item_id(n), now_unix_us()));
                }
                if resp.close {
                    conn = None;
                }
            }
            Err(e) => {
                *st.errors.entry(format!("io: {}", e.kind())).or_default() += 1;
                conn = None;
            }
        }
        if let Some(t) = &mut next {
            *t += plan.interval.unwrap_or_default();
        }
    }
    st
}

impl ConnStats {
    /// Adds another connection's figures to these.
    fn add(&mut self, other: ConnStats) {
        self.latencies.extend(other.latencies);
        for (k, v) in other.status {
            *self.status.entry(k).or_default() += v;
        }
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.accepted.extend(other.accepted);
        self.bytes += other.bytes;
    }
}

/// What all connections of a plan measured, latencies sorted.
struct Totals {
    all: ConnStats,
    measured: Duration,
}

async fn run_plan(plan: Plan, maker: RequestMaker) -> Totals {
    let plan = Arc::new(plan);
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for id in 0..plan.connections {
        set.spawn(run_connection(
            id,
            plan.clone(),
            maker.clone(),
            seq.clone(),
            start,
        ));
    }
    let mut all = ConnStats::default();
    while let Some(r) = set.join_next().await {
        let Ok(st) = r else { continue };
        all.add(st);
    }
    all.latencies.sort_unstable();
    Totals {
        all,
        measured: Instant::now().saturating_duration_since(plan.measure_from),
    }
}

/// Counts by status or error as `key: n` pairs, for the text report.
fn counts_text<K: std::fmt::Display>(counts: &BTreeMap<K, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("  ")
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

fn latency_json(sorted: &[u32]) -> serde_json::Value {
    serde_json::json!({
        "p50_ms": pct(sorted, 50.0),
        "p90_ms": pct(sorted, 90.0),
        "p99_ms": pct(sorted, 99.0),
        "p999_ms": pct(sorted, 99.9),
        "max_ms": sorted.last().copied().unwrap_or(0) as f64 / 1000.0,
    })
}

fn latency_text(sorted: &[u32]) -> String {
    format!(
        "p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
        pct(sorted, 50.0),
        pct(sorted, 90.0),
        pct(sorted, 99.0),
        pct(sorted, 99.9),
        sorted.last().copied().unwrap_or(0) as f64 / 1000.0
    )
}

// ------------------------------------------------------------------------------------------------
// /proc sampling

#[derive(Default, Clone, Copy)]
struct Mem {
    rss_max_kib: u64,
    hwm_kib: u64,
}

/// Samples VmRSS every 100 ms until `stop`; VmHWM at the end.
fn sample_memory(pid: u32, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Mem> {
    std::thread::spawn(move || {
        let mut m = Mem::default();
        while !stop.load(Ordering::Relaxed) {
            if let Some(r) = status_kib(pid, "VmRSS:") {
                m.rss_max_kib = m.rss_max_kib.max(r);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        m.hwm_kib = status_kib(pid, "VmHWM:").unwrap_or(0);
        m
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ------------------------------------------------------------------------------------------------
// Modes

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match args.mode {
            Mode::Load => load(args).await,
            Mode::E2e => e2e(args).await,
            Mode::Backlog => backlog(args).await,
        }
    })
}

async fn load(args: Args) -> anyhow::Result<()> {
    let url = parse_url(&args.url)?;
    let maker = RequestMaker::new(&args, &url);
    let start = Instant::now();
    let plan = Plan {
        url: url.clone(),
        connections: args.connections.max(1),
        until: match args.requests {
            Some(_) => None,
            None => Some(start + args.warmup + args.duration),
        },
        max_requests: args.requests,
        measure_from: if args.requests.is_some() {
            start
        } else {
            start + args.warmup
        },
        interval: args
            .rate
            .map(|r| Duration::from_secs_f64(args.connections.max(1) as f64 / r.max(0.001))),
        available: |n| (n % 50) as i64,
        record_accepted: false,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = args.pid.map(|p| sample_memory(p, stop.clone()));
    // The server's CPU time over the measured window: a figure that a busy machine disturbs far
    // less than req/s (other processes on the server's core take time, not instructions).
    let cpu_start = {
        let (pid, at) = (args.pid, start + args.warmup);
        tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            pid.and_then(cpu_split)
        })
    };
    let t = run_plan(plan, maker).await;
    let cpu_end = args.pid.and_then(cpu_split);
    let cpu = match (cpu_start.await.ok().flatten(), cpu_end) {
        (Some(a), Some(b)) => Some((b.0 - a.0, b.1 - a.1)),
        _ => None,
    };
    stop.store(true, Ordering::Relaxed);
    let mem = sampler.and_then(|h| h.join().ok());
    let n = t.all.latencies.len() as u64;
    let secs = t.measured.as_secs_f64().max(1e-9);
    let rps = n as f64 / secs;
    let body_bytes = t.all.bytes.checked_div(n).unwrap_or(0);
    if args.json {
        let mut v = serde_json::json!({
            "mode": "load",
            "target": format!("{:?}", args.target).to_lowercase(),
            "url": args.url,
            "connections": args.connections,
            "rate": args.rate,
            "duration_s": secs,
            "requests": n,
            "rps": rps,
            "body_bytes": body_bytes,
            "latency": latency_json(&t.all.latencies),
            "status": t.all.status.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "errors": t.all.errors,
        });
        if let Some(m) = mem {
            v["rss"] = serde_json::json!({"pid": args.pid, "vm_rss_max_mib": mib(m.rss_max_kib), "vm_hwm_mib": mib(m.hwm_kib)});
        }
        if let Some((user, sys)) = cpu {
            let (c, per) = (user + sys, 1e6 / n.max(1) as f64);
            v["server_cpu"] = serde_json::json!({"seconds": c, "us_per_request": c * per, "cores": c / secs,
                "user_us_per_request": user * per, "sys_us_per_request": sys * per});
        }
        println!("{v}");
    } else {
        println!(
            "target {:?}  {}  c={}  {}  {:.1}s measured (warm-up {:?})  body {} B",
            args.target,
            args.url,
            args.connections,
            match args.rate {
                Some(r) => format!("open loop {r}/s"),
                None => "closed loop".into(),
            },
            secs,
            args.warmup,
            body_bytes
        );
        println!("requests {n}  req/s {rps:.0}");
        println!("latency  {}", latency_text(&t.all.latencies));
        println!("status   {}", counts_text(&t.all.status));
        println!(
            "errors   {}",
            if t.all.errors.is_empty() {
                "none".to_string()
            } else {
                counts_text(&t.all.errors)
            }
        );
        if let Some(m) = mem {
            println!(
                "memory   pid {}  VmRSS max {:.1} MiB  VmHWM {:.1} MiB",
                args.pid.unwrap_or(0),
                mib(m.rss_max_kib),
                mib(m.hwm_kib)
            );
        }
        if let Some((user, sys)) = cpu {
            let (c, per) = (user + sys, 1e6 / n.max(1) as f64);
            println!(
                "cpu      server {c:.2} s over the window: {:.1} us per request ({:.1} user, {:.1} system), {:.2} cores busy",
                c * per,
                user * per,
                sys * per,
                c / secs
            );
        }
    }
    Ok(())
}

/// Every 13-digit run in `text` (the bench's item ids), after undoing quoted-printable soft breaks.
fn item_ids_in(text: &[u8]) -> Vec<u64> {
    let mut clean = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'=' && text.get(i + 1) == Some(&b'\r') && text.get(i + 2) == Some(&b'\n') {
            i += 3;
        } else if text[i] == b'=' && text.get(i + 1) == Some(&b'\n') {
            i += 2;
        } else {
            clean.push(text[i]);
            i += 1;
        }
    }
    let mut out = Vec::new();
    for run in clean.split(|b| !b.is_ascii_digit()) {
        if run.len() == 13 {
            if let Some(n) = std::str::from_utf8(run).ok().and_then(|s| s.parse().ok()) {
                out.push(n);
            }
        }
    }
    out
}

/// (item id -> (file mtime, first observed), both unix micros), filled by polling `dir`.
type Seen = Arc<Mutex<HashMap<u64, (i64, i64)>>>;

fn watch_mail(
    dir: PathBuf,
    every: Duration,
    seen: Seen,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut names: HashSet<std::ffi::OsString> = HashSet::new();
        let mut last = false;
        loop {
            // One more pass after stop, so nothing written just before is missed.
            let stopping = stop.load(Ordering::Relaxed);
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    let s = name.to_string_lossy();
                    if s.starts_with('.') || !s.ends_with(".eml") || names.contains(&name) {
                        continue;
                    }
                    let observed = now_unix_us();
                    let path = e.path();
                    let Ok(bytes) = std::fs::read(&path) else {
                        continue;
                    };
                    let mtime = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_micros() as i64)
                        .unwrap_or(observed);
                    let mut seen = seen.lock().unwrap();
                    for item in item_ids_in(&bytes) {
                        seen.entry(item).or_insert((mtime, observed));
                    }
                    names.insert(name);
                }
            }
            if last {
                return;
            }
            if stopping {
                last = true;
                continue;
            }
            std::thread::sleep(every);
        }
    })
}

async fn e2e(args: Args) -> anyhow::Result<()> {
    let mut args = args;
    args.topic = Topic::InventoryLevelsUpdate;
    let url = parse_url(&args.url)?;
    if args.prefill > 0 {
        prefill(&args, &url).await?;
    }
    let browse = match &args.browse_url {
        None => None,
        Some(b) => {
            let token = args
                .browse_token
                .clone()
                .ok_or_else(|| anyhow!("--browse-url needs --browse-token (an admin token)"))?;
            Some((parse_url(b)?, token))
        }
    };
    // Without --browse-url: one phase, as before. With it: the same run idle, then browsing.
    let first = e2e_phase(&args, &url, "idle", None).await?;
    let Some((b, token)) = browse else {
        return Ok(());
    };
    if args.alternate == 0 {
        e2e_phase(&args, &url, "browsing", Some((b.addr, token))).await?;
        if args.idle_after {
            e2e_phase(&args, &url, "idle again", None).await?;
        }
        return Ok(());
    }
    // (browsing p99, idle p99 before it, idle p99 after it), in ms.
    let mut rounds = Vec::new();
    let mut before = first;
    for r in 1..=args.alternate {
        let browsing = e2e_phase(
            &args,
            &url,
            &format!("browsing {r}"),
            Some((b.addr, token.clone())),
        )
        .await?;
        let after = e2e_phase(&args, &url, &format!("idle {}", r + 1), None).await?;
        rounds.push((browsing, before, after));
        before = after;
    }
    println!("{}", alternation_summary(&rounds));
    Ok(())
}

/// The last line of an `--alternate` run: each browsing phase's p99 (200 -> .eml by mtime)
/// beside the idle phases around it, and how many browsing phases were above both.
fn alternation_summary(rounds: &[(f64, f64, f64)]) -> String {
    let mut above = 0;
    let mut parts = Vec::new();
    for (browsing, before, after) in rounds {
        if browsing > before && browsing > after {
            above += 1;
        }
        parts.push(format!("{:.1} [{:.1}, {:.1}]", browsing, before, after));
    }
    format!(
        "alternation p99 ms, browsing [idle before, idle after]: {}; browsing above both idle phases in {above} of {}",
        parts.join("  "),
        rounds.len()
    )
}

/// Sends `--prefill` events (fresh items) at `--rate`, unmeasured, then waits until the worker
/// has taken everything off the queue: the state then holds that many more items.
async fn prefill(args: &Args, url: &Url) -> anyhow::Result<()> {
    let rate = args.rate.unwrap_or(2000.0);
    let c = args.connections.max(1);
    let t0 = Instant::now();
    let plan = Plan {
        url: url.clone(),
        connections: c,
        until: None,
        max_requests: Some(args.prefill),
        measure_from: t0,
        interval: Some(Duration::from_secs_f64(c as f64 / rate)),
        available: |_| 1,
        record_accepted: false,
    };
    let t = run_plan(plan, RequestMaker::new(args, url)).await;
    let deadline = Instant::now() + args.backlog_timeout;
    loop {
        let (p, l) = queue_depth(url).await?;
        if p + l == 0 {
            break;
        }
        if Instant::now() >= deadline {
            bail!(
                "prefill: {p} pending, {l} leased after {:?}",
                args.backlog_timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "prefill  {} events ({} accepted) in {:.1?}, queue drained",
        args.prefill,
        t.all.status.get(&200).copied().unwrap_or(0),
        t0.elapsed()
    );
    Ok(())
}

/// The dashboard pages the browsing loop cycles through (as a seller clicks around).
const BROWSE_PAGES: [&str; 7] = [
    "/",
    "/inventory",
    "/inventory?q=70000&sort=available",
    "/inventory?status=low&sort=last_sale&dir=desc",
    "/inventory?sort=name&page=100",
    "/alerts",
    "/inventory?sort=cover&dir=desc&page=3",
];

/// One HTTP/1.1 exchange on a fresh connection (blocking): (status, raw answer).
fn http_once(addr: SocketAddr, req: &str) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let status = out
        .get(9..12)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    Ok((status, out))
}

/// What the browsing loops do ([`browse_loop`]).
struct Browsing {
    pages: Vec<String>,
    /// Between one loop's page starts (`None`: back to back).
    interval: Option<Duration>,
    idle_class: bool,
    burn_mib: Option<usize>,
}

impl Browsing {
    fn from_args(args: &Args) -> Browsing {
        Browsing {
            pages: match args.browse_paths.is_empty() {
                true => BROWSE_PAGES.iter().map(|p| p.to_string()).collect(),
                false => args.browse_paths.clone(),
            },
            interval: (args.browse_rate > 0.0).then(|| {
                Duration::from_secs_f64(args.browse_connections.max(1) as f64 / args.browse_rate)
            }),
            idle_class: args.browse_idle_class,
            burn_mib: args.browse_burn_mib,
        }
    }
}

/// Puts the calling thread in the idle scheduling class; with `core`, on that core only.
fn idle_class_here(core: Option<usize>) {
    // SAFETY: plain system calls on the calling thread (pid 0) with valid arguments.
    unsafe {
        if let Some(c) = core {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(c, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
    }
}

/// `--browse-burn-mib`: reads and writes `mib` MiB a cache line at a time until `stop`, in the
/// idle class on core 1.
fn burn(mib: usize, stop: &AtomicBool) {
    idle_class_here(Some(1));
    let mut buf = vec![1u8; (mib << 20).max(4096)];
    let mut x = 0u8;
    while !stop.load(Ordering::Relaxed) {
        for b in buf.iter_mut().step_by(64) {
            x = x.wrapping_add(*b);
            *b = x;
        }
    }
    std::hint::black_box(&buf);
}

/// Logs in with `token` and loads `how`'s pages in turn, back to back, until `stop`, on its
/// own thread (not the load generator's runtime). Returns the page latencies (µs) and errors.
fn browse_loop(
    addr: SocketAddr,
    token: String,
    how: Arc<Browsing>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<u32>, u64)> {
    std::thread::spawn(move || {
        if let Some(mib) = how.burn_mib {
            burn(mib, &stop);
            return (Vec::new(), 0);
        }
        if how.idle_class {
            idle_class_here(None);
        }
        let body = format!("token={token}");
        let login = format!(
            "POST /login HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/x-www-form-urlencoded\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let cookie = http_once(addr, &login).ok().and_then(|(_, raw)| {
            String::from_utf8_lossy(&raw).lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
        });
        let Some(cookie) = cookie else {
            return (Vec::new(), 1);
        };
        let mut lat = Vec::new();
        let mut errors = 0;
        let mut next = Instant::now();
        for path in how.pages.iter().cycle() {
            if let Some(every) = how.interval {
                // Sleeps to the next start in short steps, so a stop is seen at once.
                while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep((next - Instant::now()).min(Duration::from_millis(50)));
                }
                next += every;
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let req = format!(
                "GET {path} HTTP/1.1\r\nhost: {addr}\r\ncookie: {cookie}\r\nconnection: close\r\n\r\n"
            );
            let t = Instant::now();
            match http_once(addr, &req) {
                Ok((200, _)) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                _ => errors += 1,
            }
        }
        lat.sort_unstable();
        (lat, errors)
    })
}

/// One measured e2e phase; `browse`: (dashboard address, admin token) loaded meanwhile.
/// Returns the phase's p99 of 200 -> .eml (by mtime), in ms.
async fn e2e_phase(
    args: &Args,
    url: &Url,
    phase: &str,
    browse: Option<(SocketAddr, String)>,
) -> anyhow::Result<f64> {
    let rate = args.rate.unwrap_or(2000.0);
    let data_dir = args
        .data_dir
        .clone()
        .ok_or_else(|| anyhow!("e2e needs --data-dir (the receiver's and worker's data_dir)"))?;
    let maker = RequestMaker::new(args, url);
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let stop_watch = Arc::new(AtomicBool::new(false));
    let watcher = watch_mail(
        data_dir.join("mail"),
        args.poll,
        seen.clone(),
        stop_watch.clone(),
    );
    let stop_browse = Arc::new(AtomicBool::new(false));
    let browsers: Vec<_> = browse
        .iter()
        .flat_map(|(addr, token)| {
            let stop = stop_browse.clone();
            let how = Arc::new(Browsing::from_args(args));
            (0..args.browse_connections.max(1))
                .map(move |_| browse_loop(*addr, token.clone(), how.clone(), stop.clone()))
        })
        .collect();
    // Queue depth every 250 ms while sending and draining.
    let depth: Arc<Mutex<Vec<(f64, u64, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop_depth = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let depth_task = {
        let (depth, stop, url) = (depth.clone(), stop_depth.clone(), url.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok((p, l)) = queue_depth(&url).await {
                    depth
                        .lock()
                        .unwrap()
                        .push((t0.elapsed().as_secs_f64(), p, l));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let plan = Plan {
        url: url.clone(),
        connections: args.connections.max(1),
        until: Some(t0 + args.duration),
        max_requests: None,
        measure_from: t0,
        interval: Some(Duration::from_secs_f64(
            args.connections.max(1) as f64 / rate,
        )),
        available: args.mix.available(),
        record_accepted: true,
    };
    let t = run_plan(plan, maker).await;
    let sent_secs = t0.elapsed().as_secs_f64();
    stop_browse.store(true, Ordering::Relaxed);
    let mut pages: Vec<u32> = Vec::new();
    let mut page_errors = 0;
    for b in browsers {
        if let Ok((lat, errors)) = tokio::task::spawn_blocking(move || b.join()).await? {
            pages.extend(lat);
            page_errors += errors;
        }
    }
    pages.sort_unstable();
    // Wait for the emails of every accepted item, up to the drain timeout.
    let want: HashSet<u64> = t.all.accepted.iter().map(|(i, _)| *i).collect();
    let deadline = Instant::now() + args.drain_timeout;
    loop {
        let have = {
            let s = seen.lock().unwrap();
            want.iter().filter(|i| s.contains_key(i)).count()
        };
        if have == want.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_depth.store(true, Ordering::Relaxed);
    let _ = depth_task.await;
    stop_watch.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || watcher.join()).await;

    let seen = seen.lock().unwrap();
    let mut by_mtime = Vec::new();
    let mut by_observed = Vec::new();
    let mut missing = 0u64;
    for (item, ok_at) in &t.all.accepted {
        match seen.get(item) {
            Some((mtime, observed)) => {
                by_mtime.push((mtime - ok_at).max(0).min(u32::MAX as i64) as u32);
                by_observed.push((observed - ok_at).max(0).min(u32::MAX as i64) as u32);
            }
            None => missing += 1,
        }
    }
    by_mtime.sort_unstable();
    by_observed.sort_unstable();
    let depth = depth.lock().unwrap();
    let max_depth = depth.iter().map(|(_, p, l)| p + l).max().unwrap_or(0);
    let sending: Vec<u64> = depth
        .iter()
        .filter(|(t, _, _)| *t <= sent_secs)
        .map(|(_, p, l)| p + l)
        .collect();
    let mean_depth = if sending.is_empty() {
        0.0
    } else {
        sending.iter().sum::<u64>() as f64 / sending.len() as f64
    };
    let accepted = t.all.accepted.len() as u64;
    let achieved = t.all.latencies.len() as f64 / sent_secs.max(1e-9);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "e2e",
                "mix": args.mix.describe(),
                "phase": phase,
                "pages": {"loaded": pages.len(), "errors": page_errors, "latency": latency_json(&pages)},
                "target_rate": rate,
                "achieved_rate": achieved,
                "duration_s": sent_secs,
                "accepted": accepted,
                "emails_missing": missing,
                "http_latency": latency_json(&t.all.latencies),
                "ok_to_email_by_mtime": latency_json(&by_mtime),
                "ok_to_email_observed": latency_json(&by_observed),
                "queue_depth": {"max": max_depth, "mean_while_sending": mean_depth,
                    "series": depth.iter().map(|(t, p, l)| serde_json::json!([(t * 100.0).round() / 100.0, p, l])).collect::<Vec<_>>()},
                "status": t.all.status.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
                "errors": t.all.errors,
            })
        );
    } else {
        println!("--- phase: {phase}");
        println!(
            "e2e  {rate}/s target, {achieved:.0}/s achieved over {sent_secs:.1}s, c={}, inventory_levels/update {}, fresh item each",
            args.connections,
            args.mix.describe()
        );
        println!("http 200 latency      {}", latency_text(&t.all.latencies));
        println!("200 -> .eml (mtime)   {}", latency_text(&by_mtime));
        println!(
            "200 -> .eml (seen)    {}   (poll every {:?})",
            latency_text(&by_observed),
            args.poll
        );
        println!(
            "alerting events accepted {accepted}  emails missing after {:?}: {missing}",
            args.drain_timeout
        );
        println!(
            "queue depth (pending+leased, /healthz every 250 ms): max {max_depth}, mean while sending {mean_depth:.1}"
        );
        println!(
            "status   {}   errors {:?}",
            counts_text(&t.all.status),
            t.all.errors
        );
        if !pages.is_empty() || page_errors > 0 {
            println!(
                "dashboard pages loaded meanwhile: {} ({} errors), {} loop(s)   {}",
                pages.len(),
                page_errors,
                args.browse_connections.max(1),
                latency_text(&pages)
            );
        }
    }
    Ok(pct(&by_mtime, 99.0))
}

async fn backlog(args: Args) -> anyhow::Result<()> {
    let url = parse_url(&args.url)?;
    let worker_bin = args
        .worker_bin
        .clone()
        .ok_or_else(|| anyhow!("backlog needs --worker-bin (target/release/stockhook-worker)"))?;
    let config = args
        .config
        .clone()
        .ok_or_else(|| anyhow!("backlog needs --config (the file the worker runs with)"))?;
    let (p0, l0) = queue_depth(&url)
        .await
        .context("GET /healthz: is the receiver running at --url?")?;
    if p0 + l0 > 0 {
        eprintln!("note: {p0} pending and {l0} leased before the append: is a worker running? they count in the drain");
    }
    // 1. The backlog, through the receiver (closed loop).
    let maker = RequestMaker::new(&args, &url);
    let start = Instant::now();
    let plan = Plan {
        url: url.clone(),
        connections: args.connections.max(1),
        until: None,
        max_requests: Some(args.events),
        measure_from: start,
        interval: None,
        // A realistic mix: one level in ten is under the threshold of 5 (alerts and emails).
        available: one_in_ten_low,
        record_accepted: false,
    };
    let t = run_plan(plan, maker).await;
    let append_secs = start.elapsed().as_secs_f64();
    let ok = t.all.status.get(&200).copied().unwrap_or(0);
    let (pending, leased) = queue_depth(&url).await?;
    eprintln!(
        "appended {ok} events in {append_secs:.1}s ({:.0}/s, p99 {:.2} ms); queue: {pending} pending, {leased} leased",
        ok as f64 / append_secs,
        pct(&t.all.latencies, 99.0)
    );
    if ok < args.events {
        eprintln!(
            "warning: only {ok} of {} appends answered 200: {:?} {:?}",
            args.events, t.all.status, t.all.errors
        );
    }
    // 2. Start the worker and time the drain.
    let mut cmd = match &args.worker_cpus {
        Some(cpus) => {
            let mut c = std::process::Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&worker_bin);
            c
        }
        None => std::process::Command::new(&worker_bin),
    };
    cmd.arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let drain_start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", worker_bin.display()))?;
    // With taskset, the worker is taskset's child after exec: same pid (taskset execs).
    let pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(pid, stop.clone());
    let total = pending + leased;
    let mut first_drop: Option<f64> = None;
    let mut left = total;
    let result = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Err(anyhow!("the worker exited early with {status}"));
        }
        if drain_start.elapsed() > args.backlog_timeout {
            break Err(anyhow!(
                "the queue did not drain within {:?}: {left} left",
                args.backlog_timeout
            ));
        }
        if let Ok((p, l)) = queue_depth(&url).await {
            left = p + l;
            if first_drop.is_none() && left < total {
                first_drop = Some(drain_start.elapsed().as_secs_f64());
            }
            if left == 0 {
                break Ok(drain_start.elapsed().as_secs_f64());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let mem = sampler.join().unwrap_or_default();
    // SIGTERM, then wait for a clean exit.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let secs = result?;
    let rate = total as f64 / secs;
    let rate_after_first = first_drop
        .filter(|f| secs > *f)
        .map(|f| total as f64 / (secs - f));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "backlog",
                "events": total,
                "append_rps": ok as f64 / append_secs,
                "append_latency": latency_json(&t.all.latencies),
                "drain_s": secs,
                "drain_events_per_s": rate,
                "first_ack_s": first_drop,
                "events_per_s_after_first_ack": rate_after_first,
                "worker_vm_hwm_mib": mib(mem.hwm_kib),
                "worker_vm_rss_max_mib": mib(mem.rss_max_kib),
            })
        );
    } else {
        println!(
            "backlog  {total} events drained in {secs:.2}s from worker start: {rate:.0} events/s{}",
            rate_after_first
                .map(|r| format!(
                    " ({r:.0}/s after the first ack at {:.2}s)",
                    first_drop.unwrap_or(0.0)
                ))
                .unwrap_or_default()
        );
        println!(
            "worker   VmHWM {:.1} MiB  VmRSS max {:.1} MiB",
            mib(mem.hwm_kib),
            mib(mem.rss_max_kib)
        );
        println!(
            "append   {:.0}/s  {}",
            ok as f64 / append_secs,
            latency_text(&t.all.latencies)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alternation_summary_counts_browsing_phases_above_both_neighbours() {
        let line =
            alternation_summary(&[(50.0, 40.0, 60.0), (90.0, 60.0, 70.0), (30.0, 70.0, 20.0)]);
        assert!(
            line.ends_with("browsing above both idle phases in 1 of 3"),
            "{line}"
        );
        assert!(line.contains("90.0 [60.0, 70.0]"), "{line}");
    }

    #[test]
    fn the_one_in_ten_mix_alerts_on_one_event_in_ten_and_all_low_on_every_event() {
        let low = |f: fn(u64) -> i64| (0..1000).filter(|&n| f(n) < LOW_STOCK_THRESHOLD).count();
        assert_eq!(low(Mix::OneInTen.available()), 100);
        assert_eq!(low(Mix::AllLow.available()), 1000);
    }
}
