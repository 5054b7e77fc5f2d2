//! The receiver's side of the queue socket: accepts connections on `<data_dir>/queue.sock`
//! (created mode 0600 before anyone can connect), and answers [`protocol`] requests from a
//! [`LocalQueue`]. One task per connection; requests on a connection are answered in order.
//!
//! [`protocol`]: super::protocol

use super::local::LocalQueue;
use super::protocol::{
    read_frame, write_frame, Op, Request, Response, WireDeadShow, WireEnvelope, WireLeased, VERSION,
};
use super::{QueueError, QueueOps};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// Binds the socket with mode 0600: bound under a temporary name, restricted, then renamed into
/// place, so there is no moment at which another user could connect.
pub fn bind(path: &Path) -> Result<UnixListener, QueueError> {
    let err = |what: &str, e: std::io::Error| QueueError::Socket {
        path: path.display().to_string(),
        message: format!("{what}: {e}"),
    };
    let tmp: PathBuf = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| err("binding", e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err("chmod 0600", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("moving into place", e))?;
    Ok(listener)
}

/// Serves until `shutdown` turns true. Open long polls are answered (empty) at shutdown.
pub async fn serve(listener: UnixListener, queue: LocalQueue, mut shutdown: watch::Receiver<bool>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let q = queue.clone();
                    let sd = shutdown.clone();
                    conns.spawn(async move { handle(stream, q, sd).await });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Let connections finish the request they are on.
    while conns.join_next().await.is_some() {}
}

async fn handle(mut stream: UnixStream, queue: LocalQueue, mut shutdown: watch::Receiver<bool>) {
    loop {
        let req: Request = tokio::select! {
            r = read_frame(&mut stream) => match r {
                Ok(Some(req)) => req,
                Ok(None) => return,
                Err(e) => {
                    let _ = write_frame(&mut stream, &Response::err(&QueueError::Socket { path: "queue.sock".into(), message: e.to_string() })).await;
                    return;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let resp = if req.v != VERSION {
            Response {
                ok: false,
                result: None,
                error: Some(format!("protocol version {} is not served here; this receiver speaks version {VERSION}: upgrade both binaries together", req.v)),
                not_found: None,
            }
        } else {
            // A long poll must not hold shutdown up: answer it empty instead.
            let is_lease = matches!(req.op, Op::Lease { .. });
            tokio::select! {
                r = dispatch(&queue, req.op) => r,
                _ = stopped(&mut shutdown), if is_lease => Response::ok(Vec::<WireLeased>::new()),
            }
        };
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
        // Shutting down: the request in hand was answered; close so the receiver can exit.
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Resolves once shutdown has begun, at once if it already has.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

async fn dispatch(q: &LocalQueue, op: Op) -> Response {
    fn answer<T, U: serde::Serialize>(
        r: Result<T, QueueError>,
        f: impl FnOnce(T) -> U,
    ) -> Response {
        match r {
            Ok(v) => Response::ok(f(v)),
            Err(e) => Response::err(&e),
        }
    }
    match op {
        Op::Hello => Response::ok(serde_json::json!({
            "server": concat!("stockhook-receiver ", env!("CARGO_PKG_VERSION")),
            "versions": [VERSION],
        })),
        Op::Lease {
            max,
            wait_ms,
            lease_ms,
        } => answer(q.lease(max, wait_ms.min(60_000), lease_ms).await, |v| {
            v.iter().map(WireLeased::from).collect::<Vec<_>>()
        }),
        Op::Ack { ids } => answer(q.ack(ids).await, |_| ()),
        Op::Fail { id, failure } => answer(q.fail(id, failure).await, |_| ()),
        Op::DeadList { filter } => answer(q.dead_list(filter).await, |v| v),
        Op::DeadShow { id } => answer(q.dead_show(id).await, |(dead, env)| WireDeadShow {
            dead,
            event: WireEnvelope::from(&env),
        }),
        Op::DeadReplay { filter, dry_run } => answer(q.dead_replay(filter, dry_run).await, |v| v),
        Op::DeadPurge { filter, dry_run } => answer(q.dead_purge(filter, dry_run).await, |v| v),
        Op::Get { id } => answer(q.get(id).await, |e| WireEnvelope::from(&e)),
        Op::Stats => answer(q.stats().await, |s| s),
        Op::PurgeMatching { source, needle } => {
            answer(q.purge_matching(source, needle).await, |n| n)
        }
    }
}
