//! The event envelope: one verified webhook as it sits in the queue.
//!
//! It carries the raw body byte for byte (the worker parses it, the receiver never does) and the
//! few headers the worker needs (topic, delivery id, shop or seller, timestamps). Encoded in a
//! small versioned binary form so an append costs one copy of the body, not a base64 or JSON
//! re-encoding of it.

use crate::config::Platform;
use std::fmt;

/// An event id: unique across restarts and increasing in arrival order. Shown as `evt_` and 16
/// hex digits so the text form sorts the same way as the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub u64);

impl EventId {
    pub fn to_be_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
    pub fn from_be_slice(b: &[u8]) -> Option<EventId> {
        let a: [u8; 8] = b.try_into().ok()?;
        Some(EventId(u64::from_be_bytes(a)))
    }
    /// Parses `evt_00000000000000ff` (or the bare hex).
    pub fn parse(s: &str) -> Option<EventId> {
        let hex = s.strip_prefix("evt_").unwrap_or(s);
        if hex.is_empty() || hex.len() > 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(EventId)
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventId::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not an event id (evt_ and 16 hex digits)"))
        })
    }
}

impl EventId {
    /// The text form, `evt_` and 16 lowercase hex digits, without a formatter: it goes into
    /// every answer and log line.
    pub fn text(self) -> [u8; 20] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut t = *b"evt_0000000000000000";
        for (i, slot) in t[4..].iter_mut().enumerate() {
            *slot = HEX[((self.0 >> (60 - 4 * i)) & 0xf) as usize];
        }
        t
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `text` is ASCII only.
        f.write_str(std::str::from_utf8(&self.text()).map_err(|_| fmt::Error)?)
    }
}

/// One verified webhook. Only the receiver's verified request path constructs these for the
/// queue; everything downstream trusts that the body was signed by the source's sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub id: EventId,
    /// The configured source name (`/webhooks/<source>`).
    pub source: String,
    pub platform: Platform,
    /// Unix milliseconds when the receiver accepted it.
    pub received_at_ms: i64,
    /// Header name (lowercase) and value for the headers that matter: topic, delivery id, shop or
    /// seller, API version, timestamps, SOAPAction. Never authentication headers.
    pub headers: Vec<(String, String)>,
    /// The body exactly as it arrived.
    pub body: Vec<u8>,
}

/// Headers worth keeping with the body; everything else (and every credential) is dropped.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "x-shopify-topic",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "x-shopify-shop-domain",
    "x-shopify-api-version",
    "x-shopify-triggered-at",
    "x-shopify-sub-topic",
    "shopify-topic",
    "shopify-event-id",
    "shopify-shop-domain",
    "shopify-api-version",
    "shopify-triggered-at",
    "webhook-id",
    "webhook-timestamp",
    "x-wc-webhook-topic",
    "x-wc-webhook-resource",
    "x-wc-webhook-event",
    "x-wc-webhook-delivery-id",
    "x-wc-webhook-source",
    "x-github-event",
    "x-github-delivery",
    "x-amz-event-type",
    "soapaction",
    "x-stockhook-topic",
];

impl Envelope {
    /// The header's value, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The topic the sender declared in a header, if any (the worker may also find it in the body).
    pub fn topic(&self) -> Option<&str> {
        [
            "x-shopify-topic",
            "shopify-topic",
            "x-wc-webhook-topic",
            "x-github-event",
            "x-stockhook-topic",
            "soapaction",
        ]
        .iter()
        .find_map(|h| self.header(h))
    }

    /// The platform's delivery id (the dedup key), if it sent one.
    pub fn delivery_id(&self) -> Option<&str> {
        delivery_id_of(|n| self.header(n))
    }

    const VERSION: u8 = 1;

    /// Encodes as: version, id, received_at, platform, source, header count, headers, body.
    pub fn encode(&self) -> Vec<u8> {
        encode_parts(
            self.id,
            &self.source,
            self.platform,
            self.received_at_ms,
            &self.headers,
            &self.body,
        )
    }

    pub fn decode(mut b: &[u8]) -> Result<Envelope, DecodeError> {
        let version = take_u8(&mut b)?;
        if version != Self::VERSION {
            return Err(DecodeError(format!(
                "envelope version {version} is newer than this build understands (1): upgrade stockhook-worker"
            )));
        }
        let id = EventId(u64::from_be_bytes(take_array(&mut b)?));
        let received_at_ms = i64::from_be_bytes(take_array(&mut b)?);
        let platform = platform_from_code(take_u8(&mut b)?)?;
        let source = take_string(&mut b)?;
        let n = u32::from_be_bytes(take_array(&mut b)?) as usize;
        if n > 1024 {
            return Err(DecodeError(format!("envelope claims {n} headers")));
        }
        let mut headers = Vec::with_capacity(n);
        for _ in 0..n {
            let k = take_string(&mut b)?;
            let v = take_string(&mut b)?;
            headers.push((k, v));
        }
        let body = take_bytes(&mut b)?.to_vec();
        Ok(Envelope {
            id,
            source,
            platform,
            received_at_ms,
            headers,
            body,
        })
    }
}

