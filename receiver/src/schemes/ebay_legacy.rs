//! `ebay-legacy`: eBay Trading API Platform Notifications (SOAP), the only eBay path that
//! reports sales and quantities.
//!
//! Why: these notifications carry no HTTP signature header. Instead the SOAP header holds
//! `NotificationSignature` = base64(MD5(Timestamp + DevID + AppID + CertID)), where Timestamp is
//! the `Timestamp` element of the response in the SOAP body (e.g.
//! `<GetItemResponse><Timestamp>2024-01-02T03:04:05.000Z</Timestamp>`), and DevID, AppID and
//! CertID are the application's keyset (`dev_id`, `app_id`, `cert_id` of the source).
//!
//! Contract:
//! * the body is read with a real XML reader (quick-xml), namespace prefixes ignored: the first
//!   `NotificationSignature` element anywhere (it is in the SOAP header, which precedes the body)
//!   and the first `Timestamp` element inside the SOAP `Body`; reading stops once both are found;
//! * the Timestamp (RFC 3339) must lie within `tolerance_secs` of the injected clock in either
//!   direction, else `StaleTimestamp`; checked after the signature, so a forged request reports
//!   `Mismatch`;
//! * the decoded 16 bytes are compared with the MD5 in constant time;
//! * no signature element (or an empty one) is `MissingHeader("NotificationSignature")`; a body
//!   that is not XML, has no Timestamp in its Body, or a Timestamp that is not RFC 3339, or a
//!   signature that is not 16 bytes of base64, is `Malformed`; an empty body is `EmptyBody`.
//!
//! Note what eBay's scheme does not give: the signature covers the timestamp and the keyset,
//! not the body's content. A captured notification could be replayed with another body within
//! the tolerance; keep `tolerance_secs` small for these sources. There is one keyset per source,
//! so no rotation list.
//!
//! Must never: find the elements by string search (comments, CDATA and prefixes would fool it),
//! expand DTD entities, or read the system clock.

use super::{b64_encode, ct_any, src, Incoming, Verifier, VerifyError, B64};
use base64::Engine;
use md5::{Digest, Md5};
use quick_xml::events::Event;
use quick_xml::Reader;
use stockhook_shared::config::SourceConfig;
use stockhook_shared::secret::Secret;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// How errors name the SOAP header element carrying the signature.
pub const SIGNATURE_ELEMENT: &str = "NotificationSignature";
/// How errors name the SOAP body's timestamp element.
pub const TIMESTAMP_ELEMENT: &str = "Timestamp";
/// The pseudo-header `sign()` returns: its value belongs in the SOAP header's
/// `NotificationSignature` element, not in an HTTP header.
pub const SIGN_PSEUDO_HEADER: &str = "notificationsignature";

/// base64(MD5(timestamp + dev + app + cert)): the `NotificationSignature` eBay sends with a
/// notification whose body's Timestamp is `timestamp`. Public so tests can build SOAP bodies.
pub fn legacy_signature(timestamp: &str, dev: &str, app: &str, cert: &str) -> String {
    b64_encode(&md5_of(timestamp, dev, app, cert))
}

fn md5_of(timestamp: &str, dev: &str, app: &str, cert: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(timestamp.as_bytes());
    h.update(dev.as_bytes());
    h.update(app.as_bytes());
    h.update(cert.as_bytes());
    h.finalize().into()
}

/// What the verifier reads from a SOAP notification.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SoapFields {
    /// Text of the first `NotificationSignature` element, trimmed.
    pub signature: Option<String>,
    /// Text of the first `Timestamp` element inside the SOAP `Body`, trimmed.
    pub timestamp: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Signature,
    Timestamp,
}

