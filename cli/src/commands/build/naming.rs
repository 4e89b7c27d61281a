//! Progress names of build steps, for the local build and the farm, in one
//! place:
//! - local: the step line, with the platform in front for multi-platform or
//!   emulated steps (`[linux/arm64 emulated] [stage-1 2/3] RUN make`);
//! - farm: the step line plus where it ran
//!   (`[linux/arm64 stage-1 2/3] RUN make (worker arm1, emulated)`).

use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::HashMap;

/// Where the coordinator placed a vertex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RanOn {
    /// Worker name.
    pub worker: String,
    /// Ran by emulation (binfmt/qemu).
    pub emulated: bool,
}

/// What the client knows of one vertex of its graph.
#[derive(Debug, Clone)]
struct Known {
    description: String,
    platform: Option<Platform>,
    source: bool,
}

/// Names vertices by the keys the coordinator sends.
#[derive(Debug, Default)]
pub struct Namer {
    by_key: HashMap<Digest, Known>,
}

impl Namer {
    /// Names from the client's own graph.
    pub fn new(graph: &BuildGraph) -> Self {
        let mut by_key = HashMap::new();
        for v in graph.vertices() {
            let known = Known {
                description: v.description.clone(),
                platform: v.platform.clone(),
                source: v.op.is_source(),
            };
            by_key.insert(v.key.clone(), known);
        }
        Self { by_key }
    }

    /// Is `key` a source vertex (context, inline files, URL) the workers
    /// solve by themselves?
    pub fn is_source(&self, key: &Digest) -> bool {
        self.by_key.get(key).is_some_and(|k| k.source)
    }

    /// The local build's progress line for `key`. The graph names the
    /// platform inside the step label of a multi-platform build
    /// (`[linux/arm64 stage-1 4/4]`); the line names it once, in front,
    /// with the emulation mark.
    pub fn local_name(&self, key: &Digest, emulated: bool, multi: bool) -> String {
        let Some(k) = self.by_key.get(key) else {
            return key.to_string();
        };
        let label = |p: &Platform| {
            k.description
                .strip_prefix(&format!("[{p} "))
                .map(|rest| format!("[{rest}"))
                .unwrap_or_else(|| k.description.clone())
        };
        match (&k.platform, multi || emulated) {
            (Some(p), true) if emulated => format!("[{p} emulated] {}", label(p)),
            (Some(p), true) => format!("[{p}] {}", label(p)),
            _ => k.description.clone(),
        }
    }

    /// The farm's progress line for `key`.
    pub fn name(&self, key: &Digest, placement: Option<&RanOn>) -> String {
        let base = match self.by_key.get(key) {
            Some(k) => k.description.clone(),
            None => format!("[vertex {}]", key.short()),
        };
        with_placement(&base, placement)
    }
}

/// Appends the worker and the emulation mark to a step line. Pure.
pub fn with_placement(line: &str, placement: Option<&RanOn>) -> String {
    match placement {
        Some(p) if p.emulated => format!("{line} (worker {}, emulated)", p.worker),
        Some(p) => format!("{line} (worker {})", p.worker),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_worker_and_emulation() {
        let p = RanOn {
            worker: "arm1".into(),
            emulated: true,
        };
        assert_eq!(
            with_placement("[linux/arm64 stage-1 2/3] RUN make", Some(&p)),
            "[linux/arm64 stage-1 2/3] RUN make (worker arm1, emulated)"
        );
        let native = RanOn {
            worker: "amd1".into(),
            emulated: false,
        };
        assert_eq!(
            with_placement("[stage-1 2/3] RUN make", Some(&native)),
            "[stage-1 2/3] RUN make (worker amd1)"
        );
        assert_eq!(with_placement("[1/2] FROM x", None), "[1/2] FROM x");
    }

    #[test]
    fn unknown_keys_get_a_short_name() {
        let n = Namer::default();
        let key: Digest = format!("sha256:{}", "ab".repeat(32)).parse().unwrap();
        assert_eq!(n.name(&key, None), "[vertex abababababab]");
        assert!(!n.is_source(&key));
    }

    #[test]
    fn graph_keys_name_their_steps() {
        use imgfarm_common::graph::op::{ImageOp, Op};
        use imgfarm_common::graph::Vertex;
        let v = Vertex::new(
            Some("linux/arm64".parse().unwrap()),
            Op::Image(ImageOp {
                reference: "docker.io/library/alpine:3".into(),
                digest: None,
            }),
            vec![],
            "[linux/arm64 1/2] FROM alpine:3".into(),
            1,
        );
        let key = v.key.clone();
        let g = BuildGraph::from_vertices([v]);
        let n = Namer::new(&g);
        assert_eq!(n.name(&key, None), "[linux/arm64 1/2] FROM alpine:3");
        assert_eq!(
            n.local_name(&key, true, false),
            "[linux/arm64 emulated] [1/2] FROM alpine:3"
        );
        assert_eq!(
            n.local_name(&key, false, true),
            "[linux/arm64] [1/2] FROM alpine:3"
        );
        assert_eq!(
            n.local_name(&key, false, false),
            "[linux/arm64 1/2] FROM alpine:3"
        );
    }
}
