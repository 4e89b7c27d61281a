//! RUN (Dockerfile reference "RUN"): the command in exec or shell form (a
//! heredoc body as the script, or as a file when it starts with `#!`), its
//! `--mount`s with their sources resolved to inputs, `--network` and
//! `--security`. The parser's flag types become the IR's here.

use super::heredoc::{heredoc_body, is_heredoc_marker};
use super::stage::{first_line, PlatformBuild, StageState};
use crate::dockerfile::error::DockerfileError;
use crate::dockerfile::instructions::mount::{CacheSharing, MountSpec, MountType};
use crate::dockerfile::instructions::run::{CommandLine, Network, RunInstr, Security};
use crate::dockerfile::instructions::Instruction;
use crate::dockerfile::stages::{expand_mount, get_var};
use crate::graph::op::{
    ExecMount, ExecOp, InlineFile, InlineOp, Mount, MountKind, NetworkMode, Op, SecurityMode,
    SharingMode,
};
use crate::graph::Vertex;
use crate::oci::Digest;

impl PlatformBuild<'_, '_> {
    /// RUN: an exec vertex over the stage's root, with its mounts' sources
    /// as further inputs; the history line is BuildKit's `runCommandString`.
    pub(super) fn run_instr(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        r: &RunInstr,
        states: &[Option<StageState>],
    ) -> Result<(), DockerfileError> {
        let prefix = self.prefix(st);
        let mut inputs: Vec<Digest> = Vec::new();
        let root = st.root.as_ref().map(|k| {
            inputs.push(k.clone());
            0
        });
        let shell = self.shell(st);
        let mut mounts = Vec::new();
        let args = match (&r.command, r.heredocs.as_slice()) {
            (c, []) => c.argv(&shell),
            (CommandLine::Shell(line), [h]) if is_heredoc_marker(line, h) => {
                let data = heredoc_body(h);
                if data.starts_with("#!") {
                    let op = Op::Inline(InlineOp {
                        files: vec![InlineFile {
                            name: h.name.clone(),
                            content: data,
                            mode: 0o755,
                        }],
                    });
                    let key = self.graph.insert(Vertex::new(
                        None,
                        op,
                        Vec::new(),
                        "preparing inline document".into(),
                        ins.line,
                    ));
                    inputs.push(key);
                    mounts.push(ExecMount {
                        spec: mount(MountSpec::read_only_bind("/dev/pipes/", "/")),
                        input: Some(inputs.len() - 1),
                    });
                    vec![format!("/dev/pipes/{}", h.name)]
                } else {
                    let mut v = shell.clone();
                    v.push(data);
                    v
                }
            }
            (CommandLine::Shell(line), docs) => {
                let mut script = line.clone();
                for h in docs {
                    script.push('\n');
                    script.push_str(&heredoc_body(h));
                    script.push_str(&h.name);
                }
                let mut v = shell.clone();
                v.push(script);
                v
            }
            (c @ CommandLine::Exec(_), _) => c.argv(&shell),
        };
        for raw in &r.mount_values {
            let mut spec = expand_mount(raw, &st.env, &self.exp, ins)?;
            let input = match (spec.kind, spec.from.is_empty()) {
                (MountType::Bind, true) => {
                    let src = if spec.source.is_empty() {
                        ".".to_string()
                    } else {
                        spec.source.clone()
                    };
                    let key = self.context_vertex(ins, vec![src], Vec::new())?;
                    inputs.push(key);
                    Some(inputs.len() - 1)
                }
                (MountType::Bind | MountType::Cache, false) => {
                    let from = spec.from.clone();
                    match self.source_input(st, ins, &from, states)? {
                        Some(k) => {
                            inputs.push(k);
                            Some(inputs.len() - 1)
                        }
                        None => None,
                    }
                }
                _ => None,
            };
            spec.from.clear();
            mounts.push(ExecMount {
                spec: mount(spec),
                input,
            });
        }
        let env: Vec<String> = st.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let cwd = if st.config.working_dir.is_empty() {
            "/".to_string()
        } else {
            st.config.working_dir.clone()
        };
        let op = Op::Exec(ExecOp {
            root,
            args: args.clone(),
            env,
            cwd,
            user: st.config.user.clone(),
            mounts,
            network: network(r.network),
            security: security(r.security),
        });
        let desc = format!("{prefix} {}", first_line(&ins.original));
        let key = self.graph.insert(Vertex::new(
            Some(st.platform.clone()),
            op,
            inputs,
            desc,
            ins.line,
        ));
        st.root = Some(key.clone());
        st.layers.push(key);
        // BuildKit's runCommandString: "|N K=V ... argv".
        let mut hist = String::from("RUN ");
        if !st.args.is_empty() {
            hist.push_str(&format!("|{} ", st.args.len()));
            for (k, v) in &st.args {
                let v = get_var(&st.env, k)
                    .map(str::to_string)
                    .or_else(|| v.clone())
                    .unwrap_or_default();
                hist.push_str(&format!("{k}={v} "));
            }
        }
        hist.push_str(&args.join(" "));
        hist.push_str(" # buildkit");
        st.config.commit(hist, true);
        Ok(())
    }
}

/// A parsed `--mount` as the IR carries it (same fields, same meaning).
fn mount(m: MountSpec) -> Mount {
    Mount {
        kind: match m.kind {
            MountType::Bind => MountKind::Bind,
            MountType::Cache => MountKind::Cache,
            MountType::Tmpfs => MountKind::Tmpfs,
            MountType::Secret => MountKind::Secret,
        },
        target: m.target,
        source: m.source,
        from: m.from,
        readonly: m.readonly,
        id: m.id,
        sharing: m.sharing.map(|s| match s {
            CacheSharing::Shared => SharingMode::Shared,
            CacheSharing::Private => SharingMode::Private,
            CacheSharing::Locked => SharingMode::Locked,
        }),
        required: m.required,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        size: m.size,
    }
}

/// `--network=default|none|host`.
fn network(n: Network) -> NetworkMode {
    match n {
        Network::Default => NetworkMode::Default,
        Network::None => NetworkMode::None,
        Network::Host => NetworkMode::Host,
    }
}

/// `--security=sandbox|insecure`.
fn security(s: Security) -> SecurityMode {
    match s {
        Security::Sandbox => SecurityMode::Sandbox,
        Security::Insecure => SecurityMode::Insecure,
    }
}