/// [`Envelope::encode`] from borrowed parts: the append path writes the body once, straight from
/// the request's buffer into the record.
pub fn encode_parts<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    id: EventId,
    source: &str,
    platform: Platform,
    received_at_ms: i64,
    headers: &[(K, V)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    encode_parts_into(
        &mut out,
        id,
        source,
        platform,
        received_at_ms,
        headers,
        body,
    );
    out
}

/// [`encode_parts`] appended to a buffer the caller reuses: the group commit encodes every event
/// of a batch straight into the group's buffer (segment log) or into one reused record buffer
/// (sled), so the body is copied once and never allocated per event.
pub fn encode_parts_into<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    id: EventId,
    source: &str,
    platform: Platform,
    received_at_ms: i64,
    headers: &[(K, V)],
    body: &[u8],
) {
    let hdr_len: usize = headers
        .iter()
        .map(|(k, v)| 8 + k.as_ref().len() + v.as_ref().len())
        .sum();
    out.reserve(1 + 8 + 8 + 1 + 4 + source.len() + 4 + hdr_len + 4 + body.len());
    out.push(Envelope::VERSION);
    out.extend_from_slice(&id.0.to_be_bytes());
    out.extend_from_slice(&received_at_ms.to_be_bytes());
    out.push(platform_code(platform));
    put_bytes(out, source.as_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (k, v) in headers {
        put_bytes(out, k.as_ref());
        put_bytes(out, v.as_ref());
    }
    put_bytes(out, body);
}

/// The delivery id among headers looked up by lowercase name: Shopify's per-delivery id, Standard
/// Webhooks' id, WooCommerce's and GitHub's delivery ids.
pub fn delivery_id_of<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Option<&'a str> {
    [
        "x-shopify-webhook-id",
        "webhook-id",
        "x-wc-webhook-delivery-id",
        "x-github-delivery",
    ]
    .iter()
    .find_map(|h| get(h).filter(|v| !v.is_empty()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt event envelope: {0}")]
pub struct DecodeError(pub String);

fn platform_code(p: Platform) -> u8 {
    match p {
        Platform::Shopify => 1,
        Platform::Amazon => 2,
        Platform::Ebay => 3,
        Platform::Simple => 4,
        Platform::Woocommerce => 5,
    }
}

fn platform_from_code(c: u8) -> Result<Platform, DecodeError> {
    Ok(match c {
        1 => Platform::Shopify,
        2 => Platform::Amazon,
        3 => Platform::Ebay,
        4 => Platform::Simple,
        5 => Platform::Woocommerce,
        other => return Err(DecodeError(format!("unknown platform code {other}"))),
    })
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn take_u8(b: &mut &[u8]) -> Result<u8, DecodeError> {
    let (first, rest) = b
        .split_first()
        .ok_or_else(|| DecodeError("truncated".into()))?;
    *b = rest;
    Ok(*first)
}

fn take_array<const N: usize>(b: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    if b.len() < N {
        return Err(DecodeError("truncated".into()));
    }
    let (head, rest) = b.split_at(N);
    *b = rest;
    Ok(head.try_into().expect("split_at gave N bytes"))
}

fn take_bytes<'a>(b: &mut &'a [u8]) -> Result<&'a [u8], DecodeError> {
    let n = u32::from_be_bytes(take_array(b)?) as usize;
    if b.len() < n {
        return Err(DecodeError(format!("field of {n} bytes runs past the end")));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn take_string(b: &mut &[u8]) -> Result<String, DecodeError> {
    let raw = take_bytes(b)?;
    String::from_utf8(raw.to_vec()).map_err(|_| DecodeError("header or source is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            id: EventId(0x1234),
            source: "acme-shop".into(),
            platform: Platform::Shopify,
            received_at_ms: 1_700_000_000_123,
            headers: vec![
                ("x-shopify-topic".into(), "products/update".into()),
                ("x-shopify-webhook-id".into(), "abc".into()),
            ],
            body: b"{\"id\":1}\xff".to_vec(),
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let e = sample();
        let d = Envelope::decode(&e.encode()).unwrap();
        assert_eq!(d, e);
        assert_eq!(d.topic(), Some("products/update"));
        assert_eq!(d.delivery_id(), Some("abc"));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(Envelope::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn the_text_form_is_evt_and_16_hex_digits() {
        for n in [0, 9, 0xff, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert_eq!(EventId(n).to_string(), format!("evt_{n:016x}"));
        }
    }

    #[test]
    fn ids_sort_as_text_and_parse_back() {
        let a = EventId(9);
        let b = EventId(10);
        assert!(a.to_string() < b.to_string());
        assert_eq!(EventId::parse(&b.to_string()), Some(b));
        assert_eq!(EventId::parse("evt_"), None);
        assert_eq!(EventId::parse("evt_zz"), None);
    }
}
