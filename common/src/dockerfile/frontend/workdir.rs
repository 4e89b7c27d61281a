//! WORKDIR and the paths it anchors: the working directory is created by a
//! `mkdir -p` vertex (Dockerfile reference "WORKDIR": a relative path is
//! relative to the previous WORKDIR), and COPY/ADD destinations are
//! resolved against it as BuildKit's `pathRelativeToWorkingDir` does.

use super::stage::{err, PlatformBuild, StageState};
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::instructions::Instruction;
use crate::graph::op::{FileAction, FileOp, Op};
use crate::graph::Vertex;

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

impl PlatformBuild<'_, '_> {
    /// WORKDIR `w`: set the working directory, and create it unless it is `/`.
    pub(super) fn workdir(
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
    }
}
