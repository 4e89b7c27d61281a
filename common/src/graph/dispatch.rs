//! Dispatch of one platform's stages into vertices (BuildKit
//! `dockerfile2llb` `dispatch*` functions). Config-only instructions change
//! the stage's image config and scope; RUN, COPY, ADD and WORKDIR add vertices.

use super::build::{BuildGraph, BuildRequest, PlatformTarget};
use super::expand::{Expander, Vars};
use super::image_config::{ImageConfig, DEFAULT_PATH};
use super::op::*;
use super::vertex::Vertex;
use crate::dockerfile::ast::Heredoc;
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::instructions::config::{parse_expose, valid_stop_signal};
use crate::dockerfile::instructions::copy::{
    classify_add_source, parse_chmod, AddSourceKind, CopyInstr,
};
use crate::dockerfile::instructions::mount::MountType;
use crate::dockerfile::instructions::run::{CommandLine, RunInstr};
use crate::dockerfile::instructions::{Instruction, InstructionKind};
use crate::dockerfile::stages::{
    expand_mount, get_var, resolve_from, set_var, FromRef, StageBase, StagePlan,
};
use crate::oci::Digest;
use crate::platform::Platform;
use std::collections::{BTreeSet, HashMap};

/// Context selections already hashed, by (sources, excludes).
pub(super) type ContextCache = HashMap<(Vec<String>, Vec<String>), Digest>;

/// State of a stage being dispatched.
#[derive(Debug, Clone)]
struct StageState {
    name: String,
    platform: Platform,
    /// Current root filesystem vertex; `None` = empty.
    root: Option<Digest>,
    /// Layer chain for export (base image vertex first when there is one).
    layers: Vec<Digest>,
    base_image: bool,
    config: ImageConfig,
    /// Scope of expansion and RUN env: image ENV plus ARG values.
    env: Vars,
    /// ARGs declared in scope (name, value), for RUN history.
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
    step: usize,
    total: usize,
}

pub(super) struct PlatformBuild<'a, 'r> {
    pub req: &'a BuildRequest<'r>,
    pub plan: &'a StagePlan<'a>,
    pub exp: Expander,
    pub target_platform: Platform,
    pub graph: &'a mut BuildGraph,
    pub ctx_cache: &'a mut ContextCache,
    pub used_args: &'a mut BTreeSet<String>,
    pub by_name: &'a HashMap<String, usize>,
    pub single_stage: bool,
    pub multi_platform: bool,
}

fn err(kind: ErrorKind, ins: &Instruction, msg: impl Into<String>) -> DockerfileError {
    DockerfileError::new(kind, ins.line, ins.original.clone(), msg)
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

/// Lexically clean an absolute path (`.`/`..` resolved, no trailing slash).
pub(super) fn clean_path(p: &str) -> String {
    crate::path::clean_rooted(p)
}

/// A COPY destination relative to the working directory, keeping "into a
/// directory" (trailing `/`, `.`) as BuildKit's `pathRelativeToWorkingDir`.
pub(super) fn dest_path(cwd: &str, dest: &str) -> String {
    let dir_like = dest.is_empty() || dest == "." || dest.ends_with('/') || dest.ends_with("/.");
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", if cwd.is_empty() { "/" } else { cwd }, dest)
    };
    let mut p = clean_path(&joined);
    if dir_like && p != "/" {
        p.push('/');
    }
    p
}

