//! A `nats-server -js` process owned by an end-to-end test, with its logs kept in the test
//! directory (dumped when the test fails), and what the NATS suites do to it: join a cluster,
//! wait for `/healthz`, kill it with SIGKILL, and start it again on the same ports and the same
//! file store (a restart, not a new server). The plain per-test server of the crate tests is
//! the test kit's [`stockhook_test_kit::nats::NatsServer`].

use crate::poll::{deadline_in, poll_until};
use crate::proc::{Proc, TestDir};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use stockhook_test_kit::{free_port, nats};

/// One `nats-server -js` process (killed when dropped, its log dumped if the test fails).
pub struct Node {
    pub proc: Proc,
    pub url: String,
    pub monitor: SocketAddr,
    args: Vec<String>,
    bin: PathBuf,
}

impl Node {
    /// Starts `bin` as node `name` on free ports with its store under the test directory;
    /// `cluster` = (this node's cluster port, the other nodes' cluster ports).
    pub fn start(dir: &TestDir, bin: &Path, name: &str, cluster: Option<(u16, &[u16])>) -> Node {
        let port = free_port();
        let mport = free_port();
        let store = dir.path().join(format!("nats-{name}"));
        std::fs::create_dir_all(&store).expect("creating the JetStream store dir");
        let mut args: Vec<String> = vec![
            "-js".into(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            mport.to_string(),
            "-sd".into(),
            store.display().to_string(),
            "-n".into(),
            name.into(),
        ];
        if let Some((cport, routes)) = cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            args.extend([
                "--cluster_name".into(),
                "stockhook-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{cport}"),
                "--routes".into(),
                routes.join(","),
            ]);
        }
        let proc = dir.spawn(bin, &args);
        Node {
            proc,
            url: format!("nats://127.0.0.1:{port}"),
            monitor: SocketAddr::from(([127, 0, 0, 1], mport)),
            args,
            bin: bin.to_path_buf(),
        }
    }

    /// JetStream answers `/healthz` with 200 once it is usable (in a cluster: a metadata
    /// leader is elected and this node is current).
    pub fn healthy(&self) -> bool {
        nats::healthy(self.monitor)
    }

    /// SIGKILL, then the same server again: same ports, same file store, same name.
    pub fn kill9_and_restart(&mut self, dir: &TestDir) {
        self.proc.kill9();
        self.proc = dir.spawn(&self.bin, &self.args);
    }
}

/// Waits (up to 60 s) until every node is healthy; panics otherwise.
pub fn wait_healthy(nodes: &[&Node]) {
    let ok = poll_until(deadline_in(Duration::from_secs(60)), || {
        nodes.iter().all(|n| n.healthy()).then_some(())
    });
    assert!(ok.is_some(), "nats-server not healthy within 60 s");
}
