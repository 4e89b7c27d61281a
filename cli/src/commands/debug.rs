//! Hidden developer dumps.

use super::build::BuildArgs;
use super::GlobalArgs;
use anyhow::Context as _;
use clap::Subcommand;
use imgfarm_common::dockerfile::{dump::dump, parser};
use std::io::{Read as _, Write as _};
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
        DebugCommand::Graph(a) => graph(&a),
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
    let name = imgfarm_common::image_name::normalize_reference(name)
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

/// `imgfarm debug graph [build flags] CONTEXT`: the build graph as JSON.
fn graph(a: &BuildArgs) -> anyhow::Result<ExitCode> {
    use imgfarm_common::context::BuildContext;
    use imgfarm_common::dockerfile::frontend::{build_graph, BuildRequest};
    use imgfarm_common::dockerfile::ignore::{find_ignore_file, IgnoreMatcher};
    use imgfarm_common::platform::Platform;

    let dockerfile = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let bytes = std::fs::read(&dockerfile)
        .with_context(|| format!("reading the Dockerfile {}", dockerfile.display()))?;
    let name = dockerfile.display().to_string();
    let parsed = imgfarm_common::dockerfile::parser::parse_named(&bytes, &name)?;
    let ignore = match find_ignore_file(&a.context, &dockerfile) {
        Some(p) => IgnoreMatcher::from_file(&p)?,
        None => IgnoreMatcher::empty(),
    };
    let context = BuildContext::open(&a.context, ignore)?;
    let req = BuildRequest {
        dockerfile: &parsed,
        file_name: name,
        build_args: build_args(&a.build_args),
        target: a.target.clone(),
        platforms: platforms(&a.platform)?,
        build_platform: Platform::host(),
        labels: labels(&a.labels),
        context: &context,
        resolved_images: Default::default(),
    };
    let g = build_graph(&req)?;
    for w in &g.warnings {
        eprintln!("warning: {w}");
    }
    // Streamed: a `serde_json::Value` of a big graph costs several times the graph.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, &g.json_view())?;
    writeln!(out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `--build-arg KEY=VALUE`, or `KEY` to take the value from the environment
/// (skipped when unset), as docker does.
pub(super) fn build_args(raw: &[String]) -> std::collections::BTreeMap<String, String> {
    raw.iter()
        .filter_map(|s| match s.split_once('=') {
            Some((k, v)) => Some((k.to_string(), v.to_string())),
            None => std::env::var(s).ok().map(|v| (s.clone(), v)),
        })
        .collect()
}

/// `--label KEY=VALUE` (a bare KEY gets an empty value).
pub(super) fn labels(raw: &[String]) -> std::collections::BTreeMap<String, String> {
    raw.iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (s.clone(), String::new()),
        })
        .collect()
}

/// Repeatable, comma-separated `--platform` lists, duplicates dropped.
pub(super) fn platforms(raw: &[String]) -> anyhow::Result<Vec<imgfarm_common::platform::Platform>> {
    let mut out = Vec::new();
    for list in raw {
        for p in imgfarm_common::platform::parse_platform_list(list)? {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}
