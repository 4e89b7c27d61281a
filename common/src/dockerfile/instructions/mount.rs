//! `RUN --mount=...` specifications, parsed and validated the way BuildKit's
//! `instructions/commands_runmount.go` does.
//!
//! The value is one CSV record of `key=value` fields (quotes allowed). Types:
//! `bind` (default, read-only unless `rw`), `cache` (read-write; `id`,
//! `sharing=shared|private|locked`, `mode`, `uid`, `gid`), `tmpfs` (`size`)
//! and `secret` (`id`, `required`, `mode`, `uid`, `gid`; target defaults to
//! `/run/secrets/<id>`). A value holding `$` is expanded with the stage's
//! environment when the instruction is dispatched; `from=` never expands.

/// The mount kinds imgfarm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountType {
    /// A read-only (or `rw`, discarded) view of the context or a stage.
    Bind,
    /// A persistent per-worker cache directory.
    Cache,
    /// An empty in-memory filesystem.
    Tmpfs,
    /// A secret file provided by the client (`--secret id=...`).
    Secret,
}

/// Cache sharing mode (BuildKit `sharing=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CacheSharing {
    /// Concurrent builds use the same directory.
    #[default]
    Shared,
    /// Each concurrent user gets its own copy.
    Private,
    /// Concurrent users wait for each other.
    Locked,
}

/// One parsed `--mount`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MountSpec {
    /// The mount type.
    pub kind: MountType,
    /// Mount point in the container; for secrets defaults to `/run/secrets/<id>`.
    pub target: String,
    /// Path inside the `from` source (bind, cache).
    pub source: String,
    /// Stage name or index, or image reference (bind, cache); empty = context (bind) or none (cache).
    pub from: String,
    /// Read-only mount.
    pub readonly: bool,
    /// Cache or secret id.
    pub id: String,
    /// Cache sharing mode.
    pub sharing: Option<CacheSharing>,
    /// Secret must exist (`required`).
    pub required: bool,
    /// File mode (octal in the Dockerfile).
    pub mode: Option<u32>,
    /// Owner uid.
    pub uid: Option<u32>,
    /// Owner gid.
    pub gid: Option<u32>,
    /// tmpfs size limit in bytes.
    pub size: Option<u64>,
}

impl MountSpec {
    /// A read-only bind of `source` at `target`, every other option at
    /// BuildKit's default (`type=bind` is the default mount type).
    pub fn read_only_bind(target: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            kind: MountType::Bind,
            target: target.into(),
            source: source.into(),
            from: String::new(),
            readonly: true,
            id: String::new(),
            sharing: None,
            required: false,
            mode: None,
            uid: None,
            gid: None,
            size: None,
        }
    }
}

/// Expands one value; `None` means "not yet" (values with `$` are checked later).
pub type ExpandFn<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

const ALL_KEYS: &str = "type, from, source|src, target|dst|destination, readonly|ro, readwrite|rw, id, sharing, required, mode, uid, gid, size";

