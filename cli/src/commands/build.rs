//! `imgfarm build`: docker buildx build's flags and meanings.

mod farm;
mod local;
mod naming;
mod output;
mod registry;

use super::GlobalArgs;
use crate::progress::{Mode, Progress};
use anyhow::{anyhow, bail, Context as _};
use clap::Args;
use imgfarm_common::context::cache::DigestCache;
use imgfarm_common::context::BuildContext;
use imgfarm_common::dockerfile::frontend::{build_graph, BuildRequest, ContextSelector};
use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
use imgfarm_common::entitlement::Entitlements;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::store::ContentStore;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::{parse_platform_list, Platform};
use imgfarm_coordinator::local::LocalWorkerOffer;
use imgfarm_worker::solve::exec::CancelToken;
use imgfarm_worker::solve::result::ResultCache;
use imgfarm_worker::solve::{image, LocalWorker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

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
    /// Fail the build when it runs longer than this (e.g. 30m, 2h); its running steps are cancelled
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse_secs)]
    pub timeout: Option<u64>,
    /// Cancel a step that runs longer than this (e.g. 10m) and fail the build
    #[arg(long = "step-timeout", value_name = "DURATION", value_parser = crate::duration::parse_secs)]
    pub step_timeout: Option<u64>,
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
    /// Send the build to a farm coordinator (quic://HOST:PORT; `--farm=` takes it from farm.conf)
    #[arg(long, env = "IMGFARM_FARM", value_name = "ADDR")]
    pub farm: Option<String>,
    /// Farm TLS directory holding ca.crt and this client's certificate [env: IMGFARM_TLS_DIR] (implies --farm)
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Which client-NAME certificate of the TLS directory to use [env: IMGFARM_FARM_NAME] (implies --farm)
    #[arg(long, value_name = "NAME")]
    pub farm_name: Option<String>,
    /// Follow a farm build already submitted, by its build id (implies --farm)
    #[arg(long, value_name = "ID")]
    pub reattach: Option<String>,
    /// Allow an entitlement: network.host (RUN --network=host), security.insecure
    /// (RUN --security=insecure); repeatable, comma-separated
    #[arg(long = "allow", value_name = "ENTITLEMENT")]
    pub allow: Vec<String>,
}

impl BuildArgs {
    /// Does this build go to a farm? Any farm flag says so; the address
    /// may then come from the environment or farm.conf.
    pub fn wants_farm(&self) -> bool {
        self.farm.is_some()
            || self.tls_dir.is_some()
            || self.farm_name.is_some()
            || self.reattach.is_some()
    }
}

/// Largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 10 << 20;

struct Selector<'a>(&'a BuildContext);

impl ContextSelector for Selector<'_> {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        self.0
            .select(sources, excludes)
            .map(|s| s.digest())
            .map_err(|e| e.to_string())
    }
}

fn key_values(items: &[String], what: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for i in items {
        match i.split_once('=') {
            Some((k, v)) => out.insert(k.to_string(), v.to_string()),
            // docker: `--build-arg KEY` takes KEY from the environment.
            None if what == "--build-arg" => match std::env::var(i) {
                Ok(v) => out.insert(i.clone(), v),
                Err(_) => continue,
            },
            None => bail!("invalid {what} {i:?}: expected KEY=VALUE"),
        };
    }
    Ok(out)
}

/// The Dockerfile as read once by [`prepare`]: its bytes, its file name
/// (for error messages) and its path.
struct Dockerfile {
    bytes: Vec<u8>,
    name: String,
    path: PathBuf,
}

fn read_dockerfile(a: &BuildArgs) -> anyhow::Result<Dockerfile> {
    let path = a
        .file
        .clone()
        .unwrap_or_else(|| a.context.join("Dockerfile"));
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("cannot read the Dockerfile {}", path.display()))?;
    if meta.len() > MAX_DOCKERFILE {
        bail!(
            "{} is {} bytes; a Dockerfile may be at most {MAX_DOCKERFILE}",
            path.display(),
            meta.len()
        );
    }
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the Dockerfile {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    Ok(Dockerfile { bytes, name, path })
}

