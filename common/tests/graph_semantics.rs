//! Dockerfile semantics as BuildKit implements them: ARG scoping, ENV,
//! platform args, image config accumulation, ONBUILD, mounts, COPY/ADD.

mod graph_support;
use graph_support::*;
use imgfarm_common::dockerfile::frontend::ResolvedImage;
use imgfarm_common::graph::image_config::StageConfig;
use imgfarm_common::graph::op::{
    CopyAction, ExecOp, FileAction, MountKind, NetworkMode, Op, SecurityMode,
};
use imgfarm_common::graph::BuildGraph;
use imgfarm_common::oci::Digest;
use imgfarm_common::platform::Platform;

fn exec<'g>(g: &'g BuildGraph, suffix: &str) -> &'g ExecOp {
    match &find(g, suffix).op {
        Op::Exec(e) => e,
        other => panic!("not exec: {other:?}"),
    }
}

fn copy<'g>(g: &'g BuildGraph, suffix: &str) -> &'g CopyAction {
    match &find(g, suffix).op {
        Op::File(f) => match &f.action {
            FileAction::Copy(c) => c,
            other => panic!("not copy: {other:?}"),
        },
        other => panic!("not file: {other:?}"),
    }
}

fn has_env(e: &ExecOp, kv: &str) -> bool {
    e.env.iter().any(|x| x == kv)
}

fn has_key(e: &ExecOp, k: &str) -> bool {
    e.env
        .iter()
        .any(|x| x.split_once('=').map(|(a, _)| a) == Some(k))
}

#[test]
fn global_args_are_for_from_unless_redeclared() {
    let g = build(
        "ARG VERSION=3.20\nFROM alpine:$VERSION\nRUN echo one $VERSION\nARG VERSION\nRUN echo two $VERSION\n",
        &FakeContext::default(),
        |_| {},
    );
    find(&g, "FROM docker.io/library/alpine:3.20");
    assert!(!has_key(exec(&g, "RUN echo one $VERSION"), "VERSION"));
    assert!(has_env(exec(&g, "RUN echo two $VERSION"), "VERSION=3.20"));
    // Build args override global and stage defaults.
    let g = build(
        "ARG VERSION=3.20\nFROM alpine:$VERSION\nARG VERSION\nARG MODE=debug\nRUN make\n",
        &FakeContext::default(),
        |r| {
            r.build_args.insert("VERSION".into(), "3.19".into());
            r.build_args.insert("MODE".into(), "release".into());
        },
    );
    find(&g, "FROM docker.io/library/alpine:3.19");
    let run = exec(&g, "RUN make");
    assert!(has_env(run, "VERSION=3.19") && has_env(run, "MODE=release"));
    // ARG values are in RUN's env but not in the image's Env.
    assert!(g.targets[0].config.get_env("MODE").is_none());
    assert!(g.warnings.is_empty(), "{:?}", g.warnings);
}

#[test]
fn env_expands_with_the_previous_scope_and_feeds_run() {
    let g = build(
        "FROM alpine\nENV A=1\nENV A=2 B=$A\nARG C=$B-x\nRUN env\n",
        &FakeContext::default(),
        |_| {},
    );
    let run = exec(&g, "RUN env");
    assert!(
        has_env(run, "A=2") && has_env(run, "B=1") && has_env(run, "C=1-x"),
        "{:?}",
        run.env
    );
    let cfg = &g.targets[0].config;
    assert_eq!(cfg.get_env("B"), Some("1"));
    assert_eq!(
        cfg.get_env("PATH"),
        Some(imgfarm_common::graph::image_config::DEFAULT_PATH)
    );
}

