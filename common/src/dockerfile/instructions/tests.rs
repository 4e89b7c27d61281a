use super::*;
use crate::dockerfile::ast::Node;

fn chain(args: &[&str]) -> Option<Box<Node>> {
    let mut next = None;
    for a in args.iter().rev() {
        next = Some(Box::new(Node {
            value: a.to_string(),
            next,
            ..Node::default()
        }));
    }
    next
}

fn node(kw: &str, flags: &[&str], args: &[&str], json: bool) -> Node {
    Node {
        value: kw.to_string(),
        next: chain(args),
        flags: flags.iter().map(|s| s.to_string()).collect(),
        json,
        original: format!("{kw} {} {}", flags.join(" "), args.join(" ")),
        start_line: 7,
        end_line: 7,
        ..Node::default()
    }
}

fn kind(n: Node) -> InstructionKind {
    parse_instruction(&n).unwrap().kind
}

fn error(n: Node) -> DockerfileError {
    parse_instruction(&n).unwrap_err()
}

#[test]
fn unknown_instruction_names_line_and_text() {
    let e = error(node("FOOBAR", &[], &["x"], false));
    assert_eq!(e.kind, ErrorKind::UnknownInstruction);
    assert_eq!(e.line, 7);
    assert!(e.to_string().contains("unknown instruction: FOOBAR"), "{e}");
}

#[test]
fn bad_flags_are_refused() {
    let e = error(node(
        "COPY",
        &["--from=a", "--checksum=sha256:00"],
        &["a", "b"],
        false,
    ));
    assert_eq!(e.kind, ErrorKind::BadFlag);
    assert!(e.message.contains("--checksum"), "{e}");
    assert_eq!(
        error(node("ADD", &["--from=a"], &["a", "b"], false)).kind,
        ErrorKind::BadFlag
    );
    assert_eq!(
        error(node("ENV", &["--x"], &["a", "b"], false)).kind,
        ErrorKind::BadFlag
    );
    assert_eq!(
        error(node("RUN", &["--network=bridge"], &["true"], false)).kind,
        ErrorKind::BadFlag
    );
    assert_eq!(
        error(node("RUN", &["--security=lax"], &["true"], false)).kind,
        ErrorKind::BadFlag
    );
    assert_eq!(
        error(node(
            "HEALTHCHECK",
            &["--interval=soon"],
            &["CMD", "true"],
            false
        ))
        .kind,
        ErrorKind::BadFlag
    );
}

#[test]
fn bad_mount_is_refused() {
    let e = error(node(
        "RUN",
        &["--mount=type=cache,target=/c,sharing=maybe"],
        &["true"],
        false,
    ));
    assert_eq!(e.kind, ErrorKind::BadMount);
    assert!(e.message.contains("sharing"), "{e}");
}

