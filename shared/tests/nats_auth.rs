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
    let port = free_port();
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
    round_trip(&sink, &options(&good, &pki, true, true), b"{\"tls\":true}").await;

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

// --- NKey and .creds (JWT, operator mode) -------------------------------------------------------
//
// Keys are made here with the nkeys crate; JWTs are signed as `nsc` signs them (header
// {"typ":"JWT","alg":"ed25519-nkey"}, base64url without padding, an ed25519 signature of
// `header.claims` by the issuer's key), and the server trusts the operator and preloads the
// account (`resolver: MEMORY`).

/// Starts `nats-server -c` on a config made of `auth` (and JetStream), polled until `opts`
/// connects: returns the server and the first sink that connected.
async fn start_with(bin: &Path, dir: &Path, auth: &str, opts: &NatsOptions) -> (Server, NatsSink) {
    let conf = dir.join("nats.conf");
    let port = opts
        .urls
        .first()
        .and_then(|u| u.rsplit(':').next())
        .unwrap()
        .to_string();
    std::fs::write(
        &conf,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{store}\" }}\n{auth}\n",
            store = dir.join("store").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("nats.log")).unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawning nats-server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match NatsSink::connect(opts.clone()).await {
            Ok(s) => return (server, s),
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for nats-server: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!(
                "cannot connect: {e}\nnats-server's log:\n{}",
                std::fs::read_to_string(dir.join("nats.log")).unwrap_or_default()
            ),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Appends one event through `sink` and leases it back through a queue made with `opts`.
async fn round_trip(sink: &NatsSink, opts: &NatsOptions, body: &'static [u8]) {
    let out = sink
        .append(NewEvent {
            source: "shop".into(),
            platform: Platform::Simple,
            received_at_ms: now_ms(),
            headers: vec![],
            body: bytes::Bytes::from_static(body),
            dedup_key: None,
        })
        .await
        .unwrap();
    let AppendOutcome::Accepted(id) = out else {
        panic!("{out:?}")
    };
    let q = NatsQueue::connect(opts.clone()).await.unwrap();
    let leased = q.lease(10, 2000, 0).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(leased[0].envelope.id, id);
    assert_eq!(leased[0].envelope.body, body);
}

/// Connecting with `opts` fails, promptly, with an error that shows none of `secrets`.
async fn refused(what: &str, opts: NatsOptions, secrets: &[&str]) {
    let started = Instant::now();
    let Err(e) = NatsSink::connect(opts).await else {
        panic!("connected with {what}")
    };
    let shown = format!("{e} {e:?}");
    for s in secrets {
        assert!(
            !shown.contains(s),
            "{what}: the error shows a secret: {shown}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{what}: refusal took {:?}",
        started.elapsed()
    );
    eprintln!("{what}: refused: {e}");
}

#[tokio::test]
async fn nkey_user_signs_the_nonce() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let seed_file = dir.path().join("stockhook.nk");
    std::fs::write(&seed_file, format!("{seed}\n")).unwrap();
    let url = format!("nats://127.0.0.1:{}", free_port());
    let mut opts = NatsOptions::new(&url, "nkey-test");
    opts.nkey_seed_file = Some(seed_file);
    let auth = format!(
        "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
        user.public_key()
    );
    let (_server, sink) = start_with(&bin, dir.path(), &auth, &opts).await;
    round_trip(&sink, &opts, b"{\"nkey\":true}").await;

    // Another user's seed, no seed at all, and a file that is not a seed are refused, and no
    // error shows a seed.
    let other = nkeys::KeyPair::new_user();
    let other_seed = other.seed().unwrap();
    let other_file = dir.path().join("other.nk");
    std::fs::write(&other_file, &other_seed).unwrap();
    let mut wrong = opts.clone();
    wrong.nkey_seed_file = Some(other_file);
    refused("another user's seed", wrong, &[&seed, &other_seed]).await;
    let mut none = opts.clone();
    none.nkey_seed_file = None;
    refused("no seed", none, &[&seed]).await;
    let account = nkeys::KeyPair::new_account();
    let account_seed = account.seed().unwrap();
    let bad_file = dir.path().join("bad.nk");
    std::fs::write(&bad_file, &account_seed).unwrap();
    let mut bad = opts.clone();
    bad.nkey_seed_file = Some(bad_file.clone());
    refused("an account's seed", bad.clone(), &[&account_seed]).await;
    std::fs::write(&bad_file, "SUnot-a-seed-at-all\n").unwrap();
    refused("a file that is not a seed", bad, &["SUnot-a-seed"]).await;
}

/// A JWT as `nsc` writes it: `claims` (without iss/sub/iat/jti) issued by `issuer` about `subject`.
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let mut claims = serde_json::json!({
        "iat": now_ms() / 1000,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    // jti: an id, the claims' hash (nsc writes it in base32; the server only reads it).
    let hash = sha2::Sha256::digest(serde_json::to_vec(&claims).unwrap());
    claims["jti"] = serde_json::Value::String(URL_SAFE_NO_PAD.encode(hash));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
    let signed = format!("{header}.{body}");
    let sig = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// A user's `.creds` file as `nsc generate creds` writes it.
fn creds(user_jwt: &str, user: &nkeys::KeyPair) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    )
}

fn user_claims() -> serde_json::Value {
    serde_json::json!({"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                       "type": "user", "version": 2})
}

#[tokio::test]
async fn creds_file_in_operator_mode() {
    let Some(bin) = nats_server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let operator = nkeys::KeyPair::new_operator();
    let system = nkeys::KeyPair::new_account();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        &operator.public_key(),
        "op",
        serde_json::json!({"type": "operator", "version": 2,
                           "system_account": system.public_key()}),
    );
    let unlimited = serde_json::json!({"subs": -1, "data": -1, "payload": -1, "imports": -1,
        "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1});
    let system_jwt = jwt(
        &operator,
        &system.public_key(),
        "SYS",
        serde_json::json!({"type": "account", "version": 2, "limits": {"subs": -1, "data": -1,
            "payload": -1, "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1}}),
    );
    let account_jwt = jwt(
        &operator,
        &account.public_key(),
        "stockhook",
        serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
    );
    let user_jwt = jwt(&account, &user.public_key(), "stockhook", user_claims());
    let operator_file = dir.path().join("operator.jwt");
    std::fs::write(&operator_file, &operator_jwt).unwrap();
    let creds_file = dir.path().join("stockhook.creds");
    std::fs::write(&creds_file, creds(&user_jwt, &user)).unwrap();

    let url = format!("nats://127.0.0.1:{}", free_port());
    let mut opts = NatsOptions::new(&url, "creds-test");
    opts.credentials = Some(creds_file);
    let auth = format!(
        "operator: \"{op}\"\nsystem_account: \"{sys}\"\nresolver: MEMORY\n\
         resolver_preload: {{\n  {sys}: \"{system_jwt}\"\n  {acc}: \"{account_jwt}\"\n}}",
        op = operator_file.display(),
        sys = system.public_key(),
        acc = account.public_key(),
    );
    let (_server, sink) = start_with(&bin, dir.path(), &auth, &opts).await;
    round_trip(&sink, &opts, b"{\"creds\":true}").await;

    // A user issued by an account the operator never signed, and a .creds whose seed is not the
    // JWT's user, are refused; no error shows a seed or a JWT.
    let stranger = nkeys::KeyPair::new_account();
    let stranger_jwt = jwt(&stranger, &user.public_key(), "stranger", user_claims());
    let mismatched = nkeys::KeyPair::new_user();
    for (what, text, secrets) in [
        (
            "a user of an unknown account",
            creds(&stranger_jwt, &user),
            vec![user.seed().unwrap(), stranger_jwt.clone()],
        ),
        (
            "a seed that is not the JWT's user",
            creds(&user_jwt, &mismatched),
            vec![mismatched.seed().unwrap(), user_jwt.clone()],
        ),
    ] {
        let f = dir.path().join("wrong.creds");
        std::fs::write(&f, text).unwrap();
        let mut wrong = opts.clone();
        wrong.credentials = Some(f);
        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        refused(what, wrong, &secrets).await;
    }
}
