//! Reconnecting with exponential backoff (the worker dials out and must
//! come back by itself after a coordinator restart or a network cut).

use super::{Link, LinkError, LinkOptions};
use imgfarm_common::identity::Credentials;
use imgfarm_common::proto::Hello;
use std::time::Duration;

/// Exponential backoff delays: `initial`, doubling, capped at `max`. Pure.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    next: Duration,
    max: Duration,
}

impl Backoff {
    /// Starts at `initial`, never exceeds `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.min(max);
        Self {
            initial,
            next: initial,
            max,
        }
    }

    /// Back to the initial delay after a successful connection.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

impl Iterator for Backoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        Some(d)
    }
}

/// Whether retrying can help: a version mismatch, a refused identity or a
/// certificate problem will not fix itself, a lost or refused connection may.
pub fn is_retryable(e: &LinkError) -> bool {
    use imgfarm_common::proto::io::WireError;
    match e {
        LinkError::Connection { source, .. } => {
            matches!(
                source,
                quinn::ConnectionError::TimedOut
                    | quinn::ConnectionError::Reset
                    | quinn::ConnectionError::LocallyClosed
                    | quinn::ConnectionError::ConnectionClosed(_)
            ) || matches!(source, quinn::ConnectionError::ApplicationClosed(c)
                if c.error_code == imgfarm_common::proto::close_code::NORMAL.into())
        }
        LinkError::Wire(WireError::Io(_) | WireError::Closed(_)) => true,
        LinkError::Address { .. } => true,
        _ => false,
    }
}

/// Longest wait for one connection attempt. A coordinator that is down
/// drops the QUIC Initial packets silently; without this bound an attempt
/// would last the whole idle timeout (30 s) before the next one.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Dials until connected, sleeping by `backoff` between attempts; returns
/// the first non-retryable error (wrong version, refused certificate, ...).
/// `on_retry` sees each retryable failure and the delay before the next try.
/// An attempt that takes longer than [`CONNECT_ATTEMPT_TIMEOUT`] counts as a
/// retryable timeout.
pub async fn connect_with_backoff(
    addr: &str,
    creds: &Credentials,
    hello: &Hello,
    opts: &LinkOptions,
    backoff: &mut Backoff,
    mut on_retry: impl FnMut(&LinkError, Duration),
) -> Result<Link, LinkError> {
    loop {
        let attempt = tokio::time::timeout(
            CONNECT_ATTEMPT_TIMEOUT,
            Link::connect(addr, creds, hello.clone(), opts.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(LinkError::Connection {
                addr: addr.to_string(),
                source: quinn::ConnectionError::TimedOut,
            })
        });
        match attempt {
            Ok(link) => return Ok(link),
            Err(e) if is_retryable(&e) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                on_retry(&e, delay);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        let b = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let v: Vec<u128> = b.take(6).map(|d| d.as_millis()).collect();
        assert_eq!(v, vec![250, 500, 1000, 2000, 2000, 2000]);
    }
}
