//! A secret value that never prints: `Debug` and `Display` show `[redacted]`, so a config dump,
//! a log line or a panic message cannot leak a webhook key or an SMTP password.

use std::cell::Cell;
use std::fmt;

use sha2::{Digest, Sha256};

thread_local! {
    /// Set only inside [`fingerprint`]: secrets then serialize as digests, not masked.
    static AS_DIGEST: Cell<bool> = const { Cell::new(false) };
}

/// `value` serialized to JSON with each [`Secret`] in it as the SHA-256 of the secret rather
/// than its masked form, so that comparing two fingerprints sees every change, a rotated token of
/// the same length and ending included. For comparing configs only: never log or store it.
pub fn fingerprint(value: &impl serde::Serialize) -> String {
    AS_DIGEST.with(|d| d.set(true));
    let out = serde_json::to_string(value).unwrap_or_default();
    AS_DIGEST.with(|d| d.set(false));
    out
}

#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used (signing, verifying, authenticating).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A masked form for `check-config`: the length and the last two characters at most.
    pub fn masked(&self) -> String {
        let n = self.0.chars().count();
        if n < 12 {
            format!("[redacted, {n} chars]")
        } else {
            let tail: String = self.0.chars().skip(n - 2).collect();
            format!("[redacted, {n} chars, ends ..{tail}]")
        }
    }
}

/// Serializes masked (`check-config`'s printout), or as a digest inside [`fingerprint`].
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if AS_DIGEST.with(Cell::get) {
            let digest = Sha256::digest(self.0.as_bytes());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            s.serialize_str(&hex)
        } else {
            s.serialize_str(&self.masked())
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s = Secret::new("hunter2-very-long-secret");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert!(!s.masked().contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-long-secret");
    }

    #[test]
    fn a_fingerprint_sees_a_rotation_that_the_mask_hides() {
        let old = Secret::new("token-aaaaaaaaaaaaaa-xy");
        let new = Secret::new("token-bbbbbbbbbbbbbb-xy");
        assert_eq!(old.masked(), new.masked());
        assert_ne!(fingerprint(&old), fingerprint(&new));
        assert_eq!(fingerprint(&old), fingerprint(&old.clone()));
        assert!(!fingerprint(&old).contains("token"));
        // Outside a fingerprint, serialization is masked again.
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            format!("{:?}", old.masked())
        );
    }
}
