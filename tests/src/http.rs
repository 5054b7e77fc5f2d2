//! A small blocking HTTP/1.1 client over `std::net::TcpStream`, written by hand so tests control
//! every byte: well-formed requests ([`post`], [`get`], [`Conn::send`] with keep-alive), and also
//! lying `Content-Length`s, half-sent bodies and headers dribbled byte by byte ([`Conn::write_raw`],
//! [`Conn::dribble`]), with responses read under a deadline ([`Conn::read_outcome`]).
//!
//! It understands what the receiver sends: a status line, headers, and a body framed by
//! `Content-Length`, `Transfer-Encoding: chunked`, or the end of the connection.

use crate::request::header;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a well-behaved request may take before the helpers give up (and fail the test).
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A response.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    /// Names as sent (hyper sends them lowercase), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics showing the response when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {self:?}"))
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        for (k, v) in &self.headers {
            write!(f, "\n  {k}: {v}")?;
        }
        write!(f, "\n  body: {}", self.text())
    }
}

/// What came back on a connection within a deadline.
#[derive(Debug)]
pub enum Outcome {
    /// A whole response.
    Response(Resp),
    /// The peer closed (EOF or reset) before a whole response arrived.
    Closed,
    /// Nothing conclusive before the deadline.
    TimedOut,
}

/// One client connection; responses are read in order, so keep-alive and pipelining work.
pub struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes received and not yet consumed by a response.
    buf: Vec<u8>,
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        Conn::try_connect(addr).unwrap_or_else(|e| panic!("connecting to {addr}: {e}"))
    }

    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Conn {
            stream,
            addr,
            buf: Vec::new(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sends a request (with `Host` and `Content-Length` added) and reads its response.
    pub fn send<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(K, V)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let req = request_bytes(method, path, self.addr, headers, body);
        self.stream.write_all(&req)?;
        match self.read_outcome(IO_TIMEOUT)? {
            Outcome::Response(r) => Ok(r),
            Outcome::Closed => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a whole response arrived",
            )),
            Outcome::TimedOut => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no response within {IO_TIMEOUT:?}"),
            )),
        }
    }

    /// Writes bytes as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes` one at a time with `pause` after each, from a background thread, until all
    /// are sent, a write fails, or the returned [`Dribbler`] is stopped. The pauses are the
    /// test's input (a slowloris client), not a way to wait for anything.
    pub fn dribble(&self, bytes: Vec<u8>, pause: Duration) -> Dribbler {
        let mut stream = self
            .stream
            .try_clone()
            .unwrap_or_else(|e| panic!("cloning the socket to {}: {e}", self.addr));
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut sent = 0;
            for b in bytes {
                if stop2.load(Ordering::Relaxed) || stream.write_all(&[b]).is_err() {
                    break;
                }
                sent += 1;
                std::thread::sleep(pause);
            }
            sent
        });
        Dribbler {
            stop,
            handle: Some(handle),
        }
    }

    /// Reads one response, or learns that the peer closed, within `timeout`.
    pub fn read_outcome(&mut self, timeout: Duration) -> std::io::Result<Outcome> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((resp, used)) = parse_response(&self.buf)? {
                self.buf.drain(..used);
                return Ok(Outcome::Response(resp));
            }
            match self.fill(deadline)? {
                Fill::Data => {}
                Fill::Eof => {
                    // A body framed by the end of the connection is complete now.
                    if let Some(resp) = parse_until_eof(&self.buf)? {
                        self.buf.clear();
                        return Ok(Outcome::Response(resp));
                    }
                    return Ok(Outcome::Closed);
                }
                Fill::TimedOut => return Ok(Outcome::TimedOut),
            }
        }
    }

    /// True once the peer has closed the connection (EOF or reset) within `timeout`; false if it
    /// is still open then. Bytes that arrive meanwhile are kept for the next read.
    pub fn closed_within(&mut self, timeout: Duration) -> std::io::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.fill(deadline)? {
                Fill::Data => {}
                Fill::Eof => return Ok(true),
                Fill::TimedOut => return Ok(false),
            }
        }
    }

    /// Half-closes our side (no more request bytes).
    pub fn shutdown_write(&self) -> std::io::Result<()> {
        self.stream.shutdown(Shutdown::Write)
    }

    fn fill(&mut self, deadline: Instant) -> std::io::Result<Fill> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Fill::TimedOut);
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(Fill::Data)
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Ok(Fill::TimedOut),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted => {
                    Ok(Fill::Eof)
                }
                std::io::ErrorKind::Interrupted => Ok(Fill::Data),
                _ => Err(e),
            },
        }
    }
}

