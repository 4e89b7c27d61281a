//! Retry policy for registry requests: transient failures (5xx except 501,
//! 429, connection resets and timeouts) are retried with exponential backoff
//! and a bounded number of attempts; every other 4xx fails at once. Pure: the
//! caller sleeps.

use std::time::Duration;

/// How a failed attempt should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Try again after the returned delay.
    Retry,
    /// Give up now: the answer will not change.
    Fail,
}

/// Exponential backoff with a cap and a bounded number of attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first one included (at least 1).
    pub max_attempts: u32,
    /// Delay before the second attempt.
    pub base_delay: Duration,
    /// Upper bound on any single delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 4 attempts, 200 ms, 400 ms, 800 ms (capped at 5 s).
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Classify an HTTP status.
    pub fn classify_status(status: u16) -> Outcome {
        match status {
            408 | 429 | 500 | 502 | 503 | 504 => Outcome::Retry,
            s if s >= 500 && s != 501 && s != 505 => Outcome::Retry,
            _ => Outcome::Fail,
        }
    }

    /// After failed attempt number `attempt` (1-based), how long to wait before the
    /// next one, or `None` when the attempts are used up. A server's `Retry-After`
    /// (seconds) is honoured up to `max_delay`.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if attempt >= self.max_attempts.max(1) {
            return None;
        }
        let exp = attempt.saturating_sub(1).min(20);
        let backoff = self.base_delay.saturating_mul(1u32 << exp);
        let delay = retry_after.map_or(backoff, |ra| ra.max(backoff));
        Some(delay.min(self.max_delay))
    }
}

/// Parse a `Retry-After` value given in seconds (the HTTP-date form is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        for s in [500, 502, 503, 504, 429, 408, 599] {
            assert_eq!(RetryPolicy::classify_status(s), Outcome::Retry, "{s}");
        }
        for s in [400, 401, 403, 404, 405, 416, 501, 505] {
            assert_eq!(RetryPolicy::classify_status(s), Outcome::Fail, "{s}");
        }
    }

    #[test]
    fn backoff_doubles_caps_and_stops() {
        let p = RetryPolicy::default();
        assert_eq!(p.next_delay(1, None), Some(Duration::from_millis(200)));
        assert_eq!(p.next_delay(2, None), Some(Duration::from_millis(400)));
        assert_eq!(p.next_delay(3, None), Some(Duration::from_millis(800)));
        assert_eq!(p.next_delay(4, None), None);
        let long = RetryPolicy {
            max_attempts: 40,
            ..p
        };
        assert_eq!(long.next_delay(30, None), Some(Duration::from_secs(5)));
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            p.next_delay(1, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(5))
        );
        assert_eq!(RetryPolicy::none().next_delay(1, None), None);
        assert_eq!(
            RetryPolicy {
                max_attempts: 0,
                ..p
            }
            .next_delay(1, None),
            None
        );
    }

    #[test]
    fn retry_after() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
