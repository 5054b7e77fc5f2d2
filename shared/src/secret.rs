//! A secret value that never prints: `Debug` and `Display` show `[redacted]`, so a config dump,
//! a log line or a panic message cannot leak a webhook key or an SMTP password.

use std::fmt;

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

/// Serializes masked: the only serialization is `check-config`'s printout.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
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
}
