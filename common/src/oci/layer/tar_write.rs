//! Writing tar entries: POSIX ustar headers plus a PAX extended header
//! (POSIX.1-2001 `pax` format) when a name, link target, id or size does not
//! fit ustar, and for xattrs (`SCHILY.xattr.<name>`, as GNU tar, Docker and
//! BuildKit write them).

use std::io::{self, Write};

/// What kind of entry, with its type-specific data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Regular { size: u64 },
    Dir,
    Symlink { target: Vec<u8> },
    Hardlink { target: Vec<u8> },
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
    Fifo,
}

/// One entry's header data.
#[derive(Debug, Clone)]
pub(crate) struct EntryHeader {
    /// Relative path, no leading `/` or `./`; directories end with `/`.
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub uname: Vec<u8>,
    pub gname: Vec<u8>,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

const BLOCK: usize = 512;
const MAX_OCTAL_7: u64 = 0o7_777_777;
const MAX_OCTAL_11: u64 = 0o77_777_777_777;

/// Splits a path into ustar `prefix` and `name`, if it fits.
fn ustar_split(path: &[u8]) -> Option<(&[u8], &[u8])> {
    if path.len() <= 100 {
        return Some((&[], path));
    }
    if path.len() > 256 {
        return None;
    }
    // The split must be at a '/', with name <= 100 and prefix <= 155.
    let search_end = path.len().saturating_sub(1);
    (0..search_end)
        .rev()
        .filter(|&i| path[i] == b'/')
        .find(|&i| i <= 155 && path.len() - i - 1 <= 100 && path.len() - i > 1)
        .map(|i| (&path[..i], &path[i + 1..]))
}

fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    // "<len> <key>=<value>\n", where len counts the whole record.
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    loop {
        let digits = len.to_string().len();
        if body + digits == len {
            break;
        }
        len = body + digits;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn copy_field(dst: &mut [u8], src: &[u8]) {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
}

/// Writes the header block(s) for `e`. The caller then writes the content
/// (regular files only) and [`write_padding`].
pub(crate) fn write_header<W: Write>(w: &mut W, e: &EntryHeader) -> io::Result<()> {
    let mut pax = Vec::new();
    let split = ustar_split(&e.path);
    if split.is_none() {
        pax_record(&mut pax, "path", &e.path);
    }
    let link = match &e.kind {
        Kind::Symlink { target } | Kind::Hardlink { target } => Some(target.as_slice()),
        _ => None,
    };
    if let Some(t) = link {
        if t.len() > 100 {
            pax_record(&mut pax, "linkpath", t);
        }
    }
    let size = match e.kind {
        Kind::Regular { size } => size,
        _ => 0,
    };
    if size > MAX_OCTAL_11 {
        pax_record(&mut pax, "size", size.to_string().as_bytes());
    }
    if e.uid > MAX_OCTAL_7 {
        pax_record(&mut pax, "uid", e.uid.to_string().as_bytes());
    }
    if e.gid > MAX_OCTAL_7 {
        pax_record(&mut pax, "gid", e.gid.to_string().as_bytes());
    }
    if e.mtime > MAX_OCTAL_11 {
        pax_record(&mut pax, "mtime", e.mtime.to_string().as_bytes());
    }
    if e.uname.len() > 32 {
        pax_record(&mut pax, "uname", &e.uname);
    }
    if e.gname.len() > 32 {
        pax_record(&mut pax, "gname", &e.gname);
    }
    for (name, value) in &e.xattrs {
        pax_record(&mut pax, &format!("SCHILY.xattr.{name}"), value);
    }
    if !pax.is_empty() {
        let mut h = base_header(e, &pax_header_name(&e.path), 0, e.mtime.min(MAX_OCTAL_11));
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(pax.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        w.write_all(h.as_bytes())?;
        w.write_all(&pax)?;
        write_padding(w, pax.len() as u64)?;
    }

    let (prefix, name) = split.unwrap_or((&[], &e.path[..e.path.len().min(100)]));
    let mut h = base_header(e, name, size.min(MAX_OCTAL_11), e.mtime.min(MAX_OCTAL_11));
    if let Some(u) = h.as_ustar_mut() {
        copy_field(&mut u.prefix, prefix);
        if let Some(t) = link {
            copy_field(&mut u.linkname, t);
        }
    }
    let entry_type = match e.kind {
        Kind::Regular { .. } => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink { .. } => tar::EntryType::Symlink,
        Kind::Hardlink { .. } => tar::EntryType::Link,
        Kind::Char { .. } => tar::EntryType::Char,
        Kind::Block { .. } => tar::EntryType::Block,
        Kind::Fifo => tar::EntryType::Fifo,
    };
    h.set_entry_type(entry_type);
    if let Kind::Char { major, minor } | Kind::Block { major, minor } = e.kind {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    h.set_cksum();
    w.write_all(h.as_bytes())
}

fn pax_header_name(path: &[u8]) -> Vec<u8> {
    // Informational only; readers take the real name from the record.
    let mut name = b"PaxHeaders/".to_vec();
    let base = path
        .split(|b| *b == b'/')
        .rfind(|s| !s.is_empty())
        .unwrap_or(b"entry");
    name.extend_from_slice(&base[..base.len().min(80)]);
    name
}

fn base_header(e: &EntryHeader, name: &[u8], size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    if let Some(u) = h.as_ustar_mut() {
        copy_field(&mut u.name, name);
        copy_field(&mut u.uname, &e.uname);
        copy_field(&mut u.gname, &e.gname);
    }
    h.set_mode(e.mode & 0o7777);
    h.set_uid(if e.uid > MAX_OCTAL_7 { 0 } else { e.uid });
    h.set_gid(if e.gid > MAX_OCTAL_7 { 0 } else { e.gid });
    h.set_size(size);
    h.set_mtime(mtime);
    h
}

/// Pads `size` bytes of content to the 512-byte block boundary.
pub(crate) fn write_padding<W: Write>(w: &mut W, size: u64) -> io::Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        w.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
    }
    Ok(())
}

/// The end-of-archive marker: two zero blocks.
pub(crate) fn write_end<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(&[0u8; 2 * BLOCK])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut v = Vec::new();
        pax_record(&mut v, "path", b"abc");
        assert_eq!(v, b"12 path=abc\n");
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'x'; 90]);
        assert_eq!(v.len(), 99);
        // Crossing a digit boundary: 98 bytes of body need a 3-digit length.
        let mut v = Vec::new();
        pax_record(&mut v, "path", &[b'x'; 91]);
        assert_eq!(v.len(), 101);
        assert!(v.starts_with(b"101 path="));
    }

    #[test]
    fn ustar_split_rules() {
        assert_eq!(ustar_split(b"a/b"), Some((&b""[..], &b"a/b"[..])));
        let long = [&[b'd'; 120][..], b"/", &[b'f'; 50][..]].concat();
        assert_eq!(ustar_split(&long), Some((&long[..120], &long[121..])));
        assert_eq!(ustar_split(&[b'f'; 101]), None);
    }
}
