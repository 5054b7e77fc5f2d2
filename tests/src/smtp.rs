//! A throwaway SMTP server for the worker's email tests: Debian's `python3-aiosmtpd` (installed
//! by `.ci/run`) run as `python3 -m aiosmtpd` with its `Mailbox` handler, which stores every
//! message it accepts as one file under `<maildir>/new/`.
//!
//! It uses `/usr/bin/python3` (Debian's, where apt installs the module), not whatever `python3`
//! comes first on `PATH`.

use crate::poll::{deadline_in, poll_until};
use crate::proc::{Proc, TestDir};
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The interpreter that has `aiosmtpd` once `.ci/run` installed it.
pub const PYTHON: &str = "/usr/bin/python3";

/// A running SMTP sink; dropping it stops the server.
pub struct SmtpSink {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub maildir: PathBuf,
}

impl SmtpSink {
    /// Starts the server on a free loopback port, storing mail under `<dir>/smtp-mail`, and waits
    /// until it greets with `220`.
    pub fn start(dir: &TestDir) -> SmtpSink {
        // Ask the kernel for a free port, then hand it over (the window in between is tiny and
        // a collision fails loudly in `on`, it does not hang).
        SmtpSink::on(
            dir,
            stockhook_test_kit::free_port(),
            &dir.path().join("smtp-mail"),
        )
    }

    /// Starts the server on `port`, storing mail in `maildir` (kept across restarts), and waits
    /// until it greets with `220`.
    pub fn on(dir: &TestDir, port: u16, maildir: &Path) -> SmtpSink {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let listen = format!("127.0.0.1:{port}");
        let maildir_arg = maildir.to_str().expect("test paths are UTF-8").to_string();
        let mut proc = dir.spawn(
            Path::new(PYTHON),
            &[
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &listen,
                "-c",
                "aiosmtpd.handlers.Mailbox",
                &maildir_arg,
            ],
        );
        let greeted = poll_until(deadline_in(Duration::from_secs(20)), || {
            if let Some(st) = proc.try_wait_exit(deadline_in(Duration::ZERO)) {
                panic!(
                    "the SMTP sink on {addr} exited ({st}) before greeting: port taken, or python3-aiosmtpd missing? (.ci/run installs it)"
                );
            }
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            let mut banner = [0u8; 3];
            s.read_exact(&mut banner).ok()?;
            (&banner == b"220").then_some(())
        });
        assert!(greeted.is_some(), "the SMTP sink on {addr} never greeted");
        SmtpSink {
            proc,
            addr,
            maildir: maildir.to_path_buf(),
        }
    }

    /// `smtp://127.0.0.1:<port>` for `[email] smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://{}", self.addr)
    }

    /// The raw messages received so far, oldest first.
    pub fn messages(&self) -> Vec<String> {
        let new = self.maildir.join("new");
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = match std::fs::read_dir(&new) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| {
                    let p = e.path();
                    let t = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (t, p)
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("listing {}: {e}", new.display()),
        };
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| {
                String::from_utf8_lossy(
                    &std::fs::read(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display())),
                )
                .into_owned()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Write as _};

    /// Sends one message by hand and finds it in the maildir: the sink works as the worker's
    /// tests will use it.
    #[test]
    fn the_sink_stores_what_it_receives() {
        let dir = TestDir::new("smtp-sink");
        let sink = SmtpSink::start(&dir);
        let stream = TcpStream::connect(sink.addr).expect("connecting to the SMTP sink");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting a read timeout");
        let mut w = stream.try_clone().expect("cloning the SMTP socket");
        let mut r = BufReader::new(stream);
        let mut expect = |code: &str| {
            let mut line = String::new();
            r.read_line(&mut line).expect("reading an SMTP reply");
            assert!(line.starts_with(code), "expected {code}, got {line:?}");
        };
        expect("220");
        for (cmd, code) in [
            ("HELO stockhook-tests\r\n", "250"),
            ("MAIL FROM:<stockhook@example.com>\r\n", "250"),
            ("RCPT TO:<inventory@example.com>\r\n", "250"),
            ("DATA\r\n", "354"),
            (
                "Subject: low stock\r\n\r\nsink-self-test-marker\r\n.\r\n",
                "250",
            ),
            ("QUIT\r\n", "221"),
        ] {
            w.write_all(cmd.as_bytes())
                .expect("writing an SMTP command");
            expect(code);
        }
        let msgs = poll_until(deadline_in(Duration::from_secs(10)), || {
            let m = sink.messages();
            (!m.is_empty()).then_some(m)
        })
        .expect("the sink stored no message");
        assert_eq!(msgs.len(), 1);
        assert!(msgs[0].contains("sink-self-test-marker"), "{}", msgs[0]);
        assert!(msgs[0].contains("Subject: low stock"), "{}", msgs[0]);
    }
}
