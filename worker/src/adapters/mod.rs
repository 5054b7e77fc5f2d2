//! Platform adapters: the only code that knows what a Shopify, Amazon, eBay, WooCommerce or "simple" payload
//! looks like. Each turns one verified [`Envelope`] into [`Normalized`] facts, so the state store
//! and the rules never see a platform's shape and adding a platform never touches them.
//!
//! Contract, for every adapter:
//! * pure: bytes and headers in, facts out. No I/O, no clock (the fallback time is the
//!   envelope's `received_at_ms`), no global state, so a redelivered event normalizes to exactly
//!   the same facts;
//! * a topic stockhook does not act on is `Normalized { ignored: true, facts: [] }`, never an
//!   error; an error ([`NormalizeError`]) is permanent (the same bytes fail the same way) and
//!   dead-letters the event, so it is returned only for a body that is not the platform's shape:
//!   not JSON/XML, no topic, a required field missing or of the wrong type;
//! * ids are kept exactly: JSON integers are read with `as_u64`/`as_i64` and printed in decimal,
//!   never through `f64` (Shopify ids exceed 2^53); an id that arrives as a float is refused;
//! * every fact carries the platform's event time: the payload's own time field where there is
//!   one, else the `x-shopify-triggered-at` header, else the time the receiver accepted it.
//!
//! Must never: panic or `unwrap` on anything derived from the input; put body content (names,
//! addresses, emails, free text) into an error message, since errors are logged and shown in the
//! dead-letter list (errors name fields and topics only); guess a quantity that is not in the
//! payload.

pub mod amazon;
pub mod ebay;
pub mod shopify;
pub mod simple;
pub mod woocommerce;

use crate::facts::{Fact, NormalizeError, Normalized};
use serde_json::Value;
use stockhook_shared::config::Platform;
use stockhook_shared::envelope::Envelope;

pub use ebay::ebay_deleted_user;

/// Normalizes one event with its platform's adapter.
pub fn normalize(env: &Envelope) -> Result<Normalized, NormalizeError> {
    match env.platform {
        Platform::Shopify => shopify::normalize(env),
        Platform::Amazon => amazon::normalize(env),
        Platform::Ebay => ebay::normalize(env),
        Platform::Simple => simple::normalize(env),
        Platform::Woocommerce => woocommerce::normalize(env),
    }
}

/// What an adapter returns for a topic stockhook does not act on: acknowledged and counted.
pub(crate) fn ignored(topic: &str) -> Normalized {
    Normalized {
        topic: topic.to_string(),
        facts: Vec::new(),
        ignored: true,
    }
}

/// A sale of `quantity` units of `item` on one order line: the shape every platform's order
/// lines give (Shopify, WooCommerce and Amazon read theirs into it).
pub(crate) fn sale(item: String, quantity: i64, order: &str, line: String, at: i64) -> Fact {
    Fact::Sale {
        item,
        quantity,
        order: order.to_string(),
        line,
        at,
    }
}

/// A level that is the total over all locations (location `"all"`), as a product payload
/// gives it (Shopify `products/*`, WooCommerce `product.*`).
pub(crate) fn total_level(item: String, available: i64, at: i64) -> Fact {
    Fact::InventoryLevel {
        item,
        location: "all".into(),
        available: Some(available),
        at,
    }
}

/// What an adapter returns for a topic it read.
pub(crate) fn read(topic: &str, facts: Vec<crate::facts::Fact>) -> Normalized {
    Normalized {
        topic: topic.to_string(),
        facts,
        ignored: false,
    }
}

/// Extra dedup key found in the payload (Amazon `NotificationMetadata.NotificationId`, or the
/// EventBridge event `id`; eBay `notification.notificationId`), if any. Shopify, WooCommerce and
/// "simple" payloads carry none: their delivery id is a header ([`Envelope::delivery_id`]).
pub fn payload_dedup_key(env: &Envelope) -> Option<String> {
    match env.platform {
        Platform::Amazon => amazon::dedup_key(env),
        Platform::Ebay => ebay::dedup_key(env),
        Platform::Shopify | Platform::Simple | Platform::Woocommerce => None,
    }
}