#[test]
fn platform_args_are_declared_on_use() {
    let text = "FROM --platform=$BUILDPLATFORM alpine AS b\nRUN echo plain\nARG TARGETARCH\nARG BUILDOS\nRUN echo $TARGETARCH\nFROM alpine\nCOPY --from=b / /\n";
    let g = build(text, &FakeContext::default(), |r| {
        r.platforms = vec![Platform::linux_arm64()];
    });
    assert!(!has_key(exec(&g, "RUN echo plain"), "TARGETARCH"));
    let r = exec(&g, "RUN echo $TARGETARCH");
    assert!(
        has_env(r, "TARGETARCH=arm64") && has_env(r, "BUILDOS=linux"),
        "{:?}",
        r.env
    );
    assert_eq!(
        find(&g, "RUN echo plain").platform,
        Some(Platform::linux_amd64())
    );
    assert_eq!(
        find(&g, "COPY --from=b / /").platform,
        Some(Platform::linux_arm64())
    );
    // FROM sees TARGETPLATFORM without any ARG.
    let g = build(
        "FROM --platform=$TARGETPLATFORM alpine\n",
        &FakeContext::default(),
        |r| {
            r.platforms = vec![Platform::linux_arm64()];
        },
    );
    assert_eq!(
        find(&g, "FROM docker.io/library/alpine:latest").platform,
        Some(Platform::linux_arm64())
    );
}

#[test]
fn unused_build_args_warn() {
    let g = build(
        "FROM alpine AS x\nARG USED\nFROM alpine\nARG ALSO\n",
        &FakeContext::default(),
        |r| {
            for k in ["USED", "ALSO", "NOPE", "HTTP_PROXY"] {
                r.build_args.insert(k.into(), "1".into());
            }
        },
    );
    assert_eq!(g.warnings.len(), 2, "{:?}", g.warnings);
    assert!(g.warnings.iter().any(|w| w.contains("build arg NOPE")));
    // USED is only declared in a pruned stage.
    assert!(g.warnings.iter().any(|w| w.contains("build arg USED")));
}

#[test]
fn image_config_accumulates_like_docker() {
    let text = r#"FROM alpine
MAINTAINER Jo <jo@example.com>
ENV APP=/srv
LABEL org.example.name=demo version=1
USER app:app
WORKDIR $APP
WORKDIR sub
EXPOSE 80 53/udp
VOLUME ["/data", "$APP/cache"]
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s CMD wget -q localhost
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
CMD echo hi
ONBUILD RUN echo child
"#;
    let g = build(text, &FakeContext::default(), |r| {
        r.labels.insert("built-by".into(), "imgfarm".into());
    });
    let c = &g.targets[0].config;
    assert_eq!(c.author, "Jo <jo@example.com>");
    assert_eq!(c.user, "app:app");
    assert_eq!(c.working_dir, "/srv/sub");
    assert_eq!(
        c.labels.get("org.example.name").map(String::as_str),
        Some("demo")
    );
    assert_eq!(
        c.labels.get("built-by").map(String::as_str),
        Some("imgfarm")
    );
    assert_eq!(
        c.exposed_ports.iter().cloned().collect::<Vec<_>>(),
        vec!["53/udp", "80/tcp"]
    );
    assert!(c.volumes.contains("/data") && c.volumes.contains("/srv/cache"));
    assert_eq!(c.stop_signal, "SIGINT");
    let h = c.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, vec!["CMD-SHELL", "wget -q localhost"]);
    assert_eq!(h.interval, 5_000_000_000);
    assert_eq!(c.shell, vec!["/bin/bash", "-o", "pipefail", "-c"]);
    assert_eq!(
        c.cmd.as_deref().unwrap(),
        ["/bin/bash", "-o", "pipefail", "-c", "echo hi"]
    );
    assert_eq!(c.onbuild, vec!["RUN echo child"]);
    // WORKDIR made two mkdir vertices owned by the USER at that point.
    let mk = find(&g, "WORKDIR /srv/sub");
    match &mk.op {
        Op::File(f) => assert!(
            matches!(&f.action, FileAction::Mkdir { path, user, .. } if path == "/srv/sub" && user == "app:app")
        ),
        other => panic!("{other:?}"),
    }
    assert!(c
        .history
        .iter()
        .any(|h| h.created_by == "WORKDIR /srv/sub" && !h.empty_layer));
    assert!(c
        .history
        .iter()
        .any(|h| h.created_by.starts_with("ENV APP=/srv") && h.empty_layer));
}

