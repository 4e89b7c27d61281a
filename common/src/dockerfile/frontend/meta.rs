//! Instructions that change only the stage's image config and variable
//! scope, never its filesystem (BuildKit `dispatchEnv`, `dispatchLabel`,
//! `dispatchArg`, ...): ARG, ENV, LABEL, MAINTAINER, EXPOSE, VOLUME, USER,
//! STOPSIGNAL, SHELL, CMD, ENTRYPOINT, HEALTHCHECK and ONBUILD, each
//! recorded in the image history as BuildKit words it.

use super::stage::{err, PlatformBuild, StageState};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::instructions::config::{parse_expose, valid_stop_signal};
use crate::dockerfile::instructions::{Instruction, InstructionKind};
use crate::dockerfile::stages::{get_var, set_var};

/// Go's `%q` of a string slice, as BuildKit writes CMD/ENTRYPOINT history.
fn go_quote_list(v: &[String]) -> String {
    let items: Vec<String> = v
        .iter()
        .map(|s| serde_json::to_string(s).unwrap_or_default())
        .collect();
    format!("[{}]", items.join(" "))
}

impl PlatformBuild<'_, '_> {
    /// Apply a config-only instruction to `st`.
    pub(super) fn config_instr(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
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
            // Filesystem instructions add vertices (stage.rs routes them).
            InstructionKind::Workdir(_) | InstructionKind::Run(_) | InstructionKind::Copy(_) => {}
        }
        Ok(())
    }
}

/// Parse one ONBUILD trigger taken from a base image's config (Dockerfile
/// reference "ONBUILD": ONBUILD, FROM and MAINTAINER cannot be triggers).
pub(super) fn parse_trigger(
    text: &str,
    line: usize,
    from: &str,
) -> Result<Instruction, DockerfileError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_quotes_like_go() {
        assert_eq!(
            go_quote_list(&["a b".into(), "c\"".into()]),
            r#"["a b" "c\""]"#
        );
    }
}
