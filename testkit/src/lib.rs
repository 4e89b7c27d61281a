//! Test fixtures that use real parts: a `docker-registry` on loopback, deterministic busybox
//! base images for linux/amd64 and linux/arm64, Debian bookworm base images made with
//! mmdebstrap ([`DebianBase`]), a loopback apt repository ([`AptRepo`]), and the unprivileged
//! farm user with subordinate id ranges. For fault tests: a network namespace joined by a veth
//! ([`NetNs`]: link cuts, packet loss), a registry front that answers 500 to blob uploads
//! ([`FaultyRegistry`]), and an independent content-store check ([`check_store`]).
//!
//! Every crate's tests use this crate as a dev-dependency. The fixtures are deliberately built
//! from tools that are independent of the code under test (GNU tar, gzip, dpkg-deb, openssl,
//! htpasswd, skopeo), so they can serve as proof.
//!
//! When a prerequisite is missing, fixtures return an [`Unavailable`] error. Tests turn that
//! into a visible `SKIPPED: ...` line with [`or_skip`] on a developer machine, and into a
//! failure when `CI` is set, so CI never passes a test that did not run.

mod apt_repo;
mod base_images;
mod cmd;
mod debian;
pub mod dockerd;
mod farm_user;
mod fault_proxy;
mod logging;
mod netns;
mod oci_layout;
mod registry;
mod skip;
mod store_check;

pub use apt_repo::{AptRepo, APT_REPO_PACKAGES, HELLO_OUTPUT, HELLO_PACKAGE};
pub use base_images::{BaseImages, ARCHES};
pub use cmd::{run_checked, CommandExt};
pub use debian::{DebianBase, DEBIAN_VARIANTS};
pub use dockerd::Dockerd;
pub use farm_user::{FarmUser, UserTempDir, FARM_USER_NAME};
pub use fault_proxy::FaultyRegistry;
pub use logging::{capture_logs, init_tracing, CapturedLogs};
pub use netns::NetNs;
pub use registry::{Registry, RegistryOptions};
pub use skip::{
    in_ci, is_root, or_skip, require_root_or_skip, require_tools_or_skip, skip, Unavailable,
};
pub use store_check::{check_store, sha256_file, StoreCheck};