/// Parses an RFC 3339 time, and the looser ISO 8601 forms Amazon and eBay also send, into Unix
/// milliseconds. Accepted: `YYYY-MM-DD`, then `T`, `t` or a space, `HH:MM[:SS[.fraction]]`, then
/// `Z`/`z`, `±HH:MM`, `±HHMM`, `±HH`, or nothing (read as UTC). A date alone is midnight UTC.
/// Fractions beyond milliseconds are truncated; a leap second (`:60`) is read as `:59`.
pub fn parse_time(s: &str) -> Option<i64> {
    use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

    let b = s.trim().as_bytes();
    let mut c = Cursor { b, i: 0 };
    let year = c.digits(4)?;
    c.expect(b'-')?;
    let month = c.digits(2)?;
    c.expect(b'-')?;
    let day = c.digits(2)?;
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;

    let (mut hour, mut minute, mut second, mut milli) = (0u32, 0u32, 0u32, 0u32);
    let mut offset_secs: i32 = 0;
    if !c.done() {
        match c.next()? {
            b'T' | b't' | b' ' => {}
            _ => return None,
        }
        hour = c.digits(2)?;
        c.expect(b':')?;
        minute = c.digits(2)?;
        if c.peek() == Some(b':') {
            c.i += 1;
            second = c.digits(2)?;
            if matches!(c.peek(), Some(b'.') | Some(b',')) {
                c.i += 1;
                let start = c.i;
                while matches!(c.peek(), Some(d) if d.is_ascii_digit()) {
                    c.i += 1;
                }
                let frac = &b[start..c.i];
                if frac.is_empty() {
                    return None;
                }
                for k in 0..3 {
                    milli = milli * 10 + frac.get(k).map_or(0, |d| u32::from(d - b'0'));
                }
            }
        }
        match c.peek() {
            None => {}
            Some(b'Z') | Some(b'z') => c.i += 1,
            Some(sign @ (b'+' | b'-')) => {
                c.i += 1;
                let oh = c.digits(2)?;
                let om = match c.peek() {
                    None => 0,
                    Some(b':') => {
                        c.i += 1;
                        c.digits(2)?
                    }
                    Some(_) => c.digits(2)?,
                };
                if oh > 23 || om > 59 {
                    return None;
                }
                let secs = i32::try_from(oh * 3600 + om * 60).ok()?;
                offset_secs = if sign == b'-' { -secs } else { secs };
            }
            Some(_) => return None,
        }
        if !c.done() {
            return None;
        }
    }
    if second == 60 {
        second = 59;
    }
    let t = Time::from_hms_milli(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        u16::try_from(milli).ok()?,
    )
    .ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_secs).ok()?;
    let odt = PrimitiveDateTime::new(date, t).assume_offset(offset);
    odt.unix_timestamp()
        .checked_mul(1000)?
        .checked_add(i64::from(milli))
}

/// A byte cursor for [`parse_time`].
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn done(&self) -> bool {
        self.i >= self.b.len()
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    fn next(&mut self) -> Option<u8> {
        let v = self.peek()?;
        self.i += 1;
        Some(v)
    }
    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }
    /// Exactly `n` ASCII digits as a number.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            let d = self.next()?;
            if !d.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(d - b'0');
        }
        Some(v)
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the JSON adapters. Field names in errors are JSON paths (`variants[2].id`).

/// Parses the body as JSON (numbers that fit u64/i64 stay exact integers).
pub(crate) fn parse_json(env: &Envelope) -> Result<Value, NormalizeError> {
    serde_json::from_slice(&env.body).map_err(|e| NormalizeError::NotJson(e.to_string()))
}

/// `v[key]`, matching the key exactly first, then ignoring ASCII case (Amazon documents some
/// notification types in PascalCase and others in camelCase).
pub(crate) fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

pub(crate) fn missing(topic: &str, field: &str) -> NormalizeError {
    NormalizeError::MissingField {
        topic: topic.to_string(),
        field: field.to_string(),
    }
}

pub(crate) fn bad(topic: &str, field: &str, problem: impl Into<String>) -> NormalizeError {
    NormalizeError::BadField {
        topic: topic.to_string(),
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// A JSON value's kind, for error messages (never the value itself).
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a float",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// What reading an optional field gives: its value, `None` when it is absent, or why it is bad.
pub(crate) type Field<T> = Result<Option<T>, NormalizeError>;

/// An integer id as exact decimal text: a JSON integer (u64 or i64), or a string holding one
/// (`"007"` becomes `"7"`). Absent, null or `""` is `None`; a float or anything else is an error.
pub(crate) fn id_text(v: Option<&Value>, topic: &str, field: &str) -> Field<String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let why = "is a float or out of the 64-bit range; ids must be integers";
            decimal(n.as_u64(), n.as_i64())
                .map(Some)
                .ok_or_else(|| bad(topic, field, why))
        }
        Some(Value::String(s)) => match s.trim() {
            "" => Ok(None),
            t => {
                let why = "is a string that is not a 64-bit integer id";
                decimal(t.parse().ok(), t.parse().ok())
                    .map(Some)
                    .ok_or_else(|| bad(topic, field, why))
            }
        },
        Some(other) => Err(wrong_kind(topic, field, "an integer id", other)),
    }
}

