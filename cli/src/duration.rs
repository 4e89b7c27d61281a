//! Durations on the command line (`--timeout 30m`, `--step-timeout 90s`,
//! `--client-grace 5m`) in Go's `time.ParseDuration` syntax, as buildx's
//! flags and the Dockerfile's `HEALTHCHECK --interval` take them: the one
//! parser is [`parse_go_duration`]. A bare number of seconds is accepted too.

use imgfarm_common::dockerfile::instructions::config::parse_go_duration;

/// Whole seconds of `s` (rounded up: `1ms` is a one-second limit, not none).
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    match parse_go_duration(t) {
        Some(ns) if ns >= 0 => Ok((ns as u64).div_ceil(1_000_000_000)),
        _ => Err(format!(
            "invalid duration {s:?}: use e.g. 90s, 5m, 2h or 1h30m"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn durations_in_go_syntax_or_seconds() {
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("5m"), Ok(300));
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        assert_eq!(parse_secs("1ms"), Ok(1));
        for bad in ["", "m", "5d", "-1s"] {
            let e = parse_secs(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }
}