/// Reads the signature and the timestamp out of a SOAP body. `Err` when the XML is malformed
/// before both were found.
pub fn read_soap(body: &[u8]) -> Result<SoapFields, VerifyError> {
    let not_xml = |e: &dyn std::fmt::Debug| {
        VerifyError::malformed(
            "SOAP body",
            format!(
                "not well-formed XML: {}",
                stockhook_shared::redact::error_kind(e)
            ),
        )
    };
    let mut reader = Reader::from_reader(body);
    reader.config_mut().expand_empty_elements = true;
    let mut out = SoapFields::default();
    let mut depth = 0usize;
    // Depth of the open `Body` element, while inside it.
    let mut body_depth: Option<usize> = None;
    // What is being captured, the depth of its element, and the text so far.
    let mut capture: Option<(Target, usize, String)> = None;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                depth += 1;
                let name = e.local_name();
                let name = name.as_ref();
                if capture.is_none() {
                    if name == b"NotificationSignature" && out.signature.is_none() {
                        capture = Some((Target::Signature, depth, String::new()));
                    } else if name == b"Timestamp"
                        && body_depth.is_some()
                        && out.timestamp.is_none()
                    {
                        capture = Some((Target::Timestamp, depth, String::new()));
                    }
                }
                if name == b"Body" && body_depth.is_none() {
                    body_depth = Some(depth);
                }
            }
            Ok(Event::End(_)) => {
                if let Some((target, at, text)) = capture.take() {
                    if at == depth {
                        let text = text.trim().to_string();
                        match target {
                            Target::Signature => out.signature = Some(text),
                            Target::Timestamp => out.timestamp = Some(text),
                        }
                    } else {
                        capture = Some((target, at, text));
                    }
                }
                if body_depth == Some(depth) {
                    body_depth = None;
                }
                depth = depth.saturating_sub(1);
                if out.signature.is_some() && out.timestamp.is_some() {
                    break;
                }
            }
            Ok(Event::Text(t)) => {
                if let Some((_, _, text)) = capture.as_mut() {
                    text.push_str(&t.unescape().map_err(|e| not_xml(&e))?);
                }
            }
            Ok(Event::CData(c)) => {
                if let Some((_, _, text)) = capture.as_mut() {
                    text.push_str(&c.decode().map_err(|e| not_xml(&e))?);
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(not_xml(&e)),
        }
    }
    Ok(out)
}

pub struct EbayLegacy {
    dev_id: String,
    app_id: String,
    cert_id: Secret,
    tolerance_secs: u64,
}

impl EbayLegacy {
    pub fn new(dev_id: &str, app_id: &str, cert_id: Secret, tolerance_secs: u64) -> EbayLegacy {
        EbayLegacy {
            dev_id: dev_id.to_string(),
            app_id: app_id.to_string(),
            cert_id,
            tolerance_secs,
        }
    }

    pub(crate) fn from_source(source: &SourceConfig) -> Result<EbayLegacy, String> {
        let missing: Vec<&str> = [
            ("dev_id", source.dev_id.as_deref().unwrap_or("").is_empty()),
            ("app_id", source.app_id.as_deref().unwrap_or("").is_empty()),
            (
                "cert_id (or cert_id_env)",
                !matches!(&source.cert_id, Some(c) if !c.expose().is_empty()),
            ),
        ]
        .into_iter()
        .filter_map(|(key, is_missing)| is_missing.then_some(key))
        .collect();
        match (&source.dev_id, &source.app_id, &source.cert_id) {
            (Some(dev), Some(app), Some(cert)) if missing.is_empty() => Ok(EbayLegacy::new(
                dev,
                app,
                cert.clone(),
                source.tolerance_secs,
            )),
            _ => Err(format!(
                "{}: set {} (the application keyset from the eBay developer account: DevID, \
                 AppID, CertID)",
                src(source),
                missing.join(", ")
            )),
        }
    }

    fn expected(&self, timestamp: &str) -> [u8; 16] {
        md5_of(timestamp, &self.dev_id, &self.app_id, self.cert_id.expose())
    }
}

