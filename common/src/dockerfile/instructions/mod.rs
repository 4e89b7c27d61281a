//! Typed instructions: the parse tree checked and turned into one value per
//! instruction, following BuildKit's `frontend/dockerfile/instructions`.
//!
//! Only structure and flags are checked here; words are expanded later, per
//! platform, when a stage is dispatched ([`crate::dockerfile::stages`]).
//! - [`flags`]: builder flags per instruction.
//! - [`mount`]: `RUN --mount` options.
//! - [`run`]: RUN, CMD, ENTRYPOINT command lines, `--network`, `--security`.
//! - [`copy`]: COPY and ADD.
//! - [`config`]: HEALTHCHECK, EXPOSE, STOPSIGNAL helpers.

pub mod config;
pub mod copy;
pub mod flags;
pub mod mount;
pub mod run;

use crate::dockerfile::ast::{Node, ParseResult};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::graph::image_config::StageHealthcheck;
use copy::CopyInstr;
use flags::{FlagKind, Flags};
use run::{CommandLine, RunInstr};

/// `ARG name[=default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// The name.
    pub key: String,
    /// The default, unexpanded; `None` when absent.
    pub default: Option<String>,
}

/// One typed instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based first line.
    pub line: usize,
    /// The instruction as written.
    pub original: String,
    /// What it does.
    pub kind: InstructionKind,
}

/// The instructions other than FROM (which starts a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `ARG`.
    Arg(Vec<ArgDecl>),
    /// `ENV k=v ...` (unexpanded pairs).
    Env(Vec<(String, String)>),
    /// `LABEL k=v ...`.
    Label(Vec<(String, String)>),
    /// `MAINTAINER` (sets the image author).
    Maintainer(String),
    /// `EXPOSE` words.
    Expose(Vec<String>),
    /// `VOLUME` paths.
    Volume(Vec<String>),
    /// `USER`.
    User(String),
    /// `WORKDIR`.
    Workdir(String),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `SHELL` (JSON form only).
    Shell(Vec<String>),
    /// `CMD`.
    Cmd(CommandLine),
    /// `ENTRYPOINT`.
    Entrypoint(CommandLine),
    /// `HEALTHCHECK`.
    Healthcheck(StageHealthcheck),
    /// `RUN`.
    Run(RunInstr),
    /// `COPY` or `ADD`.
    Copy(CopyInstr),
    /// `ONBUILD <instruction>`: recorded in the image config; `expression`
    /// is the trigger text as Docker stores it.
    Onbuild {
        /// The trigger as written after ONBUILD.
        expression: String,
        /// The trigger, typed (validated now, run when the image is a base).
        trigger: Box<Instruction>,
    },
}

impl InstructionKind {
    /// Upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::User(_) => "USER",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Copy(c) if c.is_add => "ADD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Onbuild { .. } => "ONBUILD",
        }
    }
}

/// One `FROM` and the instructions up to the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based position.
    pub index: usize,
    /// `AS name`, as written.
    pub name: Option<String>,
    /// The base (image, stage name or `scratch`), unexpanded.
    pub base: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// FROM's line.
    pub line: usize,
    /// FROM as written.
    pub original: String,
    /// The stage's instructions.
    pub instructions: Vec<Instruction>,
}

/// A whole Dockerfile, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARGs before the first FROM (global scope: usable in FROM lines).
    pub meta_args: Vec<Instruction>,
    /// The stages in order.
    pub stages: Vec<Stage>,
    /// The escape token.
    pub escape: char,
}

/// Type-check a parsed Dockerfile. Errors name the line and the instruction.
pub fn parse_dockerfile(parsed: &ParseResult) -> Result<Dockerfile, DockerfileError> {
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for node in &parsed.ast.children {
        if node.keyword() == "from" {
            stages.push(parse_from(node, stages.len())?);
            continue;
        }
        let ins = parse_instruction(node)?;
        match stages.last_mut() {
            Some(st) => st.instructions.push(ins),
            None => {
                if !matches!(ins.kind, InstructionKind::Arg(_)) {
                    return Err(DockerfileError::new(
                        ErrorKind::BadArguments,
                        node.start_line,
                        node.original.clone(),
                        format!(
                            "{} before the first FROM: only ARG may come before FROM",
                            ins.kind.keyword()
                        ),
                    ));
                }
                meta_args.push(ins);
            }
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::new(
            ErrorKind::Syntax,
            0,
            "",
            "the Dockerfile has no FROM: there is no stage to build",
        ));
    }
    Ok(Dockerfile {
        meta_args,
        stages,
        escape: if parsed.escape_token == '`' {
            '`'
        } else {
            '\\'
        },
    })
}

fn parse_from(node: &Node, index: usize) -> Result<Stage, DockerfileError> {
    let flags = Flags::parse(node, &[("platform", FlagKind::String)])?;
    let args = node.args();
    let err = |msg: String| {
        DockerfileError::new(
            ErrorKind::BadArguments,
            node.start_line,
            node.original.clone(),
            msg,
        )
    };
    let name = match args.as_slice() {
        [_] => None,
        [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
            if !valid_stage_name(name) {
                return Err(err(format!(
                    "invalid stage name {name:?}: it must start with a letter and contain only letters, digits, '-', '_' and '.'"
                )));
            }
            Some(name.to_string())
        }
        _ => {
            return Err(err(
                "FROM takes an image and optionally AS <name>: FROM image [AS name]".into(),
            ))
        }
    };
    Ok(Stage {
        index,
        name,
        base: args[0].to_string(),
        platform: flags.string("platform"),
        line: node.start_line,
        original: node.original.clone(),
        instructions: Vec::new(),
    })
}

