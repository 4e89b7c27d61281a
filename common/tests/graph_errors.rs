//! Frontend errors name the file, the line and the offending text.

mod graph_support;
use graph_support::*;
use imgfarm_common::dockerfile::error::ErrorKind;

fn assert_located(
    e: &imgfarm_common::dockerfile::error::DockerfileError,
    kind: ErrorKind,
    line: usize,
    text: &str,
) {
    assert_eq!(e.kind, kind, "{e}");
    assert_eq!(e.line, line, "{e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("build/Dockerfile.dev:{line}: ")),
        "{shown}"
    );
    assert!(shown.contains(text), "{shown} should contain {text:?}");
}

fn named(r: &mut imgfarm_common::dockerfile::frontend::BuildRequest<'_>) {
    r.file_name = "build/Dockerfile.dev".into();
}

#[test]
fn unknown_instruction() {
    let e = build_err(
        "FROM alpine\nRUN true\nCOPYY a b\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::UnknownInstruction, 3, "COPYY a b");
    assert!(e.message.contains("unknown instruction: COPYY"));
}

#[test]
fn unknown_stage() {
    let ctx = FakeContext::default();
    let e = build_err(
        "FROM alpine AS build\nFROM alpine\nCOPY --from=5 /a /b\n",
        &ctx,
        named,
    );
    assert_located(&e, ErrorKind::UnknownStage, 3, "COPY --from=5 /a /b");
    assert!(e.message.contains("invalid stage index"), "{e}");
    let e = build_err("FROM alpine AS build\nFROM Builder\n", &ctx, named);
    assert_located(&e, ErrorKind::UnknownStage, 2, "FROM Builder");
    // The last stage is the target and does not need the first: no error.
    build(
        "FROM alpine\nCOPY --from=late /a /b\nFROM alpine AS late\n",
        &ctx,
        named,
    );
    let e = build_err(
        "FROM alpine AS a\nCOPY --from=late /a /b\nFROM alpine AS late\nCOPY --from=a /a /b\n",
        &ctx,
        named,
    );
    assert_located(&e, ErrorKind::CyclicStage, 2, "COPY --from=late /a /b");
    let e = build_err("FROM alpine\n", &ctx, |r| {
        named(r);
        r.target = Some("nope".into());
    });
    assert_eq!(e.kind, ErrorKind::UnknownStage);
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn later_stage_is_refused_when_needed() {
    let e = build_err(
        "FROM alpine AS a\nCOPY --from=late /a /b\nFROM alpine AS late\nFROM a\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::UnknownStage, 2, "COPY --from=late");
    assert!(e.message.contains("defined after"), "{e}");
}

#[test]
fn cyclic_stage_reference() {
    let e = build_err(
        "FROM alpine AS a\nRUN --mount=type=bind,from=b,target=/b true\nFROM a AS b\nRUN true\n",
        &FakeContext::default(),
        named,
    );
    assert_located(
        &e,
        ErrorKind::CyclicStage,
        2,
        "RUN --mount=type=bind,from=b",
    );
    assert!(e.message.contains("circular dependency"), "{e}");
    let e = build_err(
        "FROM alpine AS self\nCOPY --from=self /a /b\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::CyclicStage, 2, "COPY --from=self");
}

#[test]
fn bad_flag() {
    let e = build_err(
        "FROM alpine\nCOPY --chmown=1 a b\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::BadFlag, 2, "--chmown=1");
    assert!(e.message.contains("unknown flag --chmown"), "{e}");
    let e = build_err(
        "FROM alpine\nCOPY --chmod=rwx a b\n",
        &FakeContext::with(&[("a", "1")]),
        named,
    );
    assert_located(&e, ErrorKind::BadFlag, 2, "--chmod=rwx");
}

#[test]
fn bad_mount_option() {
    let e = build_err(
        "FROM alpine\n\nRUN --mount=type=cache,target=/c,sharing=sometimes make\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::BadMount, 3, "sharing=sometimes");
    let e = build_err(
        "FROM alpine\nRUN --mount=type=cache,tgt=/c make\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::BadMount, 2, "tgt=/c");
    assert!(e.message.contains("unexpected key 'tgt'"), "{e}");
}

#[test]
fn invalid_platform() {
    let e = build_err(
        "FROM --platform=linux/arm64/v8/x alpine\n",
        &FakeContext::default(),
        named,
    );
    assert_located(
        &e,
        ErrorKind::InvalidPlatform,
        1,
        "FROM --platform=linux/arm64/v8/x alpine",
    );
    let e = build_err(
        "ARG P\nFROM --platform=$P alpine\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::InvalidPlatform, 2, "--platform=$P");
}

#[test]
fn missing_required_arg_in_from() {
    let e = build_err(
        "ARG BASE\nFROM $BASE\nRUN true\n",
        &FakeContext::default(),
        named,
    );
    assert_located(&e, ErrorKind::MissingArg, 2, "FROM $BASE");
    assert!(e.message.contains("--build-arg BASE=value"), "{e}");
    // Given, it builds.
    build(
        "ARG BASE\nFROM $BASE\nRUN true\n",
        &FakeContext::default(),
        |r| {
            r.build_args.insert("BASE".into(), "alpine".into());
        },
    );
}

#[test]
fn other_located_errors() {
    let ctx = FakeContext::default();
    let e = build_err(
        "FROM alpine\nADD https://github.com/o/r.git /src\n",
        &ctx,
        named,
    );
    assert_located(&e, ErrorKind::BadArguments, 2, "r.git");
    assert!(e.message.contains("not supported yet"), "{e}");
    let e = build_err("FROM alpine\nCOPY missing /x\n", &ctx, named);
    assert_located(&e, ErrorKind::BadArguments, 2, "COPY missing /x");
    assert!(e.message.contains("not found"), "{e}");
    let e = build_err("FROM alpine\nSTOPSIGNAL SIGNOPE\n", &ctx, named);
    assert_located(&e, ErrorKind::BadArguments, 2, "SIGNOPE");
    let e = build_err("RUN true\nFROM alpine\n", &ctx, named);
    assert_located(&e, ErrorKind::BadArguments, 1, "RUN true");
    let e = build_err("FROM alpine AS a\nFROM alpine AS A\n", &ctx, named);
    assert_located(&e, ErrorKind::BadArguments, 2, "FROM alpine AS A");
    let e = build_err(
        "FROM alpine\nADD --checksum=md5:x https://e.com/f /\n",
        &ctx,
        named,
    );
    assert_located(&e, ErrorKind::BadFlag, 2, "--checksum");
    let e = build_err("FROM alpine\nCOPY --from=$X /a /b\n", &ctx, named);
    assert_located(&e, ErrorKind::BadFlag, 2, "--from=$X");
}
