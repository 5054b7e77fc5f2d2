//! Error text that never quotes input. Parsers (quick-xml, serde_json) put pieces of the document
//! in their messages; those end up in logs and dead letters, where customer data must not go.
//! [`error_kind`] keeps only the error's variant names, e.g. `IllFormed/MismatchedEndTag`.
//! [`error_chain`] is for the other kind: a client's transport errors, which name the failure
//! and never the document.

/// The variant path of an error's `Debug` form, without any field values: at most three names,
/// each an identifier, joined by `/`.
pub fn error_kind(e: &dyn std::fmt::Debug) -> String {
    let text = format!("{e:?}");
    let mut names = Vec::new();
    for part in text.split(['(', '{']) {
        let name: String = part
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // A name must start with an uppercase letter (a variant); anything else is a value.
        if name.is_empty()
            || !name.starts_with(|c: char| c.is_ascii_uppercase())
            || part.trim().len() != name.len()
        {
            break;
        }
        names.push(name);
        if names.len() == 3 {
            break;
        }
    }
    if names.is_empty() {
        "unknown".to_string()
    } else {
        names.join("/")
    }
}

/// An error and its causes on one line, `a: b: c` (hyper's own message alone says little).
/// For transport errors (hyper, rustls, io): their chains name the failure, never the URL or a
/// body. A parser's error quotes its input: use [`error_kind`] for those.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Inner {
        MismatchedEndTag { expected: String, found: String },
        Unrecognized(std::ops::Range<usize>, String),
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Outer {
        IllFormed(Inner),
        Io(String),
    }

    #[test]
    fn keeps_variant_names_and_drops_values() {
        let e = Outer::IllFormed(Inner::MismatchedEndTag {
            expected: "Name".into(),
            found: "Jane Smith".into(),
        });
        assert_eq!(error_kind(&e), "IllFormed/MismatchedEndTag");
        let e = Outer::IllFormed(Inner::Unrecognized(
            3..9,
            " John Smith; 12 Privet Drive".into(),
        ));
        let k = error_kind(&e);
        assert_eq!(k, "IllFormed/Unrecognized");
        assert!(!k.contains("Smith"));
        assert_eq!(error_kind(&Outer::Io("secret".into())), "Io");
        assert_eq!(error_kind(&"plain text"), "unknown");
    }
}
