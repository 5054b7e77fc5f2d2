//! A minimal HTTP/1.1 endpoint for scrapes and health checks on a private address
//! (`metrics_listen`): GET only, one request per connection, answered and closed.
//!
//! Why not the receiver's hyper server: this listener must serve nothing but what the handler
//! names (never a webhook), and the worker has no HTTP server at all. A request head over 8 KiB
//! or slower than 5 s is dropped; nothing is logged per request (Prometheus scrapes every 15 s).

use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An answer: status, content type, body.
pub type Answer = (u16, &'static str, String);

/// The Prometheus text exposition content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// Binds `addr` (an `ip:port`), naming `key` in the error.
pub async fn bind(addr: &str, key: &str) -> anyhow::Result<TcpListener> {
    use anyhow::Context as _;
    let parsed: std::net::SocketAddr = addr
        .parse()
        .with_context(|| format!("{key} = {addr:?} is not an ip:port (e.g. \"127.0.0.1:9464\")"))?;
    TcpListener::bind(parsed)
        .await
        .with_context(|| format!("cannot listen on {parsed} ({key}): is another process using it?"))
}

/// Serves `handler(path)` for every GET on `listener` until `stop` turns true.
pub async fn serve<F, Fut>(listener: TcpListener, handler: F, mut stop: watch::Receiver<bool>)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Answer> + Send,
{
    loop {
        let (stream, _) = tokio::select! {
            a = accept(&listener, "metrics listener") => a,
            _ = stop.changed() => return,
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, handler)).await;
        });
    }
}

/// The next connection on `listener`. A failed accept (EMFILE and friends) is logged, naming
/// the listener as `what`, and tried again after a pause instead of spinning.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(conn) => return conn,
            Err(e) => tracing::warn!(error = %e, "{what}: accept failed"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, handler: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Answer>,
{
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
        if head.len() > 8192 {
            return;
        }
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (status, ctype, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) => {
            let path = target.split('?').next().unwrap_or("/").to_string();
            handler(path).await
        }
        _ => (405, "text/plain", "GET only\n".to_string()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "",
    };
    let resp = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}
