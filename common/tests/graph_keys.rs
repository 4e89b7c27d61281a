//! Cache keys: stable across runs and machines, and sensitive to exactly
//! what changed. Also cross-platform dedupe and pruning.

mod graph_support;
use graph_support::*;
use imgfarm_common::graph::op::Op;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeSet;

const MULTI: &str = "\
FROM alpine:3.20 AS base
RUN echo base
ARG V=1
COPY a.txt /a
RUN echo $V
COPY b.txt /b
FROM alpine:3.20 AS other
RUN echo other
FROM base
COPY --from=other /etc/o /o
";

fn ctx() -> FakeContext {
    FakeContext::with(&[("a.txt", "A"), ("b.txt", "B")])
}

fn keys(g: &BuildGraph) -> BTreeSet<Digest> {
    g.vertices().into_iter().map(|v| v.key.clone()).collect()
}

fn descs_of(g: &BuildGraph, ks: &BTreeSet<Digest>) -> BTreeSet<String> {
    ks.iter()
        .map(|k| g.vertex(k).unwrap().description.clone())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn same_inputs_same_keys() {
    let a = build(MULTI, &ctx(), |_| {});
    let b = build(MULTI, &ctx(), |_| {});
    assert_eq!(keys(&a), keys(&b));
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.targets[0].export, b.targets[0].export);
    // Descriptions and lines are not part of keys: blank lines and comments change nothing.
    let c = build(&format!("# comment\n\n{MULTI}"), &ctx(), |_| {});
    assert_eq!(keys(&a), keys(&c));
}

/// Pinned keys: any machine, any run, must compute exactly these. If the
/// encoding changes on purpose, bump `key::KEY_FORMAT` and update them.
#[test]
fn golden_keys() {
    let g = build(
        "FROM alpine:3.20\nRUN echo hi\n",
        &FakeContext::default(),
        |_| {},
    );
    let image = find(&g, "FROM docker.io/library/alpine:3.20");
    let run = find(&g, "RUN echo hi");
    // The canonical encoding, spelled out (its sha256 was checked with
    // Python's hashlib as an independent implementation).
    let bytes = imgfarm_common::graph::key::canonical_bytes(
        image.platform.as_ref(),
        &image.op,
        &image.inputs,
    );
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        r#"{"format":"imgfarm.vertex.v2","platform":{"os":"linux","architecture":"amd64"},"op":{"image":{"reference":"docker.io/library/alpine:3.20","digest":null}},"inputs":[]}"#
    );
    assert_eq!(
        image.key.as_str(),
        "sha256:903e7d930413e33ab025ff195e107d93bb0c27cb23d2dedf1194b32a16334312"
    );
    assert_eq!(
        run.key.as_str(),
        "sha256:3e230520994935527031802aa9de41ed7cd0c3135d617092ebac419f180298f6"
    );
    assert_eq!(
        g.targets[0].export.as_str(),
        "sha256:a31e50477b14f683e40cd8688ec59a67b28e146d108d007997456bf2e1212a61"
    );
}

#[test]
fn changing_an_arg_changes_exactly_the_downstream_vertices() {
    let before = build(MULTI, &ctx(), |_| {});
    let after = build(MULTI, &ctx(), |r| {
        r.build_args.insert("V".into(), "2".into());
    });
    let changed: BTreeSet<Digest> = keys(&before).difference(&keys(&after)).cloned().collect();
    let first = find(&before, "RUN echo $V").key.clone();
    assert_eq!(changed, before.downstream(&first));
    assert_eq!(
        descs_of(&before, &changed),
        set(&[
            "[base 4/5] RUN echo $V",
            "[base 5/5] COPY b.txt /b",
            "[stage-2 1/1] COPY --from=other /etc/o /o",
            "exporting stage-2 image for linux/amd64",
        ])
    );
    assert_eq!(keys(&before).len(), keys(&after).len());
}

