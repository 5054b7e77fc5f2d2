//! The HTTP accept loop and the receiver's lifecycle.
//!
//! [`run_with_tls`] takes a bound listener and a shutdown future (mini-redis style), so tests and the
//! binary drive it the same way. One task per connection, at most `max_connections` at once (a
//! semaphore permit moves into each task). Slow headers get 408 and the connection closed; on
//! shutdown the loop stops accepting, every connection finishes its in-flight request (up to
//! `shutdown_grace`), the committer drains, and the database is flushed.
//!
//! TLS: with an acceptor, each accepted socket does the TLS handshake first
//! (bounded by `header_timeout`; a failed or slow handshake is logged at debug and the
//! connection dropped), then is served by hyper exactly as a plain one. Only the 408 for slow
//! headers differs: it is written raw to a clone of the socket, which cannot be done inside a
//! TLS session, so over TLS a slow request is just closed.

use crate::routes::{self, AppState};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use stockhook_shared::queue::EventSink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// Limits the accept loop applies to each connection.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight requests. With
/// `tls`, HTTPS: every connection is a TLS handshake first (ALPN http/1.1, as the acceptor's
/// config says), then HTTP/1.1 inside it.
pub async fn run_with_tls<S: EventSink>(
    listener: TcpListener,
    state: Arc<AppState<S>>,
    limits: ConnLimits,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let limits = limits.clone();
        let stop = stop_rx.clone();
        let tls = tls.clone();
        conns.spawn(async move {
            match tls {
                None => serve_connection(stream, state, &limits, stop).await,
                Some(acceptor) => {
                    serve_tls_connection(stream, peer, acceptor, state, &limits, stop).await
                }
            }
            drop(permit);
        });
        // Reap finished connection tasks so the set does not grow.
        while conns.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections still open after the shutdown grace; closing them");
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
}

async fn serve_connection<S: EventSink>(
    stream: TcpStream,
    state: Arc<AppState<S>>,
    limits: &ConnLimits,
    stop: watch::Receiver<bool>,
) {
    // A second handle on the socket, to answer 408 after hyper gives up on slow headers (hyper
    // closes without a response).
    let spare = stream
        .into_std()
        .and_then(|s| Ok((s.try_clone()?, s)))
        .and_then(|(spare, s)| {
            s.set_nonblocking(true)?;
            Ok((spare, TcpStream::from_std(s)?))
        });
    let (spare, stream) = match spare {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(error = %e, "cannot set up connection");
            return;
        }
    };
    let partial = Arc::new(AtomicBool::new(false));
    let result = serve_http(stream, partial.clone(), state, limits, stop).await;
    if let Err(e) = result {
        if is_timeout(&e) && partial.load(Ordering::Relaxed) {
            let mut spare = spare;
            let _ = spare.set_nonblocking(true);
            let body = r#"{"status":"error","error":"header_timeout","message":"the request headers did not arrive in time"}"#;
            let response = format!(
                "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = spare.write_all(response.as_bytes());
            let _ = spare.shutdown(std::net::Shutdown::Both);
            tracing::warn!(status = 408, reason = "header_timeout", "webhook refused");
        }
    }
}

/// HTTPS: the handshake (bounded by `header_timeout`, abandoned on shutdown), then HTTP/1.1 over
/// the session. No 408 on slow headers: the connection is just closed.
async fn serve_tls_connection<S: EventSink>(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    state: Arc<AppState<S>>,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
    let stream = tokio::select! {
        r = handshake => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed; connection dropped");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?limits.header_timeout, "TLS handshake too slow; connection dropped");
                return;
            }
        },
        _ = stop.changed() => return,
    };
    let partial = Arc::new(AtomicBool::new(false));
    if let Err(e) = serve_http(stream, partial.clone(), state, limits, stop).await {
        if is_timeout(&e) && partial.load(Ordering::Relaxed) {
            tracing::warn!(
                reason = "header_timeout",
                tls = true,
                "webhook refused: headers too slow, connection closed"
            );
        }
    }
}

/// hyper's HTTP/1.1 over `io` until the client is done, an error, or shutdown (graceful: the
/// in-flight request finishes).
async fn serve_http<S, IO>(
    io: IO,
    partial: Arc<AtomicBool>,
    state: Arc<AppState<S>>,
    limits: &ConnLimits,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error>
where
    S: EventSink,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(Tracked { inner: io, partial });
    let svc = service_fn(move |req| routes::handle(state.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        // The head (request line + headers) limit; over it: 431.
        .max_header_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    }
}

fn is_timeout(e: &hyper::Error) -> bool {
    e.is_timeout() || e.to_string().contains("timeout")
}

/// The connection (a TCP socket or a TLS session over one), noting whether a request has
/// started arriving since the last response: a header timeout on an idle keep-alive connection
/// just closes it, on a half-sent request it is a 408.
struct Tracked<IO> {
    inner: IO,
    partial: Arc<AtomicBool>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.partial.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.partial.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.partial.store(false, Ordering::Relaxed);
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
