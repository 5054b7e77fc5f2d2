//! A real SMTP server with TLS and a login for the mail tests, and the certificates it serves.
//!
//! The server is Debian's python3-aiosmtpd driven by `tests/src/smtp_tls.py` (the module's
//! command line cannot set up AUTH): implicit TLS (`smtps://`), STARTTLS (required by the
//! server), or plain text; one account; AUTH PLAIN and/or LOGIN. Certificates are made in the
//! test with rcgen: a private CA (`ca.pem`, what `[email] smtp_ca_file` points at) and a server
//! certificate it signs, for the names the test chooses (so a name mismatch is one argument).
//! Every stored message carries `X-Authenticated-As: <login>`.

use crate::poll::{deadline_in, poll_until};
use crate::proc::{Proc, TestDir};
use crate::smtp::PYTHON;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A CA and a server certificate it signed, as PEM files in a test directory.
pub struct TestCerts {
    /// The CA certificate: trust it with `smtp_ca_file`.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCerts {
    /// A fresh CA and a certificate for `names` (DNS names, or IP addresses) under `<dir>/<tag>-*.pem`.
    pub fn make(dir: &Path, tag: &str, names: &[&str]) -> TestCerts {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().expect("generating the test CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("stockhook test CA {tag}"));
        let ca = ca_params
            .self_signed(&ca_key)
            .expect("self-signing the test CA");
        let key = KeyPair::generate().expect("generating the server key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server certificate params");
        params
            .distinguished_name
            .push(DnType::CommonName, "stockhook test SMTP server");
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .expect("signing the server certificate");
        let write = |name: &str, text: String| {
            let p = dir.join(format!("{tag}-{name}.pem"));
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
            p
        };
        TestCerts {
            ca: write("ca", ca.pem()),
            cert: write("cert", cert.pem()),
            key: write("key", key.serialize_pem()),
        }
    }
}

/// How the server secures the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerTls {
    None,
    /// STARTTLS offered, and required before MAIL.
    StartTls,
    /// TLS from the first byte.
    Implicit,
}

/// What the server asks of clients.
pub struct TlsSmtpOptions<'a> {
    pub tls: ServerTls,
    /// The certificate (needed unless `tls` is `None`).
    pub certs: Option<&'a TestCerts>,
    /// The one account, `(user, password)`: AUTH required. `None`: no AUTH.
    pub login: Option<(&'a str, &'a str)>,
    /// Mechanisms offered, e.g. `"PLAIN"`, `"LOGIN"`, `"PLAIN,LOGIN"`.
    pub mechanisms: &'a str,
}

/// The running server; dropping it stops it.
pub struct TlsSmtp {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub maildir: PathBuf,
}

impl TlsSmtp {
    /// Starts it on a free loopback port and waits until it accepts connections.
    pub fn start(dir: &TestDir, tag: &str, o: &TlsSmtpOptions<'_>) -> TlsSmtp {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("finding a free loopback port for the TLS SMTP server")
            .port();
        TlsSmtp::on(dir, tag, port, o)
    }

    /// Starts it on `port`.
    pub fn on(dir: &TestDir, tag: &str, port: u16, o: &TlsSmtpOptions<'_>) -> TlsSmtp {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/smtp_tls.py");
        let maildir = dir.path().join(format!("{tag}-maildir"));
        let mut args: Vec<String> = vec![
            script.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--maildir".into(),
            maildir.display().to_string(),
            "--tls".into(),
            match o.tls {
                ServerTls::None => "none",
                ServerTls::StartTls => "starttls",
                ServerTls::Implicit => "implicit",
            }
            .into(),
            "--mechanisms".into(),
            o.mechanisms.into(),
        ];
        if let Some(c) = o.certs {
            args.extend([
                "--cert".into(),
                c.cert.display().to_string(),
                "--key".into(),
                c.key.display().to_string(),
            ]);
        }
        if let Some((u, p)) = o.login {
            args.extend([
                "--user".into(),
                u.to_string(),
                "--password".into(),
                p.to_string(),
            ]);
        }
        let mut proc = dir.spawn(Path::new(PYTHON), &args);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let up = poll_until(deadline_in(Duration::from_secs(20)), || {
            if let Some(st) = proc.try_wait_exit(deadline_in(Duration::ZERO)) {
                panic!(
                    "the TLS SMTP server on {addr} exited ({st}): port taken, or python3-aiosmtpd missing? (.ci/run installs it)"
                );
            }
            (proc.stdout().contains("listening")
                && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            .then_some(())
        });
        assert!(up.is_some(), "the TLS SMTP server on {addr} never listened");
        TlsSmtp {
            proc,
            addr,
            maildir,
        }
    }

    /// The raw messages stored so far.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&new) {
            Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("listing {}: {e}", new.display()),
        };
        files.sort();
        files
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            })
            .collect()
    }

    /// The messages once there are at least `n`, waiting up to `limit`.
    pub fn wait_messages(&self, n: usize, limit: Duration) -> Vec<String> {
        poll_until(deadline_in(limit), || {
            let m = self.messages();
            (m.len() >= n).then_some(m)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} of {n} messages reached the TLS SMTP server within {limit:?}:\n{}",
                self.messages().len(),
                self.proc.dump()
            )
        })
    }
}
