//! Stage resolution (BuildKit `dockerfile2llb`: `buildDispatchStates`,
//! `resolveTarget`, `buildStageDependencyGraph`, `allReachableStages`).
//!
//! - Global ARGs (before the first FROM) plus the automatic platform args
//!   form the scope of FROM lines; `--build-arg` overrides their defaults.
//! - `FROM x`: an earlier stage named `x` (case-insensitive), `scratch`, or an
//!   image. `COPY --from` / `RUN --mount from=` may name any stage or a
//!   stage index; otherwise they name an image.
//! - A child of a stage first runs that stage's ONBUILD triggers.
//! - Cycles between stages are refused; only stages the target needs are
//!   kept (pruning).

use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::expand::{Expander, Vars};
use crate::dockerfile::instructions::mount::parse_mount;
use crate::dockerfile::instructions::{Dockerfile, Instruction, InstructionKind, Stage};
use crate::image_name::normalize_reference;
use crate::platform::Platform;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageBase {
    /// Empty filesystem.
    Scratch,
    /// An earlier stage (index).
    Stage(usize),
    /// An image (normalised reference).
    Image(String),
}

/// What `--from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRef {
    /// A stage (index).
    Stage(usize),
    /// An image (normalised reference).
    Image(String),
}

/// A stage with its base, platform, effective instructions and dependencies.
#[derive(Debug, Clone)]
pub struct ResolvedStage<'a> {
    /// Position in the Dockerfile.
    pub index: usize,
    /// `AS` name as written, or `stage-N`.
    pub display_name: String,
    /// Base.
    pub base: StageBase,
    /// `FROM --platform`, expanded and parsed.
    pub platform: Option<Platform>,
    /// The parent stage's ONBUILD triggers (run first).
    pub triggers: Vec<Instruction>,
    /// The stage's own instructions.
    pub own: &'a [Instruction],
    /// Stages this one needs (base and `--from`s), with the referencing line.
    pub deps: Vec<(usize, usize)>,
    /// FROM's line.
    pub line: usize,
    /// FROM as written.
    pub original: String,
}

impl ResolvedStage<'_> {
    /// The parent's ONBUILD triggers, then the stage's own instructions.
    pub fn instructions(&self) -> impl Iterator<Item = &Instruction> {
        self.triggers.iter().chain(self.own.iter())
    }
}

/// The stages of one platform's build.
#[derive(Debug, Clone)]
pub struct StagePlan<'a> {
    /// All stages, resolved.
    pub stages: Vec<ResolvedStage<'a>>,
    /// The target stage.
    pub target: usize,
    /// `reachable[i]`: the target needs stage `i`.
    pub reachable: Vec<bool>,
    /// The scope of FROM lines and of `ARG NAME` without a default in a stage.
    pub global_args: Vars,
    /// Names of global ARGs declared before the first FROM.
    pub meta_arg_names: BTreeSet<String>,
}

/// The automatic platform args (BuildKit `defaultArgs`).
pub fn platform_args(target: &Platform, build: &Platform) -> Vars {
    let mut v = Vec::with_capacity(8);
    for (prefix, p) in [("TARGET", target), ("BUILD", build)] {
        v.push((format!("{prefix}PLATFORM"), p.to_string()));
        v.push((format!("{prefix}OS"), p.os.clone()));
        v.push((format!("{prefix}ARCH"), p.architecture.clone()));
        v.push((format!("{prefix}VARIANT"), p.variant.clone()));
    }
    v
}

/// Names BuildKit accepts as build args without an ARG (proxy settings).
pub fn is_predefined_arg(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "http_proxy" | "https_proxy" | "ftp_proxy" | "no_proxy" | "all_proxy"
    )
}

/// Set or replace `key` in a scope.
pub fn set_var(vars: &mut Vars, key: &str, value: String) {
    match vars.iter_mut().find(|(k, _)| k == key) {
        Some(e) => e.1 = value,
        None => vars.push((key.to_string(), value)),
    }
}

/// Look a name up in a scope.
pub fn get_var<'a>(vars: &'a Vars, key: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn err(kind: ErrorKind, line: usize, text: &str, msg: String) -> DockerfileError {
    DockerfileError::new(kind, line, text.to_string(), msg)
}