fn vars_from_env(env: &[String]) -> Vars {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

/// Go's `%q` of a string slice, as BuildKit writes CMD/ENTRYPOINT history.
fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

impl PlatformBuild<'_, '_> {
    /// Dispatch every needed stage; returns the export of the target.
    pub fn run(&mut self) -> Result<PlatformTarget, DockerfileError> {
        let n = self.plan.stages.len();
        let mut states: Vec<Option<StageState>> = vec![None; n];
        for i in 0..n {
            if !self.plan.reachable[i] {
                continue;
            }
            let st = self.dispatch_stage(i, &states)?;
            states[i] = Some(st);
        }
        let target = states[self.plan.target].take().ok_or_else(|| {
            DockerfileError::new(
                ErrorKind::UnknownStage,
                0,
                "",
                "target stage was not dispatched",
            )
        })?;
        Ok(self.export(target))
    }

    fn export(&mut self, st: StageState) -> PlatformTarget {
        let mut config = st.config;
        for (k, v) in &self.req.labels {
            config.labels.insert(k.clone(), v.clone());
        }
        let op = Op::Export(Box::new(ExportOp {
            stage: st.name.clone(),
            config: config.clone(),
            base_image: st.base_image.then_some(0),
        }));
        let desc = format!("exporting {} image for {}", st.name, self.target_platform);
        let key = self.graph.insert(Vertex::new(
            Some(self.target_platform.clone()),
            op,
            st.layers,
            desc,
            0,
        ));
        PlatformTarget {
            platform: self.target_platform.clone(),
            export: key,
            config,
            stage: st.name,
        }
    }

    /// BuildKit's progress prefix: `[stage 3/7]`, with the platform (and the
    /// TARGET* platform when a stage cross-builds) in multi-platform builds:
    /// `[linux/amd64->arm64 build 3/7]`.
    fn prefix(&self, st: &mut StageState) -> String {
        st.step += 1;
        let mut out = String::from("[");
        if self.multi_platform {
            out.push_str(&st.platform.to_string());
            if let Some(t) = target_from_env(&st.env).filter(|t| *t != st.platform) {
                out.push_str("->");
                if t.os == st.platform.os {
                    out.push_str(&t.architecture);
                    if !t.variant.is_empty() {
                        out.push('/');
                        out.push_str(&t.variant);
                    }
                } else {
                    out.push_str(&t.to_string());
                }
            }
            out.push(' ');
        }
        if !self.single_stage {
            out.push_str(&st.name);
            out.push(' ');
        }
        out.push_str(&format!("{}/{}]", st.step, st.total));
        out
    }

    fn image_vertex(
        &mut self,
        reference: &str,
        platform: &Platform,
        desc: String,
        line: usize,
    ) -> (Digest, Option<ImageConfig>) {
        let resolved = self
            .req
            .resolved_images
            .get(&(reference.to_string(), platform.clone()));
        let op = Op::Image(ImageOp {
            reference: reference.to_string(),
            digest: resolved.map(|r| r.digest.clone()),
        });
        let key = self.graph.insert(Vertex::new(
            Some(platform.clone()),
            op,
            Vec::new(),
            desc,
            line,
        ));
        (key, resolved.map(|r| r.config.clone()))
    }

    fn dispatch_stage(
        &mut self,
        i: usize,
        states: &[Option<StageState>],
    ) -> Result<StageState, DockerfileError> {
        let rs = &self.plan.stages[i];
        let counted = rs
            .instructions()
            .filter(|ins| {
                matches!(
                    ins.kind,
                    InstructionKind::Run(_)
                        | InstructionKind::Copy(_)
                        | InstructionKind::Workdir(_)
                )
            })
            .count();
        let mut image_triggers: Vec<Instruction> = Vec::new();
        let mut st = match &rs.base {
            StageBase::Stage(p) => {
                let mut s = states[*p].clone().ok_or_else(|| {
                    DockerfileError::new(
                        ErrorKind::UnknownStage,
                        rs.line,
                        rs.original.clone(),
                        "base stage not dispatched",
                    )
                })?;
                s.config.onbuild.clear();
                s.name = rs.display_name.clone();
                s.cmd_set = false;
                s.step = 0;
                s.total = counted;
                s
            }
            StageBase::Scratch => StageState {
                name: rs.display_name.clone(),
                platform: rs
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.target_platform.clone()),
                root: None,
                layers: Vec::new(),
                base_image: false,
                config: ImageConfig::default(),
                env: Vars::new(),
                args: Vec::new(),
                cmd_set: false,
                step: 0,
                total: counted,
            },
            StageBase::Image(r) => {
                let platform = rs
                    .platform
                    .clone()
                    .unwrap_or_else(|| self.target_platform.clone());
                let mut s = StageState {
                    name: rs.display_name.clone(),
                    platform: platform.clone(),
                    root: None,
                    layers: Vec::new(),
                    base_image: true,
                    config: ImageConfig::default(),
                    env: Vars::new(),
                    args: Vec::new(),
                    cmd_set: false,
                    step: 0,
                    total: counted + 1,
                };
                // A base image's ONBUILD triggers run first (BuildKit
                // `initOnBuildTriggers`), located at this stage's FROM line.
                if let Some(ri) = self.req.resolved_images.get(&(r.clone(), platform.clone())) {
                    for t in &ri.config.onbuild {
                        let ins = parse_trigger(t, rs.line, &rs.original)?;
                        s.total += usize::from(matches!(
                            ins.kind,
                            InstructionKind::Run(_)
                                | InstructionKind::Copy(_)
                                | InstructionKind::Workdir(_)
                        ));
                        image_triggers.push(ins);
                    }
                }
                let desc = format!("{} FROM {r}", self.prefix(&mut s));
                let (key, config) = self.image_vertex(r, &platform, desc, rs.line);
                // Not resolved: listed by `BuildGraph::unresolved_images`.
                if let Some(mut c) = config {
                    c.history.clear();
                    c.onbuild.clear();
                    s.config = c;
                }
                s.env = vars_from_env(&s.config.env);
                s.root = Some(key.clone());
                s.layers.push(key);
                s
            }
        };
        if st.config.get_env("PATH").is_none() && st.platform.os != "windows" {
            st.config.set_env("PATH", DEFAULT_PATH);
            if get_var(&st.env, "PATH").is_none() {
                set_var(&mut st.env, "PATH", DEFAULT_PATH.to_string());
            }
        }
        for ins in &image_triggers {
            self.dispatch(&mut st, ins, states)?;
        }
        for ins in rs.instructions() {
            self.dispatch(&mut st, ins, states)?;
        }
        Ok(st)
    }

    fn expand(
        &self,
        st: &StageState,
        ins: &Instruction,
        w: &str,
    ) -> Result<String, DockerfileError> {
        self.exp
            .word(w, &st.env)
            .map_err(|e| err(ErrorKind::Expansion, ins, e))
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        states: &[Option<StageState>],
    ) -> Result<(), DockerfileError> {
        match &ins.kind {
            InstructionKind::Arg(decls) => {
                let mut commit = Vec::new();
                for d in decls {
                    self.used_args.insert(d.key.clone());
                    let value = if let Some(v) = self.req.build_args.get(&d.key) {
                        Some(v.clone())
                    } else if let Some(def) = &d.default {
                        Some(self.expand(st, ins, def)?)
                    } else {
                        get_var(&self.plan.global_args, &d.key).map(str::to_string)
                    };
                    if let Some(v) = &value {
                        set_var(&mut st.env, &d.key, v.clone());
                        commit.push(format!("{}={v}", d.key));
                    } else {
                        commit.push(d.key.clone());
                    }
                    st.args.retain(|(k, _)| k != &d.key);
                    st.args.push((d.key.clone(), value));
                }
                st.config.commit(format!("ARG {}", commit.join(" ")), false);
            }
            InstructionKind::Env(pairs) => {
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    expanded.push((self.expand(st, ins, k)?, self.expand(st, ins, v)?));
                }
                let mut msg = String::from("ENV");
                for (k, v) in expanded {
                    msg.push_str(&format!(" {k}={v}"));
                    st.config.set_env(&k, &v);
                    set_var(&mut st.env, &k, v);
                }
                st.config.commit(msg, false);
            }
            InstructionKind::Label(pairs) => {
                let mut msg = String::from("LABEL");
                for (k, v) in pairs {
                    let (k, v) = (self.expand(st, ins, k)?, self.expand(st, ins, v)?);
                    msg.push_str(&format!(" {k}={v}"));
                    st.config.labels.insert(k, v);
                }
                st.config.commit(msg, false);
            }
            InstructionKind::Maintainer(m) => {
                st.config.author = m.clone();
                st.config.commit(format!("MAINTAINER {m}"), false);
            }
            InstructionKind::Expose(words) => {
                let mut ports = Vec::new();
                for w in words {
                    let w = self.expand(st, ins, w)?;
                    for p in parse_expose(&w).map_err(|e| err(ErrorKind::BadArguments, ins, e))? {
                        st.config.exposed_ports.insert(p.clone());
                        ports.push(p);
                    }
                }
                st.config
                    .commit(format!("EXPOSE map[{}]", ports.join(" ")), false);
            }
            InstructionKind::Volume(words) => {
                let mut vols = Vec::new();
                for w in words {
                    let v = self.expand(st, ins, w)?;
                    if v.is_empty() {
                        return Err(err(
                            ErrorKind::BadArguments,
                            ins,
                            "VOLUME paths cannot be empty",
                        ));
                    }
                    st.config.volumes.insert(v.clone());
                    vols.push(v);
                }
                st.config
                    .commit(format!("VOLUME [{}]", vols.join(" ")), false);
            }
            InstructionKind::User(u) => {
                let u = self.expand(st, ins, u)?;
                st.config.commit(format!("USER {u}"), false);
                st.config.user = u;
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(st, ins, s)?;
                if !valid_stop_signal(&s) {
                    return Err(err(
                        ErrorKind::BadArguments,
                        ins,
                        format!("invalid STOPSIGNAL {s:?} (e.g. SIGTERM or 15)"),
                    ));
                }
                st.config.commit(format!("STOPSIGNAL {s}"), false);
                st.config.stop_signal = s;
            }
            InstructionKind::Shell(sh) => {
                st.config.shell = sh.clone();
                st.config.commit(format!("SHELL [{}]", sh.join(" ")), false);
            }
            InstructionKind::Cmd(c) => {
                let argv = c.argv(&self.shell(st));
                st.config
                    .commit(format!("CMD {}", go_quote_list(&argv)), false);
                st.config.cmd = Some(argv);
                st.config.args_escaped = true;
                st.cmd_set = true;
            }
            InstructionKind::Entrypoint(c) => {
                let argv = c.argv(&self.shell(st));
                st.config
                    .commit(format!("ENTRYPOINT {}", go_quote_list(&argv)), false);
                st.config.entrypoint = Some(argv);
                if !st.cmd_set {
                    st.config.cmd = None;
                }
            }
            InstructionKind::Healthcheck(h) => {
                st.config.healthcheck = Some(h.clone());
                st.config.commit(format!("HEALTHCHECK {:?}", h.test), false);
            }
            InstructionKind::Onbuild { expression, .. } => {
                st.config.onbuild.push(expression.clone());
            }
            InstructionKind::Workdir(w) => self.workdir(st, ins, w)?,
            InstructionKind::Run(r) => self.run_instr(st, ins, r, states)?,
            InstructionKind::Copy(c) => self.copy(st, ins, c, states)?,
        }
        Ok(())
    }

    fn shell(&self, st: &StageState) -> Vec<String> {
        if st.config.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            st.config.shell.clone()
        }
    }

    fn workdir(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        w: &str,
    ) -> Result<(), DockerfileError> {
        let w = self.expand(st, ins, w)?;
        if w.is_empty() {
            return Err(err(
                ErrorKind::BadArguments,
                ins,
                "WORKDIR path cannot be empty",
            ));
        }
        let wd = if w.starts_with('/') {
            clean_path(&w)
        } else {
            let cur = if st.config.working_dir.is_empty() {
                "/"
            } else {
                st.config.working_dir.as_str()
            };
            clean_path(&format!("{cur}/{w}"))
        };
        st.config.working_dir = wd.clone();
        let prefix = self.prefix(st);
        if wd == "/" {
            st.config.commit(format!("WORKDIR {wd}"), false);
            return Ok(());
        }
        let (inputs, dest_root) = match &st.root {
            Some(r) => (vec![r.clone()], Some(0)),
            None => (Vec::new(), None),
        };
        let op = Op::File(FileOp {
            dest_root,
            action: FileAction::Mkdir {
                path: wd.clone(),
                mode: 0o755,
                user: st.config.user.clone(),
            },
        });
        let key = self.graph.insert(Vertex::new(
            Some(st.platform.clone()),
            op,
            inputs,
            format!("{prefix} WORKDIR {wd}"),
            ins.line,
        ));
        st.root = Some(key.clone());
        st.layers.push(key);
        st.config.commit(format!("WORKDIR {wd}"), true);
        Ok(())
    }

    /// A stage's root (or an image's) as an input, for --from and mount from=.
    fn source_input(
        &mut self,
        st: &StageState,
        ins: &Instruction,
        value: &str,
        states: &[Option<StageState>],
    ) -> Result<Option<Digest>, DockerfileError> {
        match resolve_from(value, self.by_name, self.plan.stages.len(), ins)? {
            FromRef::Stage(s) => {
                let src = states.get(s).and_then(|x| x.as_ref()).ok_or_else(|| {
                    err(
                        ErrorKind::UnknownStage,
                        ins,
                        format!("stage {value:?} must be defined before it is used"),
                    )
                })?;
                Ok(src.root.clone())
            }
            FromRef::Image(r) => {
                let desc = format!("[{}] load {r}", st.name);
                Ok(Some(self.image_vertex(&r, &st.platform, desc, ins.line).0))
            }
        }
    }

    fn context_vertex(
        &mut self,
        ins: &Instruction,
        sources: Vec<String>,
        excludes: Vec<String>,
    ) -> Result<Digest, DockerfileError> {
        let cache_key = (sources.clone(), excludes.clone());
        let selection = match self.ctx_cache.get(&cache_key) {
            Some(d) => d.clone(),
            None => {
                let d = self.req.context.select(&sources, &excludes).map_err(|e| {
                    err(ErrorKind::BadArguments, ins, format!("build context: {e}"))
                })?;
                self.ctx_cache.insert(cache_key, d.clone());
                d
            }
        };
        let desc = format!("[context] {}", sources.join(" "));
        let op = Op::Context(ContextOp {
            sources,
            excludes,
            selection,
        });
        Ok(self
            .graph
            .insert(Vertex::new(None, op, Vec::new(), desc, ins.line)))
    }

    fn run_instr(
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
                        spec: crate::dockerfile::instructions::mount::MountSpec::read_only_bind(
                            "/dev/pipes/",
                            "/",
                        ),
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
            mounts.push(ExecMount { spec, input });
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
            network: r.network,
            security: r.security,
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

    fn copy(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        c: &CopyInstr,
        states: &[Option<StageState>],
    ) -> Result<(), DockerfileError> {
        let prefix = self.prefix(st);
        let name = if c.is_add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.expand(st, ins, s)?);
        }
        let dest_raw = self.expand(st, ins, &c.dest)?;
        let mut excludes = Vec::new();
        for e in &c.excludes {
            excludes.push(self.expand(st, ins, e)?);
        }
        let chown = match &c.chown {
            Some(v) => Some(self.expand(st, ins, v)?).filter(|v| !v.is_empty()),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => {
                let v = self.expand(st, ins, v)?;
                Some(parse_chmod(&v).ok_or_else(|| {
                    err(
                        ErrorKind::BadFlag,
                        ins,
                        format!("--chmod={v}: want an octal mode such as 0755"),
                    )
                })?)
            }
            None => None,
        };
        let checksum = match &c.checksum {
            Some(v) => {
                let v = self.expand(st, ins, v)?;
                Some(
                    v.parse::<Digest>()
                        .map_err(|e| err(ErrorKind::BadFlag, ins, format!("--checksum: {e}")))?,
                )
            }
            None => None,
        };
        let cwd = if st.config.working_dir.is_empty() {
            "/"
        } else {
            st.config.working_dir.as_str()
        };
        let dest = dest_path(cwd, &dest_raw);
        if sources.len() > 1 && !dest.ends_with('/') {
            return Err(err(
                ErrorKind::BadArguments,
                ins,
                format!("when using {name} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }

        let mut inputs: Vec<Digest> = Vec::new();
        let dest_root = match (&st.root, c.link) {
            (Some(r), false) => {
                inputs.push(r.clone());
                Some(0)
            }
            _ => None,
        };
        let mut copy_sources = Vec::new();
        if let Some(from) = &c.from {
            let key = self.source_input(st, ins, from, states)?.ok_or_else(|| {
                err(
                    ErrorKind::BadArguments,
                    ins,
                    format!("--from={from}: that stage is empty (scratch with no files)"),
                )
            })?;
            inputs.push(key);
            for s in &sources {
                copy_sources.push(CopySource {
                    input: inputs.len() - 1,
                    path: s.clone(),
                    extract_archives: false,
                });
            }
        } else if !c.heredocs.is_empty() {
            let mut files = Vec::new();
            for s in &sources {
                let h = s
                    .strip_prefix("<<")
                    .map(|n| n.trim_start_matches('-').trim_matches(|ch| ch == '"' || ch == '\''))
                    .and_then(|n| c.heredocs.iter().find(|h| h.name == n))
                    .ok_or_else(|| {
                        err(ErrorKind::BadArguments, ins, format!("{s}: mixing heredoc and file sources in one {name} is not supported yet"))
                    })?;
                let content = if h.expand {
                    self.expand_heredoc(st, ins, &heredoc_body(h))?
                } else {
                    heredoc_body(h)
                };
                files.push(InlineFile {
                    name: h.name.clone(),
                    content,
                    mode: 0o644,
                });
            }
            let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
            let key = self.graph.insert(Vertex::new(
                None,
                Op::Inline(InlineOp { files }),
                Vec::new(),
                "preparing inline document".into(),
                ins.line,
            ));
            inputs.push(key);
            for n in names {
                copy_sources.push(CopySource {
                    input: inputs.len() - 1,
                    path: n,
                    extract_archives: false,
                });
            }
        } else {
            let mut local = Vec::new();
            for s in &sources {
                let kind = if c.is_add {
                    classify_add_source(s)
                } else {
                    AddSourceKind::Local
                };
                match kind {
                    AddSourceKind::Git => {
                        return Err(err(
                            ErrorKind::BadArguments,
                            ins,
                            format!("ADD {s}: git sources are not supported yet by imgfarm; clone the repository in a RUN step or add it to the build context"),
                        ))
                    }
                    AddSourceKind::Url => {
                        let filename = s
                            .split(['?', '#'])
                            .next()
                            .and_then(|u| u.rsplit('/').next())
                            .filter(|f| !f.is_empty())
                            .unwrap_or("__unnamed__")
                            .to_string();
                        let op = Op::Url(UrlOp {
                            url: s.clone(),
                            filename: filename.clone(),
                            checksum: checksum.clone(),
                            content_addressed: checksum.is_some(),
                        });
                        let key = self.graph.insert(Vertex::new(None, op, Vec::new(), format!("[internal] download {s}"), ins.line));
                        inputs.push(key);
                        copy_sources.push(CopySource {
                            input: inputs.len() - 1,
                            path: filename,
                            extract_archives: false,
                        });
                    }
                    AddSourceKind::Local => local.push(s.clone()),
                }
            }
            if checksum.is_some() && !local.is_empty() {
                return Err(err(
                    ErrorKind::BadFlag,
                    ins,
                    "--checksum applies only to http(s) sources",
                ));
            }
            if !local.is_empty() {
                let key = self.context_vertex(ins, local.clone(), excludes.clone())?;
                inputs.push(key);
                let extract = c.is_add && c.unpack.unwrap_or(true);
                for s in local {
                    copy_sources.push(CopySource {
                        input: inputs.len() - 1,
                        path: s,
                        extract_archives: extract,
                    });
                }
            }
        }
        let op = Op::File(FileOp {
            dest_root,
            action: FileAction::Copy(CopyAction {
                sources: copy_sources,
                dest: dest.clone(),
                chown,
                chmod,
                link: c.link,
                parents: c.parents,
                excludes,
                is_add: c.is_add,
                keep_git_dir: c.keep_git_dir,
            }),
        });
        let desc = format!("{prefix} {}", first_line(&ins.original));
        let key = self.graph.insert(Vertex::new(
            Some(st.platform.clone()),
            op,
            inputs,
            desc.clone(),
            ins.line,
        ));
        st.layers.push(key.clone());
        st.root = Some(if c.link {
            match st.root.take() {
                Some(lower) => {
                    let op = Op::Merge(MergeOp {
                        lower: Some(0),
                        upper: 1,
                    });
                    self.graph.insert(Vertex::new(
                        Some(st.platform.clone()),
                        op,
                        vec![lower, key],
                        format!("{desc} (merge)"),
                        ins.line,
                    ))
                }
                None => key,
            }
        } else {
            key
        });
        st.config.commit(
            format!("{name} {} {dest_raw} # buildkit", sources.join(" ")),
            true,
        );
        Ok(())
    }

    fn expand_heredoc(
        &self,
        st: &StageState,
        ins: &Instruction,
        body: &str,
    ) -> Result<String, DockerfileError> {
        // Expand variables only: quotes in a heredoc body are content.
        let mut out = String::new();
        for (i, line) in body.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let protected = line.replace('\'', "\u{1}").replace('"', "\u{2}");
            let e = self.expand(st, ins, &protected)?;
            out.push_str(&e.replace('\u{1}', "'").replace('\u{2}', "\""));
        }
        Ok(out)
    }
}

/// The platform the TARGET* args in scope describe (BuildKit `platformFromEnv`).
fn target_from_env(env: &Vars) -> Option<Platform> {
    if let Some(p) = get_var(env, "TARGETPLATFORM").and_then(|v| v.parse::<Platform>().ok()) {
        return Some(p);
    }
    let arch = get_var(env, "TARGETARCH")?;
    let os = get_var(env, "TARGETOS").unwrap_or("linux");
    Some(Platform::new(
        os,
        arch,
        get_var(env, "TARGETVARIANT").unwrap_or(""),
    ))
}

/// Parse one ONBUILD trigger taken from a base image's config.
fn parse_trigger(text: &str, line: usize, from: &str) -> Result<Instruction, DockerfileError> {
    let bad =
        |msg: String| DockerfileError::new(ErrorKind::BadArguments, line, from.to_string(), msg);
    let parsed = crate::dockerfile::parser::parse(text.as_bytes()).map_err(|e| {
        bad(format!(
            "base image ONBUILD trigger {text:?} does not parse: {}",
            e.message
        ))
    })?;
    let [node] = parsed.ast.children.as_slice() else {
        return Err(bad(format!(
            "base image ONBUILD trigger {text:?} must be one instruction"
        )));
    };
    if matches!(node.keyword().as_str(), "onbuild" | "from" | "maintainer") {
        return Err(bad(format!(
            "{} isn't allowed as an ONBUILD trigger",
            node.value.to_uppercase()
        )));
    }
    let mut ins = crate::dockerfile::instructions::parse_instruction(node).map_err(|e| {
        bad(format!(
            "base image ONBUILD trigger {text:?}: {}",
            e.message
        ))
    })?;
    ins.line = line;
    Ok(ins)
}

fn is_heredoc_marker(line: &str, h: &Heredoc) -> bool {
    let t = line.trim();
    let Some(rest) = t.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.trim_matches(|c| c == '"' || c == '\'') == h.name
}

fn heredoc_body(h: &Heredoc) -> String {
    if h.chomp {
        h.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    } else {
        h.content.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_like_buildkit() {
        assert_eq!(clean_path("/a/./b/../c//d/"), "/a/c/d");
        assert_eq!(clean_path("/../.."), "/");
        assert_eq!(dest_path("/w", "."), "/w/");
        assert_eq!(dest_path("/w", "x"), "/w/x");
        assert_eq!(dest_path("/w", "x/"), "/w/x/");
        assert_eq!(dest_path("/w", "/abs/../y"), "/y");
        assert_eq!(dest_path("", "rel"), "/rel");
        assert_eq!(dest_path("/", "/"), "/");
        assert_eq!(
            go_quote_list(&["a b".into(), "c\"".into()]),
            r#"["a b" "c\""]"#
        );
    }
}
