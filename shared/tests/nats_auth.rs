//! The NATS backend's credentials and TLS options against a real `nats-server -js` that
//! requires TLS with client certificates (verify) and a user and password, with a CA, a server
//! and a client certificate made here: with `nats_tls_ca`, `nats_tls_cert`, `nats_tls_key` and
//! the user in the URL, the receiver's sink appends and the worker's queue leases; without the
//! CA, without the client certificate, or with a wrong password, connecting fails with an error.
//!
//! Without `nats-server` the test prints a loud SKIPPED line and passes, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stockhook_shared::config::Platform;
use stockhook_shared::queue::nats::{NatsOptions, NatsQueue, NatsSink};
use stockhook_shared::queue::{now_ms, AppendOutcome, EventSink, NewEvent, QueueOps};

fn nats_server() -> Option<PathBuf> {
    let found = [
        "/usr/sbin/nats-server",
        "/usr/bin/nats-server",
        "/usr/local/bin/nats-server",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !std::env::var("STOCKHOOK_REQUIRE_NATS").is_ok_and(|v| v == "1"),
            "nats-server not found and STOCKHOOK_REQUIRE_NATS=1: install Debian's nats-server"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"\n!!!!!!!! SKIPPED nats_auth: nats-server is not installed !!!!!!!!\n",
        );
    }
    found
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// PEM files: the CA's certificate, the server's and a client's certificate and key.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()]);
    let (client_cert, client_key) = leaf(vec!["stockhook-client".into()]);
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
    }
}

fn start(bin: &Path, dir: &Path, pki: &Pki, port: u16) -> Server {
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
tls {{
  cert_file: "{cert}"
  key_file: "{key}"
  ca_file: "{ca}"
  verify: true
  timeout: 5
}}
authorization {{ user: "stockhook", password: "s3cret-pass" }}
"#,
            store = dir.join("store").display(),
            cert = pki.server_cert.display(),
            key = pki.server_key.display(),
            ca = pki.ca.display(),
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning nats-server");
    Server(child)
}

fn options(url: &str, pki: &Pki, ca: bool, client: bool) -> NatsOptions {
    let mut o = NatsOptions::new(url, "auth-test");
    if ca {
        o.tls_ca = Some(pki.ca.clone());
    }
    if client {
        o.tls_cert = Some(pki.client_cert.clone());
        o.tls_key = Some(pki.client_key.clone());
    }
    o
}

#[tokio::test]
async fn tls_with_client_certificates_and_a_password() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let _server = start(&bin, dir.path(), &pki, port);
    let good = format!("tls://stockhook:s3cret-pass@127.0.0.1:{port}");

    // The server takes a moment to listen (and to start JetStream): poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(30);
    let sink = loop {
        match NatsSink::connect(options(&good, &pki, true, true)).await {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for nats-server: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect with TLS, client certificate and password: {e}"),
        }
    };
    let out = sink
        .append(NewEvent {
            source: "shop".into(),
            platform: Platform::Simple,
            received_at_ms: now_ms(),
            headers: vec![],
            body: bytes::Bytes::from_static(b"{\"tls\":true}"),
            dedup_key: None,
        })
        .await
        .unwrap();
    let id = match out {
        AppendOutcome::Accepted(id) => id,
        other => panic!("{other:?}"),
    };
    let q = NatsQueue::connect(options(&good, &pki, true, true))
        .await
        .unwrap();
    let leased = q.lease(10, 2000, 0).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].envelope.id, id);
    assert_eq!(leased[0].envelope.body, b"{\"tls\":true}");

    // Each missing or wrong credential is refused with an error, not a hang.
    let wrong_password = format!("tls://stockhook:wrong@127.0.0.1:{port}");
    for (what, url, ca, client) in [
        ("a wrong password", wrong_password.as_str(), true, true),
        ("no client certificate", good.as_str(), true, false),
        (
            "no CA (the server's certificate is not trusted)",
            good.as_str(),
            false,
            true,
        ),
    ] {
        let started = Instant::now();
        let r = NatsSink::connect(options(url, &pki, ca, client)).await;
        let Err(e) = r else {
            panic!("connected with {what}")
        };
        let shown = e.to_string();
        assert!(
            !shown.contains("s3cret-pass") && !shown.contains(":wrong@"),
            "the error shows the password: {shown}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{what}: refusal took {:?}",
            started.elapsed()
        );
    }
}
