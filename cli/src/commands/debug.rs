//! Hidden developer dumps.

use super::build::BuildArgs;
use super::{not_implemented, GlobalArgs};
use anyhow::Context as _;
use clap::Subcommand;
use imgfarm_common::dockerfile::{dump::dump, parser};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `imgfarm debug ...`
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print a Dockerfile's parse tree in BuildKit's dump format
    Parse {
        /// The Dockerfile
        file: PathBuf,
    },
    /// Print the build graph as JSON
    Graph(Box<BuildArgs>),
    /// Build busybox images for linux/amd64 and linux/arm64 from the
    /// busybox-static .debs that scripts/setup.sh downloads, and store them
    /// as busybox:latest (an index) in the local image store
    SeedBusybox {
        /// Where busybox-static_{amd64,arm64}.deb are
        #[arg(
            long,
            env = "IMGFARM_DEBS_DIR",
            default_value = "/var/cache/imgfarm/debs"
        )]
        debs: PathBuf,
    },
    /// Import an OCI layout directory into the local image store and name
    /// one of its refs (used to seed base images offline)
    ImportLayout {
        /// The layout directory
        dir: PathBuf,
        /// Which `org.opencontainers.image.ref.name` to take (default: the only or first one)
        #[arg(long = "ref")]
        layout_ref: Option<String>,
        /// Name in the local store, e.g. busybox:latest
        #[arg(long)]
        name: String,
    },
}

/// Run a debug command.
pub fn run(_g: &GlobalArgs, c: DebugCommand) -> anyhow::Result<ExitCode> {
    match c {
        DebugCommand::Parse { file } => parse_file(&file),
        DebugCommand::Graph(_) => not_implemented("debug graph"),
        DebugCommand::SeedBusybox { debs } => super::seed::seed_busybox(_g, &debs),
        DebugCommand::ImportLayout {
            dir,
            layout_ref,
            name,
        } => import_layout(_g, &dir, layout_ref.as_deref(), &name),
    }
}

fn import_layout(
    g: &GlobalArgs,
    dir: &std::path::Path,
    layout_ref: Option<&str>,
    name: &str,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    use imgfarm_common::oci::layout::{import_dir, to_ref_descriptor};
    let state = g.state_dir();
    std::fs::create_dir_all(&state)?;
    let store = imgfarm_common::oci::store::ContentStore::open(&state)?;
    let refs = import_dir(&store, dir, Default::default())
        .with_context(|| format!("importing {}", dir.display()))?;
    let chosen = match layout_ref {
        Some(r) => refs.iter().find(|x| x.name.as_deref() == Some(r)),
        None => refs.first(),
    }
    .ok_or_else(|| anyhow::anyhow!("{} has no ref {layout_ref:?}", dir.display()))?;
    let name = imgfarm_common::graph::reference::normalize_reference(name)
        .map_err(|e| anyhow::anyhow!("invalid name {name:?}: {e}"))?;
    store.set_ref(&name, &to_ref_descriptor(&chosen.descriptor)?)?;
    println!("{name} {}", chosen.descriptor.digest());
    Ok(ExitCode::SUCCESS)
}

/// `imgfarm debug parse FILE`: print the parse tree in BuildKit's dump format
/// (one `(keyword ...)` line per instruction), warnings on stderr.
fn parse_file(file: &Path) -> anyhow::Result<ExitCode> {
    let mut bytes = Vec::new();
    // Read at most one byte past the parser's bound; it reports the overflow.
    let limit = u64::try_from(parser::MAX_FILE_BYTES).unwrap_or(u64::MAX);
    std::fs::File::open(file)
        .and_then(|f| f.take(limit.saturating_add(1)).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read Dockerfile {}", file.display()))?;
    let name = file.display().to_string();
    let result = parser::parse_named(&bytes, &name)?;
    for w in &result.warnings {
        eprintln!("warning: {name}:{}: {}", w.line, w.message);
    }
    println!("{}", dump(&result.ast));
    Ok(ExitCode::SUCCESS)
}