fn open_context(a: &BuildArgs, dockerfile: &Path) -> anyhow::Result<BuildContext> {
    // BuildKit: <Dockerfile>.dockerignore next to the Dockerfile wins over
    // the context's .dockerignore.
    let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
    let general = a.context.join(".dockerignore");
    let ignore = match [specific, general].into_iter().find(|p| p.is_file()) {
        Some(p) => {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            IgnoreMatcher::parse(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => IgnoreMatcher::empty(),
    };
    BuildContext::open(&a.context, ignore)
        .with_context(|| format!("build context {}", a.context.display()))
}

/// Native and emulated platforms of the embedded worker. Emulation is
/// offered for every requested foreign platform; the executor refuses
/// before running when qemu is missing.
fn local_worker_offer(
    targets: &[Platform],
    jobs: usize,
    entitlements: Entitlements,
) -> LocalWorkerOffer {
    let host = Platform::host();
    let emulated = targets
        .iter()
        .filter(|p| !host.matches(p))
        .cloned()
        .collect();
    LocalWorkerOffer {
        native: vec![host],
        emulated,
        jobs,
        entitlements,
    }
}

/// Refuses a graph with a step that needs an entitlement the build does not allow
/// (BuildKit: `network.host is not allowed`), naming the Dockerfile line and the flag.
fn check_entitlements(
    graph: &BuildGraph,
    allowed: &Entitlements,
    dockerfile: &Dockerfile,
) -> anyhow::Result<()> {
    let mut vertices = graph.vertices();
    vertices.sort_by_key(|v| v.line);
    for v in vertices {
        let Some(e) = allowed
            .missing(&Entitlements::required_by(&v.op))
            .first()
            .copied()
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&dockerfile.bytes)
            .lines()
            .nth(v.line.saturating_sub(1))
            .map(|l| l.trim().to_string())
            .unwrap_or_else(|| v.description.clone());
        bail!(
            "{}:{}: {text}: {e} is not allowed: {} needs the {e} entitlement; allow it with \
             imgfarm build --allow {e}",
            dockerfile.name,
            v.line,
            e.flag()
        );
    }
    Ok(())
}

/// The `--allow` flags.
fn allowed(a: &BuildArgs) -> anyhow::Result<Entitlements> {
    Entitlements::parse(&a.allow).context("--allow")
}

/// Build the graph, resolving base images from the local store (and,
/// with `--pull` or when missing, from the registry once that lands).
fn plan(
    a: &BuildArgs,
    store: &ContentStore,
    ctx: &BuildContext,
    dockerfile: &Dockerfile,
) -> anyhow::Result<(BuildGraph, Vec<Platform>)> {
    let parsed =
        imgfarm_common::dockerfile::parser::parse_named(&dockerfile.bytes, &dockerfile.name)
            .map_err(|e| anyhow!("{e}"))?;
    let mut platforms = Vec::new();
    for p in &a.platform {
        platforms.extend(parse_platform_list(p)?);
    }
    let selector = Selector(ctx);
    let mut req = BuildRequest {
        dockerfile: &parsed,
        file_name: dockerfile.name.clone(),
        build_args: key_values(&a.build_args, "--build-arg")?,
        target: a.target.clone(),
        platforms: platforms.clone(),
        build_platform: Platform::host(),
        labels: key_values(&a.labels, "--label")?,
        context: &selector,
        resolved_images: BTreeMap::new(),
    };
    let mut graph = build_graph(&req).map_err(|e| anyhow!("{e}"))?;
    check_entitlements(&graph, &allowed(a)?, dockerfile)?;
    let unresolved = graph.unresolved_images();
    if !unresolved.is_empty() {
        for (reference, platform) in unresolved {
            // A ref whose index lacks this platform's manifest locally (only
            // another platform was pulled so far) counts as missing: pull it.
            let mut found = if a.pull {
                None
            } else {
                image::resolve_local(store, &reference, &platform).unwrap_or(None)
            };
            if found.is_none() {
                registry::pull_base(store, &reference, &platform).with_context(|| {
                    format!(
                        "base image {reference} for {platform}: not found in the local image \
                         store, and the registry did not provide it"
                    )
                })?;
                found = image::resolve_local(store, &reference, &platform)?;
            }
            match found {
                Some(r) => {
                    req.resolved_images.insert((reference, platform), r);
                }
                None => bail!("base image {reference} for {platform}: not found"),
            }
        }
        graph = build_graph(&req).map_err(|e| anyhow!("{e}"))?;
    }
    if platforms.is_empty() {
        platforms.push(Platform::host());
    }
    save_context_digests(ctx);
    Ok((graph, platforms))
}

/// Writes the context's digest cache back once the graph (every COPY
/// source's digest) is computed. A failure costs the next build a re-read
/// of the context, never this build.
fn save_context_digests(ctx: &BuildContext) {
    match ctx.save_digest_cache() {
        Ok(outcome) => tracing::debug!(
            files_hashed = ctx.files_hashed(),
            ?outcome,
            "build context digests"
        ),
        Err(e) => eprintln!("WARNING: {e}; the next build reads the whole context again"),
    }
}

/// What every build (local or farm) opens first.
struct Prepared {
    mode: Mode,
    outputs: Vec<output::OutputSpec>,
    state: PathBuf,
    store: ContentStore,
    ctx: BuildContext,
    dockerfile: Dockerfile,
}

/// Resolve the context directory, parse progress and output flags, open the
/// state's image store and the build context.
fn prepare(g: &GlobalArgs, a: &mut BuildArgs) -> anyhow::Result<Prepared> {
    // Once, up front: every later use (bind-mount sources handed to the executor, which
    // needs absolute host paths) sees the same absolute, symlink-free context directory.
    a.context = std::fs::canonicalize(&a.context).with_context(|| {
        format!(
            "build context {}: cannot resolve the directory (does it exist?)",
            a.context.display()
        )
    })?;
    let mode = Mode::parse(&a.progress).map_err(|e| anyhow!(e))?;
    let outputs = output::parse_outputs(a)?;
    let state = g.state_dir();
    std::fs::create_dir_all(&state)
        .with_context(|| format!("creating state directory {}", state.display()))?;
    let store = ContentStore::open(&state)
        .with_context(|| format!("opening the image store in {}", state.display()))?;
    let dockerfile = read_dockerfile(a)?;
    // Digests of context files from earlier builds, checked by lstat: an
    // unchanged context is not read again (BuildKit's content-hash cache).
    let digests = DigestCache::load(
        &state.join("cache").join("context"),
        &a.context,
        std::time::SystemTime::now(),
    );
    let ctx = open_context(a, &dockerfile.path)?.with_digest_cache(digests);
    Ok(Prepared {
        mode,
        outputs,
        state,
        store,
        ctx,
        dockerfile,
    })
}

/// Run `imgfarm build`.
pub fn run(g: &GlobalArgs, mut a: BuildArgs) -> anyhow::Result<ExitCode> {
    if a.wants_farm() {
        return farm::run(g, a);
    }
    let Prepared {
        mode,
        outputs,
        state,
        store,
        ctx,
        dockerfile,
    } = prepare(g, &mut a)?;
    let ctx = Arc::new(ctx);
    let (graph, platforms) = plan(&a, &store, &ctx, &dockerfile)?;
    for w in &graph.warnings {
        eprintln!("WARNING: {w}");
    }
    let graph = Arc::new(graph);
    let cache = ResultCache::open(&state)?;
    let secrets = parse_secrets(&a.secrets)?;
    let executor: Option<Arc<dyn imgfarm_worker::solve::exec::StepExecutor>> = Some(Arc::new(
        imgfarm_worker::solve::rootless::RootlessExecutor::new(&state, secrets.files.clone()),
    ));
    let cancel = CancelToken::new();
    let worker = Arc::new(
        LocalWorker::new(
            store.clone(),
            cache,
            Arc::clone(&graph),
            Arc::clone(&ctx),
            executor,
        )
        .with_cancel(cancel.clone()),
    );
    let jobs = a.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let mut progress = Progress::new(mode);
    let b = local::LocalBuild {
        a: &a,
        store: &store,
        outputs: &outputs,
        platforms: &platforms,
        offer: local_worker_offer(&platforms, jobs, allowed(&a)?),
    };
    let ok = local::build(b, &graph, worker, cancel, &mut progress);
    progress.finish();
    Ok(if ok? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Secrets given with `--secret`, as files the executor binds read-only.
/// Environment secrets are written to private (0600) temp files that live
/// as long as this value.
struct Secrets {
    files: BTreeMap<String, PathBuf>,
    _env_files: Vec<tempfile::NamedTempFile>,
}

/// `--secret id=ID,src=PATH` (or `type=file`, `source=`), and
/// `--secret id=ID,env=VAR` (or `type=env`, where VAR defaults to ID), as
/// buildx takes them. With neither `src` nor `env`, an environment variable
/// named ID is used when set, else a file named ID. A named file must exist
/// and a named variable must be set.
fn parse_secrets(specs: &[String]) -> anyhow::Result<Secrets> {
    let mut files = BTreeMap::new();
    let mut env_files = Vec::new();
    for spec in specs {
        let mut id = None;
        let mut src = None;
        let mut env = None;
        let mut env_type = false;
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(PathBuf::from(v)),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", "file")) => {}
                Some(("type", "env")) => env_type = true,
                _ => bail!("invalid --secret {spec:?}: expected id=ID,src=PATH or id=ID,env=VAR"),
            }
        }
        if src.is_some() && (env.is_some() || env_type) {
            bail!("invalid --secret {spec:?}: give src=PATH or env=VAR, not both");
        }
        let id = id
            .or_else(|| {
                src.as_ref()
                    .and_then(|p| p.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .or_else(|| env.clone())
            .ok_or_else(|| anyhow!("invalid --secret {spec:?}: no id"))?;
        if env.is_none() && src.is_none() && (env_type || std::env::var_os(&id).is_some()) {
            env = Some(id.clone());
        }
        if let Some(var) = env {
            let value = std::env::var_os(&var)
                .ok_or_else(|| anyhow!("--secret {spec}: environment variable {var} is not set"))?;
            let mut f = tempfile::NamedTempFile::new()
                .with_context(|| format!("--secret {spec}: cannot create a private temp file"))?;
            std::io::Write::write_all(&mut f, value.as_encoded_bytes())
                .with_context(|| format!("--secret {spec}: cannot write the temp file"))?;
            files.insert(id, f.path().to_path_buf());
            env_files.push(f);
            continue;
        }
        let src = src.unwrap_or_else(|| PathBuf::from(&id));
        if !src.is_file() {
            bail!(
                "--secret {spec}: {} does not exist or is not a file",
                src.display()
            );
        }
        files.insert(id, src);
    }
    Ok(Secrets {
        files,
        _env_files: env_files,
    })
}

#[cfg(test)]
mod secret_tests {
    use super::parse_secrets;

    #[test]
    fn env_secrets_become_private_files_and_errors_name_the_problem() {
        // Edition 2021: set_var is safe; the names are unique to this test.
        std::env::set_var("IMGFARM_TEST_SECRET_A", "s3cret");
        std::env::set_var("IMGFARM_TEST_SECRET_B", "other");
        let s = parse_secrets(&[
            "id=tok,env=IMGFARM_TEST_SECRET_A".to_string(),
            "type=env,id=IMGFARM_TEST_SECRET_B".to_string(),
        ])
        .unwrap();
        let tok = &s.files["tok"];
        assert_eq!(std::fs::read_to_string(tok).unwrap(), "s3cret");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(tok).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_to_string(&s.files["IMGFARM_TEST_SECRET_B"]).unwrap(),
            "other"
        );
        let path = tok.clone();
        drop(s);
        assert!(!path.exists(), "the temp file goes with the build");

        let unset = parse_secrets(&["id=x,env=IMGFARM_TEST_SECRET_UNSET".to_string()]);
        let msg = format!("{:#}", unset.err().unwrap());
        assert!(
            msg.contains("IMGFARM_TEST_SECRET_UNSET is not set"),
            "{msg}"
        );
        let both = parse_secrets(&["id=x,src=/etc/hostname,env=HOME".to_string()]);
        assert!(format!("{:#}", both.err().unwrap()).contains("not both"));
    }
}
