//! `none`: accepts every request unverified, for local testing only.
//!
//! Why: trying stockhook against `curl` or a platform's "send test notification" button before
//! the secrets are set up.
//!
//! Contract: [`Unsigned::from_source`] (and so [`super::build`]) refuses a source that does not
//! say `insecure = true`, so an unsigned endpoint never exists by accident; once built, `verify`
//! always succeeds and `sign` adds no header.
//!
//! Must never: be built without `insecure = true`, or look at the request at all.

use super::{Incoming, Verifier, VerifyError};
use stockhook_shared::config::SourceConfig;

pub struct Unsigned;

impl Unsigned {
    pub(crate) fn from_source(source: &SourceConfig) -> Result<Unsigned, String> {
        if source.insecure {
            Ok(Unsigned)
        } else {
            Err(format!(
                "scheme none accepts unsigned requests: set insecure = true on source {:?} if \
                 this is a local test, or choose a signing scheme",
                source.name
            ))
        }
    }
}

impl Verifier for Unsigned {
    fn verify(&self, _req: &Incoming<'_>) -> Result<(), VerifyError> {
        Ok(())
    }

    /// Nothing to attach.
    fn sign(&self, _body: &[u8], _now_unix: i64, _delivery_id: &str) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn refused_without_insecure() {
        let e = super::super::build(&source(serde_json::json!({"scheme": "none"})), None)
            .err()
            .expect("must refuse");
        assert_eq!(
            e,
            "scheme none accepts unsigned requests: set insecure = true on source \"test\" if \
             this is a local test, or choose a signing scheme"
        );
        let e = super::super::build(
            &source(serde_json::json!({"scheme": "none", "insecure": false})),
            None,
        );
        assert!(e.is_err());
    }

    #[test]
    fn accepts_anything_when_insecure() {
        let v = super::super::build(
            &source(serde_json::json!({"scheme": "none", "insecure": true})),
            None,
        )
        .unwrap();
        let body = own_payload("shopify/orders_create.json");
        assert_eq!(verify(v.as_ref(), &headers(&[]), &body, 0), Ok(()));
        assert_eq!(
            verify(v.as_ref(), &headers(&[("x-junk", "1")]), b"", i64::MIN),
            Ok(())
        );
        assert!(v.sign(&body, 0, "id").is_empty());
    }
}
