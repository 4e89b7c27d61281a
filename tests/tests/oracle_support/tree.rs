//! An image's file tree, built by applying its layer tars in order (OCI image-spec
//! "Applying Changesets": `.wh.NAME` deletes NAME, `.wh..wh..opq` empties the directory of
//! what lower layers put there), and a field-by-field diff of two trees with mtimes ignored.
//! Extended attributes come from PAX `SCHILY.xattr.NAME` records (how BuildKit and GNU tar
//! `--xattrs` write them) and are compared byte for byte.

use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

/// What a path is, with what is compared for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file (or a hardlink to one) and the sha256 of its content.
    File(String),
    Symlink(String),
    Char(u32, u32),
    Block(u32, u32),
    Fifo,
}

/// One path of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits, setuid/setgid/sticky included.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// The other paths hardlinked with this one in the layer that wrote it (sorted).
    pub links: Vec<String>,
    /// Extended attributes (`security.capability`, `user.*`, ...): name → raw value.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For a timestamp-based Python bytecode file (`*.pyc`, PEP 552 flags 0): the sha256 of
    /// its content with the header's source-mtime field (bytes 8..12) zeroed.
    pub pyc_unstamped: Option<String>,
    /// The content of a short text file (up to [`SHOWN_TEXT`] bytes of UTF-8), so a diff can
    /// show it; determined by the content like the hash.
    pub text: Option<String>,
}

/// The longest file content a diff shows.
pub const SHOWN_TEXT: usize = 200;

/// The sha256 of a `.pyc` with its source mtime zeroed, if it is a timestamp-based one.
fn pyc_unstamped(content: &[u8]) -> Option<String> {
    // magic (4) | flags (4) | source mtime (4) | source size (4) | marshalled code
    if content.len() < 16 || content[2..4] != *b"\r\n" || content[4..8] != [0; 4] {
        return None;
    }
    let mut h = Sha256::new();
    h.update(&content[..8]);
    h.update([0u8; 4]);
    h.update(&content[12..]);
    Some(hex::encode(h.finalize()))
}

/// The PAX prefix of an extended attribute record.
const XATTR_PAX_PREFIX: &str = "SCHILY.xattr.";

/// The entry's extended attributes from its PAX records.
fn read_xattrs<R: Read>(e: &mut tar::Entry<'_, R>) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    if let Some(exts) = e.pax_extensions()? {
        for ext in exts {
            let ext = ext?;
            if let Some(name) = ext.key()?.strip_prefix(XATTR_PAX_PREFIX) {
                out.insert(name.to_string(), ext.value_bytes().to_vec());
            }
        }
    }
    Ok(out)
}

/// Path (no leading `/`, `.` for the root) → node.
pub type Tree = BTreeMap<String, Node>;

fn norm(p: &str) -> String {
    let s = p.trim_start_matches("./").trim_start_matches('/');
    let s = s.trim_end_matches('/');
    if s.is_empty() || s == "." {
        ".".to_string()
    } else {
        s.to_string()
    }
}

