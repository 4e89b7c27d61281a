//! What a worker announces it can run: native platforms (detected from the
//! host, or `--platforms`) and emulated ones (those whose emulation resolves
//! on this host: a binfmt_misc handler, or qemu-user-static for a private
//! registration; see [`crate::emulation`]).

use crate::emulation::{native_platforms, EmulationError, EmulationMode};
use imgfarm_common::platform::Platform;

/// Platforms offered as emulated when their emulation resolves (the ones
/// [`crate::emulation`] knows the ELF header of, as BuildKit's binfmt list).
pub const EMULATION_CANDIDATES: [(&str, &str); 8] = [
    ("amd64", ""),
    ("386", ""),
    ("arm64", ""),
    ("arm", "v7"),
    ("arm", "v6"),
    ("riscv64", ""),
    ("ppc64le", ""),
    ("s390x", ""),
];

/// The native platforms: `override_` when given (`--platforms`), else the
/// host's own and what it runs without emulation (linux/386 on amd64).
pub fn native(override_: Option<&[Platform]>) -> Vec<Platform> {
    match override_ {
        Some(p) if !p.is_empty() => p.to_vec(),
        _ => native_platforms(&Platform::host()),
    }
}

/// The candidates not covered by `native` for which `resolve` finds an
/// emulation (a native answer from the host does not count: with
/// `--platforms linux/arm64` on an amd64 host, amd64 is not offered).
pub fn emulated(
    native: &[Platform],
    resolve: impl Fn(&Platform) -> Result<EmulationMode, EmulationError>,
) -> Vec<Platform> {
    EMULATION_CANDIDATES
        .iter()
        .map(|(arch, variant)| Platform::new("linux", arch, variant))
        .filter(|p| !native.iter().any(|n| n.matches(p)))
        .filter(|p| resolve(p).is_ok_and(|m| m.is_emulated()))
        .collect()
}

/// Whether a worker announcing `native` and `emulated` may run code for
/// `target` (a vertex on another platform is refused, never run).
pub fn offers(native: &[Platform], emulated: &[Platform], target: &Platform) -> bool {
    native.iter().chain(emulated).any(|p| p.matches(target))
}
