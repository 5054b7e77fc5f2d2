//! The receiver terminating TLS itself: the real binary, started with `[receiver] tls_cert` and
//! `tls_key` (a self-signed certificate made here for localhost / 127.0.0.1), takes a signed
//! Shopify webhook over HTTPS, gives a plain-HTTP client no answer, and refuses to start with a
//! bad TLS configuration, naming the file or the key.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stockhook_test_kit::proc::KillOnDrop;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const SECRET: &str = "tls-test-shopify-secret";
const BODY: &str = r#"{"id":788032119674292922,"title":"Example T-Shirt","variants":[{"id":642667041472713922,"sku":"TS-1","inventory_quantity":3}]}"#;

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files.
struct TestCert {
    cert_pem: String,
    cert_path: PathBuf,
    key_path: PathBuf,
}

fn make_cert(dir: &Path, name: &str) -> TestCert {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen makes a certificate");
    let cert_pem = ck.cert.pem();
    let cert_path = dir.join(format!("{name}-cert.pem"));
    let key_path = dir.join(format!("{name}-key.pem"));
    std::fs::write(&cert_path, &cert_pem).unwrap();
    std::fs::write(&key_path, ck.key_pair.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    TestCert {
        cert_pem,
        cert_path,
        key_path,
    }
}

/// A config with one Shopify source; `receiver_extra` goes into `[receiver]`.
fn write_config(dir: &Path, receiver_extra: &str) -> PathBuf {
    let data = dir.join("data");
    let text = format!(
        r#"data_dir = "{data}"
log_format = "text"

[receiver]
listen = "127.0.0.1:0"
header_timeout = "3s"
{receiver_extra}

[[sources]]
name = "shop"
platform = "shopify"
scheme = "shopify-hmac"
secrets = ["{SECRET}"]
"#,
        data = data.display()
    );
    let path = dir.join("stockhook.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_lines(cert: &Path, key: &Path) -> String {
    format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"",
        cert.display(),
        key.display()
    )
}

/// A receiver serving HTTPS (config in `dir`) with a fresh certificate `name`.
fn start_tls(dir: &Path, name: &str) -> (TestCert, Running) {
    let cert = make_cert(dir, name);
    let config = write_config(dir, &tls_lines(&cert.cert_path, &cert.key_path));
    (cert, start(&config))
}

fn receiver(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stockhook-receiver"));
    // No STOCKHOOK_* or Flask-era variables from the caller's environment.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(config)
        .arg("serve")
        .stdin(Stdio::null());
    cmd
}

/// The running binary; killed (by its own pid, through the handle) when dropped.
struct Running {
    child: KillOnDrop,
    addr: SocketAddr,
}

fn start(config: &Path) -> Running {
    let mut child = receiver(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stockhook-receiver");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("ready addr=") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => a.parse().expect("ready line has ip:port"),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("receiver never printed its ready line: {:?}", out.status);
        }
    };
    Running {
        child: KillOnDrop(child),
        addr,
    }
}

/// Runs the binary to its exit (at most 60 s): (exit code, stderr).
fn run_to_exit(config: &Path) -> (Option<i32>, String) {
    let mut child = receiver(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stockhook-receiver");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the receiver started although its TLS config is bad");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn shopify_request(addr: SocketAddr) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(BODY.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "POST /webhooks/shop HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         x-shopify-topic: products/update\r\nx-shopify-hmac-sha256: {sig}\r\n\
         x-shopify-shop-domain: tls-test.myshopify.com\r\nx-shopify-api-version: 2025-01\r\n\
         x-shopify-webhook-id: tls-test-delivery-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// A rustls client trusting only `cert_pem`, offering h2 and http/1.1.
fn tls_connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn https_webhook_is_accepted_and_plain_http_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, running) = start_tls(dir.path(), "server");
    let addr = running.addr;

    // HTTPS, trusting the self-signed certificate, by name and by IP address.
    let connector = tls_connector(&cert.cert_pem);
    for (i, name) in ["localhost", "127.0.0.1"].into_iter().enumerate() {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut tls = connector
            .connect(server_name, tcp)
            .await
            .expect("TLS handshake");
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "ALPN is http/1.1 only"
        );
        let mut req = shopify_request(addr);
        if i == 1 {
            // Another delivery id, so it is not a duplicate.
            let text = String::from_utf8(req)
                .unwrap()
                .replace("delivery-1", "delivery-2");
            req = text.into_bytes();
        }
        tls.write_all(&req).await.unwrap();
        let resp = String::from_utf8_lossy(&read_all(&mut tls).await).to_string();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        assert!(resp.contains(r#""status":"accepted""#), "{resp}");
    }

    // A client that does not trust this certificate fails the handshake.
    let other = make_cert(dir.path(), "other");
    assert!(!handshake_ok(addr, &other.cert_pem).await);

    // Plain HTTP to the TLS port: no HTTP answer at all, let alone a 200.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&shopify_request(addr)).await.unwrap();
    let resp = read_all(&mut tcp).await;
    assert!(
        !resp.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&resp)
    );

    // A client that never says hello, and one that starts a request inside TLS and stalls: both
    // are closed after header_timeout (3 s); the second without a 408 (none can be sent raw
    // inside TLS).
    let silent = async {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let got = read_all(&mut tcp).await;
        (got, started.elapsed())
    };
    let stalled = async {
        let mut tls = handshake(&connector, addr).await.unwrap();
        tls.write_all(b"POST /webhooks/shop HTTP/1.1\r\nhost: localhost\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let got = read_all(&mut tls).await;
        (got, started.elapsed())
    };
    let ((silent_got, silent_took), (stalled_got, stalled_took)) = tokio::join!(silent, stalled);
    assert!(silent_got.is_empty(), "{silent_got:?}");
    assert!(
        stalled_got.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&stalled_got)
    );
    for took in [silent_took, stalled_took] {
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(9),
            "closed after {took:?}"
        );
    }

    // The receiver still serves HTTPS after those failures.
    let mut tls = handshake(&connector, addr).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let resp = String::from_utf8_lossy(&read_all(&mut tls).await).to_string();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    drop(running);
}

