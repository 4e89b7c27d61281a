//! A registry that fails on purpose: an HTTP/1.1 proxy on 127.0.0.1 in front of a real
//! [`crate::Registry`] that answers `500 Internal Server Error` to the next N blob upload
//! requests (`PUT` or `PATCH` under `/blobs/uploads/`) and forwards everything else. It can
//! also hold an upload request until released, so a test can stop the registry at a known
//! point of a push, and be pointed at another registry ([`FaultyRegistry::set_upstream`]).
//!
//! One request per connection: each request is read whole (head, then a `Content-Length`
//! or chunked body), sent upstream on a fresh connection with `Connection: close`, and the
//! answer relayed until upstream closes; the client sees `Connection: close` and reconnects
//! for its next request, so every request passes the fault check.

use anyhow::{bail, Context};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A failing front for a registry; dropping it stops accepting connections.
#[derive(Debug)]
pub struct FaultyRegistry {
    addr: String,
    state: Arc<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Where requests go (`127.0.0.1:PORT`).
    upstream: Mutex<String>,
    /// Blob uploads still to be answered with 500.
    fail_uploads: AtomicUsize,
    /// Blob uploads forwarded so far.
    uploads: AtomicUsize,
    /// Hold upload requests once this many were forwarded (0: never).
    hold_after: AtomicUsize,
    /// Upload requests held now; set to `usize::MAX` by `release`.
    held: Mutex<usize>,
    released: Condvar,
    /// Blob uploads answered with 500 so far.
    failed: AtomicUsize,
    /// Requests forwarded so far.
    forwarded: AtomicUsize,
    stop: AtomicBool,
}

impl FaultyRegistry {
    /// Starts a proxy for the registry at `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: &str) -> anyhow::Result<FaultyRegistry> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the fault proxy")?;
        let addr = listener.local_addr()?.to_string();
        let state = Arc::new(State {
            upstream: Mutex::new(upstream.to_string()),
            ..State::default()
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    if let Err(e) = serve(conn, &st) {
                        tracing::debug!("fault proxy: {e:#}");
                    }
                });
            }
        });
        Ok(FaultyRegistry { addr, state })
    }

    /// `127.0.0.1:PORT` of the proxy (use it as the registry host in image refs).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Answer the next `n` blob upload requests with 500.
    pub fn fail_next_uploads(&self, n: usize) {
        self.state.fail_uploads.store(n, Ordering::SeqCst);
    }

    /// Once `n` blob upload requests were forwarded, hold the next ones until
    /// [`FaultyRegistry::release`].
    pub fn hold_uploads_after(&self, n: usize) {
        self.state.hold_after.store(n, Ordering::SeqCst);
    }

    /// Upload requests held now.
    pub fn held(&self) -> usize {
        *self.state.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets the held requests go on (to the upstream of that moment) and holds no more.
    pub fn release(&self) {
        self.state.hold_after.store(0, Ordering::SeqCst);
        let mut held = self.state.held.lock().unwrap_or_else(|p| p.into_inner());
        *held = 0;
        self.state.released.notify_all();
    }

    /// Sends what comes next to the registry at `addr` (`127.0.0.1:PORT`).
    pub fn set_upstream(&self, addr: &str) {
        *self
            .state
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = addr.to_string();
    }

    /// Blob upload requests answered with 500 so far.
    pub fn failed(&self) -> usize {
        self.state.failed.load(Ordering::SeqCst)
    }

    /// Requests forwarded to the registry so far.
    pub fn forwarded(&self) -> usize {
        self.state.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyRegistry {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

/// Blocks an upload request while the hold is on (see [`FaultyRegistry::hold_uploads_after`]).
fn maybe_hold(st: &State) {
    let after = st.hold_after.load(Ordering::SeqCst);
    if after == 0 || st.uploads.load(Ordering::SeqCst) < after {
        return;
    }
    let mut held = st.held.lock().unwrap_or_else(|p| p.into_inner());
    *held += 1;
    while st.hold_after.load(Ordering::SeqCst) != 0 {
        held = st.released.wait(held).unwrap_or_else(|p| p.into_inner());
    }
}

fn serve(client: TcpStream, st: &State) -> anyhow::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(());
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    head.extend_from_slice(first.as_bytes());
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("connection closed in the request head");
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().context("content-length")?;
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
        if lower.starts_with("connection:") {
            continue;
        }
        head.extend_from_slice(line.as_bytes());
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size_line = String::new();
            reader.read_line(&mut size_line)?;
            body.extend_from_slice(size_line.as_bytes());
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                .context("chunk size")?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk);
            if size == 0 {
                break;
            }
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
    }
    let mut client = client;
    let upload = (method == "PUT" || method == "PATCH") && path.contains("/blobs/uploads/");
    if upload
        && st
            .fail_uploads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        st.failed.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"errors":[{"code":"UNKNOWN","message":"injected by the test"}]}"#;
        write!(
            client,
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let _ = client.shutdown(Shutdown::Write);
        return Ok(());
    }
    if upload {
        maybe_hold(st);
        st.uploads.fetch_add(1, Ordering::SeqCst);
    }
    st.forwarded.fetch_add(1, Ordering::SeqCst);
    let upstream = st
        .upstream
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut up = TcpStream::connect(&upstream).context("connecting to the registry")?;
    up.write_all(&head)?;
    up.write_all(&body)?;
    std::io::copy(&mut up, &mut client)?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}
