//! img's image commands: images, pull, push, tag, rm, save, load, inspect,
//! login, logout, du, prune.

use super::{not_implemented, GlobalArgs};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `imgfarm images`
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only show images whose reference matches this
    pub filter: Option<String>,
    /// Only show image IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format: table or json
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// `imgfarm pull`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference (e.g. registry:5000/app:1)
    pub image: String,
    /// Platform to pull (default: the host's); "all" pulls every platform
    #[arg(long)]
    pub platform: Option<String>,
}

/// `imgfarm push`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// Image reference in the local store
    pub image: String,
}

/// `imgfarm tag`
#[derive(Debug, Args)]
pub struct TagArgs {
    /// Existing image reference
    pub source: String,
    /// New reference
    pub target: String,
}

/// `imgfarm rm`
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image references to remove
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `imgfarm save`
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Image references to save
    #[arg(required = true)]
    pub images: Vec<String>,
    /// Write to this file instead of stdout
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Archive format: docker or oci
    #[arg(long, default_value = "docker")]
    pub format: String,
}

/// `imgfarm load`
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from this file instead of stdin
    #[arg(short, long)]
    pub input: Option<PathBuf>,
}

/// `imgfarm inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Image reference
    pub image: String,
}

/// `imgfarm login`
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: docker.io)
    pub registry: Option<String>,
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
}

/// `imgfarm logout`
#[derive(Debug, Args)]
pub struct LogoutArgs {
    /// Registry host (default: docker.io)
    pub registry: Option<String>,
}

/// `imgfarm du`
#[derive(Debug, Args)]
pub struct DuArgs {
    /// Show every blob
    #[arg(short, long)]
    pub verbose: bool,
}

/// `imgfarm prune`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Also remove the build cache
    #[arg(short, long)]
    pub all: bool,
}

/// Run `imgfarm images`.
pub fn images(g: &GlobalArgs, a: ImagesArgs) -> anyhow::Result<ExitCode> {
    super::images_list::run(g, a)
}
/// Run `imgfarm pull`.
pub fn pull(_g: &GlobalArgs, _a: PullArgs) -> anyhow::Result<ExitCode> {
    not_implemented("pull")
}
/// Run `imgfarm push`.
pub fn push(_g: &GlobalArgs, _a: PushArgs) -> anyhow::Result<ExitCode> {
    not_implemented("push")
}
/// Run `imgfarm tag`.
pub fn tag(_g: &GlobalArgs, _a: TagArgs) -> anyhow::Result<ExitCode> {
    not_implemented("tag")
}
/// Run `imgfarm rm`.
pub fn rm(_g: &GlobalArgs, _a: RmArgs) -> anyhow::Result<ExitCode> {
    not_implemented("rm")
}
/// Run `imgfarm save`.
pub fn save(_g: &GlobalArgs, _a: SaveArgs) -> anyhow::Result<ExitCode> {
    not_implemented("save")
}
/// Run `imgfarm load`.
pub fn load(_g: &GlobalArgs, _a: LoadArgs) -> anyhow::Result<ExitCode> {
    not_implemented("load")
}
/// Run `imgfarm inspect`.
pub fn inspect(_g: &GlobalArgs, _a: InspectArgs) -> anyhow::Result<ExitCode> {
    not_implemented("inspect")
}
/// Run `imgfarm login`.
pub fn login(_g: &GlobalArgs, _a: LoginArgs) -> anyhow::Result<ExitCode> {
    not_implemented("login")
}
/// Run `imgfarm logout`.
pub fn logout(_g: &GlobalArgs, _a: LogoutArgs) -> anyhow::Result<ExitCode> {
    not_implemented("logout")
}
/// Run `imgfarm du`.
pub fn du(_g: &GlobalArgs, _a: DuArgs) -> anyhow::Result<ExitCode> {
    not_implemented("du")
}
/// Run `imgfarm prune`.
pub fn prune(_g: &GlobalArgs, _a: PruneArgs) -> anyhow::Result<ExitCode> {
    not_implemented("prune")
}
