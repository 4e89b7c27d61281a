//! Shared helpers for the graph tests: a Dockerfile → ParseResult front
//! door, a fake build context and a request builder.
#![allow(dead_code)]

use imgfarm_common::dockerfile::ast::ParseResult;
use imgfarm_common::dockerfile::frontend::{build_graph, BuildRequest, ContextSelector};
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

/// Parse a Dockerfile with the real parser.
pub fn parse(text: &str) -> ParseResult {
    imgfarm_common::dockerfile::parser::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

/// A build context held in memory: path → content.
#[derive(Debug, Clone, Default)]
pub struct FakeContext {
    pub files: BTreeMap<String, String>,
}

impl FakeContext {
    pub fn with(files: &[(&str, &str)]) -> Self {
        Self {
            files: files
                .iter()
                .map(|(p, c)| (p.to_string(), c.to_string()))
                .collect(),
        }
    }
}

impl ContextSelector for FakeContext {
    fn select(&self, sources: &[String], excludes: &[String]) -> Result<Digest, String> {
        let mut buf = String::new();
        for s in sources {
            let s = s.trim_start_matches("./").trim_end_matches('/');
            if s.contains("..") {
                return Err(format!("{s}: outside the build context"));
            }
            let mut found = false;
            for (p, c) in &self.files {
                let hit = s == "." || s.is_empty() || p == s || p.starts_with(&format!("{s}/"));
                if hit && !excludes.iter().any(|e| p == e) {
                    found = true;
                    buf.push_str(&format!("{p}\0{c}\0"));
                }
            }
            if !found {
                return Err(format!("{s}: not found in the build context"));
            }
        }
        Ok(Digest::sha256_of(buf.as_bytes()))
    }
}

/// A request with sensible defaults; tweak with the closure.
pub fn request<'a>(pr: &'a ParseResult, ctx: &'a FakeContext) -> BuildRequest<'a> {
    BuildRequest {
        dockerfile: pr,
        file_name: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platforms: vec![Platform::linux_amd64()],
        build_platform: Platform::linux_amd64(),
        labels: BTreeMap::new(),
        context: ctx,
        resolved_images: BTreeMap::new(),
    }
}

/// Build with defaults plus `tweak`.
pub fn build(
    text: &str,
    ctx: &FakeContext,
    tweak: impl FnOnce(&mut BuildRequest<'_>),
) -> BuildGraph {
    let pr = parse(text);
    let mut req = request(&pr, ctx);
    tweak(&mut req);
    build_graph(&req).unwrap_or_else(|e| panic!("{e}"))
}

/// The build error with defaults plus `tweak`.
pub fn build_err(
    text: &str,
    ctx: &FakeContext,
    tweak: impl FnOnce(&mut BuildRequest<'_>),
) -> imgfarm_common::dockerfile::error::DockerfileError {
    let pr = parse(text);
    let mut req = request(&pr, ctx);
    tweak(&mut req);
    match build_graph(&req) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    }
}

/// The vertex whose description ends with `suffix` (exactly one).
pub fn find<'g>(g: &'g BuildGraph, suffix: &str) -> &'g imgfarm_common::graph::Vertex {
    let hits: Vec<_> = g
        .vertices()
        .into_iter()
        .filter(|v| v.description.ends_with(suffix))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "want one vertex ending with {suffix:?}, got {:#?}",
        descriptions(g)
    );
    hits[0]
}

pub fn descriptions(g: &BuildGraph) -> Vec<String> {
    g.vertices().iter().map(|v| v.description.clone()).collect()
}
