//! Durations on the command line: `90`, `90s`, `5m`, `2h`, `1h30m`, as
//! Docker's `--stop-timeout`-style flags and Go's `time.ParseDuration` write
//! whole seconds, minutes and hours.

/// Whole seconds of `s`.
pub fn parse_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 90s, 5m, 2h or 1h30m");
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_secs;

    #[test]
    fn units_add_up_and_junk_is_named() {
        assert_eq!(parse_secs("90"), Ok(90));
        assert_eq!(parse_secs("90s"), Ok(90));
        assert_eq!(parse_secs("5m"), Ok(300));
        assert_eq!(parse_secs("1h30m"), Ok(5400));
        for bad in ["", "m", "5d", "5m3", "-1s", "99999999999999999999h"] {
            let e = parse_secs(bad).unwrap_err();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
    }
}