#[test]
fn changing_a_context_file_changes_exactly_the_downstream_vertices() {
    let before = build(MULTI, &ctx(), |_| {});
    let after = build(
        MULTI,
        &FakeContext::with(&[("a.txt", "A"), ("b.txt", "B2")]),
        |_| {},
    );
    let changed: BTreeSet<Digest> = keys(&before).difference(&keys(&after)).cloned().collect();
    let ctx_b = find(&before, "[context] b.txt").key.clone();
    assert_eq!(changed, before.downstream(&ctx_b));
    assert_eq!(
        descs_of(&before, &changed),
        set(&[
            "[context] b.txt",
            "[base 5/5] COPY b.txt /b",
            "[stage-2 1/1] COPY --from=other /etc/o /o",
            "exporting stage-2 image for linux/amd64",
        ])
    );
    // An unrelated file in the context changes nothing.
    let mut bigger = ctx();
    bigger.files.insert("unused.txt".into(), "x".into());
    assert_eq!(keys(&before), keys(&build(MULTI, &bigger, |_| {})));
}

const CROSS: &str = "\
FROM --platform=$BUILDPLATFORM golang:1.23 AS build
RUN go build -o /out ./...
FROM alpine:3.20
COPY --from=build /out /out
";

#[test]
fn changing_the_platform_changes_exactly_the_target_platform_vertices() {
    let amd = build(CROSS, &FakeContext::default(), |_| {});
    let arm = build(CROSS, &FakeContext::default(), |r| {
        r.platforms = vec![Platform::linux_arm64()]
    });
    let changed: BTreeSet<Digest> = keys(&amd).difference(&keys(&arm)).cloned().collect();
    assert_eq!(
        descs_of(&amd, &changed),
        set(&[
            "[stage-1 1/2] FROM docker.io/library/alpine:3.20",
            "[stage-1 2/2] COPY --from=build /out /out",
            "exporting stage-1 image for linux/amd64",
        ])
    );
    let alpine = find(&amd, "FROM docker.io/library/alpine:3.20").key.clone();
    assert_eq!(changed, amd.downstream(&alpine));
    // The build stage runs on the build platform for both targets.
    assert_eq!(
        find(&arm, "RUN go build -o /out ./...").platform,
        Some(Platform::linux_amd64())
    );
}

#[test]
fn identical_vertices_across_platforms_appear_once() {
    let both = build(CROSS, &FakeContext::default(), |r| {
        r.platforms = vec![Platform::linux_amd64(), Platform::linux_arm64()];
    });
    // golang + RUN shared; alpine, COPY, export per platform.
    assert_eq!(both.len(), 2 + 3 * 2);
    assert_eq!(both.targets.len(), 2);
    assert_ne!(both.targets[0].export, both.targets[1].export);
    let runs: Vec<_> = both
        .vertices()
        .into_iter()
        .filter(|v| v.op.kind() == "exec")
        .collect();
    assert_eq!(runs.len(), 1);
    // Both exports reach the one shared RUN.
    let run = runs[0].key.clone();
    let down = both.downstream(&run);
    assert!(both.targets.iter().all(|t| down.contains(&t.export)));

    // Reading TARGETARCH makes the build stage platform-specific.
    let uses = CROSS.replace(
        "RUN go build",
        "ARG TARGETARCH\nRUN GOARCH=$TARGETARCH go build",
    );
    let both = build(&uses, &FakeContext::default(), |r| {
        r.platforms = vec![Platform::linux_amd64(), Platform::linux_arm64()];
    });
    assert_eq!(
        both.vertices()
            .into_iter()
            .filter(|v| v.op.kind() == "exec")
            .count(),
        2
    );
    assert_eq!(both.len(), 1 + 4 * 2);
}

