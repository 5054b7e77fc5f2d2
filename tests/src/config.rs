//! Config files for the binaries under test: [`ConfigBuilder`] writes the TOML both processes
//! read, with `data_dir` in the test's directory and `listen = "127.0.0.1:0"` so tests never
//! fight over ports.
//!
//! Values are given as TOML text (`.receiver("max_body_bytes", "1024")`,
//! `.receiver("body_timeout", "\"1s\"")`) so a test can also write what the typed config would
//! refuse; strings are quoted with [`toml_str`].

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A TOML basic string holding `s` (JSON string escapes are valid TOML escapes).
pub fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a &str always serializes")
}

/// One `[[sources]]` block.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub platform: String,
    pub scheme: String,
    pub secrets: Vec<String>,
    /// Further keys, as `key = <TOML value>` text.
    pub extra: Vec<(String, String)>,
}

impl SourceSpec {
    pub fn new(name: &str, platform: &str, scheme: &str, secrets: &[&str]) -> SourceSpec {
        SourceSpec {
            name: name.into(),
            platform: platform.into(),
            scheme: scheme.into(),
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
            extra: Vec::new(),
        }
    }

    /// `platform = "shopify"`, `scheme = "shopify-hmac"`.
    pub fn shopify(name: &str, secret: &str) -> SourceSpec {
        SourceSpec::new(name, "shopify", "shopify-hmac", &[secret])
    }

    /// `platform = "simple"`, `scheme = "standard-webhooks"`; `secret` as `whsec_<base64>`.
    pub fn standard_webhooks(name: &str, secret: &str) -> SourceSpec {
        SourceSpec::new(name, "simple", "standard-webhooks", &[secret])
    }

    /// GitHub-style: hex HMAC-SHA256 of the body after `prefix` in `header`.
    pub fn hmac_hex(name: &str, header: &str, prefix: &str, secret: &str) -> SourceSpec {
        SourceSpec::new(name, "simple", "hmac-sha256", &[secret])
            .with("signature_header", &toml_str(header))
            .with("signature_encoding", "\"hex\"")
            .with("signature_prefix", &toml_str(prefix))
    }

    /// `platform = "amazon"`, `scheme = "api-key"` in `header`.
    pub fn api_key(name: &str, header: &str, key: &str) -> SourceSpec {
        SourceSpec::new(name, "amazon", "api-key", &[key])
            .with("signature_header", &toml_str(header))
    }

    /// Adds `key = value` (`value` is TOML text: `"1024"`, `"\"1s\""`, `"{ per_second = 1.0, burst = 3 }"`).
    pub fn with(mut self, key: &str, value: &str) -> SourceSpec {
        self.extra.push((key.into(), value.into()));
        self
    }
}

/// The tables the builder has keys for, in the order they are written.
const TABLES: [&str; 5] = ["receiver", "queue", "worker", "alerts", "email"];

/// Builds a config file. Sections are written in the order TOML needs: top-level keys, the
/// tables, then the `[[sources]]`.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    data_dir: PathBuf,
    top: Vec<(String, String)>,
    /// The keys of each of [`TABLES`], in the same order.
    tables: [Vec<(String, String)>; TABLES.len()],
    sources: Vec<SourceSpec>,
    /// `[[channels]]` blocks: each a list of `key = value` (TOML text values).
    channels: Vec<Vec<(String, String)>>,
    /// TOML appended as it is (e.g. `[dashboard]` with its `[[dashboard.users]]`).
    raw: String,
}

