//! systemd's readiness and watchdog notifications (`sd_notify(3)`), without a crate.
//!
//! Why: both units are `Type=notify` with `WatchdogSec=`, so systemd starts the worker only once
//! the receiver is really listening (not merely forked), and restarts a process that hangs without
//! crashing. The protocol is one datagram of `KEY=VALUE` lines sent to the `AF_UNIX` socket named
//! in `$NOTIFY_SOCKET`; that is a few lines of std, not worth a dependency (the `sd-notify` and
//! `libsystemd` crates would pull in more code than this file).
//!
//! Outside systemd (a terminal, the integration tests, `deploy/local.sh`) `$NOTIFY_SOCKET` is unset
//! and every call is a no-op returning `Ok(false)`.
//!
//! Usage: call [`ready`] once the process can do its job (the receiver: listening and the queue
//! socket bound; the worker: config loaded and its state database open), [`stopping`] when a
//! SIGTERM starts the graceful shutdown, and, when [`watchdog_interval`] is `Some(d)`, [`watchdog`]
//! every `d` from a task that only runs while the process makes progress.
//!
//! `NotifyAccess=main` in the units: the datagram must come from the main process (any thread of
//! it), which is what a direct `ExecStart=` of the binary gives.

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (one or more newline-separated `KEY=VALUE` assignments, e.g. `READY=1`) to the
/// service manager. `Ok(false)` when `$NOTIFY_SOCKET` is unset or empty (not run by systemd),
/// `Ok(true)` when the datagram was sent.
pub fn notify(state: &str) -> io::Result<bool> {
    notify_with(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

/// `READY=1`: start-up is finished; units ordered `After=` this one may start now.
pub fn ready() -> io::Result<bool> {
    notify("READY=1")
}

/// `STOPPING=1`: a graceful shutdown has begun.
pub fn stopping() -> io::Result<bool> {
    notify("STOPPING=1")
}

/// `RELOADING=1` with `MONOTONIC_USEC=` (what `Type=notify-reload` expects; older systemd shows
/// the unit as reloading): a SIGHUP reload has begun. Send [`ready`] when it is done, whether the
/// new config was taken or refused.
pub fn reloading() -> io::Result<bool> {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// `WATCHDOG=1`: keep-alive ping; without one every `WatchdogSec=`, systemd kills and restarts us.
pub fn watchdog() -> io::Result<bool> {
    notify("WATCHDOG=1")
}

/// How often to call [`watchdog`]: half of `$WATCHDOG_USEC` (systemd's advice, so one late ping is
/// not fatal), or `None` when the watchdog is off, the value is malformed, or `$WATCHDOG_PID` names
/// another process (the variable was inherited from a parent that systemd watches).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn notify_with(socket: Option<&OsStr>, state: &str) -> io::Result<bool> {
    match socket {
        None => Ok(false),
        Some(s) if s.is_empty() => Ok(false),
        Some(s) => notify_to(s, state).map(|()| true),
    }
}

/// Sends one datagram to `socket`: a filesystem path (`/run/systemd/notify`) or, with a leading
/// `@`, a Linux abstract-namespace name. Anything else (a relative path, `vsock:` addresses of
/// newer systemd versions) is refused as `InvalidInput`, as `sd_notify` itself refuses it.
fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    match bytes.first() {
        Some(b'/') => {
            let sent = sock.send_to(state.as_bytes(), socket)?;
            check_whole(sent, state)
        }
        Some(b'@') => send_abstract(&sock, &bytes[1..], state),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={socket:?} is neither an absolute path nor an @abstract name"),
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    check_whole(sent, state)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract-namespace NOTIFY_SOCKET is Linux-only",
    ))
}

fn check_whole(sent: usize, state: &str) -> io::Result<()> {
    if sent == state.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "notify datagram truncated: sent {sent} of {} bytes",
                state.len()
            ),
        ))
    }
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        // Set but not ours (or unparsable): the watchdog is someone else's.
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification datagram");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let sent = notify_with(Some(path.as_os_str()), "READY=1\nSTATUS=listening").unwrap();
        assert!(sent);
        assert_eq!(receive(&server), "READY=1\nSTATUS=listening");
        notify_to(path.as_os_str(), "WATCHDOG=1").unwrap();
        assert_eq!(receive(&server), "WATCHDOG=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!(
            "stockhook-sdnotify-test-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let socket = OsString::from(format!("@{name}"));
        assert!(notify_with(Some(&socket), "STOPPING=1").unwrap());
        assert_eq!(receive(&server), "STOPPING=1");
    }

    #[test]
    fn unset_or_empty_socket_is_a_no_op() {
        assert!(!notify_with(None, "READY=1").unwrap());
        assert!(!notify_with(Some(OsStr::new("")), "READY=1").unwrap());
    }

    #[test]
    fn relative_path_is_refused() {
        let e = notify_with(Some(OsStr::new("notify.sock")), "READY=1").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody-listens.sock");
        assert!(notify_with(Some(path.as_os_str()), "READY=1").is_err());
    }

    #[test]
    fn watchdog_interval_is_half_and_honours_pid() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval_from(Some("30000000"), None, 42), half);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            half
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("41"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
    }
}
