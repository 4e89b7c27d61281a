//! Shared helpers for the graph tests: a Dockerfile → ParseResult front
//! door, a fake build context and a request builder.
#![allow(dead_code)]

use imgfarm_common::dockerfile::ast::{Node, ParseResult};
use imgfarm_common::graph::{build_graph, BuildGraph, BuildRequest, ContextSelector};
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

/// Parse a Dockerfile. Stand-in for `dockerfile::parser::parse` until it
/// lands on main: one instruction per line, flags, JSON form, ENV/LABEL
/// pairs, ONBUILD.
pub fn parse(text: &str) -> ParseResult {
    let mut children = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        children.push(node(t, i + 1));
    }
    ParseResult {
        ast: Node {
            children,
            ..Node::default()
        },
        escape_token: '\\',
        ..ParseResult::default()
    }
}

fn chain(args: Vec<String>) -> Option<Box<Node>> {
    let mut next = None;
    for a in args.into_iter().rev() {
        next = Some(Box::new(Node {
            value: a,
            next,
            ..Node::default()
        }));
    }
    next
}

#[allow(clippy::needless_late_init)]
fn node(line: &str, n: usize) -> Node {
    let (kw, mut rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    rest = rest.trim();
    let mut flags = Vec::new();
    while rest.starts_with("--") {
        let (f, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        flags.push(f.to_string());
        rest = r.trim();
    }
    let lower = kw.to_lowercase();
    let mut json = false;
    let next;
    let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let maybe_json = |s: &str, json: &mut bool| -> Option<Vec<String>> {
        if s.starts_with('[') {
            if let Ok(v) = serde_json::from_str::<Vec<String>>(s) {
                *json = true;
                return Some(v);
            }
        }
        None
    };
    match lower.as_str() {
        "env" | "label" => {
            let mut args = Vec::new();
            let first = rest.split_whitespace().next().unwrap_or("");
            if first.contains('=') {
                for w in rest.split_whitespace() {
                    let (k, v) = w.split_once('=').unwrap_or((w, ""));
                    args.push(k.to_string());
                    args.push(v.trim_matches('"').to_string());
                }
            } else {
                let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                args.push(k.to_string());
                args.push(v.trim().to_string());
            }
            next = chain(args);
        }
        "run" | "cmd" | "entrypoint" | "shell" => {
            let args = maybe_json(rest, &mut json).unwrap_or_else(|| vec![rest.to_string()]);
            next = chain(args);
        }
        "healthcheck" => {
            let (t, r) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let mut args = vec![t.to_string()];
            if !r.trim().is_empty() {
                args.extend(
                    maybe_json(r.trim(), &mut json).unwrap_or_else(|| vec![r.trim().to_string()]),
                );
            }
            next = chain(args);
        }
        "onbuild" => {
            next = Some(Box::new(Node {
                children: vec![node(rest, n)],
                ..Node::default()
            }));
        }
        "user" | "workdir" | "stopsignal" | "maintainer" => next = chain(vec![rest.to_string()]),
        _ => {
            let args = maybe_json(rest, &mut json).unwrap_or_else(|| words(rest));
            next = chain(args);
        }
    }
    Node {
        value: kw.to_string(),
        next,
        flags,
        json,
        original: line.to_string(),
        start_line: n,
        end_line: n,
        ..Node::default()
    }
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
