//! The `--metrics-listen ADDR` endpoint of `imgfarm coordinator` and
//! `imgfarm worker`: a deliberately tiny HTTP/1.1 server that answers
//! `GET /metrics` with a text exposition and nothing else.
//!
//! - One request per connection (`Connection: close`), as Prometheus
//!   scrapes: no keep-alive, no chunked bodies, no request body read.
//! - The request head is read up to [`HttpOptions::max_head`] bytes
//!   (431 beyond) within [`HttpOptions::read_timeout`] in all (a client
//!   sending a byte at a time is cut off: 408), so a slow or hostile client
//!   holds a connection for a bounded time.
//! - `GET /metrics` (any query string) → 200 with the rendered text;
//!   another path → 404; another method → 405 with `Allow: GET`; a head
//!   that is not HTTP/1.x → 400. When the renderer has nothing (the
//!   process is stopping) → 503.
//! - At most [`HttpOptions::max_connections`] connections are served at
//!   once; more are closed at once.
//!
//! The renderer is the caller's (the coordinator's and the worker's
//! `metrics` modules, with the `prometheus-client` registry); this module
//! knows nothing of metrics.

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// The OpenMetrics text format, as `prometheus-client`'s
/// `encoding::text::encode` writes it (OpenMetrics 1.0, section
/// "Text format"; Prometheus negotiates it and falls back to nothing else
/// for these bytes).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The path served.
pub const METRICS_PATH: &str = "/metrics";

/// Bounds of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpOptions {
    /// Largest request head (request line and headers) read.
    pub max_head: usize,
    /// Time allowed for the whole request head to arrive.
    pub read_timeout: Duration,
    /// Time allowed for the response to be written.
    pub write_timeout: Duration,
    /// Connections served at once; more are closed unanswered.
    pub max_connections: usize,
}

impl Default for HttpOptions {
    /// 8 KiB heads, 5 s to send one, 10 s to take the answer, 32
    /// connections.
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            max_connections: 32,
        }
    }
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsHttpError {
    /// The address does not parse or resolve.
    #[error("--metrics-listen {addr:?}: {reason}; expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:9464 or 0.0.0.0:9464 (port 0 picks a free port)")]
    Addr {
        /// What was given.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Binding failed (in use, no permission, not a local address).
    #[error("--metrics-listen {addr}: cannot listen: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

/// Parses `--metrics-listen`: `IP:PORT`, `[IPv6]:PORT`, or `HOST:PORT`
/// resolved once (its first address).
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, MetricsHttpError> {
    let bad = |reason: String| MetricsHttpError::Addr {
        addr: s.to_string(),
        reason,
    };
    let s = s.strip_prefix("http://").unwrap_or(s);
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if !s.contains(':') {
        return Err(bad("no port".into()));
    }
    let mut addrs = s.to_socket_addrs().map_err(|e| bad(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| bad("the host name has no address".into()))
}

/// A running endpoint; dropping it stops accepting (connections being
/// answered finish on their own, within their timeouts).
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsServer {
    /// The bound address (the port picked when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `GET /metrics` with what `render` returns
/// (`None`: 503). Must be called inside a tokio runtime.
pub fn serve<F, Fut>(
    addr: SocketAddr,
    opts: HttpOptions,
    render: F,
) -> Result<MetricsServer, MetricsHttpError>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    let bind = |source| MetricsHttpError::Bind { addr, source };
    let std_listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    std_listener.set_nonblocking(true).map_err(bind)?;
    let listener = TcpListener::from_std(std_listener).map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let task = tokio::spawn(accept_loop(listener, opts, Arc::new(render)));
    Ok(MetricsServer { addr: bound, task })
}

async fn accept_loop<F, Fut>(listener: TcpListener, opts: HttpOptions, render: Arc<F>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: wait a little rather than spin.
                tracing::warn!("metrics endpoint: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tracing::debug!("metrics endpoint: too many connections; closing one from {peer}");
            continue;
        };
        let render = Arc::clone(&render);
        tokio::spawn(async move {
            let _permit = permit;
            answer(stream, opts, render.as_ref()).await;
        });
    }
}

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET /metrics`.
    Metrics,
    /// Another path (404).
    NotFound,
    /// Another method (405).
    MethodNotAllowed,
    /// Not an HTTP/1.x request line (400).
    Bad,
}

/// Classifies a request head (the bytes before the blank line).
pub fn classify(head: &[u8]) -> Request {
    let Ok(text) = std::str::from_utf8(head) else {
        return Request::Bad;
    };
    // RFC 9112 §2.2: a bare LF may end a line, as the head's end (`\n\n`) is accepted.
    let line = text.split('\n').next().unwrap_or("").trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_uppercase());
    if !token(method) || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Request::Bad;
    }
    if method != "GET" {
        return Request::MethodNotAllowed;
    }
    let path = target.split('?').next().unwrap_or(target);
    if path == METRICS_PATH {
        Request::Metrics
    } else {
        Request::NotFound
    }
}

/// How reading a head ended.
enum Head {
    Complete(Vec<u8>),
    TooLarge,
    TimedOut,
    /// Closed or failed before a whole head: nothing to answer.
    Gone,
}

async fn read_head(stream: &mut TcpStream, opts: HttpOptions) -> Head {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return Head::Gone,
                Ok(n) => n,
            };
            let from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = find_blank_line(&buf[from..]) {
                buf.truncate(from + end);
                return Head::Complete(std::mem::take(&mut buf));
            }
            if buf.len() > opts.max_head {
                return Head::TooLarge;
            }
        }
    };
    match tokio::time::timeout(opts.read_timeout, read).await {
        Ok(h) => h,
        Err(_) => Head::TimedOut,
    }
}

/// The offset of the first `\r\n\r\n` (or a bare `\n\n`) in `b`.
fn find_blank_line(b: &[u8]) -> Option<usize> {
    let crlf = b.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = b.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

async fn answer<F, Fut>(mut stream: TcpStream, opts: HttpOptions, render: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let response = match read_head(&mut stream, opts).await {
        Head::Gone => return,
        Head::TimedOut => response(
            408,
            "Request Timeout",
            "text/plain",
            b"request timeout\n",
            &[],
        ),
        Head::TooLarge => response(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            b"request head too large\n",
            &[],
        ),
        Head::Complete(head) => match classify(&head) {
            Request::Metrics => match render().await {
                Some(body) => response(200, "OK", OPENMETRICS_CONTENT_TYPE, body.as_bytes(), &[]),
                None => response(503, "Service Unavailable", "text/plain", b"stopping\n", &[]),
            },
            Request::NotFound => response(
                404,
                "Not Found",
                "text/plain",
                b"not found; metrics are at /metrics\n",
                &[],
            ),
            Request::MethodNotAllowed => response(
                405,
                "Method Not Allowed",
                "text/plain",
                b"method not allowed; use GET\n",
                &[("Allow", "GET")],
            ),
            Request::Bad => response(400, "Bad Request", "text/plain", b"bad request\n", &[]),
        },
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    if tokio::time::timeout(opts.write_timeout, write)
        .await
        .is_err()
    {
        return;
    }
    // Lingering close: closing with unread input (the rest of an oversized
    // head) would reset the connection and could discard the answer before
    // the client reads it. Read a bounded amount, briefly, first.
    let drain = async {
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// How long, and how much, a closing connection reads and discards.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

fn response(
    code: u16,
    reason: &str,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests;
