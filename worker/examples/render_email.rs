//! Regenerates the README's picture of a three-item digest email, as a phone shows it:
//!
//! ```text
//! cargo run -p stockhook-worker --example render_email -- --out docs/email-digest.png
//! ```
//!
//! Writes the HTML part's screenshot (headless Chromium, 390 px wide) to `--out`, and the
//! plain-text part beside it (`.txt`). Needs Debian's chromium.

use std::path::PathBuf;
use stockhook_tests::chromium;
use stockhook_worker::email::{content, sample};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("docs/email-digest.png");
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--out", Some(path)) => out = PathBuf::from(path),
            _ => {
                eprintln!("usage: render_email [--out docs/email-digest.png]");
                std::process::exit(2);
            }
        }
    }
    if let Err(e) = run(&out) {
        eprintln!("render_email: {e}");
        std::process::exit(1);
    }
}

fn run(out: &std::path::Path) -> Result<(), String> {
    let (subject, text, html) = content::bodies(&sample::digest(), &sample::stores());
    let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
    let page = dir.path().join("email.html");
    std::fs::write(&page, html).map_err(|e| format!("writing {}: {e}", page.display()))?;
    chromium::screenshot(&page, out, chromium::PHONE_WIDTH, 1200)?;
    let picture = chromium::read_png(out)?;
    let txt = out.with_extension("txt");
    std::fs::write(&txt, format!("Subject: {subject}\n\n{text}"))
        .map_err(|e| format!("writing {}: {e}", txt.display()))?;
    println!(
        "wrote {} ({}x{}, {} colours) and {}",
        out.display(),
        picture.width,
        picture.height,
        picture.colours,
        txt.display()
    );
    Ok(())
}
