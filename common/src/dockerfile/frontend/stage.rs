//! One platform's stages dispatched into vertices (BuildKit `dockerfile2llb`
//! `dispatch*`): each needed stage starts from its base (a FROM image, an
//! earlier stage or scratch), a base image's ONBUILD triggers run first
//! (BuildKit `initOnBuildTriggers`), then its instructions in order, and the
//! target stage is exported with the build's `--label`s.

use super::meta::parse_trigger;
use super::{BuildRequest, ContextCache};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::expand::{Expander, Vars};
use crate::dockerfile::instructions::{Instruction, InstructionKind};
use crate::dockerfile::stages::{get_var, set_var, StageBase, StagePlan};
use crate::graph::image_config::{StageConfig, DEFAULT_PATH};
use crate::graph::op::{ExportOp, Op};
use crate::graph::{BuildGraph, PlatformTarget, Vertex};
use crate::oci::Digest;
use crate::platform::Platform;
use std::collections::{BTreeSet, HashMap};

/// State of a stage being dispatched.
#[derive(Debug, Clone)]
pub(super) struct StageState {
    pub name: String,
    pub platform: Platform,
    /// Current root filesystem vertex; `None` = empty.
    pub root: Option<Digest>,
    /// Layer chain for export (base image vertex first when there is one).
    pub layers: Vec<Digest>,
    pub base_image: bool,
    pub config: StageConfig,
    /// Scope of expansion and RUN env: image ENV plus ARG values.
    pub env: Vars,
    /// ARGs declared in scope (name, value), for RUN history.
    pub args: Vec<(String, Option<String>)>,
    pub cmd_set: bool,
    pub step: usize,
    pub total: usize,
}

/// The dispatch of one platform's stages into the shared graph.
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

/// A located error for instruction `ins`.
pub(super) fn err(kind: ErrorKind, ins: &Instruction, msg: impl Into<String>) -> DockerfileError {
    DockerfileError::new(kind, ins.line, ins.original.clone(), msg)
}

/// The first line of an instruction, for progress descriptions.
pub(super) fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn vars_from_env(env: &[String]) -> Vars {
    env.iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
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

    /// The export vertex of the target stage, with the build's `--label`s.
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
    pub(super) fn prefix(&self, st: &mut StageState) -> String {
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

    /// Start stage `i` from its base and dispatch its instructions.
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
                config: StageConfig::default(),
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
                    config: StageConfig::default(),
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

    /// Expand one word in the stage's scope.
    pub(super) fn expand(
        &self,
        st: &StageState,
        ins: &Instruction,
        w: &str,
    ) -> Result<String, DockerfileError> {
        self.exp
            .word(w, &st.env)
            .map_err(|e| err(ErrorKind::Expansion, ins, e))
    }

    /// Route one instruction: WORKDIR, RUN, COPY and ADD add vertices;
    /// every other instruction changes only the stage's config and scope.
    fn dispatch(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
        states: &[Option<StageState>],
    ) -> Result<(), DockerfileError> {
        match &ins.kind {
            InstructionKind::Workdir(w) => self.workdir(st, ins, w),
            InstructionKind::Run(r) => self.run_instr(st, ins, r, states),
            InstructionKind::Copy(c) => self.copy(st, ins, c, states),
            _ => self.config_instr(st, ins),
        }
    }

    /// The stage's SHELL (default `/bin/sh -c`).
    pub(super) fn shell(&self, st: &StageState) -> Vec<String> {
        if st.config.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            st.config.shell.clone()
        }
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