#[test]
fn entrypoint_resets_inherited_cmd() {
    let g = build(
        "FROM alpine AS base\nCMD [\"serve\"]\nFROM base AS a\nENTRYPOINT [\"/app\"]\nFROM base AS b\nCMD [\"x\"]\nENTRYPOINT /app\n",
        &FakeContext::default(),
        |r| r.target = Some("a".into()),
    );
    let c = &g.targets[0].config;
    assert_eq!(c.entrypoint.as_deref().unwrap(), ["/app"]);
    assert_eq!(c.cmd, None);
    let g = build(
        "FROM alpine AS base\nCMD [\"serve\"]\nFROM base AS a\nENTRYPOINT [\"/app\"]\nFROM base AS b\nCMD [\"x\"]\nENTRYPOINT /app\n",
        &FakeContext::default(),
        |r| r.target = Some("b".into()),
    );
    let c = &g.targets[0].config;
    assert_eq!(c.entrypoint.as_deref().unwrap(), ["/bin/sh", "-c", "/app"]);
    assert_eq!(c.cmd.as_deref().unwrap(), ["x"]);
}

#[test]
fn onbuild_triggers_run_in_child_stages() {
    let g = build(
        "FROM alpine AS parent\nONBUILD RUN echo trigger\nRUN echo parent\nFROM parent\nRUN echo child\n",
        &FakeContext::default(),
        |_| {},
    );
    let t = find(&g, "RUN echo trigger");
    let parent_run = find(&g, "RUN echo parent").key.clone();
    assert_eq!(t.inputs, vec![parent_run]);
    assert_eq!(exec(&g, "RUN echo child").root, Some(0));
    assert!(g.targets[0].config.onbuild.is_empty());
}

#[test]
fn run_mounts_network_and_security() {
    let text = "FROM alpine AS deps\nRUN echo deps\nFROM alpine\nENV HOME=/root\nRUN --mount=type=cache,target=$HOME/.cache,sharing=locked --mount=type=bind,from=deps,source=/etc,target=/deps --mount=type=bind,target=/src --mount=type=secret,id=tok --mount=type=tmpfs,target=/tmp,size=1m --network=none --security=insecure make\n";
    let ctx = FakeContext::with(&[("Makefile", "all:")]);
    let g = build(text, &ctx, |_| {});
    let v = find(&g, "make");
    let e = match &v.op {
        Op::Exec(e) => e,
        _ => unreachable!(),
    };
    assert_eq!(e.network, NetworkMode::None);
    assert_eq!(e.security, SecurityMode::Insecure);
    assert_eq!(e.mounts.len(), 5);
    assert_eq!(e.mounts[0].spec.kind, MountKind::Cache);
    assert_eq!(e.mounts[0].spec.target, "/root/.cache");
    let deps = find(&g, "RUN echo deps").key.clone();
    assert_eq!(v.inputs[e.mounts[1].input.unwrap()], deps);
    assert!(e.mounts[1].spec.readonly);
    let ctx_in = &v.inputs[e.mounts[2].input.unwrap()];
    assert!(matches!(g.vertex(ctx_in).unwrap().op, Op::Context(_)));
    assert_eq!(e.mounts[3].spec.target, "/run/secrets/tok");
    assert_eq!(e.mounts[4].spec.size, Some(1 << 20));
    assert_eq!(e.args, vec!["/bin/sh", "-c", "make"]);
    assert_eq!(e.cwd, "/");
}

