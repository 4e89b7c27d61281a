//! Reading tar archives from outside safely: member names are normalised
//! and any absolute path or `..` component is refused; GNU long-name and
//! PAX headers are read with a size cap (the `tar` crate would read them
//! into memory unbounded), so a hostile archive cannot exhaust memory.

use super::{io_err, LayoutError};
use crate::path;
use std::io::Read;

/// Largest GNU long-name or PAX extended header accepted.
pub const MAX_EXTENDED_HEADER: u64 = 64 * 1024;
/// Most members one archive may hold.
pub const MAX_MEMBERS: u64 = 1_000_000;

/// What a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink, hardlink, device, fifo or anything else.
    Other,
}

/// One member, with its normalised relative path (`a/b`, no `./`, no `/`
/// at either end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Normalised path.
    pub path: String,
    /// Its kind.
    pub kind: MemberKind,
    /// Data size from the header.
    pub size: u64,
}

/// Normalise a member name (empty and `.` components dropped); refuse
/// absolute paths and any `..` component ([`path::strict_components`]).
pub fn normalize_member_path(raw: &[u8]) -> Result<String, LayoutError> {
    let name = String::from_utf8_lossy(raw);
    let unsafe_path = |reason| LayoutError::UnsafePath {
        path: name.chars().take(300).collect(),
        reason,
    };
    if name.starts_with('/') {
        return Err(unsafe_path("absolute path"));
    }
    if name.contains('\0') {
        return Err(unsafe_path("NUL in name"));
    }
    match path::strict_components(&name) {
        Some(parts) => Ok(parts.join("/")),
        None => Err(unsafe_path("'..' component (path traversal)")),
    }
}

/// Call `f` for each real member of the tar stream, in order, with a reader
/// over its data. PAX `path` records and GNU long names are honoured.
pub fn for_each_member<R: Read>(
    reader: R,
    mut f: impl FnMut(&Member, &mut dyn Read) -> Result<(), LayoutError>,
) -> Result<(), LayoutError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(io_err("reading tar"))?.raw(true);
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut count = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading tar header"))?;
        count += 1;
        if count > MAX_MEMBERS {
            return Err(LayoutError::Invalid(format!(
                "tar has more than {MAX_MEMBERS} members"
            )));
        }
        let header = entry.header();
        let et = header.entry_type();
        let size = header
            .entry_size()
            .map_err(io_err("reading tar member size"))?;
        if et.is_gnu_longname()
            || et.is_gnu_longlink()
            || et.is_pax_local_extensions()
            || et.is_pax_global_extensions()
        {
            if size > MAX_EXTENDED_HEADER {
                return Err(LayoutError::TooLarge {
                    what: "a tar extended header (long name / PAX)".into(),
                    limit: MAX_EXTENDED_HEADER,
                });
            }
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_EXTENDED_HEADER)
                .read_to_end(&mut data)
                .map_err(io_err("reading tar extended header"))?;
            if et.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                long_name = Some(data);
            } else if et.is_pax_local_extensions() {
                for ext in tar::PaxExtensions::new(&data) {
                    let ext = ext.map_err(io_err("parsing PAX header"))?;
                    if ext.key_bytes() == b"path" {
                        pax_path = Some(ext.value_bytes().to_vec());
                    }
                }
            }
            continue;
        }
        let raw_path = pax_path
            .take()
            .or_else(|| long_name.take())
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        long_name = None;
        let path = normalize_member_path(&raw_path)?;
        let kind = if et.is_file() || et.is_contiguous() {
            MemberKind::File
        } else if et.is_dir() {
            MemberKind::Dir
        } else {
            MemberKind::Other
        };
        f(&Member { path, kind, size }, &mut entry)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_refuses() {
        assert_eq!(
            normalize_member_path(b"./blobs//sha256/x/").unwrap(),
            "blobs/sha256/x"
        );
        assert_eq!(normalize_member_path(b"index.json").unwrap(), "index.json");
        for bad in [&b"/etc/passwd"[..], b"blobs/../../x", b"..", b"a/\0b"] {
            assert!(normalize_member_path(bad).is_err());
        }
    }

    fn raw_header(name: &[u8], kind: u8, size: u64) -> [u8; 512] {
        let mut h = tar::Header::new_old();
        {
            let b = h.as_mut_bytes();
            b[..name.len()].copy_from_slice(name);
        }
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_cksum();
        *h.as_bytes()
    }

    #[test]
    fn huge_long_name_is_refused_without_reading_it() {
        let mut tar = Vec::new();
        tar.extend_from_slice(&raw_header(b"././@LongLink", b'L', 1 << 40));
        tar.extend_from_slice(&[b'a'; 1024]);
        let e = for_each_member(&tar[..], |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, LayoutError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn pax_path_and_long_names_are_honoured_and_checked() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(150));
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut seen = Vec::new();
        for_each_member(&tar[..], |m, _| {
            seen.push(m.path.clone());
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [long]);

        // A PAX path that climbs out is refused even though the ustar name is harmless.
        let mut tar = Vec::new();
        let body = "path=../../../../etc/passwd\n";
        let rec = format!("{} {body}", body.len() + 3);
        let rec = rec.as_bytes();
        tar.extend_from_slice(&raw_header(b"PaxHeaders/x", b'x', rec.len() as u64));
        let mut block = [0u8; 512];
        block[..rec.len()].copy_from_slice(rec);
        tar.extend_from_slice(&block);
        tar.extend_from_slice(&raw_header(b"harmless", b'0', 0));
        tar.extend_from_slice(&[0u8; 1024]);
        let e = for_each_member(&tar[..], |_, _| Ok(())).unwrap_err();
        assert!(matches!(e, LayoutError::UnsafePath { .. }), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            let _ = for_each_member(&bytes[..], |_, r| {
                let _ = std::io::copy(r, &mut std::io::sink());
                Ok(())
            });
        }
    }
}
