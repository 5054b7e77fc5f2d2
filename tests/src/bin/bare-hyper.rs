//! `bare-hyper`: the ceiling for docs/PERFORMANCE.md. hyper 1.x in the receiver's shape (a
//! multi-thread tokio runtime, one task per accepted connection under a semaphore, nodelay,
//! `http1::Builder` with the same header timeout and buffer limit, the whole body collected with
//! the same size limit) answering every request `200 {"status":"accepted","id":"evt_..."}`: no
//! routing, no verification, no queue, no disk. What stockhook-receiver adds on top of this is
//! the cost of the product.
//!
//! `bare-hyper [ADDR]` (default 127.0.0.1:8090); prints `ready addr=...`; runs until SIGINT or
//! SIGTERM.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

async fn answer(
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    // Read the body as the receiver does (it must, to verify it), then answer.
    let body = Limited::new(req.into_body(), 2 * 1024 * 1024)
        .collect()
        .await;
    let (status, text) = match body {
        Ok(_) => (
            200,
            format!(
                r#"{{"status":"accepted","id":"evt_{:016x}"}}"#,
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            ),
        ),
        Err(_) => (413, r#"{"status":"error"}"#.to_string()),
    };
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await?;
        println!("ready addr={}", listener.local_addr()?);
        let _ = std::io::stdout().flush();
        let permits = Arc::new(Semaphore::new(1024));
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            Ok::<(), std::io::Error>(())
        };
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p?,
                _ = &mut shutdown => break,
            };
            let (stream, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let conn = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .serve_connection(TokioIo::new(stream), service_fn(answer));
                let _ = conn.await;
                drop(permit);
            });
        }
        Ok(())
    })
}