enum Fill {
    Data,
    Eof,
    TimedOut,
}

/// A background writer started by [`Conn::dribble`].
pub struct Dribbler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<usize>>,
}

impl Dribbler {
    /// Stops writing and returns how many bytes were sent.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("the dribbling thread does not panic")
    }
}

impl Drop for Dribbler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The bytes of a request: request line, `Host`, the given headers, `Content-Length` (unless the
/// caller gave one, or `Transfer-Encoding`), a blank line, the body.
pub fn request_bytes<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    path: &str,
    addr: SocketAddr,
    headers: &[(K, V)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n").into_bytes();
    let mut has_len = false;
    for (k, v) in headers {
        let (k, v) = (k.as_ref(), v.as_ref());
        has_len |=
            k.eq_ignore_ascii_case("content-length") || k.eq_ignore_ascii_case("transfer-encoding");
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has_len && (method != "GET" || !body.is_empty()) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// One request on a new connection; panics (naming the request) on I/O failure.
pub fn request<K: AsRef<str>, V: AsRef<str>>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(K, V)],
    body: &[u8],
) -> Resp {
    Conn::connect(addr)
        .send(method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{addr}{path}: {e}"))
}

/// `POST path` with `headers` and `body` on a new connection.
pub fn post<K: AsRef<str>, V: AsRef<str>>(
    addr: SocketAddr,
    path: &str,
    headers: &[(K, V)],
    body: &[u8],
) -> Resp {
    request(addr, "POST", path, headers, body)
}

/// `GET path` on a new connection.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request::<&str, &str>(addr, "GET", path, &[], b"")
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A response's status line and headers.
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
    /// Where the body starts in the buffer.
    body_start: usize,
}

/// The head, once it is complete.
fn parse_head(buf: &[u8]) -> std::io::Result<Option<Head>> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1 status line: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {l:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Some(Head {
        status,
        headers,
        body_start: end + 4,
    }))
}

impl Head {
    fn into_resp(self, body: Vec<u8>) -> Resp {
        Resp {
            status: self.status,
            headers: self.headers,
            body,
        }
    }
}

/// A whole response at the start of `buf` and how many bytes it used, or `None` if more bytes
/// are needed (or its body runs to the end of the connection).
fn parse_response(buf: &[u8]) -> std::io::Result<Option<(Resp, usize)>> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let start = head.body_start;
    let no_body = (100..200).contains(&head.status) || head.status == 204 || head.status == 304;
    if no_body {
        return Ok(Some((head.into_resp(Vec::new()), start)));
    }
    if header(&head.headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        return Ok(
            parse_chunked(&buf[start..])?.map(|(body, used)| (head.into_resp(body), start + used))
        );
    }
    if let Some(len) = header(&head.headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        if buf.len() < start + len {
            return Ok(None);
        }
        let body = buf[start..start + len].to_vec();
        return Ok(Some((head.into_resp(body), start + len)));
    }
    Ok(None)
}

/// A response whose body ran to the end of the connection.
fn parse_until_eof(buf: &[u8]) -> std::io::Result<Option<Resp>> {
    let Some(head) = parse_head(buf)? else {
        return Ok(None);
    };
    let framed = header(&head.headers, "content-length").is_some()
        || header(&head.headers, "transfer-encoding").is_some();
    if framed {
        // Framed but cut short: not a whole response.
        return Ok(None);
    }
    let body = buf[head.body_start..].to_vec();
    Ok(Some(head.into_resp(body)))
}

fn parse_chunked(mut b: &[u8]) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let total = b.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(b, b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&b[..eol]).map_err(|_| bad("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| bad(format!("bad chunk size {size_text:?}")))?;
        b = &b[eol + 2..];
        if size == 0 {
            // Trailers end with an empty line.
            let Some(end) = find(b, b"\r\n") else {
                return Ok(None);
            };
            if end == 0 {
                return Ok(Some((body, total - b.len() + 2)));
            }
            let Some(end) = find(b, b"\r\n\r\n") else {
                return Ok(None);
            };
            return Ok(Some((body, total - b.len() + end + 4)));
        }
        if b.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_length_chunked_and_pipelined_responses() {
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 429 Too Many\r\nretry-after: 3\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let (a, used) = parse_response(two).unwrap().unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "ok"));
        let (b, used2) = parse_response(&two[used..]).unwrap().unwrap();
        assert_eq!((b.status, b.text().as_str()), (429, "abc"));
        assert_eq!(b.header("Retry-After"), Some("3"));
        assert_eq!(used + used2, two.len());
        assert!(parse_response(&two[..used - 1]).unwrap().is_none());
    }
}