#[test]
fn copy_and_add_sources() {
    let ctx = FakeContext::with(&[("app.tar.gz", "tar"), ("a", "1"), ("b", "2")]);
    let sum = format!("sha256:{}", "ab".repeat(32));
    let text = format!(
        "FROM alpine AS one\nFROM scratch\nWORKDIR /w\nADD app.tar.gz /opt/\nADD --unpack=false app.tar.gz /raw/\nADD --checksum={sum} https://example.com/x.tgz /dl/\nADD https://example.com/y.txt /dl/\nCOPY --link a b ./\nCOPY --from=0 /etc/hostname h\nCOPY --from=busybox:1.36 /bin/busybox /bin/\nCOPY --parents --exclude=b a /p/\n"
    );
    let g = build(&text, &ctx, |_| {});
    assert!(copy(&g, "ADD app.tar.gz /opt/").sources[0].extract_archives);
    assert!(!copy(&g, "ADD --unpack=false app.tar.gz /raw/").sources[0].extract_archives);
    let urls: Vec<_> = g
        .vertices()
        .into_iter()
        .filter_map(|v| match &v.op {
            Op::Url(u) => Some(u.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(urls.len(), 2);
    assert!(urls[0].content_addressed && urls[0].checksum.as_ref().unwrap().as_str() == sum);
    assert_eq!(urls[0].filename, "x.tgz");
    assert!(!urls[1].content_addressed && urls[1].checksum.is_none());
    let link = copy(&g, "COPY --link a b ./");
    assert_eq!(link.dest, "/w/");
    assert!(link.link);
    // --link copies onto nothing, then a merge lays it over the stage.
    let lv = find(&g, "COPY --link a b ./");
    match &lv.op {
        Op::File(f) => assert_eq!(f.dest_root, None),
        _ => unreachable!(),
    }
    assert!(matches!(
        find(&g, "COPY --link a b ./ (merge)").op,
        Op::Merge(_)
    ));
    assert_eq!(copy(&g, "COPY --from=0 /etc/hostname h").dest, "/w/h");
    let bb = find(&g, "COPY --from=busybox:1.36 /bin/busybox /bin/");
    assert!(g
        .vertex(&bb.inputs[1])
        .unwrap()
        .description
        .contains("load docker.io/library/busybox:1.36"));
    let p = copy(&g, "COPY --parents --exclude=b a /p/");
    assert!(p.parents);
    assert_eq!(p.excludes, vec!["b"]);
    // Stage one (index 0) is needed by --from=0 and was dispatched.
    assert!(descriptions(&g)
        .iter()
        .any(|d| d.contains("[one 1/1] FROM")));
    // The export's layers: the WORKDIR mkdir, each ADD/COPY (scratch base: no image).
    let export = g.vertex(&g.targets[0].export).unwrap();
    assert_eq!(export.inputs.len(), 9);
    match &export.op {
        Op::Export(e) => assert_eq!(e.base_image, None),
        _ => unreachable!(),
    }
    // Several sources need a directory destination.
    let e = build_err("FROM alpine\nCOPY a b /file\n", &ctx, |_| {});
    assert!(e.message.contains("must be a directory"), "{e}");
}

#[test]
fn scratch_stage_runs_on_an_empty_root() {
    let g = build(
        "FROM scratch\nRUN [\"/bin/true\"]\n",
        &FakeContext::default(),
        |_| {},
    );
    let e = exec(&g, "RUN [\"/bin/true\"]");
    assert_eq!(e.root, None);
    assert_eq!(e.args, vec!["/bin/true"]);
}

#[test]
fn resolved_base_images_contribute_their_config() {
    let text = "FROM golang:1.23\nWORKDIR src\nRUN go version\n";
    let g = build(text, &FakeContext::default(), |_| {});
    assert_eq!(
        g.unresolved_images(),
        vec![(
            "docker.io/library/golang:1.23".to_string(),
            Platform::linux_amd64()
        )]
    );
    let mut config = StageConfig::default();
    config.set_env("PATH", "/usr/local/go/bin:/usr/bin:/bin");
    config.set_env("GOPATH", "/go");
    config.working_dir = "/go".into();
    config.user = "gopher".into();
    let digest = Digest::sha256_of(b"manifest");
    let g2 = build(text, &FakeContext::default(), |r| {
        r.resolved_images.insert(
            (
                "docker.io/library/golang:1.23".into(),
                Platform::linux_amd64(),
            ),
            ResolvedImage {
                digest: digest.clone(),
                config: config.clone(),
            },
        );
    });
    assert!(g2.unresolved_images().is_empty());
    let run = exec(&g2, "RUN go version");
    assert_eq!(run.cwd, "/go/src");
    assert_eq!(run.user, "gopher");
    assert!(has_env(run, "GOPATH=/go") && has_env(run, "PATH=/usr/local/go/bin:/usr/bin:/bin"));
    match &find(&g2, "FROM docker.io/library/golang:1.23").op {
        Op::Image(i) => assert_eq!(i.digest.as_ref(), Some(&digest)),
        _ => unreachable!(),
    }
}

#[test]
fn step_numbers_and_names_follow_buildkit() {
    let g = build(
        "FROM alpine\nRUN a\nENV X=1\nRUN b\n",
        &FakeContext::default(),
        |_| {},
    );
    let d = descriptions(&g);
    assert!(
        d.contains(&"[1/3] FROM docker.io/library/alpine:latest".to_string()),
        "{d:?}"
    );
    assert!(d.contains(&"[3/3] RUN b".to_string()), "{d:?}");
}

#[test]
fn base_image_onbuild_triggers_run_first() {
    let mut config = StageConfig {
        onbuild: vec!["RUN echo from-image".into(), "COPY app.txt /app/".into()],
        ..StageConfig::default()
    };
    let ctx = FakeContext::with(&[("app.txt", "x")]);
    let g = build("FROM example/onbuild:1\nRUN echo mine\n", &ctx, |r| {
        r.resolved_images.insert(
            (
                "docker.io/example/onbuild:1".into(),
                Platform::linux_amd64(),
            ),
            ResolvedImage {
                digest: Digest::sha256_of(b"m"),
                config: config.clone(),
            },
        );
    });
    let d = descriptions(&g);
    let pos = |s: &str| {
        d.iter()
            .position(|x| x.ends_with(s))
            .unwrap_or_else(|| panic!("{s} in {d:#?}"))
    };
    assert!(pos("[2/4] RUN echo from-image") < pos("[3/4] COPY app.txt /app/"));
    assert!(pos("[3/4] COPY app.txt /app/") < pos("[4/4] RUN echo mine"));
    assert!(g.targets[0].config.onbuild.is_empty());
    config.onbuild = vec!["FROM evil".into()];
    let e = build_err("FROM example/onbuild:1\n", &ctx, |r| {
        r.resolved_images.insert(
            (
                "docker.io/example/onbuild:1".into(),
                Platform::linux_amd64(),
            ),
            ResolvedImage {
                digest: Digest::sha256_of(b"m"),
                config,
            },
        );
    });
    assert_eq!(e.line, 1);
    assert!(e.message.contains("isn't allowed"), "{e}");
}

#[test]
fn heredocs_in_run_and_copy() {
    let text = "FROM alpine\nRUN <<EOF\necho one\necho two\nEOF\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\nARG NAME=world\nCOPY <<EOF /greeting\nhello $NAME\nEOF\nCOPY <<'EOF' /raw\nhello $NAME\nEOF\n";
    let g = build(text, &FakeContext::default(), |_| {});
    let runs: Vec<&ExecOp> = g
        .vertices()
        .into_iter()
        .filter_map(|v| match &v.op {
            Op::Exec(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].args, vec!["/bin/sh", "-c", "echo one\necho two\n"]);
    assert_eq!(runs[1].args, vec!["/dev/pipes/EOF"]);
    assert_eq!(runs[1].mounts[0].spec.target, "/dev/pipes/");
    let inline: Vec<_> = g
        .vertices()
        .into_iter()
        .filter_map(|v| match &v.op {
            Op::Inline(i) => Some(i.files[0].content.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        inline,
        vec![
            "#!/usr/bin/env python3\nprint(1)\n",
            "hello world\n",
            "hello $NAME\n"
        ]
    );
    assert_eq!(copy(&g, "COPY <<EOF /greeting").dest, "/greeting");
}
