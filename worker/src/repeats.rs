//! Repeats: says, at info, why a level report that is still below its threshold sent nothing.
//!
//! Why it exists: an operator testing a setup re-sends a low level and gets no second email (the
//! rule fires once per crossing). Without a word in the log they are left guessing whether the
//! event arrived at all. Logs carry ids, the rule and times only: never a title, SKU or body.

use crate::alert::Rule;

/// Logs that `last_alert` already fired for this item when `total` is still below `threshold`
/// (the rules returned nothing for it). Does nothing for a level at or above the threshold, for
/// an untracked level, or for an item that never alerted.
pub fn log_if_already_fired(
    source: &str,
    item: &str,
    total: Option<i64>,
    threshold: i64,
    last_alert: Option<(Rule, i64)>,
) {
    if let Some(message) = already_fired(total, threshold, last_alert) {
        tracing::info!(source = %source, item = %item, "{message}");
    }
}

/// The log message for [`log_if_already_fired`], when there is one.
pub fn already_fired(
    total: Option<i64>,
    threshold: i64,
    last_alert: Option<(Rule, i64)>,
) -> Option<String> {
    let available = total?;
    // A no-sales alert says nothing about the stock rules' arming.
    let (rule, at) = last_alert.filter(|(r, _)| *r != Rule::NoSales)?;
    (available < threshold).then(|| {
        format!(
            "level {available} is still below the threshold {threshold}: the {} alert already \
             fired for it (event of {}), so no new alert; it fires again once the level has \
             risen to {threshold} or more and drops again",
            rule.as_str(),
            crate::email::rfc3339(at)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_when_the_alert_fired() {
        let m = already_fired(Some(2), 5, Some((Rule::LowStock, 1_714_564_800_000))).unwrap();
        assert!(m.contains("low_stock alert already fired"), "{m}");
        assert!(m.contains("2024-05-01T12:00:00Z"), "{m}");
        assert!(m.contains("level 2 is still below the threshold 5"), "{m}");
        // Nothing to say: back above the threshold, untracked, or never alerted.
        assert_eq!(already_fired(Some(5), 5, Some((Rule::LowStock, 0))), None);
        assert_eq!(already_fired(None, 5, Some((Rule::LowStock, 0))), None);
        assert_eq!(already_fired(Some(1), 5, None), None);
        assert_eq!(already_fired(Some(1), 5, Some((Rule::NoSales, 0))), None);
    }
}