impl Verifier for EbayLegacy {
    fn verify(&self, req: &Incoming<'_>) -> Result<(), VerifyError> {
        if req.body.is_empty() {
            return Err(VerifyError::EmptyBody);
        }
        let fields = read_soap(req.body)?;
        let signature = fields
            .signature
            .filter(|s| !s.is_empty())
            .ok_or_else(|| VerifyError::MissingHeader(SIGNATURE_ELEMENT.into()))?;
        let ts_text = fields.timestamp.filter(|t| !t.is_empty()).ok_or_else(|| {
            VerifyError::malformed(TIMESTAMP_ELEMENT, "no Timestamp element in the SOAP body")
        })?;
        let timestamp = OffsetDateTime::parse(&ts_text, &Rfc3339)
            .map_err(|_| VerifyError::malformed(TIMESTAMP_ELEMENT, "not an RFC 3339 time"))?
            .unix_timestamp();
        let received = B64
            .decode(&signature)
            .map_err(|_| VerifyError::malformed(SIGNATURE_ELEMENT, "not base64"))?;
        if received.len() != 16 {
            return Err(VerifyError::malformed(
                SIGNATURE_ELEMENT,
                format!("decodes to {} bytes, an MD5 has 16", received.len()),
            ));
        }
        let expected = self.expected(&ts_text);
        if !ct_any(&received, [&expected[..]]) {
            return Err(VerifyError::Mismatch);
        }
        if req.now_unix.abs_diff(timestamp) > self.tolerance_secs {
            return Err(VerifyError::StaleTimestamp {
                timestamp,
                now: req.now_unix,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(())
    }

    /// One pseudo-header, `("notificationsignature", <base64 MD5>)`, computed over the body's
    /// own Timestamp: its value goes into the SOAP header's `NotificationSignature` element
    /// (an HTTP header of that name verifies nothing). Empty when the body has no Timestamp in
    /// its SOAP Body (nothing could verify then). `now_unix` and `delivery_id` are not used.
    fn sign(&self, body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        match read_soap(body).ok().and_then(|f| f.timestamp) {
            Some(ts) if !ts.is_empty() => vec![(
                SIGN_PSEUDO_HEADER.to_string(),
                b64_encode(&self.expected(&ts)),
            )],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    const DEV: &str = "dev-123";
    const APP: &str = "app-456";
    const CERT: &str = "cert-789";
    const TS: &str = "2024-01-02T03:04:05.000Z";
    /// `python3 -c 'import datetime; print(int(datetime.datetime(2024,1,2,3,4,5,
    /// tzinfo=datetime.timezone.utc).timestamp()))'`
    const TS_UNIX: i64 = 1_704_164_645;
    /// `python3 -c 'import hashlib,base64; print(base64.b64encode(hashlib.md5(
    /// b"2024-01-02T03:04:05.000Z" b"dev-123" b"app-456" b"cert-789").digest()).decode())'`
    const SIG: &str = "KPHQUxvl8hb/KNIhRG1Z6g==";
    /// The same with cert `cert-OLD`.
    const SIG_OLD_CERT: &str = "rq20E7Kq4Oc+3zk7MwVjaw==";

    /// A Platform Notification shaped as eBay sends it (ItemSold -> GetItemResponse).
    fn soap(signature: &str, timestamp: &str) -> String {
        use stockhook_test_kit::ebay_soap::{notification, ITEM_SOLD};
        notification("GetItemResponse", signature, timestamp, ITEM_SOLD)
    }

    fn verifier() -> EbayLegacy {
        EbayLegacy::new(DEV, APP, Secret::new(CERT), 300)
    }

    fn check(body: &str, now: i64) -> Result<(), VerifyError> {
        verify(&verifier(), &headers(&[]), body.as_bytes(), now)
    }

    #[test]
    fn legacy_signature_matches_python() {
        assert_eq!(legacy_signature(TS, DEV, APP, CERT), SIG);
        assert_eq!(legacy_signature(TS, DEV, APP, "cert-OLD"), SIG_OLD_CERT);
    }

    #[test]
    fn valid_notification_verifies() {
        assert_eq!(check(&soap(SIG, TS), TS_UNIX), Ok(()));
        assert_eq!(check(&soap(SIG, TS), TS_UNIX + 300), Ok(()));
        assert_eq!(check(&soap(SIG, TS), TS_UNIX - 300), Ok(()));
    }

    #[test]
    fn built_from_config_verifies() {
        let s = source(serde_json::json!({
            "scheme": "ebay-legacy", "platform": "ebay",
            "dev_id": DEV, "app_id": APP, "cert_id": CERT, "tolerance_secs": 600
        }));
        let v = super::super::build(&s, None).unwrap();
        let body = soap(SIG, TS);
        assert_eq!(
            verify(v.as_ref(), &headers(&[]), body.as_bytes(), TS_UNIX + 600),
            Ok(())
        );
        assert_eq!(
            verify(v.as_ref(), &headers(&[]), body.as_bytes(), TS_UNIX + 601)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
    }

    #[test]
    fn sign_computes_over_the_body_timestamp() {
        let body = soap("placeholder", TS);
        assert_eq!(
            verifier().sign(body.as_bytes(), 0, "ignored"),
            vec![(SIGN_PSEUDO_HEADER.to_string(), SIG.to_string())]
        );
        assert!(verifier().sign(b"<a/>", 0, "x").is_empty());
        assert!(verifier().sign(b"not xml <", 0, "x").is_empty());
    }

    #[test]
    fn read_soap_finds_both_fields() {
        let f = read_soap(soap(SIG, TS).as_bytes()).unwrap();
        assert_eq!(
            f,
            SoapFields {
                signature: Some(SIG.to_string()),
                timestamp: Some(TS.to_string())
            }
        );
    }

    #[test]
    fn timestamp_outside_the_soap_body_is_not_used() {
        // A Timestamp in the header must not be taken for the response's.
        let body = soap(SIG, "2030-01-01T00:00:00.000Z").replace(
            "</soapenv:Header>",
            &format!("<Timestamp>{TS}</Timestamp></soapenv:Header>"),
        );
        assert_eq!(check(&body, TS_UNIX), Err(VerifyError::Mismatch));
        let no_body_ts = soap(SIG, TS).replace(&format!("<Timestamp>{TS}</Timestamp>"), "");
        let with_header_ts = no_body_ts.replace(
            "</soapenv:Header>",
            &format!("<Timestamp>{TS}</Timestamp></soapenv:Header>"),
        );
        assert_eq!(
            check(&with_header_ts, TS_UNIX),
            Err(VerifyError::malformed(
                "Timestamp",
                "no Timestamp element in the SOAP body"
            ))
        );
    }

    #[test]
    fn comments_and_cdata_do_not_fool_the_reader() {
        let body = soap(SIG, TS).replace(
            "<soapenv:Header>",
            "<soapenv:Header><!-- <NotificationSignature>AAAAAAAAAAAAAAAAAAAAAA==</NotificationSignature> -->",
        );
        assert_eq!(check(&body, TS_UNIX), Ok(()));
        let cdata = soap(&format!("<![CDATA[{SIG}]]>"), TS);
        assert_eq!(check(&cdata, TS_UNIX), Ok(()));
    }

    #[test]
    fn changed_timestamp_byte_is_a_mismatch() {
        let body = soap(SIG, "2024-01-02T03:04:06.000Z");
        assert_eq!(check(&body, TS_UNIX), Err(VerifyError::Mismatch));
    }

    #[test]
    fn changed_content_byte_is_not_detected_by_this_scheme() {
        // eBay's signature does not cover the body's content (documented above): asserted so a
        // change in this behaviour is noticed.
        let body = soap(SIG, TS).replace("<Quantity>10</Quantity>", "<Quantity>11</Quantity>");
        assert_eq!(check(&body, TS_UNIX), Ok(()));
    }

    #[test]
    fn changed_signature_char_is_a_mismatch() {
        assert_eq!(
            check(&soap(&flip_char(SIG, 3), TS), TS_UNIX),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn wrong_cert_dev_or_app_is_a_mismatch() {
        for v in [
            EbayLegacy::new(DEV, APP, Secret::new("cert-OLD"), 300),
            EbayLegacy::new("dev-124", APP, Secret::new(CERT), 300),
            EbayLegacy::new(DEV, "app-457", Secret::new(CERT), 300),
        ] {
            assert_eq!(
                verify(&v, &headers(&[]), soap(SIG, TS).as_bytes(), TS_UNIX),
                Err(VerifyError::Mismatch)
            );
        }
        let old = EbayLegacy::new(DEV, APP, Secret::new("cert-OLD"), 300);
        assert_eq!(
            verify(
                &old,
                &headers(&[]),
                soap(SIG_OLD_CERT, TS).as_bytes(),
                TS_UNIX
            ),
            Ok(())
        );
    }

    #[test]
    fn missing_or_empty_signature_element() {
        let want = Err(VerifyError::MissingHeader("NotificationSignature".into()));
        let absent = soap(SIG, TS).replace(
            &format!(
                "<ebl:NotificationSignature xmlns:ebl=\"urn:ebay:apis:eBLBaseComponents\">{SIG}</ebl:NotificationSignature>"
            ),
            "",
        );
        assert!(!absent.contains("NotificationSignature"));
        assert_eq!(check(&absent, TS_UNIX), want);
        assert_eq!(check(&soap("", TS), TS_UNIX), want);
        assert_eq!(check(&soap("   ", TS), TS_UNIX), want);
        let self_closing = soap(SIG, TS).replace(
            &format!(
                "<ebl:NotificationSignature xmlns:ebl=\"urn:ebay:apis:eBLBaseComponents\">{SIG}</ebl:NotificationSignature>"
            ),
            "<ebl:NotificationSignature/>",
        );
        assert_eq!(check(&self_closing, TS_UNIX), want);
    }

    #[test]
    fn garbage_signature_is_malformed() {
        assert_eq!(
            check(&soap("***not base64***", TS), TS_UNIX),
            Err(VerifyError::malformed(
                "NotificationSignature",
                "not base64"
            ))
        );
        assert_eq!(
            check(&soap("AAAA", TS), TS_UNIX),
            Err(VerifyError::malformed(
                "NotificationSignature",
                "decodes to 3 bytes, an MD5 has 16"
            ))
        );
    }

    #[test]
    fn bad_or_missing_timestamp_is_malformed() {
        assert_eq!(
            check(&soap(SIG, "02/01/2024 03:04:05"), TS_UNIX),
            Err(VerifyError::malformed("Timestamp", "not an RFC 3339 time"))
        );
        assert_eq!(
            check(&soap(SIG, ""), TS_UNIX),
            Err(VerifyError::malformed(
                "Timestamp",
                "no Timestamp element in the SOAP body"
            ))
        );
    }

    #[test]
    fn stale_and_future_timestamps() {
        assert_eq!(
            check(&soap(SIG, TS), TS_UNIX + 301),
            Err(VerifyError::StaleTimestamp {
                timestamp: TS_UNIX,
                now: TS_UNIX + 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(&soap(SIG, TS), TS_UNIX - 301),
            Err(VerifyError::StaleTimestamp {
                timestamp: TS_UNIX,
                now: TS_UNIX - 301,
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn not_xml_and_empty_body() {
        assert_eq!(check("", 0), Err(VerifyError::EmptyBody));
        let e = check("<a><b></a>", 0).unwrap_err();
        assert_eq!(e.code(), "malformed_signature");
        assert!(e.to_string().contains("not well-formed XML"), "{e}");
        // JSON sent to a SOAP source: no elements at all.
        assert_eq!(
            check("{\"a\":1}", 0),
            Err(VerifyError::MissingHeader("NotificationSignature".into()))
        );
    }

    #[test]
    fn config_needs_the_whole_keyset() {
        let e = EbayLegacy::from_source(&source(serde_json::json!({
            "scheme": "ebay-legacy", "dev_id": DEV
        })))
        .err()
        .unwrap();
        assert!(e.contains("set app_id, cert_id (or cert_id_env)"), "{e}");
        let e = EbayLegacy::from_source(&source(serde_json::json!({
            "scheme": "ebay-legacy", "dev_id": DEV, "app_id": APP, "cert_id": ""
        })))
        .err()
        .unwrap();
        assert!(e.contains("set cert_id"), "{e}");
    }
}
