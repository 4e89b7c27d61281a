//! Where a farm client finds its coordinator and credentials.
//!
//! Each setting is taken from the first source that has it:
//! 1. the flag (`--farm`, `--tls-dir`, `--farm-name`);
//! 2. the environment (`IMGFARM_FARM`, `IMGFARM_TLS_DIR`, `IMGFARM_FARM_NAME`;
//!    clap reads these into the flags);
//! 3. the config file `$XDG_CONFIG_HOME/imgfarm/farm.conf`, else
//!    `~/.config/imgfarm/farm.conf`:
//!
//! ```text
//! # imgfarm farm client settings
//! farm    = quic://farm.example:7443
//! tls_dir = ~/.config/imgfarm/tls    # relative paths: from this file's directory
//! name    = alice                    # which client-NAME.crt to use
//! ```
//!
//! One `key = value` per line; `#` starts a comment; values may be quoted
//! with `"`. Unknown keys are an error, so a typo is not silently ignored.

use anyhow::{anyhow, bail, Context as _};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Largest config file read.
const MAX_CONFIG: u64 = 64 * 1024;

/// The keys a config file may set.
const KEYS: [&str; 3] = ["farm", "tls_dir", "name"];

/// What the flags (and their environment variables) gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FarmFlags {
    /// `--farm` / `IMGFARM_FARM`; an empty value means "not given".
    pub farm: Option<String>,
    /// `--tls-dir` / `IMGFARM_TLS_DIR`.
    pub tls_dir: Option<PathBuf>,
    /// `--farm-name` / `IMGFARM_FARM_NAME`.
    pub name: Option<String>,
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FarmConfigFile {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// `farm =`.
    pub farm: Option<String>,
    /// `tls_dir =`, resolved against the file's directory.
    pub tls_dir: Option<PathBuf>,
    /// `name =`.
    pub name: Option<String>,
}

/// The settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FarmSettings {
    /// Coordinator address (`quic://HOST:PORT`).
    pub farm: String,
    /// The TLS directory holding `ca.crt` and `client-NAME.{crt,key}`.
    pub tls_dir: PathBuf,
    /// The client name, when one was chosen.
    pub name: Option<String>,
}

/// The config file path: `$XDG_CONFIG_HOME/imgfarm/farm.conf`, else
/// `$HOME/.config/imgfarm/farm.conf` (XDG base directory rules: an empty or
/// relative `XDG_CONFIG_HOME` is ignored). Pure.
pub fn config_path(xdg_config_home: Option<OsString>, home: Option<OsString>) -> Option<PathBuf> {
    let xdg = xdg_config_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = match xdg {
        Some(x) => x,
        None => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".config"),
    };
    Some(base.join("imgfarm").join("farm.conf"))
}