/// BuildKit's stage-name rule: `^[a-z][a-z0-9-_.]*$`, case-insensitive.
pub fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Type-check one non-FROM instruction node.
pub fn parse_instruction(node: &Node) -> Result<Instruction, DockerfileError> {
    let line = node.start_line;
    let err = |kind, msg: String| DockerfileError::new(kind, line, node.original.clone(), msg);
    let args = node.args();
    let keyword = node.keyword();
    let upper = keyword.to_uppercase();
    let no_flags = |n: &Node| Flags::parse(n, &[]).map(|_| ());
    let one_arg = |what: &str| -> Result<String, DockerfileError> {
        if args.len() != 1 || args[0].is_empty() {
            return Err(err(
                ErrorKind::BadArguments,
                format!("{upper} needs exactly one argument: {upper} {what}"),
            ));
        }
        Ok(args[0].to_string())
    };
    let kind = match keyword.as_str() {
        "arg" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(err(
                    ErrorKind::BadArguments,
                    "ARG needs a name: ARG NAME[=default]".into(),
                ));
            }
            let mut decls = Vec::new();
            for a in &args {
                let (key, default) = match a.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (a.to_string(), None),
                };
                if key.is_empty() {
                    return Err(err(
                        ErrorKind::BadArguments,
                        format!("ARG names cannot be blank: {a:?}"),
                    ));
                }
                decls.push(ArgDecl { key, default });
            }
            InstructionKind::Arg(decls)
        }
        "env" | "label" => {
            no_flags(node)?;
            // The parser gives (key, value, separator) triples; the
            // separator is "=" or "" for the legacy `ENV key value` form.
            if args.is_empty() || args.len() % 3 != 0 {
                return Err(err(
                    ErrorKind::BadArguments,
                    format!("{upper} needs key=value pairs: {upper} key=value ..."),
                ));
            }
            let pairs: Vec<(String, String)> = args
                .chunks(3)
                .map(|c| (c[0].to_string(), c[1].to_string()))
                .collect();
            if pairs.iter().any(|(k, _)| k.is_empty()) {
                return Err(err(
                    ErrorKind::BadArguments,
                    format!("{upper} names cannot be blank"),
                ));
            }
            if keyword == "env" {
                InstructionKind::Env(pairs)
            } else {
                InstructionKind::Label(pairs)
            }
        }
        "maintainer" => {
            no_flags(node)?;
            InstructionKind::Maintainer(one_arg("name")?)
        }
        "expose" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(err(
                    ErrorKind::BadArguments,
                    "EXPOSE needs at least one port".into(),
                ));
            }
            InstructionKind::Expose(args.iter().map(|s| s.to_string()).collect())
        }
        "volume" => {
            no_flags(node)?;
            if args.is_empty() {
                return Err(err(
                    ErrorKind::BadArguments,
                    "VOLUME needs at least one path".into(),
                ));
            }
            InstructionKind::Volume(args.iter().map(|s| s.to_string()).collect())
        }
        "user" => {
            no_flags(node)?;
            InstructionKind::User(one_arg("user[:group]")?)
        }
        "workdir" => {
            no_flags(node)?;
            InstructionKind::Workdir(one_arg("/path")?)
        }
        "stopsignal" => {
            no_flags(node)?;
            InstructionKind::StopSignal(one_arg("SIGNAL")?)
        }
        "shell" => {
            no_flags(node)?;
            if !node.json || args.is_empty() {
                return Err(err(
                    ErrorKind::BadArguments,
                    "SHELL needs its arguments in JSON form: SHELL [\"executable\", \"param\"]"
                        .into(),
                ));
            }
            InstructionKind::Shell(args.iter().map(|s| s.to_string()).collect())
        }
        "cmd" => {
            no_flags(node)?;
            InstructionKind::Cmd(CommandLine::from_node(node))
        }
        "entrypoint" => {
            no_flags(node)?;
            InstructionKind::Entrypoint(CommandLine::from_node(node))
        }
        "healthcheck" => InstructionKind::Healthcheck(config::parse_healthcheck(node)?),
        "run" => InstructionKind::Run(run::parse_run(node)?),
        "copy" => InstructionKind::Copy(copy::parse_copy(node, false)?),
        "add" => InstructionKind::Copy(copy::parse_copy(node, true)?),
        "onbuild" => {
            no_flags(node)?;
            let nested = node
                .next
                .as_deref()
                .and_then(|n| n.children.first())
                .ok_or_else(|| {
                    err(
                        ErrorKind::BadArguments,
                        "ONBUILD needs an instruction: ONBUILD RUN ...".into(),
                    )
                })?;
            match nested.keyword().as_str() {
                "onbuild" | "from" | "maintainer" => {
                    return Err(err(
                        ErrorKind::BadArguments,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            nested.value.to_uppercase()
                        ),
                    ))
                }
                _ => {}
            }
            let mut trigger = parse_instruction(nested)?;
            trigger.line = line;
            InstructionKind::Onbuild {
                expression: onbuild_expression(&node.original),
                trigger: Box::new(trigger),
            }
        }
        "from" => {
            return Err(err(
                ErrorKind::Syntax,
                "FROM here is handled as a stage start".into(),
            ))
        }
        _ => {
            return Err(err(
                ErrorKind::UnknownInstruction,
                format!("unknown instruction: {}", node.value.to_uppercase()),
            ))
        }
    };
    Ok(Instruction {
        line,
        original: node.original.clone(),
        kind,
    })
}

/// The text after the `ONBUILD` keyword, as Docker records it in `OnBuild`.
fn onbuild_expression(original: &str) -> String {
    let t = original.trim_start();
    let rest = match (t.get(..7), t.get(7..)) {
        (Some(head), Some(rest)) if head.eq_ignore_ascii_case("onbuild") => rest,
        _ => t,
    };
    rest.trim().to_string()
}

#[cfg(test)]
mod tests;