/// An id's decimal text: as a u64 where it is one, else as an i64 (a negative id).
fn decimal(u: Option<u64>, i: Option<i64>) -> Option<String> {
    u.map(|u| u.to_string())
        .or_else(|| i.map(|i| i.to_string()))
}

/// A quantity: a JSON integer in the i64 range, or a string holding one. Absent or null is
/// `None`; a float or anything else is an error.
pub(crate) fn int(v: Option<&Value>, topic: &str, field: &str) -> Field<i64> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None if n.is_u64() => Err(bad(topic, field, "is out of the 64-bit signed range")),
            None => Err(bad(topic, field, "is a float; a whole number was expected")),
        },
        Some(Value::String(s)) => match s.trim().parse::<i64>() {
            Ok(i) => Ok(Some(i)),
            Err(_) => Err(bad(topic, field, "is a string that is not a whole number")),
        },
        Some(other) => Err(wrong_kind(topic, field, "a whole number", other)),
    }
}

/// A textual field (sku, title, seller SKU, order id): a string kept as sent, or an integer as
/// exact decimal text. Absent, null or `""` is `None`; a float, boolean, array or object is an
/// error.
pub(crate) fn text(v: Option<&Value>, topic: &str, field: &str) -> Field<String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(_)) => id_text(v, topic, field),
        Some(other) => Err(wrong_kind(topic, field, "text", other)),
    }
}

/// A field's reader: [`id_text`], [`int`] or [`text`].
pub(crate) type Read<T> = fn(Option<&Value>, &str, &str) -> Field<T>;

/// A required field: what `read` makes of it, absent being a [`NormalizeError::MissingField`].
pub(crate) fn req<T>(
    read: Read<T>,
    v: Option<&Value>,
    topic: &str,
    field: &str,
) -> Result<T, NormalizeError> {
    read(v, topic, field)?.ok_or_else(|| missing(topic, field))
}

/// A field of the wrong JSON kind: `expected` says what it must be.
fn wrong_kind(topic: &str, field: &str, expected: &str, found: &Value) -> NormalizeError {
    bad(
        topic,
        field,
        format!("must be {expected}, found {}", kind(found)),
    )
}

/// The array at `v`; absent or null is a [`NormalizeError::MissingField`].
pub(crate) fn req_array<'a>(
    v: Option<&'a Value>,
    topic: &str,
    field: &str,
) -> Result<&'a Vec<Value>, NormalizeError> {
    match v {
        None | Some(Value::Null) => Err(missing(topic, field)),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(wrong_kind(topic, field, "an array", other)),
    }
}

/// The event time when the payload has none: the `x-shopify-triggered-at` (or the unprefixed
/// `shopify-triggered-at`) header, else when the receiver accepted the event.
pub(crate) fn fallback_time(env: &Envelope) -> i64 {
    ["x-shopify-triggered-at", "shopify-triggered-at"]
        .iter()
        .find_map(|h| env.header(h).and_then(parse_time))
        .unwrap_or(env.received_at_ms)
}