fn split(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => (".", p),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "." {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

fn remove_under(tree: &mut Tree, dir: &str, keep_self: bool) {
    let prefix = if dir == "." {
        String::new()
    } else {
        format!("{dir}/")
    };
    let doomed: Vec<String> = tree
        .keys()
        .filter(|k| (prefix.is_empty() && k.as_str() != ".") || k.starts_with(&prefix))
        .cloned()
        .collect();
    for k in doomed {
        tree.remove(&k);
    }
    if !keep_self {
        tree.remove(dir);
    }
}

/// Apply one layer tar (gzip or plain) on top of `tree`.
pub fn apply_layer(tree: &mut Tree, layer: &Path) -> anyhow::Result<()> {
    let mut f = std::fs::File::open(layer)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    drop(f);
    let f = std::fs::File::open(layer)?;
    let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(reader);
    // First collect, then whiteouts apply to the lower layers only.
    let mut entries: Vec<(String, Node, Option<String>)> = Vec::new();
    let mut whiteouts: Vec<(String, bool)> = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        let path = norm(&e.path()?.to_string_lossy());
        let (dir, name) = split(&path);
        if name == ".wh..wh..opq" {
            whiteouts.push((dir.to_string(), true));
            continue;
        }
        if let Some(real) = name.strip_prefix(".wh.") {
            whiteouts.push((join(dir, real), false));
            continue;
        }
        let xattrs = read_xattrs(&mut e)?;
        let h = e.header();
        let mode = h.mode()? & 0o7777;
        let uid = h.uid()?;
        let gid = h.gid()?;
        let et = h.entry_type();
        let mut hardlink = None;
        let mut pyc = None;
        let mut text = None;
        let kind = match et {
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous if path.ends_with(".pyc") => {
                let mut content = Vec::new();
                e.read_to_end(&mut content)?;
                pyc = pyc_unstamped(&content);
                Kind::File(hex::encode(Sha256::digest(&content)))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous
                if e.size() <= SHOWN_TEXT as u64 =>
            {
                let mut content = Vec::new();
                e.read_to_end(&mut content)?;
                text = String::from_utf8(content.clone()).ok();
                Kind::File(hex::encode(Sha256::digest(&content)))
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hsh = Sha256::new();
                std::io::copy(&mut e, &mut hsh)?;
                Kind::File(hex::encode(hsh.finalize()))
            }
            tar::EntryType::Symlink => Kind::Symlink(
                e.link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            tar::EntryType::Link => {
                let t = e
                    .link_name()?
                    .map(|l| norm(&l.to_string_lossy()))
                    .unwrap_or_default();
                hardlink = Some(t);
                Kind::Fifo // replaced below
            }
            tar::EntryType::Char => Kind::Char(
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ),
            tar::EntryType::Block => Kind::Block(
                h.device_major()?.unwrap_or(0),
                h.device_minor()?.unwrap_or(0),
            ),
            tar::EntryType::Fifo => Kind::Fifo,
            _ => continue, // pax/gnu headers are consumed by the tar crate
        };
        entries.push((
            path,
            Node {
                kind,
                mode,
                uid,
                gid,
                links: Vec::new(),
                xattrs,
                pyc_unstamped: pyc,
                text,
            },
            hardlink,
        ));
    }
    for (p, opaque) in whiteouts {
        remove_under(tree, &p, opaque);
    }
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, mut node, hardlink) in entries {
        if let Some(t) = hardlink {
            let target = tree
                .get(&t)
                .ok_or_else(|| {
                    anyhow::anyhow!("{}: hardlink {path} -> missing {t}", layer.display())
                })?
                .clone();
            node = Node {
                links: Vec::new(),
                ..target
            };
            // Union the two into one group keyed by the first-written path.
            let key = groups
                .iter()
                .find(|(_, g)| g.contains(&t))
                .map(|(k, _)| k.clone())
                .unwrap_or_else(|| t.clone());
            let g = groups.entry(key).or_default();
            g.insert(t);
            g.insert(path.clone());
        }
        if node.kind != Kind::Dir {
            remove_under(tree, &path, true);
        } else if let Some(old) = tree.get(&path) {
            if old.kind != Kind::Dir {
                tree.remove(&path);
            }
        }
        tree.insert(path, node);
    }
    for g in groups.values() {
        let all: Vec<String> = g.iter().cloned().collect();
        for p in g {
            if let Some(n) = tree.get_mut(p) {
                n.links = all.iter().filter(|q| *q != p).cloned().collect();
            }
        }
    }
    Ok(())
}

fn show(n: &Node) -> String {
    let kind = match &n.kind {
        Kind::Dir => "dir".to_string(),
        Kind::File(d) => match &n.text {
            Some(t) => format!("file sha256:{} {t:?}", &d[..12]),
            None => format!("file sha256:{}", &d[..12]),
        },
        Kind::Symlink(t) => format!("symlink -> {t}"),
        Kind::Char(a, b) => format!("char {a}:{b}"),
        Kind::Block(a, b) => format!("block {a}:{b}"),
        Kind::Fifo => "fifo".to_string(),
    };
    let links = if n.links.is_empty() {
        String::new()
    } else {
        format!(" hardlinked with {:?}", n.links)
    };
    let xattrs: String = n
        .xattrs
        .iter()
        .map(|(k, v)| format!(" xattr {k}={}", hex::encode(v)))
        .collect();
    format!(
        "{kind} mode {:04o} owner {}:{}{links}{xattrs}",
        n.mode, n.uid, n.gid
    )
}

/// Every difference between `ours` and `reference`, one line each.
pub fn diff(ours: &Tree, reference: &Tree) -> Vec<String> {
    diff_with(ours, reference, &|_| MayDiffer::Nothing)
}

/// What a comparison rule lets differ for one path (see [`diff_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MayDiffer {
    /// Everything is compared.
    Nothing,
    /// A regular file on both sides whose content (hence size) may differ.
    Content,
    /// A timestamp-based `.pyc` on both sides that may differ in its header's source mtime
    /// (bytes 8..12) only.
    PycSourceMtime,
}

/// Like [`diff`], except what `rule(path)` lets differ. Type, mode, owner, xattrs and hardlinks
/// are always compared.
pub fn diff_with(ours: &Tree, reference: &Tree, rule: &dyn Fn(&str) -> MayDiffer) -> Vec<String> {
    let same = |p: &str, a: &Node, b: &Node| {
        if a == b {
            return true;
        }
        let ok = match (&a.kind, &b.kind, rule(p)) {
            (Kind::File(_), Kind::File(_), MayDiffer::Content) => true,
            (Kind::File(_), Kind::File(_), MayDiffer::PycSourceMtime) => {
                a.pyc_unstamped.is_some() && a.pyc_unstamped == b.pyc_unstamped
            }
            _ => false,
        };
        ok && Node {
            kind: b.kind.clone(),
            pyc_unstamped: b.pyc_unstamped.clone(),
            text: b.text.clone(),
            ..a.clone()
        } == *b
    };
    let mut out = Vec::new();
    for (p, n) in ours {
        match reference.get(p) {
            None => out.push(format!("only in imgfarm:  /{p}: {}", show(n))),
            Some(r) if !same(p, n, r) => out.push(format!(
                "differs /{p}:\n    imgfarm:  {}\n    buildkit: {}",
                show(n),
                show(r)
            )),
            Some(_) => {}
        }
    }
    for (p, r) in reference {
        if !ours.contains_key(p) {
            out.push(format!("only in buildkit: /{p}: {}", show(r)));
        }
    }
    out
}
