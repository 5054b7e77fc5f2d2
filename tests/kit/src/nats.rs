//! A `nats-server -js` per test, on free loopback ports with a temporary store, killed when the
//! test ends; and the rule for machines without it: the test skips with a loud line, unless
//! `STOCKHOOK_REQUIRE_NATS=1` (CI), where it fails.

use crate::proc::KillOnDrop;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The variable that makes the NATS tests mandatory.
pub const REQUIRED_VAR: &str = "STOCKHOOK_REQUIRE_NATS";

/// The `nats-server` binary: `NATS_SERVER_BIN` (set but empty means "not installed"), else the
/// first on `PATH`, `/usr/sbin`, `/usr/bin`, `/usr/local/bin`.
pub fn server_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// The server binary, or `None` after a loud SKIPPED line naming `test`.
pub fn require(test: &str) -> Option<PathBuf> {
    let bin = server_bin();
    if bin.is_none() {
        crate::skip::skip(
            test,
            "nats-server is not installed",
            "apt-get install nats-server",
            REQUIRED_VAR,
        );
    }
    bin
}

/// A started [`NatsServer`], or `None` after [`require`]'s loud SKIPPED line naming the running
/// test ([`crate::skip::current_test`]).
pub fn start_required() -> Option<NatsServer> {
    require(&crate::skip::current_test()).map(|bin| NatsServer::start(&bin))
}

/// Whether the monitor port at `monitor` answers `GET /healthz` with 200: JetStream is usable
/// (in a cluster: a metadata leader is elected and this node is current).
pub fn healthy(monitor: SocketAddr) -> bool {
    let Ok(mut c) = TcpStream::connect_timeout(&monitor, Duration::from_secs(1)) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    if c.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200") || answer.starts_with(b"HTTP/1.0 200")
}

/// One standalone `nats-server -js`, ready for JetStream when [`NatsServer::start`] returns.
pub struct NatsServer {
    pub url: String,
    pub monitor: SocketAddr,
    _proc: KillOnDrop,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Starts `bin` on free ports and waits (up to 20 s) until `/healthz` answers 200. A server
    /// that exits first (a port [`crate::free_port`] handed out was taken by another test in
    /// between) is started again on other ports, up to three times; the last one's stderr is in
    /// the failure.
    pub fn start(bin: &Path) -> NatsServer {
        let mut last_err = String::new();
        for _ in 0..3 {
            match NatsServer::try_start(bin) {
                Ok(server) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("{last_err}");
    }

    fn try_start(bin: &Path) -> Result<NatsServer, String> {
        let store = tempfile::tempdir().expect("creating a JetStream store directory");
        let (port, mport) = (crate::free_port(), crate::free_port());
        let log = store.path().join("nats-server.stderr");
        let stderr = std::fs::File::create(&log).expect("creating nats-server's stderr file");
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &mport.to_string(), "-sd"])
            .arg(store.path().join("js"))
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let mut server = NatsServer {
            url: format!("nats://127.0.0.1:{port}"),
            monitor: SocketAddr::from(([127, 0, 0, 1], mport)),
            _proc: KillOnDrop(child),
            _store: store,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !healthy(server.monitor) {
            let exited = server._proc.child().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: String = said.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
                return Err(format!(
                    "nats-server on {} not healthy ({}); its last lines, newest first: {tail}",
                    server.url,
                    match exited {
                        Some(status) => format!("exited: {status}"),
                        None => "still starting after 20 s".into(),
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "exited: exit status: 1")]
    fn a_server_that_exits_before_it_is_healthy_is_reported_not_waited_for() {
        // `false` exits at once whatever its arguments: three attempts, each over at once.
        NatsServer::start(Path::new("/bin/false"));
    }
}
