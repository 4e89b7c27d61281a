//! Config-only instruction helpers: HEALTHCHECK options (Go durations),
//! EXPOSE port specs and STOPSIGNAL names, validated as Docker does.

use super::flags::{FlagKind, Flags};
use super::run::CommandLine;
use crate::dockerfile::ast::Node;
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::graph::image_config::StageHealthcheck;

pub(super) fn parse_healthcheck(node: &Node) -> Result<StageHealthcheck, DockerfileError> {
    let flags = Flags::parse(
        node,
        &[
            ("interval", FlagKind::String),
            ("timeout", FlagKind::String),
            ("start-period", FlagKind::String),
            ("start-interval", FlagKind::String),
            ("retries", FlagKind::String),
        ],
    )?;
    let err =
        |kind, msg: String| DockerfileError::new(kind, node.start_line, node.original.clone(), msg);
    let args = node.args();
    let Some(first) = args.first() else {
        return Err(err(
            ErrorKind::BadArguments,
            "HEALTHCHECK needs CMD or NONE".into(),
        ));
    };
    let typ = first.to_uppercase();
    if typ == "NONE" {
        if args.len() > 1 || !node.flags.is_empty() {
            return Err(err(
                ErrorKind::BadArguments,
                "HEALTHCHECK NONE takes no other arguments".into(),
            ));
        }
        return Ok(StageHealthcheck {
            test: vec!["NONE".into()],
            interval: 0,
            timeout: 0,
            start_period: 0,
            start_interval: 0,
            retries: 0,
        });
    }
    if typ != "CMD" {
        return Err(err(
            ErrorKind::BadArguments,
            format!("unknown HEALTHCHECK type {first:?} (want CMD or NONE)"),
        ));
    }
    let rest = &args[1..];
    if rest.is_empty() {
        return Err(err(
            ErrorKind::BadArguments,
            "HEALTHCHECK CMD needs a command".into(),
        ));
    }
    let cmd = if node.json {
        CommandLine::Exec(rest.iter().map(|s| s.to_string()).collect())
    } else {
        CommandLine::Shell(rest.join(" "))
    };
    let test = match cmd {
        CommandLine::Exec(a) => std::iter::once("CMD".to_string()).chain(a).collect(),
        CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s],
    };
    let dur = |name: &str| -> Result<i64, DockerfileError> {
        match flags.string(name) {
            None => Ok(0),
            Some(v) => {
                let ns = parse_go_duration(&v).ok_or_else(|| {
                    err(
                        ErrorKind::BadFlag,
                        format!("--{name}={v}: not a duration (e.g. 30s, 1m30s)"),
                    )
                })?;
                if ns != 0 && ns < 1_000_000 {
                    return Err(err(
                        ErrorKind::BadFlag,
                        format!("--{name}={v} cannot be less than 1ms"),
                    ));
                }
                Ok(ns)
            }
        }
    };
    let retries = match flags.string("retries") {
        None => 0,
        Some(v) => {
            let r: i64 = v
                .parse()
                .map_err(|_| err(ErrorKind::BadFlag, format!("--retries={v}: not an integer")))?;
            if r < 0 {
                return Err(err(
                    ErrorKind::BadFlag,
                    "--retries cannot be negative".into(),
                ));
            }
            r
        }
    };
    Ok(StageHealthcheck {
        test,
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start-period")?,
        start_interval: dur("start-interval")?,
        retries,
    })
}

/// Go's `time.ParseDuration` subset: `[-]N(.N)?unit...` with ns, us, µs, ms, s, m, h; "0" alone.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    if s == "0" {
        return Some(0);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_end == 0 {
            return None;
        }
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    let v = total as i64;
    Some(if neg { -v } else { v })
}

/// Expand an EXPOSE word (`80`, `80/udp`, `8000-8002/tcp`) into `port/proto` keys.
pub fn parse_expose(word: &str) -> Result<Vec<String>, String> {
    let (ports, proto) = match word.split_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!(
            "invalid protocol {proto:?} in EXPOSE {word} (want tcp, udp or sctp)"
        ));
    }
    // An ip:host:container form is refused by docker for EXPOSE too.
    let parse = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .map_err(|_| format!("invalid port {p:?} in EXPOSE {word}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("invalid port range {ports} in EXPOSE {word}"));
    }
    if u32::from(hi) - u32::from(lo) > 65535 {
        return Err(format!("port range too large in EXPOSE {word}"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// Validate a STOPSIGNAL value as moby/sys/signal does: a number 1..=64 or a
/// known name, with or without the `SIG` prefix.
pub fn valid_stop_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "UNUSED", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU",
        "XFSZ",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    // RTMIN, RTMIN+n, RTMAX-n.
    for base in ["RTMIN", "RTMAX"] {
        if let Some(rest) = name.strip_prefix(base) {
            if rest.is_empty() {
                return true;
            }
            let (sign, n) = rest.split_at(1);
            if matches!(sign, "+" | "-") && n.parse::<u8>().is_ok_and(|n| n <= 30) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Some(1_500_000_000));
        assert_eq!(parse_go_duration("100ms"), Some(100_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        for bad in ["", "s", "10", "10x", "1..s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn expose_and_signals() {
        assert_eq!(parse_expose("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_expose("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_expose("8000-8002").unwrap().len(), 3);
        assert!(parse_expose("80/icmp").is_err());
        assert!(parse_expose("http").is_err());
        assert!(parse_expose("90-80").is_err());
        assert!(valid_stop_signal("SIGTERM"));
        assert!(valid_stop_signal("kill"));
        assert!(valid_stop_signal("9"));
        assert!(valid_stop_signal("SIGRTMIN+3"));
        assert!(!valid_stop_signal("SIGFOO"));
        assert!(!valid_stop_signal("99"));
    }
}
