//! A temporary directory per test ([`TestDir`]) and the child processes started in it
//! ([`Proc`]).
//!
//! Contract: a [`Proc`] never outlives its test: dropping it kills the child (SIGKILL) and reaps
//! it. When the test is failing (the thread is panicking) the drop prints the command line, the
//! working directory, the exit status, stdout and stderr, so a red test explains itself (ripgrep's
//! `tests/util.rs` does the same), and the [`TestDir`] is kept on disk with its path printed.
//!
//! Children get a hermetic environment: `RUST_LOG`, every `STOCKHOOK_*` variable, the Flask-era
//! variables the config loader honours, and systemd's notify/watchdog variables are removed, so a
//! developer's shell cannot change what a test sees.

use crate::config::ConfigBuilder;
use crate::poll::{deadline_in, poll_until};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a receiver may take from spawn to its `ready addr=` line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables removed from every child's environment (see the module doc).
const SCRUBBED: &[&str] = &[
    "RUST_LOG",
    "LOW_STOCK_THRESHOLD",
    "NO_SALES_DAYS",
    "EMAIL_SENDER",
    "EMAIL_RECIPIENTS",
    "EMAIL_SMTP_SERVER",
    "EMAIL_SMTP_PORT",
    "EMAIL_PASSWORD",
    "DEBUG_MODE",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "CREDENTIALS_DIRECTORY",
];

/// A temporary directory for one test: config files, `data/`, and the children's output.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    procs: AtomicUsize,
}