/// Resolve every stage for one target platform and choose the stages the target needs.
pub fn resolve_stages<'a>(
    df: &'a Dockerfile,
    build_args: &BTreeMap<String, String>,
    target: Option<&str>,
    auto_args: &Vars,
    exp: &Expander,
) -> Result<StagePlan<'a>, DockerfileError> {
    // Global scope.
    let mut globals: Vars = auto_args.clone();
    let mut meta_arg_names = BTreeSet::new();
    for ins in &df.meta_args {
        let InstructionKind::Arg(decls) = &ins.kind else {
            continue;
        };
        for d in decls {
            meta_arg_names.insert(d.key.clone());
            let value = match (build_args.get(&d.key), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(
                    exp.word(def, &globals)
                        .map_err(|e| err(ErrorKind::Expansion, ins.line, &ins.original, e))?,
                ),
                (None, None) => None,
            };
            if let Some(v) = value {
                set_var(&mut globals, &d.key, v);
            }
        }
    }

    // Names (case-insensitive), refusing duplicates.
    let mut by_name: HashMap<String, usize> = HashMap::new();
    for st in &df.stages {
        if let Some(n) = &st.name {
            if by_name.insert(n.to_lowercase(), st.index).is_some() {
                return Err(err(
                    ErrorKind::BadArguments,
                    st.line,
                    &st.original,
                    format!("duplicate stage name {n:?}: each stage name must be unique"),
                ));
            }
        }
    }

    let mut stages: Vec<ResolvedStage<'a>> = Vec::with_capacity(df.stages.len());
    for st in &df.stages {
        let base = resolve_base(st, &globals, &by_name, exp)?;
        let platform = resolve_platform(st, &globals, exp)?;
        let mut triggers = Vec::new();
        if let StageBase::Stage(p) = base {
            for ins in &df.stages[p].instructions {
                if let InstructionKind::Onbuild { trigger, .. } = &ins.kind {
                    let mut t = (**trigger).clone();
                    t.line = st.line;
                    triggers.push(t);
                }
            }
        }
        let mut deps = Vec::new();
        if let StageBase::Stage(p) = base {
            deps.push((p, st.line));
        }
        for ins in triggers.iter().chain(st.instructions.iter()) {
            for r in from_refs(ins, &by_name, df.stages.len())? {
                if let FromRef::Stage(s) = r {
                    deps.push((s, ins.line));
                }
            }
        }
        stages.push(ResolvedStage {
            index: st.index,
            display_name: st
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", st.index)),
            base,
            platform,
            triggers,
            own: &st.instructions,
            deps,
            line: st.line,
            original: st.original.clone(),
        });
    }

    check_cycles(&stages)?;

    let target = match target {
        None => stages.len() - 1,
        Some(t) => *by_name.get(&t.to_lowercase()).ok_or_else(|| {
            let names: Vec<&str> = df.stages.iter().filter_map(|s| s.name.as_deref()).collect();
            err(
                ErrorKind::UnknownStage,
                0,
                t,
                format!(
                    "target stage {t:?} could not be found (stages: {})",
                    if names.is_empty() {
                        "none named".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })?,
    };
    let mut reachable = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if std::mem::replace(&mut reachable[i], true) {
            continue;
        }
        todo.extend(stages[i].deps.iter().map(|(d, _)| *d));
    }
    // A needed stage may only use stages defined before it (BuildKit:
    // "needs to be defined before current stage").
    for s in stages.iter().filter(|s| reachable[s.index]) {
        for &(d, line) in &s.deps {
            if d >= s.index {
                let text = s
                    .instructions()
                    .find(|i| i.line == line)
                    .map_or(s.original.as_str(), |i| i.original.as_str());
                return Err(err(
                    ErrorKind::UnknownStage,
                    line,
                    text,
                    format!(
                        "stage {:?} is used by stage {:?} but defined after it; move it before",
                        stages[d].display_name, s.display_name
                    ),
                ));
            }
        }
    }
    Ok(StagePlan {
        stages,
        target,
        reachable,
        global_args: globals,
        meta_arg_names,
    })
}

fn resolve_base(
    st: &Stage,
    globals: &Vars,
    by_name: &HashMap<String, usize>,
    exp: &Expander,
) -> Result<StageBase, DockerfileError> {
    let r = exp
        .word_with_matches(&st.base, globals)
        .map_err(|e| err(ErrorKind::Expansion, st.line, &st.original, e))?;
    if r.value.is_empty() {
        let msg = if r.unmatched.is_empty() {
            format!("FROM {}: the base name is empty", st.base)
        } else {
            format!(
                "FROM {}: ARG {} has no value; give it a default (ARG {}=value before the first FROM) or pass --build-arg {}=value",
                st.base,
                r.unmatched.join(", "),
                r.unmatched[0],
                r.unmatched[0]
            )
        };
        return Err(err(ErrorKind::MissingArg, st.line, &st.original, msg));
    }
    let name = r.value;
    if let Some(&i) = by_name.get(&name.to_lowercase()) {
        if i < st.index {
            return Ok(StageBase::Stage(i));
        }
    }
    if name.eq_ignore_ascii_case("scratch") {
        return Ok(StageBase::Scratch);
    }
    normalize_reference(&name).map(StageBase::Image).map_err(|why| {
        err(
            ErrorKind::UnknownStage,
            st.line,
            &st.original,
            format!("FROM {name}: no earlier stage has this name, and it is not an image reference ({why})"),
        )
    })
}

fn resolve_platform(
    st: &Stage,
    globals: &Vars,
    exp: &Expander,
) -> Result<Option<Platform>, DockerfileError> {
    let Some(raw) = &st.platform else {
        return Ok(None);
    };
    let r = exp
        .word_with_matches(raw, globals)
        .map_err(|e| err(ErrorKind::Expansion, st.line, &st.original, e))?;
    if r.value.is_empty() {
        return Err(err(
            ErrorKind::InvalidPlatform,
            st.line,
            &st.original,
            format!("--platform={raw} expands to an empty value"),
        ));
    }
    r.value.parse::<Platform>().map(Some).map_err(|e| {
        err(
            ErrorKind::InvalidPlatform,
            st.line,
            &st.original,
            format!("--platform={raw}: {e} (want os/arch[/variant], e.g. linux/arm64)"),
        )
    })
}

/// Resolve one `--from` value.
pub fn resolve_from(
    value: &str,
    by_name: &HashMap<String, usize>,
    stage_count: usize,
    ins: &Instruction,
) -> Result<FromRef, DockerfileError> {
    if value.contains('$') {
        return Err(err(
            ErrorKind::BadFlag,
            ins.line,
            &ins.original,
            format!("--from={value}: variables are not expanded in --from; define a stage with FROM using a global ARG instead"),
        ));
    }
    if let Some(&i) = by_name.get(&value.to_lowercase()) {
        return Ok(FromRef::Stage(i));
    }
    if let Ok(i) = value.parse::<usize>() {
        if i < stage_count {
            return Ok(FromRef::Stage(i));
        }
        return Err(err(
            ErrorKind::UnknownStage,
            ins.line,
            &ins.original,
            format!("--from={value}: invalid stage index (the Dockerfile has {stage_count} stages, counted from 0)"),
        ));
    }
    normalize_reference(value).map(FromRef::Image).map_err(|why| {
        err(
            ErrorKind::UnknownStage,
            ins.line,
            &ins.original,
            format!("--from={value}: no stage has this name, and it is not an image reference ({why})"),
        )
    })
}

/// The `--from` references of an instruction (COPY --from, RUN --mount from=).
pub fn from_refs(
    ins: &Instruction,
    by_name: &HashMap<String, usize>,
    stage_count: usize,
) -> Result<Vec<FromRef>, DockerfileError> {
    let mut out = Vec::new();
    match &ins.kind {
        InstructionKind::Copy(c) => {
            if let Some(f) = &c.from {
                out.push(resolve_from(f, by_name, stage_count, ins)?);
            }
        }
        InstructionKind::Run(r) => {
            for m in &r.mounts {
                if !m.from.is_empty() {
                    out.push(resolve_from(&m.from, by_name, stage_count, ins)?);
                }
            }
        }
        _ => {}
    }
    Ok(out)
}

/// Index of stage names, lower-cased.
pub fn names_index(df: &Dockerfile) -> HashMap<String, usize> {
    df.stages
        .iter()
        .filter_map(|s| s.name.as_ref().map(|n| (n.to_lowercase(), s.index)))
        .collect()
}

fn check_cycles(stages: &[ResolvedStage<'_>]) -> Result<(), DockerfileError> {
    // 0 = unvisited, 1 = on stack, 2 = done.
    let mut state = vec![0u8; stages.len()];
    for start in 0..stages.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (u, ref mut next)) = stack.last_mut() {
            if let Some(&(v, line)) = stages[u].deps.get(*next) {
                *next += 1;
                match state[v] {
                    0 => {
                        state[v] = 1;
                        stack.push((v, 0));
                    }
                    1 => {
                        // The cycle: the edges taken from `v` up the stack, then u -> v.
                        // Report the edge that points forward (to a later or the
                        // same stage): that reference is the one to change.
                        let mut edges: Vec<(usize, usize, usize)> = stack
                            .iter()
                            .skip_while(|(s, _)| *s != v)
                            .filter_map(|&(s, n)| {
                                stages[s]
                                    .deps
                                    .get(n.wrapping_sub(1))
                                    .map(|&(d, l)| (s, d, l))
                            })
                            .collect();
                        edges.push((u, v, line));
                        let (from, _, line) = edges
                            .iter()
                            .copied()
                            .find(|&(s, d, _)| d >= s)
                            .unwrap_or((u, v, line));
                        let text = stages[from]
                            .instructions()
                            .find(|i| i.line == line)
                            .map_or(stages[from].original.as_str(), |i| i.original.as_str());
                        let path: Vec<&str> = stack
                            .iter()
                            .skip_while(|(s, _)| *s != v)
                            .map(|(s, _)| stages[*s].display_name.as_str())
                            .chain(std::iter::once(stages[v].display_name.as_str()))
                            .collect();
                        return Err(err(
                            ErrorKind::CyclicStage,
                            line,
                            text,
                            format!(
                                "circular dependency detected on stage {:?} ({}); a stage cannot depend on itself",
                                stages[v].display_name,
                                path.join(" -> ")
                            ),
                        ));
                    }
                    _ => {}
                }
            } else {
                state[u] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

/// Re-parse a RUN mount with its values expanded in `vars`.
pub fn expand_mount(
    value: &str,
    vars: &Vars,
    exp: &Expander,
    ins: &Instruction,
) -> Result<crate::dockerfile::instructions::mount::MountSpec, DockerfileError> {
    let mut f = |w: &str| exp.word(w, vars);
    parse_mount(value, Some(&mut f)).map_err(|e| {
        err(
            ErrorKind::BadMount,
            ins.line,
            &ins.original,
            format!("--mount={value}: {e}"),
        )
    })
}