/// Parse one `--mount` value. Without `expand`, values holding `$` are only
/// checked for structure (BuildKit defers them to dispatch); with it, every
/// value is expanded first and the whole mount is validated.
pub fn parse_mount(value: &str, mut expand: Option<ExpandFn<'_>>) -> Result<MountSpec, String> {
    let fields = split_csv(value)?;
    let mut m = MountSpec::read_only_bind("", "");
    let mut ro_auto = true;
    let mut deferred = false;
    for field in &fields {
        let (key, raw) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (field.to_ascii_lowercase(), None),
        };
        let Some(raw) = raw else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" => {
                    if m.kind != MountType::Secret {
                        return Err(format!(
                            "'required' is only valid for secret mounts, not {:?}",
                            m.kind
                        ));
                    }
                    m.required = true;
                }
                _ => return Err(format!("invalid field '{field}': must be a key=value pair")),
            }
            continue;
        };
        let value = if key == "from" {
            if raw.contains('$') {
                return Err("'from' doesn't support variable expansion; define an alias stage with FROM instead".into());
            }
            raw.to_string()
        } else if let Some(f) = expand.as_mut() {
            f(raw)?
        } else if raw.contains('$') {
            // Known key with a value to expand at dispatch time.
            deferred = true;
            if !is_known_key(&key) {
                return Err(format!(
                    "unexpected key '{key}' in '{field}' (known keys: {ALL_KEYS})"
                ));
            }
            continue;
        } else {
            raw.to_string()
        };
        let bool_value = |v: &str| {
            parse_bool(v)
                .ok_or_else(|| format!("invalid value for {key}: {v:?} (want true or false)"))
        };
        match key.as_str() {
            "type" => {
                m.kind = match value.to_ascii_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => {
                        return Err("mount type \"ssh\" is not supported yet by imgfarm".into())
                    }
                    _ => {
                        return Err(format!(
                            "unsupported mount type {value:?} (want bind, cache, tmpfs or secret)"
                        ))
                    }
                }
            }
            "from" => m.from = value,
            "source" | "src" => m.source = value,
            "target" | "dst" | "destination" => m.target = value,
            "readonly" | "ro" => {
                m.readonly = bool_value(&value)?;
                ro_auto = false;
            }
            "readwrite" | "rw" => {
                m.readonly = !bool_value(&value)?;
                ro_auto = false;
            }
            "required" => {
                if m.kind != MountType::Secret {
                    return Err(format!(
                        "'required' is only valid for secret mounts, not {:?}",
                        m.kind
                    ));
                }
                m.required = bool_value(&value)?;
            }
            "size" => {
                if m.kind != MountType::Tmpfs {
                    return Err(format!(
                        "'size' is only valid for tmpfs mounts, not {:?}",
                        m.kind
                    ));
                }
                m.size =
                    Some(parse_size(&value).ok_or_else(|| {
                        format!("invalid value for size: {value:?} (e.g. 64m, 1g)")
                    })?);
            }
            "id" => m.id = value,
            "sharing" => {
                m.sharing = Some(match value.to_ascii_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(format!(
                            "unsupported sharing value {value:?} (want shared, private or locked)"
                        ))
                    }
                })
            }
            "mode" => {
                m.mode = Some(
                    u32::from_str_radix(&value, 8)
                        .ok()
                        .filter(|v| *v <= 0o7777)
                        .ok_or_else(|| {
                            format!("invalid value {value:?} for mode (want octal, e.g. 0644)")
                        })?,
                )
            }
            "uid" => {
                m.uid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for uid"))?,
                )
            }
            "gid" => {
                m.gid = Some(
                    value
                        .parse()
                        .map_err(|_| format!("invalid value {value:?} for gid"))?,
                )
            }
            _ => {
                return Err(format!(
                    "unexpected key '{key}' in '{field}' (known keys: {ALL_KEYS})"
                ))
            }
        }
    }
    validate(&mut m, ro_auto, deferred)?;
    Ok(m)
}

fn is_known_key(k: &str) -> bool {
    matches!(
        k,
        "type"
            | "from"
            | "source"
            | "src"
            | "target"
            | "dst"
            | "destination"
            | "readonly"
            | "ro"
            | "readwrite"
            | "rw"
            | "required"
            | "size"
            | "id"
            | "sharing"
            | "mode"
            | "uid"
            | "gid"
    )
}

fn validate(m: &mut MountSpec, ro_auto: bool, deferred: bool) -> Result<(), String> {
    let file_info_allowed = matches!(m.kind, MountType::Secret | MountType::Cache);
    if !file_info_allowed {
        for (name, set) in [
            ("mode", m.mode.is_some()),
            ("uid", m.uid.is_some()),
            ("gid", m.gid.is_some()),
        ] {
            if set {
                return Err(format!(
                    "{name} is not allowed for {} mounts",
                    kind_name(m.kind)
                ));
            }
        }
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(format!(
            "sharing is only valid for cache mounts, not {}",
            kind_name(m.kind)
        ));
    }
    match m.kind {
        MountType::Secret => {
            if !m.from.is_empty() {
                return Err("a secret mount cannot have 'from'".into());
            }
            if !m.source.is_empty() {
                return Err("a secret mount takes 'id', not 'source'".into());
            }
            if m.target.is_empty() && m.id.is_empty() && !deferred {
                return Err(
                    "a secret mount needs an id or a target (e.g. type=secret,id=npmrc)".into(),
                );
            }
            if m.id.is_empty() {
                m.id = m.target.rsplit('/').next().unwrap_or_default().to_string();
            }
            if m.target.is_empty() {
                m.target = format!("/run/secrets/{}", m.id);
            }
        }
        MountType::Tmpfs => {
            if !m.from.is_empty() || !m.source.is_empty() {
                return Err("a tmpfs mount takes no 'from' or 'source'".into());
            }
        }
        MountType::Bind | MountType::Cache => {}
    }
    if m.target.is_empty() && !deferred {
        return Err(format!(
            "{} mount needs a target (target=/path)",
            kind_name(m.kind)
        ));
    }
    if m.kind == MountType::Cache && m.id.is_empty() {
        m.id = m.target.clone();
    }
    Ok(())
}

