//! A small Chrome DevTools Protocol client: Debian's headless `chromium` driven over its
//! websocket, for the dashboard's browser tests (log in, follow links, submit forms, read the
//! DOM, take screenshots at a desktop's and a phone's width).
//!
//! Why it exists: "works in a browser" is checked in a browser. No browser is downloaded; the
//! flags are the ones CI can run as root (no sandbox, no GPU, no network of its own, a
//! throwaway profile). Every wait polls a condition with a deadline; a failure names what it
//! was doing and shows Chromium's log.

use crate::chromium::CHROMIUM;
use crate::poll::{deadline_in, poll_until};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// How long one page load or one command may take (2 shared cores, debug builds).
pub const STEP: Duration = Duration::from_secs(60);

/// A running headless Chromium with one page attached.
pub struct Browser {
    child: Child,
    profile: tempfile::TempDir,
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium at `width` x `height` (CSS px) on `about:blank`; `None` (with a note)
    /// when Chromium is not installed.
    pub fn launch(width: u32, height: u32) -> Option<Browser> {
        if !Path::new(CHROMIUM).exists() {
            eprintln!("SKIP: {CHROMIUM} not installed (apt-get install -y chromium; .ci/run does)");
            return None;
        }
        let profile = tempfile::tempdir().expect("a Chromium profile directory");
        let log = std::fs::File::create(profile.path().join("chromium.log")).expect("chromium log");
        let child = crate::chromium::headless(&profile.path().join("p"), width, height)
            .args([
                "--disable-quic",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("chromium log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {CHROMIUM}: {e}"));
        let port_file = profile.path().join("p").join("DevToolsActivePort");
        let port: u16 = poll_until(deadline_in(STEP), || {
            std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
        })
        .unwrap_or_else(|| panic!("Chromium wrote no DevToolsActivePort within {STEP:?}"));
        let list = poll_until(deadline_in(STEP), || {
            let r = crate::http::get(([127, 0, 0, 1], port).into(), "/json/list");
            let v: Value = serde_json::from_slice(&r.body).ok()?;
            v.as_array()?
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
        })
        .unwrap_or_else(|| panic!("Chromium listed no page within {STEP:?}"));
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting to DevTools");
        stream.set_read_timeout(Some(STEP)).expect("read timeout");
        let (ws, _) = tungstenite::client(list.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools websocket {list}: {e}"));
        let mut b = Browser {
            child,
            profile,
            ws,
            next_id: 1,
        };
        b.viewport(width, height, false);
        Some(b)
    }

    /// Chromium's own output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.profile.path().join("chromium.log")).unwrap_or_default()
    }

    /// Sends one command and waits for its answer (events in between are skipped).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .map_err(|e| format!("{method}: sending: {e}"))?;
        loop {
            let m = self
                .ws
                .read()
                .map_err(|e| format!("{method}: reading: {e}"))?;
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).map_err(|e| format!("{method}: {e}"))?;
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    return Err(format!("{method}: {err}"));
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// The page's viewport (CSS px); `mobile` emulates a phone (touch, viewport meta).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// The value of a JavaScript expression (DevTools evaluation, which the page's CSP does
    /// not govern: the page itself runs no script).
    pub fn eval(&mut self, expr: &str) -> Result<Value, String> {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        )?;
        if let Some(ex) = r.get("exceptionDetails") {
            return Err(format!("{expr}: {ex}"));
        }
        Ok(r["result"]["value"].clone())
    }

    /// Runs `act` (which starts a navigation) and waits until the new document has loaded: the
    /// old one is marked first, so its own `complete` state is not mistaken for the new one's.
    fn navigating(&mut self, what: &str, act: impl FnOnce(&mut Self)) {
        self.eval("window.__stockhook_old = true")
            .unwrap_or_else(|e| panic!("{what}: marking the page: {e}"));
        act(self);
        let ok = poll_until(deadline_in(STEP), || {
            let v = self
                .eval("!window.__stockhook_old && document.readyState === 'complete'")
                .ok()?;
            (v == Value::Bool(true)).then_some(())
        });
        if ok.is_none() {
            let at = self.eval("location.href").unwrap_or_default();
            panic!(
                "{what}: no new page within {STEP:?} (at {at})\n{}",
                self.log()
            );
        }
    }

    /// Goes to `url` and waits until the page it ends on (after redirects) has loaded.
    pub fn goto(&mut self, url: &str) {
        self.navigating(url, |b| {
            b.call("Page.navigate", json!({"url": url}))
                .unwrap_or_else(|e| panic!("{e}"));
        });
    }

    /// The current page's path (location.pathname).
    pub fn path(&mut self) -> String {
        self.eval_text("location.pathname")
    }

    /// Asserts the current page is at `path`.
    pub fn wait_loaded(&mut self, path: &str) {
        let at = self.path();
        assert_eq!(at, path, "expected to be at {path}:\n{}", self.text());
    }

    /// Clicks the element `selector` (a link or a submit button), waits for the new page and
    /// asserts it is at `path`.
    pub fn click_to(&mut self, selector: &str, path: &str) {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        self.navigating(selector, |b| {
            b.eval(&format!("document.querySelector({sel}).click(), true"))
                .unwrap_or_else(|e| panic!("clicking {selector}: {e}"));
        });
        self.wait_loaded(path);
    }

    /// Runs `js`, which submits a form or otherwise navigates, and waits for the new page.
    pub fn eval_navigating(&mut self, js: &str) {
        self.navigating(js, |b| {
            b.eval(js).unwrap_or_else(|e| panic!("{e}"));
        });
    }

    /// Sets a form field's value (as typing would).
    pub fn fill(&mut self, selector: &str, value: &str) {
        let sel = serde_json::to_string(selector).unwrap_or_default();
        let val = serde_json::to_string(value).unwrap_or_default();
        self.eval(&format!(
            "document.querySelector({sel}).value = {val}, true"
        ))
        .unwrap_or_else(|e| panic!("filling {selector}: {e}"));
    }

    /// The page's visible text.
    pub fn text(&mut self) -> String {
        self.eval_text("document.body.innerText")
    }

    /// The page's HTML.
    pub fn html(&mut self) -> String {
        self.eval_text("document.documentElement.outerHTML")
    }

    /// A string-valued expression's value; empty when it fails or is not a string.
    fn eval_text(&mut self, expr: &str) -> String {
        self.eval(expr)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// A PNG of the whole page (not just the viewport) written to `png`.
    pub fn screenshot(&mut self, png: &Path) -> PathBuf {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let data = B64
            .decode(r["data"].as_str().unwrap_or_default())
            .expect("screenshot is base64");
        if let Some(dir) = png.parent() {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        std::fs::write(png, &data).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        png.to_path_buf()
    }
}
