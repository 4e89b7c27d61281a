//! The build graph: keyed vertices, inputs before users, deduplicated by
//! key, and the export vertex of each requested platform.

use super::image_config::StageConfig;
use super::op::Op;
use super::vertex::Vertex;
use crate::oci::Digest;
use crate::platform::Platform;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};

/// The result for one requested platform.
#[derive(Debug, Clone, Serialize)]
pub struct PlatformTarget {
    /// The requested platform.
    pub platform: Platform,
    /// Key of its export vertex.
    pub export: Digest,
    /// The final image config.
    pub config: StageConfig,
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
    /// Insert a vertex unless one with its key exists; returns the key. The
    /// frontend inserts a vertex only after its inputs.
    pub(crate) fn insert(&mut self, v: Vertex) -> Digest {
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

    /// The graph as [`to_json`](Self::to_json) describes it, but borrowed
    /// and serialised straight to its output: no `serde_json::Value` tree
    /// (several times the graph's size) is built, so printing a graph of a
    /// million vertices costs about what the graph itself does. Object keys
    /// come in the order `to_json` documents rather than sorted.
    pub fn json_view(&self) -> impl Serialize + '_ {
        GraphJson(self)
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

/// [`BuildGraph::json_view`].
struct GraphJson<'g>(&'g BuildGraph);

#[derive(Serialize)]
struct VertexJson<'g> {
    key: &'g Digest,
    platform: Option<String>,
    kind: &'static str,
    description: &'g str,
    inputs: &'g [Digest],
    op: &'g Op,
}

#[derive(Serialize)]
struct TargetJson<'g> {
    platform: String,
    stage: &'g str,
    export: &'g Digest,
    config: &'g StageConfig,
}

impl Serialize for GraphJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Vertices<'g>(&'g BuildGraph);
        impl Serialize for Vertices<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.len()))?;
                for n in self.0.graph.node_indices() {
                    let v = &self.0.graph[n];
                    seq.serialize_element(&VertexJson {
                        key: &v.key,
                        platform: v.platform.as_ref().map(|p| p.to_string()),
                        kind: v.op.kind(),
                        description: &v.description,
                        inputs: &v.inputs,
                        op: &v.op,
                    })?;
                }
                seq.end()
            }
        }
        let targets: Vec<TargetJson<'_>> = self
            .0
            .targets
            .iter()
            .map(|t| TargetJson {
                platform: t.platform.to_string(),
                stage: &t.stage,
                export: &t.export,
                config: &t.config,
            })
            .collect();
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("vertices", &Vertices(self.0))?;
        m.serialize_entry("targets", &targets)?;
        m.serialize_entry("warnings", &self.0.warnings)?;
        m.end()
    }
}
