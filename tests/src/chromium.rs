//! Headless Chromium for the alert email's HTML part: renders a page to a PNG at a phone's width,
//! and reads the PNG back to check it is a real picture, not a blank or missing file.
//!
//! Why it exists: "renders well on a phone" is checked by rendering it, in the browser engine
//! most mail clients' renderers resemble, at a 390 px wide window (an iPhone's). Used by the
//! worker's email test and by `cargo run -p stockhook-worker --example render_email`, which
//! regenerates the screenshots in docs/. Chromium is Debian's `chromium` (`.ci/run` installs it).
//!
//! Chromium is run with no sandbox (tests run as root in CI), no GPU, no network of its own, a
//! throwaway profile, and a deadline; its output is kept and shown when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's chromium launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A phone's viewport: 390 CSS px wide.
pub const PHONE_WIDTH: u32 = 390;

/// How long one screenshot may take.
const DEADLINE: Duration = Duration::from_secs(120);

/// Chromium without a sandbox, GPU, network of its own or first-run pages, at a `width` x
/// `height` window, with its profile in `profile`: what both the screenshots here and the
/// DevTools browser of `cdp.rs` start from.
pub fn headless(profile: &Path, width: u32, height: u32) -> Command {
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--window-size={width},{height}"));
    c
}

/// Renders the HTML file `page` in a `width` x `height` window and saves the screenshot as
/// `png`. Errors say what failed, with Chromium's own output.
pub fn screenshot(page: &Path, png: &Path, width: u32, height: u32) -> Result<(), String> {
    if !Path::new(CHROMIUM).exists() {
        return Err(format!(
            "{CHROMIUM} not found: install Debian's chromium (`apt-get install -y chromium`; \
             .ci/run does)"
        ));
    }
    let profile = tempfile::tempdir().map_err(|e| format!("creating a Chromium profile: {e}"))?;
    let log_path = profile.path().join("chromium.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let page = std::fs::canonicalize(page).map_err(|e| format!("{}: {e}", page.display()))?;
    let png_abs: PathBuf = if png.is_absolute() {
        png.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("the current directory: {e}"))?
            .join(png)
    };
    let _ = std::fs::remove_file(&png_abs);
    let mut child = headless(&profile.path().join("profile"), width, height)
        .arg(format!("--screenshot={}", png_abs.display()))
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| format!("chromium log: {e}"))?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("starting {CHROMIUM}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > DEADLINE => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "chromium did not finish within {DEADLINE:?}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for chromium: {e}")),
        }
    };
    if !status.success() || !png_abs.exists() {
        return Err(format!(
            "chromium exited {status} without writing {}:\n{}",
            png_abs.display(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        ));
    }
    Ok(())
}

/// What a screenshot holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Picture {
    pub width: u32,
    pub height: u32,
    /// How many distinct colours its pixels have.
    pub colours: usize,
    /// The share of pixels that differ from the most common colour (the background).
    pub ink: f64,
}

/// Decodes the PNG at `path`.
pub fn read_png(path: &Path) -> Result<Picture, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder
        .read_info()
        .map_err(|e| format!("{} is not a PNG: {e}", path.display()))?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader
        .next_frame(&mut buf)
        .map_err(|e| format!("decoding {}: {e}", path.display()))?;
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let mut counts: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for px in pixels.chunks_exact(channels) {
        *counts.entry(px).or_default() += 1;
    }
    let total = (info.width as usize * info.height as usize).max(1);
    let background = counts.values().copied().max().unwrap_or(0);
    Ok(Picture {
        width: info.width,
        height: info.height,
        colours: counts.len(),
        ink: (total - background) as f64 / total as f64,
    })
}
