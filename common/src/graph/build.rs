//! Dockerfile + build context → one build graph for all requested platforms.
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

use super::dispatch::PlatformBuild;
use super::expand::Expander;
use super::image_config::ImageConfig;
use super::op::Op;
use super::vertex::Vertex;
use crate::dockerfile::ast::ParseResult;
use crate::dockerfile::error::DockerfileError;
use crate::dockerfile::instructions::parse_dockerfile;
use crate::dockerfile::stages::{is_predefined_arg, names_index, platform_args, resolve_stages};
use crate::oci::Digest;
use crate::platform::Platform;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

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
    pub config: ImageConfig,
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

/// The result for one requested platform.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformTarget {
    /// The requested platform.
    pub platform: Platform,
    /// Key of its export vertex.
    pub export: Digest,
    /// The final image config.
    pub config: ImageConfig,
    /// The target stage's name.
    pub stage: String,
}

/// The build graph.
#[derive(Debug, Clone, Default)]
pub struct BuildGraph {
    graph: DiGraph<Vertex, ()>,
    index: HashMap<Digest, NodeIndex>,
    /// One entry per requested platform, in request order.
    pub targets: Vec<PlatformTarget>,
    /// Non-fatal findings (unused build args, unresolved base configs, ...).
    pub warnings: Vec<String>,
}

impl BuildGraph {
    /// Insert a vertex unless one with its key exists; returns the key.
    pub(super) fn insert(&mut self, v: Vertex) -> Digest {
        if self.index.contains_key(&v.key) {
            return v.key;
        }
        let key = v.key.clone();
        let inputs = v.inputs.clone();
        let n = self.graph.add_node(v);
        for i in inputs {
            if let Some(&from) = self.index.get(&i) {
                self.graph.add_edge(from, n, ());
            }
        }
        self.index.insert(key.clone(), n);
        key
    }

    /// A graph of already-keyed vertices (inputs before users), as a farm
    /// worker rebuilds the part of a client's graph it runs. Keys are taken
    /// as given; targets and warnings stay empty.
    pub fn from_vertices(vertices: impl IntoIterator<Item = Vertex>) -> Self {
        let mut g = Self::default();
        for v in vertices {
            g.insert(v);
        }
        g
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// True when there are no vertices.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// A vertex by key.
    pub fn vertex(&self, key: &Digest) -> Option<&Vertex> {
        self.index.get(key).map(|&n| &self.graph[n])
    }

    /// All vertices, inputs before users.
    pub fn vertices(&self) -> Vec<&Vertex> {
        // Vertices are inserted after their inputs, so insertion order is a
        // topological order; petgraph confirms it in debug builds.
        debug_assert!(petgraph::algo::toposort(&self.graph, None).is_ok());
        self.graph.node_indices().map(|n| &self.graph[n]).collect()
    }

    /// Keys of the vertices that use `key` directly.
    pub fn users(&self, key: &Digest) -> Vec<&Digest> {
        let Some(&n) = self.index.get(key) else {
            return Vec::new();
        };
        self.graph
            .edges(n)
            .map(|e| &self.graph[e.target()].key)
            .collect()
    }

    /// `key` and every vertex downstream of it.
    pub fn downstream(&self, key: &Digest) -> BTreeSet<Digest> {
        let mut out = BTreeSet::new();
        let mut todo = vec![key.clone()];
        while let Some(k) = todo.pop() {
            if out.insert(k.clone()) {
                todo.extend(self.users(&k).into_iter().cloned());
            }
        }
        out
    }

    /// Base images whose digest and config were not given (reference, platform).
    pub fn unresolved_images(&self) -> Vec<(String, Platform)> {
        let mut out = BTreeSet::new();
        for v in self.graph.node_weights() {
            if let (Op::Image(i), Some(p)) = (&v.op, &v.platform) {
                if i.digest.is_none() {
                    out.insert((i.reference.clone(), p.clone()));
                }
            }
        }
        out.into_iter().collect()
    }

    /// The graph as JSON: vertices (key, platform, op kind, description,
    /// input keys, op), targets and warnings.
    pub fn to_json(&self) -> serde_json::Value {
        let vertices: Vec<serde_json::Value> = self
            .vertices()
            .into_iter()
            .map(|v| {
                serde_json::json!({
                    "key": v.key,
                    "platform": v.platform.as_ref().map(|p| p.to_string()),
                    "kind": v.op.kind(),
                    "description": v.description,
                    "inputs": v.inputs,
                    "op": v.op,
                })
            })
            .collect();
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|t| {
                serde_json::json!({
                    "platform": t.platform.to_string(),
                    "stage": t.stage,
                    "export": t.export,
                    "config": t.config,
                })
            })
            .collect();
        serde_json::json!({ "vertices": vertices, "targets": targets, "warnings": self.warnings })
    }
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
