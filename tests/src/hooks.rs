//! Local HTTP endpoints that behave as the worker's channels' far ends: Slack's incoming webhook
//! and a Standard Webhooks receiver that verifies what it gets.
//!
//! A [`HookServer`] listens on a loopback port, one thread per connection, HTTP/1.1. Every
//! request is recorded ([`Received`]) with what it was answered. What it answers is set by the
//! test: [`Reply::Ok`] (Slack's `200 ok`), a status with a body and an optional `Retry-After`
//! (Slack's `400 invalid_payload`, `403`/`404` for a revoked hook, `429`; `503` for an outage), or
//! [`Reply::Hang`] (accept the request, never answer: a send in flight when the worker is
//! killed). As Slack does, the Slack kind refuses a body without a `text` string with
//! `400 invalid_payload`; the Standard Webhooks kind checks `webhook-signature` with the signer
//! of [`crate::sign`] (written independently of stockhook's) and answers `401` when it does not
//! verify or the timestamp is off by more than 5 minutes.

use crate::sign;
use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 ok`.
    Ok,
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// Read the request, answer nothing, keep the connection open.
    Hang,
}

impl Reply {
    pub fn status(code: u16, body: &str) -> Reply {
        Reply::Status {
            code,
            body: body.into(),
            retry_after: None,
        }
    }
    /// `429` with `Retry-After: <secs>`.
    pub fn too_many(secs: u64) -> Reply {
        Reply::Status {
            code: 429,
            body: "rate_limited".into(),
            retry_after: Some(secs.to_string()),
        }
    }
}

/// Which far end it plays.
#[derive(Debug, Clone)]
pub enum Kind {
    Slack,
    /// Verifies signatures under this `whsec_` secret.
    StandardWebhooks(String),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status answered; `None` when it hung (never answered).
    pub answered: Option<u16>,
    /// Standard Webhooks: whether the signature verified.
    pub verified: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::request::header(&self.headers, name)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// A Slack message's `text` (empty when there is none).
    pub fn text(&self) -> String {
        self.json()["text"].as_str().unwrap_or_default().to_string()
    }
    pub fn accepted(&self) -> bool {
        matches!(self.answered, Some(200..=299))
    }
}

struct State {
    default: Reply,
    queued: VecDeque<Reply>,
    received: Vec<Received>,
}

/// The endpoint; dropping it stops accepting and releases hung requests.
pub struct HookServer {
    pub addr: SocketAddr,
    kind: Kind,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HookServer {
    pub fn start(kind: Kind) -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a hook endpoint");
        let addr = listener.local_addr().expect("the hook endpoint's address");
        let state = Arc::new((
            Mutex::new(State {
                default: Reply::Ok,
                queued: VecDeque::new(),
                received: Vec::new(),
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, kind) = (state.clone(), stop.clone(), kind.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, stop, kind) = (state.clone(), stop.clone(), kind.clone());
                    std::thread::spawn(move || serve(conn, &state, &stop, &kind));
                }
            })
        };
        HookServer {
            addr,
            kind,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What every request is answered from now on (after any queued replies).
    pub fn set(&self, reply: Reply) {
        let (m, cv) = &*self.state;
        m.lock().unwrap_or_else(|p| p.into_inner()).default = reply;
        // Hung requests wait for a reply other than Hang.
        cv.notify_all();
    }

    /// Every request so far.
    pub fn received(&self) -> Vec<Received> {
        let (m, _) = &*self.state;
        m.lock().unwrap_or_else(|p| p.into_inner()).received.clone()
    }

    /// Those answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(Received::accepted)
            .collect()
    }

    pub fn kind(&self) -> &Kind {
        &self.kind
    }
}

impl Drop for HookServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.state.1.notify_all();
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one connection (keep-alive: several requests).
fn serve(conn: TcpStream, state: &(Mutex<State>, Condvar), stop: &AtomicBool, kind: &Kind) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        let Some(crate::request::Request { headers, body, .. }) =
            crate::request::read_request(&mut r)
        else {
            return;
        };
        let (check, verified) = check(kind, &headers, &body);
        let (m, cv) = state;
        let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
        let reply = match check {
            Some(refusal) => refusal,
            None => s.queued.pop_front().unwrap_or_else(|| s.default.clone()),
        };
        let index = s.received.len();
        s.received.push(Received {
            headers,
            body,
            answered: None,
            verified,
        });
        if reply == Reply::Hang {
            // Hold the request until the test changes the reply or the server stops; then
            // drop the connection without an answer (as a send cut off mid-flight).
            while s.default == Reply::Hang && !stop.load(Ordering::SeqCst) {
                s = cv
                    .wait_timeout(s, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            return;
        }
        let (code, text, retry_after) = match reply {
            Reply::Ok => (200, "ok".to_string(), None),
            Reply::Status {
                code,
                body,
                retry_after,
            } => (code, body, retry_after),
            Reply::Hang => unreachable!("handled above"),
        };
        s.received[index].answered = Some(code);
        drop(s);
        let mut head = format!(
            "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
            text.len()
        );
        if let Some(ra) = retry_after {
            head.push_str(&format!("Retry-After: {ra}\r\n"));
        }
        head.push_str("\r\n");
        if w.write_all(head.as_bytes()).is_err() || w.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// The far end's own checks: `Some(reply)` refuses the request before the test's reply.
fn check(kind: &Kind, headers: &[(String, String)], body: &[u8]) -> (Option<Reply>, bool) {
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    match kind {
        Kind::Slack => {
            let ok = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .is_some_and(|v| v["text"].is_string());
            ((!ok).then(|| Reply::status(400, "invalid_payload")), false)
        }
        Kind::StandardWebhooks(secret) => {
            let (Some(id), Some(ts), Some(sig)) = (
                get("webhook-id"),
                get("webhook-timestamp"),
                get("webhook-signature"),
            ) else {
                return (Some(Reply::status(400, "missing webhook headers")), false);
            };
            let Ok(ts) = ts.parse::<i64>() else {
                return (Some(Reply::status(400, "bad webhook-timestamp")), false);
            };
            let want = sign::standard_webhooks_signature(secret, id, ts, body);
            let fresh = (sign::now_unix() - ts).abs() <= 300;
            let matches = sig.split_ascii_whitespace().any(|s| s == want);
            if fresh && matches {
                (None, true)
            } else {
                (Some(Reply::status(401, "signature does not verify")), false)
            }
        }
    }
}
