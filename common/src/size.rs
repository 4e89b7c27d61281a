//! Sizes given on the command line (`--store-max`, `--cache-max`,
//! `--keep-storage`): the one parser, and the default cap.
//!
//! `100MB` is decimal (10^6), `100MiB` binary (2^20), as BuildKit's
//! `keepStorage` and docker's `--keep-storage` read them; a bare number is
//! bytes. Case and a space before the unit do not matter.

use std::path::Path;

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("size {text:?}: {reason} (give e.g. 500MB, 2GiB or 1048576)")]
pub struct SizeError {
    /// What was given.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Parses `100MB`, `2GiB`, `1.5G`, `4096` into bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = |reason| SizeError {
        text: text.to_string(),
        reason,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err("no number"));
    }
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return Err(err("unknown unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(bytes as u64)
}

/// Share of the filesystem a store may use when no cap is given: 10%, as
/// BuildKit's default gc `keepStorage`.
pub const DEFAULT_SHARE_PERCENT: u64 = 10;

/// Smallest default cap (a tiny filesystem still keeps a few results).
pub const MIN_DEFAULT_CAP: u64 = 100 << 20;

/// The default cap for a store under `dir`: [`DEFAULT_SHARE_PERCENT`] of the
/// size of the filesystem holding it (or of its nearest existing parent),
/// at least [`MIN_DEFAULT_CAP`]. Unknown size: 10 GiB.
pub fn default_cap(dir: &Path) -> u64 {
    let mut p = Some(dir);
    while let Some(d) = p {
        if let Ok(st) = nix::sys::statvfs::statvfs(d) {
            let total = st.blocks().saturating_mul(st.fragment_size());
            return (total / 100 * DEFAULT_SHARE_PERCENT).max(MIN_DEFAULT_CAP);
        }
        p = d.parent();
    }
    10 << 30
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_decimal_and_binary() {
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size(" 10 mib ").unwrap(), 10 << 20);
        assert_eq!(parse_size("0").unwrap(), 0);
        for bad in ["", "MB", "10XB", "1e3", "-5MB", "99999999999999TB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let e = parse_size("10XB").unwrap_err().to_string();
        assert!(e.contains("unknown unit") && e.contains("10XB"), "{e}");
    }

    #[test]
    fn default_cap_is_a_share_of_the_filesystem() {
        let d = tempfile::tempdir().unwrap();
        let st = nix::sys::statvfs::statvfs(d.path()).unwrap();
        let total = st.blocks() * st.fragment_size();
        let cap = default_cap(&d.path().join("not/yet"));
        assert_eq!(
            cap,
            (total / 100 * DEFAULT_SHARE_PERCENT).max(MIN_DEFAULT_CAP)
        );
    }
}
