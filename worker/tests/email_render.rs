//! The alert email's HTML part as a phone shows it: rendered in headless Chromium (Debian's
//! `chromium`) at 390 px wide, the screenshot read back and checked to be a real picture.
//! Set SHTEST_EMAIL_SCREENSHOT_DIR to keep the screenshots.

use std::path::Path;
use stockhook_tests::chromium::{self, PHONE_WIDTH};
use stockhook_worker::email::{content, sample};

fn render_and_check(html: &str, name: &str) -> chromium::Picture {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let png = match std::env::var_os("SHTEST_EMAIL_SCREENSHOT_DIR") {
        Some(keep) => Path::new(&keep).join(format!("{name}.png")),
        None => dir.path().join(format!("{name}.png")),
    };
    chromium::screenshot(&page, &png, PHONE_WIDTH, 1200).unwrap_or_else(|e| panic!("{e}"));
    let pic = chromium::read_png(&png).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((pic.width, pic.height), (PHONE_WIDTH, 1200), "{pic:?}");
    pic
}

#[test]
fn three_item_digest_renders_on_a_phone() {
    let (subject, text, html) = content::bodies(&sample::digest(), &sample::stores());
    // Four alerts, three items: the mug's low stock and reorder soon share one line and card.
    assert!(subject.starts_with("3 stock alerts"), "{subject}");
    assert!(
        text.contains("2. Low stock: Enamel Camp Mug 11oz - White, 2 left, about 1 day of cover, reorder 30\n"),
        "{text}"
    );
    assert_eq!(
        html.matches(">Enamel Camp Mug 11oz - White<").count(),
        1,
        "{html}"
    );
    let pic = render_and_check(&html, "digest");
    // Text, badges and buttons: many colours and a good share of the screen drawn on.
    assert!(pic.colours > 100, "{pic:?}");
    assert!(pic.ink > 0.2, "{pic:?}");

    // A blank page at the same size is what "blank" looks like: one colour, nothing drawn.
    let blank = render_and_check(
        "<!DOCTYPE html><html><body style=\"background:#fff\"></body></html>",
        "blank",
    );
    assert!(blank.colours <= 2 && blank.ink < 0.001, "{blank:?}");
}

#[test]
fn cover_alert_in_a_digest_renders_on_a_phone() {
    let mut alerts = sample::digest();
    alerts.push(sample::cover());
    let (subject, _, html) = content::bodies(&alerts, &sample::stores());
    assert!(subject.starts_with("4 stock alerts"), "{subject}");
    assert!(
        html.contains("Reorder soon") && html.contains("51 units"),
        "{html}"
    );
    let pic = render_and_check(&html, "cover-digest");
    assert!(pic.colours > 100, "{pic:?}");
    assert!(pic.ink > 0.2, "{pic:?}");
    // Alone, the whole card is on the first screen.
    let (_, _, html) = content::bodies(&[sample::cover()], &sample::stores());
    let pic = render_and_check(&html, "cover");
    assert!(pic.colours > 100, "{pic:?}");
    assert!(pic.ink > 0.1, "{pic:?}");
}
