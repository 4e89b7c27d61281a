//! Pinned keys over every instruction family and every op field: vertex keys
//! are persisted in caches and compared across processes and machines, so a
//! refactor of the frontend or of the IR types must leave each of them
//! byte-identical. If the encoding changes on purpose, bump
//! `key::KEY_FORMAT` and update them.

mod graph_support;
use graph_support::*;
use imgfarm_common::dockerfile::frontend::ResolvedImage;
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;
use std::collections::BTreeMap;

/// RUN with every mount kind and option, `--network`, `--security`,
/// heredocs (an inline script is a bind mount); COPY/ADD with every flag,
/// heredoc sources, URLs with a checksum, `--link` (a merge); WORKDIR; the
/// config-only instructions (the export config is part of its key); a base
/// image's ONBUILD triggers.
const EVERYTHING: &str = r#"# syntax=docker/dockerfile:1
ARG BASE=alpine:3.20
FROM $BASE AS tools
RUN echo tools
FROM $BASE AS deps
ARG V=1
ENV HOME=/root LANG=C.UTF-8
WORKDIR /src
RUN echo deps $V > /deps
RUN --mount=type=cache,target=$HOME/.cache,id=c1,sharing=locked,mode=0700,uid=1,gid=2 --mount=type=bind,from=tools,source=/etc,target=/deps,rw --mount=type=bind,target=/ctx --mount=type=secret,id=tok,required,mode=0400 --mount=type=tmpfs,target=/tmp,size=1m --mount=type=cache,target=/var/cache/apt,sharing=private --network=none --security=insecure make
RUN --network=host <<EOF
#!/bin/sh
echo script
EOF
RUN <<A cat /dev/stdin
line $V
A
COPY --chown=app:app --chmod=0640 --exclude=*.tmp a.txt b.txt /dst/
COPY --link --parents dir/ /p/
ADD --checksum=sha256:24454f830cdb571e2c4ad15481119c43b3cafd48dd869a9b2945d1036d1dc68d https://example.invalid/x.tar.gz /x/
ADD --keep-git-dir=false --unpack=false c.tar /c/
COPY <<F1 <<F2 /h/
v=$V
F1
two
F2
FROM scratch AS final
COPY --from=deps /deps /deps
LABEL a=b c="d e"
EXPOSE 80/tcp 53/udp
VOLUME /data
USER 1000:1000
STOPSIGNAL SIGTERM
SHELL ["/bin/bash", "-c"]
HEALTHCHECK --interval=5s --timeout=2s --start-period=1s --retries=3 CMD curl -f http://localhost/
ENTRYPOINT ["/app"]
CMD run it
ONBUILD RUN echo later
MAINTAINER someone
FROM golang:1.23 AS trig
RUN go version
FROM final
"#;

fn ctx() -> FakeContext {
    FakeContext::with(&[
        ("a.txt", "A"),
        ("b.txt", "B"),
        ("c.tar", "C"),
        ("dir/x", "X"),
        ("Makefile", "all:"),
    ])
}

/// Every key with its description, inputs before users, then the export key
/// of each target.
fn all_keys(g: &BuildGraph) -> String {
    let mut out: Vec<String> = g
        .vertices()
        .into_iter()
        .map(|v| format!("{} {}", v.key.hex(), v.description))
        .collect();
    out.extend(
        g.targets
            .iter()
            .map(|t| format!("export {} {}", t.platform, t.export.hex())),
    );
    out.join("\n")
}

fn golang(images: &mut BTreeMap<(String, Platform), ResolvedImage>, p: Platform) {
    let mut config = StageConfig::default();
    config.set_env("PATH", "/usr/local/go/bin:/usr/bin:/bin");
    config.working_dir = "/go".into();
    config.user = "gopher".into();
    config.onbuild = vec!["RUN echo onbuild".into(), "ENV T=1".into()];
    images.insert(
        ("docker.io/library/golang:1.23".into(), p),
        ResolvedImage {
            digest: Digest::sha256_of(b"golang manifest"),
            config,
        },
    );
}

#[test]
fn every_instruction_family_keeps_its_keys() {
    let g = build(EVERYTHING, &ctx(), |_| {});
    let keys = all_keys(&g);
    assert_eq!(
        Digest::sha256_of(keys.as_bytes()).as_str(),
        "sha256:23a2ff5a12e87b97383cc9300308dea29a74b4f485007b6d21d3fd37162ac51d",
        "keys now:\n{keys}"
    );
}

#[test]
fn targets_triggers_and_platforms_keep_their_keys() {
    let g = build(EVERYTHING, &ctx(), |r| {
        r.target = Some("trig".into());
        r.platforms = vec![Platform::linux_amd64(), "linux/arm64".parse().unwrap()];
        r.build_args.insert("V".into(), "2".into());
        r.labels.insert("org.example".into(), "x".into());
        for p in r.platforms.clone() {
            golang(&mut r.resolved_images, p);
        }
    });
    let keys = all_keys(&g);
    assert_eq!(
        Digest::sha256_of(keys.as_bytes()).as_str(),
        "sha256:c33c7fb7a0187c080f4ba53669bc46ea04309783d49a390fee8175536ec3af63",
        "keys now:\n{keys}"
    );
}