fn kind_name(k: MountType) -> &'static str {
    match k {
        MountType::Bind => "bind",
        MountType::Cache => "cache",
        MountType::Tmpfs => "tmpfs",
        MountType::Secret => "secret",
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Some(true),
        "0" | "f" | "false" => Some(false),
        _ => None,
    }
}

/// docker/go-units `RAMInBytes`: a number with an optional b/k/m/g/t/p suffix
/// (binary multiples, optional trailing `b`/`ib`).
fn parse_size(v: &str) -> Option<u64> {
    let s = v.trim().to_ascii_lowercase();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// One CSV record (RFC 4180 quotes), as Go's encoding/csv reads a mount value.
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_quotes = false;
    let mut field_start = true;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if field_start => in_quotes = true,
            ',' => {
                out.push(std::mem::take(&mut cur));
                field_start = true;
                continue;
            }
            '\n' | '\r' => return Err("a mount value must be one line".into()),
            _ => cur.push(c),
        }
        field_start = false;
    }
    if in_quotes {
        return Err(format!("unterminated quote in mount value {s:?}"));
    }
    out.push(cur);
    Ok(out.into_iter().filter(|f| !f.is_empty()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<MountSpec, String> {
        parse_mount(s, None)
    }

    #[test]
    fn cache_defaults_and_options() {
        let m = p("type=cache,target=/root/.cache,sharing=locked,mode=0755,uid=1,gid=2").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.readonly);
        assert_eq!(m.id, "/root/.cache");
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!((m.mode, m.uid, m.gid), (Some(0o755), Some(1), Some(2)));
        let m = p("type=cache,id=x,target=/c,ro,from=build,source=/s").unwrap();
        assert!(m.readonly);
        assert_eq!(
            (m.id.as_str(), m.from.as_str(), m.source.as_str()),
            ("x", "build", "/s")
        );
    }

    #[test]
    fn bind_tmpfs_secret() {
        let m = p("target=/src").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        assert!(!p("type=bind,target=/src,rw").unwrap().readonly);
        assert!(!p("type=bind,target=/src,readwrite=true").unwrap().readonly);
        let m = p("type=tmpfs,target=/t,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = p("type=secret,id=npmrc").unwrap();
        assert_eq!(m.target, "/run/secrets/npmrc");
        let m = p("type=secret,target=/root/.npmrc,required,mode=0400").unwrap();
        assert_eq!(m.id, ".npmrc");
        assert!(m.required);
        let m = p("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target, "/a,b");
    }

    #[test]
    fn rejects_bad_options() {
        for bad in [
            "type=cache,target=/c,colour=red",
            "type=volume,target=/x",
            "type=ssh",
            "type=cache,target=/c,sharing=sometimes",
            "type=cache,target=/c,mode=999",
            "type=cache,target=/c,uid=-1",
            "type=bind,target=/c,mode=0644",
            "type=bind,target=/c,sharing=shared",
            "type=tmpfs,target=/c,size=lots",
            "type=tmpfs,target=/c,from=x",
            "type=bind,target=/c,required",
            "type=secret,from=x,id=a",
            "type=secret",
            "type=cache",
            "type=bind,target=/c,ro=maybe",
            "type=cache,target=/c,bogus",
            "type=bind,from=$X,target=/c",
            "type=bind,\"target=/c",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn defers_and_expands_variables() {
        let m = p("type=cache,target=$HOME/.cache").unwrap();
        assert_eq!(m.target, "");
        let mut exp = |v: &str| Ok(v.replace("$HOME", "/root"));
        let m = parse_mount("type=cache,target=$HOME/.cache", Some(&mut exp)).unwrap();
        assert_eq!(m.target, "/root/.cache");
        assert_eq!(m.id, "/root/.cache");
    }
}