#[test]
fn missing_cert_file_is_a_startup_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let missing = dir.path().join("no-such-fullchain.pem");
    let config = write_config(dir.path(), &tls_lines(&missing, &cert.key_path));
    let (code, err) = run_to_exit(&config);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}: {err}");
    assert!(err.contains("receiver.tls_cert"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("cannot read"), "{err}");
    // Refused before binding or opening anything: no queue was created.
    assert!(!dir.path().join("data/queue").exists());
}

#[test]
fn bad_tls_files_and_half_configs_are_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let other = make_cert(dir.path(), "other");
    let not_pem = dir.path().join("not-pem.txt");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let cases: Vec<(String, Vec<String>)> = vec![
        (
            format!("tls_cert = \"{}\"", cert.cert_path.display()),
            vec!["receiver.tls_key is not set".into()],
        ),
        (
            format!("tls_key = \"{}\"", cert.key_path.display()),
            vec!["receiver.tls_cert is not set".into()],
        ),
        (
            tls_lines(&not_pem, &cert.key_path),
            vec![
                "receiver.tls_cert".into(),
                not_pem.display().to_string(),
                "no certificate".into(),
            ],
        ),
        (
            // The certificate given as the key.
            tls_lines(&cert.cert_path, &cert.cert_path),
            vec![
                "receiver.tls_key".into(),
                cert.cert_path.display().to_string(),
                "no private key".into(),
            ],
        ),
        (
            // Another certificate's key.
            tls_lines(&cert.cert_path, &other.key_path),
            vec!["do not make a usable pair".into()],
        ),
    ];
    for (receiver_extra, wants) in cases {
        let config = write_config(dir.path(), &receiver_extra);
        let (code, err) = run_to_exit(&config);
        assert!(
            code.is_some_and(|c| c != 0),
            "{receiver_extra}: exit {code:?}: {err}"
        );
        for want in wants {
            assert!(
                err.contains(&want),
                "{receiver_extra}: wanted {want:?} in: {err}"
            );
        }
    }
}

/// Sends SIGHUP to the running receiver.
fn sighup(running: &Running) {
    let pid = running.child.0.id() as libc::pid_t;
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
}

/// A TCP connection to `addr` and a TLS handshake on it for `localhost` with `connector`.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(server_name, tcp).await
}

/// Whether a handshake trusting only `cert_pem` succeeds now.
async fn handshake_ok(addr: SocketAddr, cert_pem: &str) -> bool {
    handshake(&tls_connector(cert_pem), addr).await.is_ok()
}

/// A renewed certificate written over the old files takes effect on SIGHUP: new handshakes get
/// it, and a connection opened before the reload keeps working on the old session.
#[tokio::test]
async fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (old, running) = start_tls(dir.path(), "old");
    let addr = running.addr;
    assert!(handshake_ok(addr, &old.cert_pem).await);

    // A keep-alive connection opened on the old certificate, one request answered.
    let mut kept = handshake(&tls_connector(&old.cert_pem), addr)
        .await
        .unwrap();
    let health = b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n";
    kept.write_all(health).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // Renewal: the new pair replaces the files the config names, then SIGHUP.
    let new = make_cert(dir.path(), "new");
    std::fs::copy(&new.cert_path, &old.cert_path).unwrap();
    std::fs::copy(&new.key_path, &old.key_path).unwrap();
    sighup(&running);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !handshake_ok(addr, &new.cert_pem).await {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served within 30 s of SIGHUP"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!handshake_ok(addr, &old.cert_pem).await);

    // The connection from before the reload still answers.
    kept.write_all(health).await.unwrap();
    let n = kept.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    drop(running);
}