#[test]
fn stages_the_target_does_not_need_are_pruned() {
    let text = "\
FROM alpine AS unused
COPY does-not-exist /x
RUN echo unused
FROM alpine AS base
RUN echo base
FROM base AS test
RUN echo test
FROM base AS release
COPY --from=base /etc/os-release /r
";
    let g = build(text, &FakeContext::default(), |_| {});
    let d = descriptions(&g);
    assert!(
        !d.iter()
            .any(|s| s.contains("unused") || s.contains("[test")),
        "{d:#?}"
    );
    assert_eq!(g.len(), 4, "{d:#?}"); // alpine, RUN echo base, COPY, export
    let g = build(text, &FakeContext::default(), |r| {
        r.target = Some("TEST".into())
    });
    let d = descriptions(&g);
    assert!(d.iter().any(|s| s.ends_with("RUN echo test")), "{d:#?}");
    assert!(
        !d.iter()
            .any(|s| s.contains("[release") || s.contains("unused")),
        "{d:#?}"
    );
    assert_eq!(g.targets[0].stage, "test");
    // Only the stages a target needs are counted; the unused one's missing
    // file is never looked up.
    let g = build(text, &FakeContext::default(), |r| {
        r.target = Some("base".into())
    });
    assert_eq!(g.len(), 3);
}

#[test]
fn key_covers_op_inputs_and_platform() {
    let g = build(MULTI, &ctx(), |_| {});
    for v in g.vertices() {
        let again = imgfarm_common::graph::key::vertex_key(v.platform.as_ref(), &v.op, &v.inputs);
        assert_eq!(again, v.key);
        for i in &v.inputs {
            assert!(
                g.vertex(i).is_some(),
                "{} has a dangling input",
                v.description
            );
        }
        if let Op::Context(c) = &v.op {
            assert!(v.platform.is_none(), "context is platform-neutral: {c:?}");
        }
    }
}

#[test]
fn real_context_file_change_changes_exactly_the_downstream_vertices() {
    use imgfarm_common::context::BuildContext;
    use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "A").unwrap();
    std::fs::write(dir.path().join("b.txt"), "B").unwrap();
    let pr = parse(MULTI);
    let unused = FakeContext::default();
    let run = |dir: &std::path::Path| {
        let ctx = BuildContext::open(dir, IgnoreMatcher::empty()).unwrap();
        let mut req = request(&pr, &unused);
        req.context = &ctx;
        imgfarm_common::dockerfile::frontend::build_graph(&req).unwrap()
    };
    let before = run(dir.path());
    std::fs::write(dir.path().join("b.txt"), "B changed").unwrap();
    let after = run(dir.path());
    let changed: BTreeSet<Digest> = keys(&before).difference(&keys(&after)).cloned().collect();
    let ctx_b = find(&before, "[context] b.txt").key.clone();
    assert_eq!(changed, before.downstream(&ctx_b));
    assert_eq!(changed.len(), 4);
}

#[test]
fn vertices_round_trip_through_serde() {
    let g = build(MULTI, &ctx(), |r| {
        r.platforms = vec![Platform::linux_amd64(), Platform::linux_arm64()];
    });
    for v in g.vertices() {
        let text = serde_json::to_string(v).unwrap();
        let back: imgfarm_common::graph::Vertex = serde_json::from_str(&text).unwrap();
        assert_eq!(&back, v);
        // No field is skipped: non-self-describing formats (bincode) need them all.
        assert!(
            !text.contains("\"kind\":"),
            "ops are externally tagged: {text}"
        );
    }
}

#[test]
fn multi_platform_descriptions_name_the_platforms() {
    let uses = CROSS.replace(
        "RUN go build",
        "ARG TARGETARCH\nRUN GOARCH=$TARGETARCH go build",
    );
    let both = build(&uses, &FakeContext::default(), |r| {
        r.platforms = vec![Platform::linux_amd64(), Platform::linux_arm64()];
    });
    let d = descriptions(&both);
    assert!(
        d.contains(&"[linux/amd64 build 1/2] FROM docker.io/library/golang:1.23".to_string()),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|s| s.starts_with("[linux/amd64->arm64 build 2/2] RUN GOARCH")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|s| s.starts_with("[linux/amd64 build 2/2] RUN GOARCH")),
        "{d:#?}"
    );
    assert!(
        d.contains(&"[linux/arm64 stage-1 2/2] COPY --from=build /out /out".to_string()),
        "{d:#?}"
    );
}
