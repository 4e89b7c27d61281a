//! OCI platforms (`os/arch[/variant]`), normalised and matched the way
//! containerd's `platforms` package does, which is what BuildKit and docker use.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A target platform as in the OCI image index `platform` object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Platform {
    /// `os` (OCI image index: "linux", "windows", ...).
    pub os: String,
    /// `architecture` in GOARCH spelling ("amd64", "arm64", "arm", ...).
    pub architecture: String,
    /// `variant` ("v8", "v7", ...), empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

/// A platform string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    /// The text given.
    pub input: String,
    /// Why it was refused.
    pub reason: &'static str,
}

impl Platform {
    /// Build and normalise a platform.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Self {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Self {
            os: os.to_lowercase(),
            architecture,
            variant,
        }
    }

    /// linux/amd64.
    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64", "")
    }

    /// linux/arm64.
    pub fn linux_arm64() -> Self {
        Self::new("linux", "arm64", "")
    }

    /// The platform this process runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Self::new(std::env::consts::OS, arch, "")
    }

    /// `linux_amd64`-style name, as BuildKit uses for per-platform output dirs.
    pub fn dir_name(&self) -> String {
        self.to_string().replace('/', "_")
    }

    /// Does an image for `candidate` run on `self`? containerd's rule: same OS,
    /// same normalised architecture, and a variant that is equal, or absent on
    /// either side for arm64 (whose default variant is v8).
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        self.variant == candidate.variant || self.variant.is_empty() || candidate.variant.is_empty()
    }

    /// A score for picking among index entries: exact variant first.
    pub fn match_rank(&self, candidate: &Platform) -> Option<u8> {
        if !self.matches(candidate) {
            return None;
        }
        Some(if self.variant == candidate.variant {
            0
        } else {
            1
        })
    }
}

/// containerd's `normalizeArch`: aliases to GOARCH names and default variants.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_lowercase();
    let variant = variant.to_lowercase();
    match arch.as_str() {
        "i386" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let v = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = if variant == "8" || variant == "v8" {
                String::new()
            } else {
                variant
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let v = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), v)
        }
        _ => (arch, variant),
    }
}

impl FromStr for Platform {
    type Err = PlatformError;

    /// Parse `os/arch[/variant]`, or a bare `arch` (os linux), as docker does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PlatformError {
            input: s.to_string(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let valid = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        let parts: Vec<&str> = t.split('/').collect();
        if parts.iter().any(|p| !valid(p)) {
            return Err(err(
                "each part must be non-empty and use only letters, digits, '-', '_' and '.'",
            ));
        }
        match parts.as_slice() {
            [arch] => {
                if is_known_os(arch) {
                    return Ok(Self::new(arch, Platform::host().architecture.as_str(), ""));
                }
                Ok(Self::new("linux", arch, ""))
            }
            [os, arch] => {
                if !is_known_os(os) {
                    return Err(err("unknown operating system"));
                }
                Ok(Self::new(os, arch, ""))
            }
            [os, arch, variant] => {
                if !is_known_os(os) {
                    return Err(err("unknown operating system"));
                }
                Ok(Self::new(os, arch, variant))
            }
            _ => Err(err("expected os/arch[/variant]")),
        }
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os.to_lowercase().as_str(),
        "linux"
            | "windows"
            | "darwin"
            | "freebsd"
            | "netbsd"
            | "openbsd"
            | "solaris"
            | "illumos"
            | "aix"
            | "android"
            | "ios"
            | "plan9"
            | "js"
            | "wasip1"
            | "dragonfly"
    )
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

/// Parse a comma-separated `--platform` list, dropping duplicates, keeping order.
pub fn parse_platform_list(s: &str) -> Result<Vec<Platform>, PlatformError> {
    let mut out: Vec<Platform> = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let p: Platform = part.parse()?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(PlatformError {
            input: s.to_string(),
            reason: "empty",
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        assert_eq!(
            "linux/aarch64".parse::<Platform>().unwrap(),
            Platform::linux_arm64()
        );
        assert_eq!(
            "linux/arm64/v8".parse::<Platform>().unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            "linux/x86_64".parse::<Platform>().unwrap().to_string(),
            "linux/amd64"
        );
        assert_eq!(
            "linux/arm".parse::<Platform>().unwrap().to_string(),
            "linux/arm/v7"
        );
        assert_eq!(
            "arm64".parse::<Platform>().unwrap().to_string(),
            "linux/arm64"
        );
        assert_eq!(
            "linux/amd64/v3".parse::<Platform>().unwrap().to_string(),
            "linux/amd64/v3"
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "linux/",
            "/amd64",
            "linux/amd64/v8/x",
            "plan10/amd64",
            "linux/am d64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_follows_containerd() {
        let arm64 = Platform::linux_arm64();
        assert!(arm64.matches(&Platform::new("linux", "arm64", "v8")));
        assert!(!arm64.matches(&Platform::linux_amd64()));
        let v3 = Platform::new("linux", "amd64", "v3");
        assert_eq!(Platform::linux_amd64().match_rank(&v3), Some(1));
        assert_eq!(v3.match_rank(&v3), Some(0));
    }

    #[test]
    fn list_dedupes() {
        let l = parse_platform_list("linux/amd64, linux/arm64,linux/x86_64").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].dir_name(), "linux_amd64");
    }
}
