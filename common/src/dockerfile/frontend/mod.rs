//! The Dockerfile frontend: Dockerfile + build context → one build graph
//! ([`crate::graph`]) for all requested platforms (BuildKit's
//! `dockerfile2llb`).
//!
//! Each platform's stages are dispatched separately (with that platform's
//! TARGET* args) and their vertices inserted by key, so a vertex identical
//! across platforms (e.g. a `FROM --platform=$BUILDPLATFORM` stage that
//! never reads TARGET*) exists once. Only stages the target needs are
//! dispatched. No I/O happens here except the context selection calls.
//!
//! Base images: pass their resolved digest and config in
//! [`BuildRequest::resolved_images`] to apply their ENV, WORKDIR, USER and
//! ONBUILD triggers as BuildKit does. Without it the image vertex has no
//! digest ([`BuildGraph::unresolved_images`]); resolve those and build again.

//!
//! - [`stage`]: one platform's stages, FROM bases, ONBUILD triggers, export.
//! - [`meta`]: config-only instructions (ARG, ENV, LABEL, USER, CMD, ...).
//! - [`run`]: RUN, its mounts, network and security.
//! - [`copy`]: COPY and ADD.
//! - [`workdir`]: WORKDIR and destination paths.
//! - [`heredoc`]: heredoc bodies.
//! - [`sources`]: base image, stage and build-context inputs.

mod copy;
mod heredoc;
mod meta;
mod run;
mod sources;
mod stage;
mod workdir;

use crate::dockerfile::ast::ParseResult;
use crate::dockerfile::error::DockerfileError;
use crate::dockerfile::expand::Expander;
use crate::dockerfile::instructions::parse_dockerfile;
use crate::dockerfile::stages::{is_predefined_arg, names_index, platform_args, resolve_stages};
use crate::graph::image_config::StageConfig;
use crate::graph::BuildGraph;
use crate::oci::Digest;
use crate::platform::Platform;
use stage::PlatformBuild;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Context selections already hashed, by (sources, excludes).
type ContextCache = HashMap<(Vec<String>, Vec<String>), Digest>;

/// Access to the build context: the digest of exactly the files a COPY selects.
pub trait ContextSelector {
    /// Digest of the files `sources` (paths or globs relative to the context
    /// root) select, minus `excludes`, after `.dockerignore`. The error text
    /// says which source failed and why.
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String>;
}

/// A base image resolved before graph construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// Manifest digest for the platform.
    pub digest: Digest,
    /// Its config (ENV, WORKDIR, USER, ONBUILD ... as in the image).
    pub config: StageConfig,
}

/// Everything graph construction needs.
pub struct BuildRequest<'a> {
    /// The parsed Dockerfile.
    pub dockerfile: &'a ParseResult,
    /// Its name as the user gave it (for error messages).
    pub file_name: String,
    /// `--build-arg`s.
    pub build_args: BTreeMap<String, String>,
    /// `--target`; `None` = last stage.
    pub target: Option<String>,
    /// `--platform`s; empty = the build platform.
    pub platforms: Vec<Platform>,
    /// The platform of the machine running the build (BUILDPLATFORM).
    pub build_platform: Platform,
    /// `--label`s for the final image.
    pub labels: BTreeMap<String, String>,
    /// The build context.
    pub context: &'a dyn ContextSelector,
    /// Base images resolved beforehand, by (normalised reference, platform).
    pub resolved_images: BTreeMap<(String, Platform), ResolvedImage>,
}

/// Build the graph. Errors name the Dockerfile, line and offending text.
pub fn build_graph(req: &BuildRequest<'_>) -> Result<BuildGraph, DockerfileError> {
    build_inner(req).map_err(|e| e.in_file(req.file_name.clone()))
}

fn build_inner(req: &BuildRequest<'_>) -> Result<BuildGraph, DockerfileError> {
    let df = parse_dockerfile(req.dockerfile)?;
    let exp = Expander::new(df.escape);
    let by_name = names_index(&df);
    let platforms = if req.platforms.is_empty() {
        vec![req.build_platform.clone()]
    } else {
        req.platforms.clone()
    };
    let mut graph = BuildGraph::default();
    let mut ctx_cache = HashMap::new();
    let mut used_args: BTreeSet<String> = BTreeSet::new();
    let mut warnings: BTreeSet<String> = BTreeSet::new();
    for platform in &platforms {
        let auto = platform_args(platform, &req.build_platform);
        let plan = resolve_stages(&df, &req.build_args, req.target.as_deref(), &auto, &exp)?;
        used_args.extend(plan.meta_arg_names.iter().cloned());
        let mut pb = PlatformBuild {
            req,
            plan: &plan,
            exp,
            target_platform: platform.clone(),
            graph: &mut graph,
            ctx_cache: &mut ctx_cache,
            used_args: &mut used_args,
            by_name: &by_name,
            single_stage: df.stages.len() == 1,
            multi_platform: platforms.len() > 1,
        };
        let target = pb.run()?;
        graph.targets.push(target);
    }
    for k in req.build_args.keys() {
        if !used_args.contains(k) && !is_predefined_arg(k) {
            warnings.insert(format!(
                "build arg {k} was not consumed: no ARG {k} in the Dockerfile stages needed for this target"
            ));
        }
    }
    graph.warnings = warnings.into_iter().collect();
    Ok(graph)
}

/// The real build context: the selection digest covers exactly the files a
/// COPY/ADD selects (after `.dockerignore` and `--exclude`).
impl ContextSelector for crate::context::BuildContext {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        crate::context::BuildContext::select(self, sources, excludes)
            .map(|s| s.digest())
            .map_err(|e| e.to_string())
    }
}