/// The first candidate that is a parseable time string, else [`fallback_time`]. A time field
/// that does not parse is skipped, not an error: a stock level is still worth having.
pub(crate) fn first_time(env: &Envelope, candidates: &[Option<&Value>]) -> i64 {
    candidates
        .iter()
        .find_map(|v| v.and_then(Value::as_str).and_then(parse_time))
        .unwrap_or_else(|| fallback_time(env))
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::facts::Fact;
    use stockhook_shared::config::Platform;
    use stockhook_shared::envelope::{Envelope, EventId};

    /// The receiver's acceptance time used by every test envelope.
    pub const RECEIVED: i64 = 1_700_000_000_000;

    pub fn env(platform: Platform, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Envelope {
        Envelope {
            id: EventId(1),
            source: "test-source".into(),
            platform,
            received_at_ms: RECEIVED,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    /// The [`Fact::CatalogEntry`] an adapter should give: the tests' one spelling of it.
    pub fn entry(
        item: impl Into<String>,
        aliases: &[&str],
        sku: Option<&str>,
        title: Option<&str>,
        at: i64,
    ) -> Fact {
        Fact::CatalogEntry {
            item: item.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            sku: sku.map(str::to_string),
            title: title.map(str::to_string),
            at,
        }
    }

    /// The [`Fact::InventoryLevel`] an adapter should give.
    pub fn level(item: impl Into<String>, location: &str, available: Option<i64>, at: i64) -> Fact {
        Fact::InventoryLevel {
            item: item.into(),
            location: location.into(),
            available,
            at,
        }
    }

    /// The [`Fact::Sale`] an adapter should give.
    pub fn sale(item: impl Into<String>, quantity: i64, order: &str, line: &str, at: i64) -> Fact {
        Fact::Sale {
            item: item.into(),
            quantity,
            order: order.into(),
            line: line.into(),
            at,
        }
    }

    /// The published sample payloads (`../shared/fixtures/payloads/`), for the cross-checks.
    pub struct Published(stockhook_test_kit::fixtures::Fixtures);

    impl Published {
        /// The bytes of `payloads/<rel>`.
        pub fn payload(&self, rel: &str) -> Vec<u8> {
            self.0.bytes(&format!("payloads/{rel}"))
        }
    }

    /// The published payloads, or `None` after a loud SKIPPED line naming `test` (a failure
    /// with `SHARED_FIXTURES_REQUIRED=1`).
    pub fn published(test: &str) -> Option<Published> {
        stockhook_test_kit::fixtures::shared(test).map(Published)
    }

    /// A published payload kept in this repository, `worker/tests/data/<rel>` (each directory's
    /// README names where every file comes from).
    pub fn data(rel: &str) -> Vec<u8> {
        let path = format!("{}/tests/data/{rel}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("read test data {path}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_time_rfc3339_and_variants() {
        let base = 1_640_995_200_000; // 2022-01-01T00:00:00Z
        assert_eq!(parse_time("2022-01-01T00:00:00Z"), Some(base));
        assert_eq!(parse_time("2021-12-31T19:00:00-05:00"), Some(base));
        assert_eq!(parse_time("2022-01-01T05:30:00+05:30"), Some(base));
        assert_eq!(parse_time("2022-01-01T05:30:00+0530"), Some(base));
        assert_eq!(parse_time("2022-01-01T05:00:00+05"), Some(base));
        assert_eq!(parse_time("2022-01-01t00:00:00z"), Some(base));
        assert_eq!(parse_time("2022-01-01 00:00:00"), Some(base));
        assert_eq!(parse_time(" 2022-01-01T00:00:00.123Z "), Some(base + 123));
        assert_eq!(parse_time("2022-01-01T00:00:00.1Z"), Some(base + 100));
        assert_eq!(
            parse_time("2022-01-01T00:00:00.123456789Z"),
            Some(base + 123)
        );
        assert_eq!(parse_time("2022-01-01T00:00:00,5Z"), Some(base + 500));
        assert_eq!(parse_time("2022-01-01T00:00Z"), Some(base));
        assert_eq!(parse_time("2022-01-01"), Some(base));
        assert_eq!(
            parse_time("2020-07-13T19:42:04.284Z"),
            Some(1_594_669_324_284)
        );
        assert_eq!(parse_time("2016-12-31T23:59:60Z"), Some(1_483_228_799_000));
        assert_eq!(parse_time("1969-12-31T23:59:59.500Z"), Some(-500));
    }

    #[test]
    fn parse_time_rejects_garbage() {
        for s in [
            "",
            "yesterday",
            "2022-13-01T00:00:00Z",
            "2022-02-30T00:00:00Z",
            "2022-01-01T24:00:00Z",
            "2022-01-01T00:60:00Z",
            "2022-01-01T00:00:00.Z",
            "2022-01-01T00:00:00Zjunk",
            "2022-01-01T00:00:00+25:00",
            "2022-01-01X00:00:00Z",
            "22-01-01T00:00:00Z",
            "1640995200",
        ] {
            assert_eq!(parse_time(s), None, "{s:?}");
        }
    }

    #[test]
    fn get_ci_prefers_exact_then_ignores_case() {
        let v = json!({"payload": 1, "Payload": 2, "notificationType": "X"});
        assert_eq!(get_ci(&v, "Payload"), Some(&json!(2)));
        assert_eq!(get_ci(&v, "NotificationType"), Some(&json!("X")));
        assert_eq!(get_ci(&v, "Missing"), None);
        assert_eq!(get_ci(&json!([1]), "Payload"), None);
    }

    #[test]
    fn ids_stay_exact_above_2_pow_53() {
        let v: Value = serde_json::from_str(
            r#"[18446744073709551615, 9007199254740993, -5, "9007199254740993", " 007 "]"#,
        )
        .unwrap();
        let got: Vec<_> = (0..5)
            .map(|i| id_text(v.get(i), "t", "f").unwrap())
            .collect();
        assert_eq!(
            got,
            vec![
                Some("18446744073709551615".to_string()),
                Some("9007199254740993".to_string()),
                Some("-5".to_string()),
                Some("9007199254740993".to_string()),
                Some("7".to_string()),
            ]
        );
    }

    #[test]
    fn float_and_odd_ids_are_bad_fields() {
        let v: Value =
            serde_json::from_str(r#"[1.5, 1e3, "abc", true, 18446744073709551616]"#).unwrap();
        for i in 0..5 {
            let err = id_text(v.get(i), "topic/x", "id").unwrap_err();
            assert!(
                matches!(&err, NormalizeError::BadField { topic, field, .. } if topic == "topic/x" && field == "id"),
                "{i}: {err:?}"
            );
        }
        assert_eq!(id_text(Some(&json!(null)), "t", "id"), Ok(None));
        assert_eq!(id_text(Some(&json!("")), "t", "id"), Ok(None));
        assert_eq!(id_text(None, "t", "id"), Ok(None));
        assert_eq!(req(id_text, None, "t", "id"), Err(missing("t", "id")));
    }

    #[test]
    fn int_accepts_integers_and_integer_strings_only() {
        assert_eq!(int(Some(&json!(-3)), "t", "q"), Ok(Some(-3)));
        assert_eq!(int(Some(&json!("12")), "t", "q"), Ok(Some(12)));
        assert_eq!(int(Some(&json!(null)), "t", "q"), Ok(None));
        assert!(matches!(
            int(Some(&json!(2.5)), "t", "q"),
            Err(NormalizeError::BadField { .. })
        ));
        assert!(matches!(
            int(Some(&json!(u64::MAX)), "t", "q"),
            Err(NormalizeError::BadField { .. })
        ));
        assert!(matches!(
            int(Some(&json!("x")), "t", "q"),
            Err(NormalizeError::BadField { .. })
        ));
        assert_eq!(req(int, None, "t", "q"), Err(missing("t", "q")));
    }

    #[test]
    fn fallback_time_uses_triggered_at_then_received() {
        let e = env(
            Platform::Shopify,
            &[("x-shopify-triggered-at", "2022-01-01T00:00:00.5Z")],
            "{}",
        );
        assert_eq!(fallback_time(&e), 1_640_995_200_500);
        let e = env(
            Platform::Shopify,
            &[("x-shopify-triggered-at", "soon")],
            "{}",
        );
        assert_eq!(fallback_time(&e), RECEIVED);
        let e = env(Platform::Amazon, &[], "{}");
        assert_eq!(first_time(&e, &[Some(&json!("nope")), None]), RECEIVED);
        assert_eq!(
            first_time(&e, &[Some(&json!(5)), Some(&json!("2022-01-01T00:00:00Z"))]),
            1_640_995_200_000
        );
    }

    #[test]
    fn dispatch_goes_by_platform() {
        let body = br#"{"ASIN":"B0X","product_name":"P","quantity":3}"#.to_vec();
        assert!(normalize(&env(Platform::Simple, &[], body.clone())).is_ok());
        // The same body is not a Shopify payload without a topic, nor an Amazon notification.
        assert!(matches!(
            normalize(&env(Platform::Shopify, &[], body.clone())),
            Err(NormalizeError::NoTopic(_))
        ));
        assert!(matches!(
            normalize(&env(Platform::Amazon, &[], body.clone())),
            Err(NormalizeError::NoTopic(_))
        ));
        assert_eq!(payload_dedup_key(&env(Platform::Shopify, &[], body)), None);
    }
}