#[test]
fn typed_copy_and_add() {
    let InstructionKind::Copy(c) = kind(node(
        "COPY",
        &[
            "--from=build",
            "--chown=1:2",
            "--chmod=0755",
            "--link",
            "--parents",
            "--exclude=*.md",
        ],
        &["a", "b", "/dst/"],
        false,
    )) else {
        panic!()
    };
    assert_eq!(c.sources, vec!["a", "b"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert!(c.link && c.parents && !c.is_add);
    assert_eq!(c.excludes, vec!["*.md"]);
    let InstructionKind::Copy(a) = kind(node(
        "ADD",
        &["--checksum=sha256:abc", "--keep-git-dir", "--unpack=false"],
        &["https://x/y.tgz", "/"],
        false,
    )) else {
        panic!()
    };
    assert!(a.is_add && a.keep_git_dir);
    assert_eq!(a.unpack, Some(false));
    assert_eq!(
        error(node("COPY", &[], &["onlyone"], false)).kind,
        ErrorKind::BadArguments
    );
}

#[test]
fn run_cmd_shell_forms() {
    let InstructionKind::Run(r) = kind(node(
        "RUN",
        &[
            "--mount=type=secret,id=tok",
            "--network=none",
            "--security=insecure",
        ],
        &["make all"],
        false,
    )) else {
        panic!()
    };
    assert_eq!(r.command, CommandLine::Shell("make all".into()));
    assert_eq!(r.network, run::Network::None);
    assert_eq!(r.security, run::Security::Insecure);
    assert_eq!(r.mounts[0].target, "/run/secrets/tok");
    assert_eq!(
        kind(node("CMD", &[], &["a", "b"], true)),
        InstructionKind::Cmd(CommandLine::Exec(vec!["a".into(), "b".into()]))
    );
    assert_eq!(
        error(node("SHELL", &[], &["/bin/bash -c"], false)).kind,
        ErrorKind::BadArguments
    );
}

#[test]
fn env_label_arg() {
    assert_eq!(
        kind(node("ENV", &[], &["A", "1", "=", "B", "2", ""], false)),
        InstructionKind::Env(vec![("A".into(), "1".into()), ("B".into(), "2".into())])
    );
    assert_eq!(
        error(node("LABEL", &[], &["A"], false)).kind,
        ErrorKind::BadArguments
    );
    assert_eq!(
        kind(node("ARG", &[], &["A", "B=x=y"], false)),
        InstructionKind::Arg(vec![
            ArgDecl {
                key: "A".into(),
                default: None
            },
            ArgDecl {
                key: "B".into(),
                default: Some("x=y".into())
            }
        ])
    );
}

#[test]
fn healthcheck_forms() {
    let InstructionKind::Healthcheck(h) = kind(node(
        "HEALTHCHECK",
        &["--interval=5s", "--retries=3"],
        &["CMD", "curl -f localhost"],
        false,
    )) else {
        panic!()
    };
    assert_eq!(h.test, vec!["CMD-SHELL", "curl -f localhost"]);
    assert_eq!(h.interval, 5_000_000_000);
    assert_eq!(h.retries, 3);
    let InstructionKind::Healthcheck(h) = kind(node("HEALTHCHECK", &[], &["NONE"], false)) else {
        panic!()
    };
    assert_eq!(h.test, vec!["NONE"]);
    assert_eq!(
        error(node("HEALTHCHECK", &[], &["NONE", "x"], false)).kind,
        ErrorKind::BadArguments
    );
    assert_eq!(
        error(node(
            "HEALTHCHECK",
            &["--timeout=1us"],
            &["CMD", "x"],
            false
        ))
        .kind,
        ErrorKind::BadFlag
    );
}

#[test]
fn onbuild_triggers() {
    let mut n = node("ONBUILD", &[], &[], false);
    n.original = "ONBUILD RUN echo hi".into();
    n.next = Some(Box::new(Node {
        children: vec![node("RUN", &[], &["echo hi"], false)],
        ..Node::default()
    }));
    let InstructionKind::Onbuild {
        expression,
        trigger,
    } = kind(n.clone())
    else {
        panic!()
    };
    assert_eq!(expression, "RUN echo hi");
    assert!(matches!(trigger.kind, InstructionKind::Run(_)));
    n.next = Some(Box::new(Node {
        children: vec![node("FROM", &[], &["x"], false)],
        ..Node::default()
    }));
    assert_eq!(error(n).kind, ErrorKind::BadArguments);
}

#[test]
fn stages_and_meta_args() {
    let root = Node {
        children: vec![
            node("ARG", &[], &["V=1"], false),
            node(
                "FROM",
                &["--platform=$BUILDPLATFORM"],
                &["alpine:$V", "AS", "Build"],
                false,
            ),
            node("RUN", &[], &["true"], false),
            node("FROM", &[], &["build"], false),
        ],
        ..Node::default()
    };
    let df = parse_dockerfile(&ParseResult {
        ast: root,
        escape_token: '\\',
        ..ParseResult::default()
    })
    .unwrap();
    assert_eq!(df.meta_args.len(), 1);
    assert_eq!(df.stages.len(), 2);
    assert_eq!(df.stages[0].name.as_deref(), Some("Build"));
    assert_eq!(df.stages[0].platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(df.stages[0].instructions.len(), 1);
    let bad = Node {
        children: vec![node("RUN", &[], &["true"], false)],
        ..Node::default()
    };
    assert!(parse_dockerfile(&ParseResult {
        ast: bad,
        ..ParseResult::default()
    })
    .is_err());
    assert!(parse_dockerfile(&ParseResult::default()).is_err());
    let bad_name = Node {
        children: vec![node("FROM", &[], &["a", "AS", "1x"], false)],
        ..Node::default()
    };
    assert!(parse_dockerfile(&ParseResult {
        ast: bad_name,
        ..ParseResult::default()
    })
    .is_err());
}
