//! The HTTP accept loop and the receiver's lifecycle.
//!
//! [`run`] takes a bound listener and a shutdown future (mini-redis style), so tests and the
//! binary drive it the same way. One task per connection, at most `max_connections` at once (a
//! semaphore permit moves into each task). Slow headers get 408 and the connection closed; on
//! shutdown the loop stops accepting, every connection finishes its in-flight request (up to
//! `shutdown_grace`), the committer drains, and the database is flushed.

use crate::routes::{self, AppState};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io::Write as _;
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

/// Limits the accept loop applies to each connection.
#[derive(Clone, Debug)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves HTTP on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn run<S: EventSink>(
    listener: TcpListener,
    state: Arc<AppState<S>>,
    limits: ConnLimits,
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
        let (stream, _peer) = tokio::select! {
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
        conns.spawn(async move {
            serve_connection(stream, state, &limits, stop).await;
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
    mut stop: watch::Receiver<bool>,
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
    let io = TokioIo::new(Tracked {
        inner: stream,
        partial: partial.clone(),
    });
    let svc = service_fn(move |req| routes::handle(state.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        let timed_out = e.to_string().contains("timeout") || e.is_timeout();
        if timed_out && partial.load(Ordering::Relaxed) {
            let mut spare = spare;
            let _ = spare.set_nonblocking(true);
            let _ = spare.write_all(
                b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: 71\r\n\r\n{\"status\":\"error\",\"error\":\"header_timeout\",\"message\":\"headers too slow\"}",
            );
            let _ = spare.shutdown(std::net::Shutdown::Both);
            tracing::warn!(status = 408, reason = "header_timeout", "webhook refused");
        }
    }
}

/// The socket, noting whether a request has started arriving since the last response: a header
/// timeout on an idle keep-alive connection just closes it, on a half-sent request it is a 408.
struct Tracked {
    inner: TcpStream,
    partial: Arc<AtomicBool>,
}

impl AsyncRead for Tracked {
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

impl AsyncWrite for Tracked {
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