impl TestDir {
    /// A fresh directory named after the test.
    pub fn new(test_name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stockhook-{test_name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory for {test_name}: {e}"));
        let path = dir.path().to_path_buf();
        TestDir {
            dir: Some(dir),
            path,
            procs: AtomicUsize::new(0),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir>/data`: the `data_dir` of configs made by [`TestDir::config`].
    pub fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    /// A config builder with `data_dir` = [`TestDir::data_dir`].
    pub fn config(&self) -> ConfigBuilder {
        ConfigBuilder::new(&self.data_dir())
    }

    /// Writes `contents` to `<dir>/<name>` and returns the path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
        p
    }

    /// Writes `config` to `<dir>/<name>` and returns the path.
    pub fn write_config(&self, name: &str, config: &ConfigBuilder) -> PathBuf {
        config.write_to(&self.path.join(name))
    }

    /// Starts `bin` with `args` in this directory, output captured to `<dir>/logs/`.
    pub fn spawn<S: AsRef<OsStr>>(&self, bin: &Path, args: &[S]) -> Proc {
        self.spawn_env(bin, args, &[])
    }

    /// [`TestDir::spawn`] with extra environment variables (set after the scrub, so a test can
    /// pass the original notes' `EMAIL_*` variables on purpose).
    pub fn spawn_env<S: AsRef<OsStr>>(&self, bin: &Path, args: &[S], env: &[(&str, &str)]) -> Proc {
        let n = self.procs.fetch_add(1, Ordering::Relaxed);
        let stem = bin
            .file_name()
            .and_then(|s| s.to_str())
            .unwrap_or("proc")
            .to_string();
        let logs = self.path.join("logs");
        std::fs::create_dir_all(&logs)
            .unwrap_or_else(|e| panic!("creating {}: {e}", logs.display()));
        Proc::spawn_env(
            bin,
            args,
            &self.path,
            &logs.join(format!("{n:02}-{stem}")),
            env,
        )
    }

    /// `stockhook-receiver --config <config> serve`, waited for until it prints `ready addr=`.
    pub fn receiver(&self, config: &Path) -> Proc {
        let mut p = self.spawn(
            crate::bins::receiver(),
            &[
                OsStr::new("--config"),
                config.as_os_str(),
                OsStr::new("serve"),
            ],
        );
        p.wait_ready(deadline_in(READY_TIMEOUT));
        p
    }

    /// `stockhook-worker --config <config> run` (not waited for: the worker prints no `ready`
    /// line; wait for what it does, e.g. with [`mail_files`]).
    pub fn worker(&self, config: &Path) -> Proc {
        self.spawn(
            crate::bins::worker(),
            &[
                OsStr::new("--config"),
                config.as_os_str(),
                OsStr::new("run"),
            ],
        )
    }

    /// Runs `bin args` to completion (at most `timeout`) and returns the finished process, whose
    /// [`Proc::status`], [`Proc::stdout`] and [`Proc::stderr`] the test then reads.
    pub fn run<S: AsRef<OsStr>>(&self, bin: &Path, args: &[S], timeout: Duration) -> Proc {
        let mut p = self.spawn(bin, args);
        p.wait_exit(deadline_in(timeout));
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("stockhook-tests: test directory kept at {}", kept.display());
            }
        }
    }
}

/// Runs `cmd` to completion; its stdout, or a panic naming `what` with its stderr.
pub fn stdout_of(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The `.eml` files under `<data_dir>/mail/`, sorted by name (the worker's file transport).
pub fn mail_files(data_dir: &Path) -> Vec<PathBuf> {
    let dir = data_dir.join("mail");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("listing {}: {e}", dir.display()),
    };
    files.sort();
    files
}

/// A child process owned by a test. See the module doc for what dropping it does.
pub struct Proc {
    child: Child,
    cmdline: String,
    cwd: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    addr: Option<SocketAddr>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `bin args` in `cwd`; stdout and stderr go to `<log_stem>.stdout` / `.stderr`.
    pub fn spawn<S: AsRef<OsStr>>(bin: &Path, args: &[S], cwd: &Path, log_stem: &Path) -> Proc {
        Proc::spawn_env(bin, args, cwd, log_stem, &[])
    }

    /// [`Proc::spawn`] with extra environment variables, set after the scrub.
    pub fn spawn_env<S: AsRef<OsStr>>(
        bin: &Path,
        args: &[S],
        cwd: &Path,
        log_stem: &Path,
        env: &[(&str, &str)],
    ) -> Proc {
        let stdout_path = log_stem.with_extension("stdout");
        let stderr_path = log_stem.with_extension("stderr");
        let out = std::fs::File::create(&stdout_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", stdout_path.display()));
        let err = std::fs::File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", stderr_path.display()));
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, _) in std::env::vars_os() {
            let scrub = k
                .to_str()
                .is_some_and(|k| k.starts_with("STOCKHOOK_") || SCRUBBED.contains(&k));
            if scrub {
                cmd.env_remove(&k);
            }
        }
        cmd.envs(env.iter().copied());
        let mut cmdline = shell_quote(bin.as_os_str());
        for a in args {
            cmdline.push(' ');
            cmdline.push_str(&shell_quote(a.as_ref()));
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning `{cmdline}` in {}: {e}", cwd.display()));
        Proc {
            child,
            cmdline,
            cwd: cwd.to_path_buf(),
            stdout_path,
            stderr_path,
            addr: None,
            status: None,
        }
    }

    /// Waits until stdout has a `ready addr=IP:PORT` line and returns the address. Panics if the
    /// process exits first or `deadline` passes (the drop then dumps its output).
    pub fn wait_ready(&mut self, deadline: Instant) -> SocketAddr {
        let found = poll_until(deadline, || {
            if let Some(addr) = self.ready_addr() {
                return Some(Ok(addr));
            }
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.status = Some(st);
                    // It may have printed the line just before exiting.
                    Some(self.ready_addr().ok_or(st))
                }
                Ok(None) => None,
                Err(e) => panic!("waiting for `{}`: {e}", self.cmdline),
            }
        });
        match found {
            Some(Ok(addr)) => {
                self.addr = Some(addr);
                addr
            }
            Some(Err(status)) => panic!(
                "`{}` exited ({status}) before printing `ready addr=`",
                self.cmdline
            ),
            None => panic!(
                "`{}` printed no `ready addr=` line before the deadline",
                self.cmdline
            ),
        }
    }

    fn ready_addr(&self) -> Option<SocketAddr> {
        self.stdout().lines().find_map(|l| {
            l.strip_prefix("ready addr=").map(|a| {
                a.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("bad ready line {l:?}: {e}"))
            })
        })
    }

    /// The address from the `ready addr=` line. Panics if [`Proc::wait_ready`] did not see one.
    pub fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("`{}` has not announced an address", self.cmdline))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Everything the process wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Everything the process wrote to stderr so far (the logs).
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Sends SIGTERM (the process is not waited for: see [`Proc::wait_exit`]).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        if self.status.is_some() {
            panic!("signal {sig} to `{}`: it already exited", self.cmdline);
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pids fit in pid_t");
        // SAFETY: kill(2) with a pid we spawned and have not reaped (status is None), so the
        // pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            panic!(
                "kill({pid}, {sig}) for `{}`: {}",
                self.cmdline,
                std::io::Error::last_os_error()
            );
        }
    }

    /// SIGKILL, then reaps it; returns the exit status (signal 9).
    pub fn kill9(&mut self) -> ExitStatus {
        if let Some(st) = self.status {
            return st;
        }
        self.child
            .kill()
            .unwrap_or_else(|e| panic!("SIGKILL to `{}`: {e}", self.cmdline));
        let st = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("reaping `{}`: {e}", self.cmdline));
        self.status = Some(st);
        st
    }

    /// The exit status if the process exited by `deadline`, else `None` (still running).
    pub fn try_wait_exit(&mut self, deadline: Instant) -> Option<ExitStatus> {
        if let Some(st) = self.status {
            return Some(st);
        }
        let st = poll_until(deadline, || {
            self.child
                .try_wait()
                .unwrap_or_else(|e| panic!("waiting for `{}`: {e}", self.cmdline))
        })?;
        self.status = Some(st);
        Some(st)
    }

    /// The exit status; panics if the process is still running at `deadline`.
    pub fn wait_exit(&mut self, deadline: Instant) -> ExitStatus {
        let started = Instant::now();
        self.try_wait_exit(deadline).unwrap_or_else(|| {
            panic!(
                "`{}` still running {:?} after waiting for it to exit",
                self.cmdline,
                started.elapsed()
            )
        })
    }

    /// The exit status, if it has been seen to exit.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Command line, cwd, status, stdout and stderr, for a failing test's output.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n---- process ----");
        let _ = writeln!(s, "command: {}", self.cmdline);
        let _ = writeln!(s, "cwd:     {}", self.cwd.display());
        let _ = writeln!(
            s,
            "status:  {}",
            self.status.map_or_else(
                || "still running (killed by the test)".into(),
                |st| st.to_string()
            )
        );
        let _ = writeln!(s, "---- stdout ----\n{}", tail(&self.stdout()));
        let _ = writeln!(s, "---- stderr ----\n{}", tail(&self.stderr()));
        s
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                if std::thread::panicking() {
                    eprintln!("(`{}` was still running: killed, {st})", self.cmdline);
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

/// The last 64 KiB of `text`, marked as cut when it is longer (a burst test logs thousands of
/// lines; the end is what explains a failure).
fn tail(text: &str) -> &str {
    const MAX: usize = 64 * 1024;
    if text.len() <= MAX {
        return text;
    }
    let mut start = text.len() - MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn shell_quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A `/proc/<pid>/status` line's value in KiB (`VmRSS:`, `VmHWM:`), while the process lives.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// utime + stime of every thread of `pid`, in seconds (clock ticks of 10 ms).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_split(pid).map(|(user, sys)| user + sys)
}

/// `pid`'s CPU time so far, every thread, split into user and kernel (system) seconds.
pub fn cpu_split(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = f.get(11)?.parse().ok()?;
    let sys: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some((user as f64 / hz, sys as f64 / hz))
}