impl ConfigBuilder {
    /// `data_dir = <data_dir>`, `listen = "127.0.0.1:0"`, JSON logs at `info`.
    pub fn new(data_dir: &Path) -> ConfigBuilder {
        ConfigBuilder {
            data_dir: data_dir.to_path_buf(),
            top: vec![
                ("log_level".into(), "\"info\"".into()),
                ("log_format".into(), "\"json\"".into()),
            ],
            tables: Default::default(),
            sources: Vec::new(),
            channels: Vec::new(),
            raw: String::new(),
        }
        .receiver("listen", "\"127.0.0.1:0\"")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    fn set(list: &mut Vec<(String, String)>, key: &str, value: &str) {
        list.retain(|(k, _)| k != key);
        list.push((key.into(), value.into()));
    }

    /// A key of the table `name` (one of [`TABLES`]).
    fn table(mut self, name: &str, key: &str, value: &str) -> Self {
        let i = TABLES
            .iter()
            .position(|t| *t == name)
            .unwrap_or_else(|| panic!("the builder has no table [{name}]"));
        Self::set(&mut self.tables[i], key, value);
        self
    }

    /// A top-level key (`log_level`, `log_format`).
    pub fn top(mut self, key: &str, value: &str) -> Self {
        Self::set(&mut self.top, key, value);
        self
    }
    /// A `[receiver]` key.
    pub fn receiver(self, key: &str, value: &str) -> Self {
        self.table("receiver", key, value)
    }
    /// A `[queue]` key.
    pub fn queue(self, key: &str, value: &str) -> Self {
        self.table("queue", key, value)
    }
    /// A `[worker]` key.
    pub fn worker(self, key: &str, value: &str) -> Self {
        self.table("worker", key, value)
    }
    /// An `[alerts]` key.
    pub fn alerts(self, key: &str, value: &str) -> Self {
        self.table("alerts", key, value)
    }
    /// `[alerts] recipients`.
    pub fn recipients(self, to: &[&str]) -> Self {
        let list: Vec<String> = to.iter().map(|r| toml_str(r)).collect();
        self.alerts("recipients", &format!("[{}]", list.join(", ")))
    }
    /// An `[email]` key.
    pub fn email(self, key: &str, value: &str) -> Self {
        self.table("email", key, value)
    }
    pub fn source(mut self, s: SourceSpec) -> Self {
        self.sources.push(s);
        self
    }
    /// A `[[channels]]` block named `name` of `kind` (`slack`, `webhook`), with more keys
    /// (TOML text values: `("url", "\"http://...\"")`).
    pub fn channel(mut self, name: &str, kind: &str, keys: &[(&str, &str)]) -> Self {
        let mut block = vec![
            ("name".to_string(), toml_str(name)),
            ("kind".to_string(), toml_str(kind)),
        ];
        block.extend(keys.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.channels.push(block);
        self
    }

    /// TOML text appended at the end of the file, as it is (tables the builder has no
    /// helper for, such as `[dashboard]`).
    pub fn raw(mut self, toml: &str) -> Self {
        self.raw.push('\n');
        self.raw.push_str(toml);
        self
    }

    /// The TOML text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "data_dir = {}",
            toml_str(self.data_dir.to_str().expect("test paths are UTF-8"))
        );
        for (k, v) in &self.top {
            let _ = writeln!(out, "{k} = {v}");
        }
        for (name, keys) in TABLES.iter().zip(&self.tables) {
            if keys.is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n[{name}]");
            for (k, v) in keys {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        for s in &self.sources {
            let _ = writeln!(out, "\n[[sources]]");
            let _ = writeln!(out, "name = {}", toml_str(&s.name));
            let _ = writeln!(out, "platform = {}", toml_str(&s.platform));
            let _ = writeln!(out, "scheme = {}", toml_str(&s.scheme));
            if !s.secrets.is_empty() {
                let list: Vec<String> = s.secrets.iter().map(|x| toml_str(x)).collect();
                let _ = writeln!(out, "secrets = [{}]", list.join(", "));
            }
            for (k, v) in &s.extra {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        for c in &self.channels {
            let _ = writeln!(out, "\n[[channels]]");
            for (k, v) in c {
                let _ = writeln!(out, "{k} = {v}");
            }
        }
        out.push_str(&self.raw);
        out
    }

    /// Writes the file at `path` and returns `path`.
    pub fn write_to(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.render())
            .unwrap_or_else(|e| panic!("writing config {}: {e}", path.display()));
        path.to_path_buf()
    }
}
