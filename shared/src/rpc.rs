//! The RPC layer under both Unix sockets (`queue.sock`, served by the receiver; `worker.sock`,
//! served by the worker), written once: framing, the versioned request and response, the private
//! bind, the serve loop and the client. Each socket brings only its own operations (an `Op` enum
//! tagged by `"op"`) and a [`Service`] answering them.
//!
//! Wire: each message is a frame, a 4-byte big-endian length then that many bytes of JSON. The
//! client sends one [`Request`] and reads one [`Response`], in turn; one connection carries any
//! number of them. Every request carries `"v": 1`; a server that does not speak the version
//! answers an error naming the one it does. Errors: `{"ok": false, "error": "...",
//! "not_found": "<id>"?}`.
//!
//! Invariant: the socket is never reachable by another user: it is bound under a temporary name,
//! restricted to 0600, then renamed into place ([`bind_private`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{watch, Mutex};

/// The protocol version both sockets speak.
pub const VERSION: u32 = 1;
/// Largest frame either side accepts (a lease answer is capped well below this:
/// [`crate::queue::protocol::MAX_LEASE_BYTES`]).
pub const MAX_FRAME: usize = 512 << 20;

/// One request: the version and a socket's own operation, flattened beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<Op> {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

/// One answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The id the operator named that does not exist, so the client can say "no such ...".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_found: Option<String>,
}

impl Response {
    pub fn ok(result: impl Serialize) -> Response {
        Response {
            ok: true,
            result: Some(serde_json::to_value(result).unwrap_or(serde_json::Value::Null)),
            error: None,
            not_found: None,
        }
    }

    pub fn err(message: impl Into<String>, not_found: Option<String>) -> Response {
        Response {
            ok: false,
            result: None,
            error: Some(message.into()),
            not_found,
        }
    }

    /// The result as `T`, or the server's refusal.
    pub fn into_result<T: DeserializeOwned>(self) -> Result<T, RpcError> {
        if !self.ok {
            return Err(RpcError::Refused {
                message: self
                    .error
                    .unwrap_or_else(|| "error without a message".into()),
                not_found: self.not_found,
            });
        }
        serde_json::from_value(self.result.unwrap_or(serde_json::Value::Null))
            .map_err(|e| RpcError::BadAnswer(e.to_string()))
    }
}

/// What went wrong with a call, by what the caller does about it. No path: each socket's client
/// wraps these into its own error with the socket's path.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// Nobody listens (the serving process is stopped, or another data_dir).
    #[error("cannot connect ({0})")]
    Connect(std::io::Error),
    /// The connection broke mid-call; the next call reconnects.
    #[error("{0}")]
    Io(std::io::Error),
    /// The server closed the connection before answering (restarting or stopping).
    #[error("the server closed the connection")]
    Closed,
    /// The server answered with an error.
    #[error("{message}")]
    Refused {
        message: String,
        not_found: Option<String>,
    },
    /// The answer was not of the expected shape.
    #[error("unexpected answer: {0}")]
    BadAnswer(String),
}

/// Writes one frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(&bytes).await?;
    w.flush().await
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {n} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await?;
    serde_json::from_slice(&buf).map(Some).map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad frame: {e}"))
    })
}

/// A bind that failed, with the step and the path.
#[derive(Debug, thiserror::Error)]
#[error("socket {path}: {step}: {source}")]
pub struct BindError {
    pub path: String,
    pub step: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Binds the socket with mode 0600: bound under a temporary name, restricted, then renamed into
/// place, so there is no moment at which another user could connect.
pub fn bind_private(path: &Path) -> Result<UnixListener, BindError> {
    let err = |step: &'static str| {
        move |source| BindError {
            path: path.display().to_string(),
            step,
            source,
        }
    };
    let tmp: PathBuf = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err("binding"))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(err("chmod 0600"))?;
    std::fs::rename(&tmp, path).map_err(err("moving into place"))?;
    Ok(listener)
}

/// One socket's operations.
pub trait Service: Send + Sync + 'static {
    /// The socket's own operations, tagged by `"op"`.
    type Op: DeserializeOwned + Send;
    /// Who serves, for the version refusal ("receiver", "worker").
    const NAME: &'static str;
    /// Answers one operation.
    fn call(&self, op: Self::Op) -> impl Future<Output = Response> + Send;
    /// The answer for an operation still running when shutdown begins, which then stops waiting
    /// for it (a long poll); `None` lets it finish.
    fn at_shutdown(&self, _op: &Self::Op) -> Option<Response> {
        None
    }
}

/// Serves until `shutdown` turns true, one task per connection, requests on a connection
/// answered in order. At shutdown each connection finishes the request it is on, then closes;
/// this returns once all have.
pub async fn serve<S: Service>(
    listener: UnixListener,
    service: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(handle(stream, service.clone(), shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, server = S::NAME, "socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    while conns.join_next().await.is_some() {}
}

async fn handle<S: Service>(
    mut stream: UnixStream,
    service: Arc<S>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let req: Request<S::Op> = tokio::select! {
            r = read_frame(&mut stream) => match r {
                Ok(Some(req)) => req,
                Ok(None) => return,
                Err(e) => {
                    let _ = write_frame(&mut stream, &Response::err(e.to_string(), None)).await;
                    return;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let resp = if req.v != VERSION {
            Response::err(
                format!(
                    "protocol version {} is not served here; this {} speaks version {VERSION}: \
                     upgrade both binaries together",
                    req.v,
                    S::NAME
                ),
                None,
            )
        } else {
            match service.at_shutdown(&req.op) {
                Some(cut) => tokio::select! {
                    r = service.call(req.op) => r,
                    _ = stopped(&mut shutdown) => cut,
                },
                None => service.call(req.op).await,
            }
        };
        if write_frame(&mut stream, &resp).await.is_err() {
            return;
        }
        // Shutting down: the request in hand was answered; close so the server can exit.
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Resolves once shutdown has begun, at once if it already has.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await.map(|_| ());
}

/// The calling side: one request at a time; on any I/O error the connection is dropped and the
/// next call reconnects, so a server restart costs the caller one error.
pub struct RpcClient {
    path: PathBuf,
    conn: Mutex<Option<UnixStream>>,
}

impl RpcClient {
    /// Connects now, so a caller can tell at once whether anyone serves `path`.
    pub async fn connect(path: &Path) -> Result<RpcClient, RpcError> {
        let s = UnixStream::connect(path).await.map_err(RpcError::Connect)?;
        Ok(RpcClient {
            path: path.to_path_buf(),
            conn: Mutex::new(Some(s)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `op` and decodes the answer's result as `T`.
    pub async fn call<Op: Serialize, T: DeserializeOwned>(&self, op: Op) -> Result<T, RpcError> {
        let mut guard = self.conn.lock().await;
        let stream = match &mut *guard {
            Some(s) => s,
            empty => empty.insert(
                UnixStream::connect(&self.path)
                    .await
                    .map_err(RpcError::Connect)?,
            ),
        };
        let req = Request { v: VERSION, op };
        let result: std::io::Result<Option<Response>> = async {
            write_frame(stream, &req).await?;
            read_frame(stream).await
        }
        .await;
        match result {
            Ok(Some(r)) => r.into_result(),
            Ok(None) => {
                *guard = None;
                Err(RpcError::Closed)
            }
            Err(e) => {
                *guard = None;
                Err(RpcError::Io(e))
            }
        }
    }
}