/// The config file path from the process environment.
pub fn default_config_path() -> Option<PathBuf> {
    config_path(
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

fn expand_home(value: &str, home: Option<&Path>) -> PathBuf {
    match (value.strip_prefix("~/"), home) {
        (Some(rest), Some(h)) => h.join(rest),
        _ if value == "~" => home.map_or_else(|| PathBuf::from(value), Path::to_path_buf),
        _ => PathBuf::from(value),
    }
}

/// Parses the text of a config file read from `path`. Pure.
pub fn parse_config(
    text: &str,
    path: &Path,
    home: Option<&Path>,
) -> anyhow::Result<FarmConfigFile> {
    let mut out = FarmConfigFile {
        path: path.to_path_buf(),
        ..Default::default()
    };
    let base = path.parent().unwrap_or(Path::new("."));
    for (i, raw) in text.lines().enumerate() {
        let line = match raw.find('#') {
            Some(c) if !raw[..c].contains('"') => &raw[..c],
            _ => raw,
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{} line {}", path.display(), i + 1);
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| anyhow!("{}: expected `key = value`, got {line:?}", at()))?;
        let k = k.trim();
        let mut v = v.trim();
        if let Some(inner) = v.strip_prefix('"') {
            v = inner
                .strip_suffix('"')
                .ok_or_else(|| anyhow!("{}: unterminated quote in {line:?}", at()))?;
        }
        if v.is_empty() {
            bail!("{}: {k} has no value", at());
        }
        match k {
            "farm" => out.farm = Some(v.to_string()),
            "tls_dir" => {
                let p = expand_home(v, home);
                out.tls_dir = Some(if p.is_absolute() { p } else { base.join(p) });
            }
            "name" => out.name = Some(v.to_string()),
            other => bail!(
                "{}: unknown key {other:?} (known keys: {})",
                at(),
                KEYS.join(", ")
            ),
        }
    }
    Ok(out)
}

/// Reads the config file at `path`; `Ok(None)` when there is none.
pub fn read_config(path: &Path) -> anyhow::Result<Option<FarmConfigFile>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if meta.len() > MAX_CONFIG {
        bail!(
            "{} is {} bytes; a farm config file may be at most {MAX_CONFIG}",
            path.display(),
            meta.len()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let home = std::env::var_os("HOME").map(PathBuf::from);
    parse_config(&text, path, home.as_deref()).map(Some)
}

fn where_to_put(config: Option<&Path>) -> String {
    config.map_or_else(
        || "$XDG_CONFIG_HOME/imgfarm/farm.conf".to_string(),
        |p| p.display().to_string(),
    )
}

/// Resolves the settings: flags (and environment) first, then the config
/// file. `config_at` is where the file is (or would be), for the messages. Pure.
pub fn resolve(
    flags: &FarmFlags,
    file: Option<&FarmConfigFile>,
    config_at: Option<&Path>,
) -> anyhow::Result<FarmSettings> {
    let put = where_to_put(config_at);
    let farm = flags
        .farm
        .clone()
        .filter(|f| !f.is_empty())
        .or_else(|| file.and_then(|f| f.farm.clone()))
        .ok_or_else(|| {
            anyhow!(
                "no farm address: pass --farm quic://HOST:PORT, set IMGFARM_FARM, \
                 or add `farm = quic://HOST:PORT` to {put}"
            )
        })?;
    let tls_dir = flags
        .tls_dir
        .clone()
        .or_else(|| file.and_then(|f| f.tls_dir.clone()))
        .ok_or_else(|| {
            anyhow!(
                "no farm TLS directory: pass --tls-dir DIR, set IMGFARM_TLS_DIR, \
                 or add `tls_dir = DIR` to {put} (DIR holds ca.crt and your client-NAME.crt/.key)"
            )
        })?;
    let name = flags
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| file.and_then(|f| f.name.clone()));
    Ok(FarmSettings {
        farm,
        tls_dir,
        name,
    })
}

/// [`resolve`] with the config file from the environment.
pub fn load(flags: &FarmFlags) -> anyhow::Result<FarmSettings> {
    let path = default_config_path();
    let file = match &path {
        Some(p) => read_config(p)?,
        None => None,
    };
    resolve(flags, file.as_ref(), path.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FarmConfigFile {
        parse_config(
            text,
            Path::new("/etc/u/imgfarm/farm.conf"),
            Some(Path::new("/home/u")),
        )
        .unwrap()
    }

    #[test]
    fn config_path_prefers_absolute_xdg() {
        let p = config_path(Some("/x/cfg".into()), Some("/home/u".into()));
        assert_eq!(p, Some(PathBuf::from("/x/cfg/imgfarm/farm.conf")));
        let p = config_path(Some("relative".into()), Some("/home/u".into()));
        assert_eq!(p, Some(PathBuf::from("/home/u/.config/imgfarm/farm.conf")));
        let p = config_path(None, Some("/home/u".into()));
        assert_eq!(p, Some(PathBuf::from("/home/u/.config/imgfarm/farm.conf")));
        assert_eq!(config_path(None, None), None);
    }

    #[test]
    fn parses_keys_comments_quotes_and_paths() {
        let f = file(
            "# comment\n\nfarm = quic://h:7443  # trailing\ntls_dir = \"tls dir\"\nname=alice\n",
        );
        assert_eq!(f.farm.as_deref(), Some("quic://h:7443"));
        assert_eq!(f.tls_dir, Some(PathBuf::from("/etc/u/imgfarm/tls dir")));
        assert_eq!(f.name.as_deref(), Some("alice"));
        assert_eq!(
            file("tls_dir = ~/tls").tls_dir,
            Some(PathBuf::from("/home/u/tls"))
        );
        assert_eq!(file("tls_dir = /abs").tls_dir, Some(PathBuf::from("/abs")));
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let p = Path::new("/c/farm.conf");
        let e = parse_config("farm = x\nfram = y\n", p, None).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("/c/farm.conf line 2"), "{msg}");
        assert!(msg.contains("unknown key \"fram\""), "{msg}");
        assert!(parse_config("just words", p, None).is_err());
        assert!(parse_config("farm =", p, None).is_err());
        assert!(parse_config("farm = \"x", p, None).is_err());
    }

    #[test]
    fn flags_win_over_the_file() {
        let f = file("farm = quic://file:1\ntls_dir = /file\nname = filename\n");
        let flags = FarmFlags {
            farm: Some("quic://flag:2".into()),
            tls_dir: None,
            name: Some("flagname".into()),
        };
        let s = resolve(&flags, Some(&f), None).unwrap();
        assert_eq!(s.farm, "quic://flag:2");
        assert_eq!(s.tls_dir, PathBuf::from("/file"));
        assert_eq!(s.name.as_deref(), Some("flagname"));
        // An empty --farm= means "from the environment or the file".
        let flags = FarmFlags {
            farm: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&flags, Some(&f), None).unwrap().farm,
            "quic://file:1"
        );
    }

    #[test]
    fn missing_settings_say_where_to_give_them() {
        let at = Path::new("/home/u/.config/imgfarm/farm.conf");
        let e = resolve(&FarmFlags::default(), None, Some(at)).unwrap_err();
        let msg = e.to_string();
        for want in [
            "--farm",
            "IMGFARM_FARM",
            "/home/u/.config/imgfarm/farm.conf",
        ] {
            assert!(msg.contains(want), "{msg}");
        }
        let flags = FarmFlags {
            farm: Some("quic://h:1".into()),
            ..Default::default()
        };
        let msg = resolve(&flags, None, Some(at)).unwrap_err().to_string();
        for want in ["--tls-dir", "IMGFARM_TLS_DIR", "tls_dir ="] {
            assert!(msg.contains(want), "{msg}");
        }
    }
}
