//! COPY and ADD (Dockerfile reference "COPY", "ADD"): sources from the
//! context, `--from` a stage or image, heredocs, or (ADD) http(s) URLs with
//! an optional `--checksum`; `--chown`, `--chmod`, `--link`, `--parents`,
//! `--exclude`, and ADD's archive extraction.

use super::heredoc::heredoc_body;
use super::stage::{err, first_line, PlatformBuild, StageState};
use super::workdir::dest_path;
use crate::dockerfile::error::{DockerfileError, ErrorKind};
use crate::dockerfile::instructions::copy::{
    classify_add_source, parse_chmod, AddSourceKind, CopyInstr,
};
use crate::dockerfile::instructions::Instruction;
use crate::graph::op::{
    CopyAction, CopySource, FileAction, FileOp, InlineFile, InlineOp, MergeOp, Op, UrlOp,
};
use crate::graph::Vertex;
use crate::oci::Digest;

impl PlatformBuild<'_, '_> {
    /// COPY and ADD: a file vertex copying from the build context, another
    /// stage or image (`--from`), heredocs or URLs into the stage's root;
    /// with `--link`, into an empty root merged over the stage's.
    pub(super) fn copy(
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
}
