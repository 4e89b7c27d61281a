//! `imgfarm build`: docker buildx build's flags and meanings.

use super::GlobalArgs;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Flags of `imgfarm build` (and of `imgfarm debug graph`, which shares them).
#[derive(Debug, Args, Clone)]
pub struct BuildArgs {
    /// Build context: a directory
    #[arg(value_name = "PATH", default_value = ".")]
    pub context: PathBuf,
    /// Name of the Dockerfile [default: PATH/Dockerfile]
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Name and optionally a tag (name:tag); repeatable
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tags: Vec<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg", value_name = "KEY[=VALUE]")]
    pub build_args: Vec<String>,
    /// Target platforms, comma separated (e.g. linux/amd64,linux/arm64)
    #[arg(long, value_name = "LIST")]
    pub platform: Vec<String>,
    /// Target build stage
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Do not use cache when building
    #[arg(long)]
    pub no_cache: bool,
    /// Always attempt to pull newer base images
    #[arg(long)]
    pub pull: bool,
    /// Set image metadata (KEY=VALUE)
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Secret to expose to the build (id=ID,src=PATH or id=ID,env=VAR)
    #[arg(long = "secret", value_name = "SPEC")]
    pub secrets: Vec<String>,
    /// Shorthand for --output=type=registry
    #[arg(long)]
    pub push: bool,
    /// Output destination (type=image|oci|docker|local|tar|registry,dest=...)
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Write the image ID to the file
    #[arg(long, value_name = "FILE")]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata to the file
    #[arg(long, value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,
    /// Progress output: auto, tty, plain, quiet or rawjson
    #[arg(long, default_value = "auto", value_name = "TYPE")]
    pub progress: String,
    /// How many steps may run at once [default: number of CPUs]
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Send the build to a farm coordinator (quic://HOST:PORT)
    #[arg(long, env = "IMGFARM_FARM", value_name = "ADDR")]
    pub farm: Option<String>,
    /// Directory holding the farm CA and this client's certificate
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

/// Run `imgfarm build`.
pub fn run(_g: &GlobalArgs, _a: BuildArgs) -> anyhow::Result<ExitCode> {
    super::not_implemented("build")
}
