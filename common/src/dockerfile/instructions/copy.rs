//! COPY and ADD with their flags (BuildKit `instructions/parse.go`
//! `parseCopy`/`parseAdd`): COPY takes `--from --chown --chmod --link
//! --parents --exclude`; ADD takes `--chown --chmod --link --exclude
//! --checksum --keep-git-dir --unpack`.

use super::flags::{FlagKind, Flags};
use crate::dockerfile::ast::{Heredoc, Node};
use crate::dockerfile::error::{DockerfileError, ErrorKind};

/// A typed COPY or ADD (words not yet expanded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstr {
    /// True for ADD.
    pub is_add: bool,
    /// Source words.
    pub sources: Vec<String>,
    /// Destination word.
    pub dest: String,
    /// `--from` (COPY only): stage name, index or image.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=MODE`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY only).
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD only): `None` = default (auto-extract local archives).
    pub unpack: Option<bool>,
    /// Heredocs used as inline sources (`COPY <<EOF /dest`).
    pub heredocs: Vec<Heredoc>,
}

pub(super) fn parse_copy(node: &Node, is_add: bool) -> Result<CopyInstr, DockerfileError> {
    let allowed: &[(&'static str, FlagKind)] = if is_add {
        &[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("exclude", FlagKind::List),
            ("checksum", FlagKind::String),
            ("keep-git-dir", FlagKind::Bool),
            ("unpack", FlagKind::Bool),
        ]
    } else {
        &[
            ("from", FlagKind::String),
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::List),
        ]
    };
    let flags = Flags::parse(node, allowed)?;
    let mut words: Vec<String> = node.args().iter().map(|s| s.to_string()).collect();
    let name = if is_add { "ADD" } else { "COPY" };
    if words.len() < 2 {
        return Err(DockerfileError::new(
            ErrorKind::BadArguments,
            node.start_line,
            node.original.clone(),
            format!("{name} needs at least one source and a destination"),
        ));
    }
    let dest = words.pop().unwrap_or_default();
    if let Some(from) = flags.string("from") {
        if from.is_empty() {
            return Err(DockerfileError::new(
                ErrorKind::BadFlag,
                node.start_line,
                node.original.clone(),
                "--from needs a stage name, stage index or image",
            ));
        }
    }
    Ok(CopyInstr {
        is_add,
        sources: words,
        dest,
        from: flags.string("from"),
        chown: flags.string("chown"),
        chmod: flags.string("chmod"),
        link: flags.bool("link"),
        parents: flags.bool("parents"),
        excludes: flags.list("exclude"),
        checksum: flags.string("checksum"),
        keep_git_dir: flags.bool("keep-git-dir"),
        unpack: flags.has("unpack").then(|| flags.bool("unpack")),
        heredocs: node.heredocs.clone(),
    })
}

/// Parse a `--chmod` value: octal up to 07777.
pub fn parse_chmod(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777)
}

/// What an ADD source names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddSourceKind {
    /// A path in the context (or stage).
    Local,
    /// An http(s) URL.
    Url,
    /// A git repository (not supported yet).
    Git,
}

/// Classify an ADD source the way BuildKit does (git first, then http(s)).
pub fn classify_add_source(src: &str) -> AddSourceKind {
    let lower = src.to_ascii_lowercase();
    if lower.starts_with("git://") || lower.starts_with("git@") || lower.starts_with("ssh://") {
        return AddSourceKind::Git;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        let no_frag = lower.split('#').next().unwrap_or("");
        if no_frag.ends_with(".git") || (lower.contains('#') && no_frag.contains(".git")) {
            return AddSourceKind::Git;
        }
        return AddSourceKind::Url;
    }
    AddSourceKind::Local
}
