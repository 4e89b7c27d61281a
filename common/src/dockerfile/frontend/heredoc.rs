//! Heredocs in RUN and COPY (Dockerfile reference "Here-Documents"): a
//! body with `<<-` has its leading tabs removed; a COPY heredoc is expanded
//! unless its name is quoted.

use super::stage::{PlatformBuild, StageState};
use crate::dockerfile::ast::Heredoc;
use crate::dockerfile::error::DockerfileError;
use crate::dockerfile::instructions::Instruction;

/// Whether a RUN's shell line is only the marker of heredoc `h` (`<<EOF`,
/// `<<-"EOF"`): then the body is the whole command.
pub(super) fn is_heredoc_marker(line: &str, h: &Heredoc) -> bool {
    let t = line.trim();
    let Some(rest) = t.strip_prefix("<<") else {
        return false;
    };
    let rest = rest.strip_prefix('-').unwrap_or(rest);
    rest.trim_matches(|c| c == '"' || c == '\'') == h.name
}

/// The body of `h`, leading tabs removed for `<<-`.
pub(super) fn heredoc_body(h: &Heredoc) -> String {
    if h.chomp {
        h.content
            .split_inclusive('\n')
            .map(|l| l.trim_start_matches('\t'))
            .collect()
    } else {
        h.content.clone()
    }
}

impl PlatformBuild<'_, '_> {
    /// Expand the variables of a heredoc body in the stage's scope.
    pub(super) fn expand_heredoc(
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
