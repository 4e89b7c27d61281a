//! RUN, CMD, ENTRYPOINT and SHELL: command lines in shell or exec (JSON) form,
//! and RUN's `--mount`, `--network` and `--security` flags (BuildKit
//! `commands_runmount.go`, `commands_runnetwork.go`, `commands_runsecurity.go`).

use super::flags::{FlagKind, Flags};
use super::mount::{parse_mount, MountSpec};
use crate::dockerfile::ast::{Heredoc, Node};
use crate::dockerfile::error::{DockerfileError, ErrorKind};

/// A command line as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// JSON form: run these arguments directly.
    Exec(Vec<String>),
    /// Shell form: wrapped with the stage's SHELL (default `/bin/sh -c`).
    Shell(String),
}

impl CommandLine {
    /// From an instruction node: JSON arguments, or the whole shell text.
    pub fn from_node(node: &Node) -> Self {
        let args = node.args();
        if node.json {
            CommandLine::Exec(args.iter().map(|s| s.to_string()).collect())
        } else {
            CommandLine::Shell(args.join(" "))
        }
    }

    /// The argv to run: exec form as is, shell form appended to `shell`.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            CommandLine::Exec(a) => a.clone(),
            CommandLine::Shell(s) => {
                let mut v = shell.to_vec();
                v.push(s.clone());
                v
            }
        }
    }
}

/// `RUN --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Network {
    /// The build's default (host networking for rootless builds, as BuildKit).
    #[default]
    Default,
    /// A fresh network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

/// `RUN --security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Security {
    /// Default capabilities and confinement.
    #[default]
    Sandbox,
    /// All capabilities (needs the `security.insecure` entitlement).
    Insecure,
}

/// A typed RUN instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstr {
    /// The command.
    pub command: CommandLine,
    /// Raw `--mount` values (re-parsed with expansion at dispatch).
    pub mount_values: Vec<String>,
    /// Mounts as parsed without expansion (for early validation).
    pub mounts: Vec<MountSpec>,
    /// `--network`.
    pub network: Network,
    /// `--security`.
    pub security: Security,
    /// Heredocs attached to the command.
    pub heredocs: Vec<Heredoc>,
}

pub(super) fn parse_run(node: &Node) -> Result<RunInstr, DockerfileError> {
    let flags = Flags::parse(
        node,
        &[
            ("mount", FlagKind::List),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ],
    )?;
    let err =
        |kind, msg: String| DockerfileError::new(kind, node.start_line, node.original.clone(), msg);
    let mount_values = flags.list("mount");
    let mut mounts = Vec::new();
    for v in &mount_values {
        let m = parse_mount(v, None)
            .map_err(|e| err(ErrorKind::BadMount, format!("--mount={v}: {e}")))?;
        mounts.push(m);
    }
    let network = match flags.string("network").as_deref() {
        None | Some("default") => Network::Default,
        Some("none") => Network::None,
        Some("host") => Network::Host,
        Some(other) => {
            return Err(err(
                ErrorKind::BadFlag,
                format!("unsupported --network={other} (want default, none or host)"),
            ))
        }
    };
    let security = match flags.string("security").as_deref() {
        None | Some("sandbox") => Security::Sandbox,
        Some("insecure") => Security::Insecure,
        Some(other) => {
            return Err(err(
                ErrorKind::BadFlag,
                format!("unsupported --security={other} (want sandbox or insecure)"),
            ))
        }
    };
    if node.args().is_empty() && node.heredocs.is_empty() {
        return Err(err(ErrorKind::BadArguments, "RUN needs a command".into()));
    }
    Ok(RunInstr {
        command: CommandLine::from_node(node),
        mount_values,
        mounts,
        network,
        security,
        heredocs: node.heredocs.clone(),
    })
}
