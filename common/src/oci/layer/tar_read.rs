//! A bounded streaming tar reader (ustar, PAX `x`/`g`, GNU `L`/`K`).
//!
//! Written for hostile input: every header checksum is verified, numeric
//! fields are range-checked, and PAX and long-name blocks are capped before
//! anything is allocated. It never panics on input.

use super::LayerError;
use std::io::{self, Read};

const BLOCK: usize = 512;

/// Caps applied while reading.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest path or link target, in bytes.
    pub max_path: usize,
    /// Largest PAX extended header (per entry), in bytes.
    pub max_pax: usize,
    /// Most entries in one archive.
    pub max_entries: u64,
}

/// The kind of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    Regular,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// Anything else (GNU sparse, volume labels, ...), by type flag.
    Other(u8),
}

/// One parsed entry header.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub path: Vec<u8>,
    pub link: Vec<u8>,
    pub kind: EntryKind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub major: u32,
    pub minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Streams entries from a tar archive.
pub(crate) struct TarReader<R> {
    r: R,
    remaining: u64,
    pad: u64,
    entries: u64,
    limits: Limits,
    done: bool,
}

fn bad(msg: impl Into<String>) -> LayerError {
    LayerError::BadArchive(msg.into())
}

fn read_err(e: io::Error) -> LayerError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return bad("archive is truncated");
    }
    // Decompressors and size caps report through io::Error.
    LayerError::BadArchive(format!("reading archive: {e}"))
}

/// Parses an octal (or GNU base-256) numeric header field.
fn parse_num(field: &[u8], what: &str) -> Result<u64, LayerError> {
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first == 0xff {
                return Err(bad(format!("negative {what} field")));
            }
            let mut v: u64 = u64::from(first & 0x7f);
            for &b in &field[1..] {
                v = v
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(u64::from(b)))
                    .ok_or_else(|| bad(format!("{what} field overflows")))?;
            }
            return Ok(v);
        }
    }
    let trimmed: &[u8] = {
        let start = field
            .iter()
            .position(|b| *b != b' ' && *b != 0)
            .unwrap_or(field.len());
        let rest = &field[start..];
        let end = rest
            .iter()
            .position(|b| *b == b' ' || *b == 0)
            .unwrap_or(rest.len());
        &rest[..end]
    };
    let mut v: u64 = 0;
    for &b in trimmed {
        if !(b'0'..=b'7').contains(&b) {
            return Err(bad(format!("{what} field is not octal")));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad(format!("{what} field overflows")))?;
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(block: &[u8; BLOCK]) -> Result<bool, LayerError> {
    let stored = parse_num(&block[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    Ok(stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed))
}

/// PAX records ("<len> <key>=<value>\n"), in order.
fn parse_pax(data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, LayerError> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|b| *b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .take(20)
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed PAX record length"))?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("malformed PAX record length"))?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("malformed PAX record"));
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("PAX record without '='"))?;
        let key = std::str::from_utf8(&record[..eq]).map_err(|_| bad("PAX key is not UTF-8"))?;
        out.push((key.to_string(), record[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn pax_u64(v: &[u8], what: &str) -> Result<u64, LayerError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad PAX {what}")))
}

fn pax_time(v: &[u8]) -> Result<i64, LayerError> {
    let s = std::str::from_utf8(v).map_err(|_| bad("bad PAX mtime"))?;
    let whole = s.split('.').next().unwrap_or("");
    whole.parse().map_err(|_| bad("bad PAX mtime"))
}

impl<R: Read> TarReader<R> {
    pub(crate) fn new(r: R, limits: Limits) -> Self {
        Self {
            r,
            remaining: 0,
            pad: 0,
            entries: 0,
            limits,
            done: false,
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), LayerError> {
        let copied = io::copy(&mut (&mut self.r).take(n), &mut io::sink()).map_err(read_err)?;
        if copied != n {
            return Err(bad("archive is truncated"));
        }
        Ok(())
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>, LayerError> {
        let mut block = [0u8; BLOCK];
        let mut filled = 0;
        while filled < BLOCK {
            match self.r.read(&mut block[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        match filled {
            0 => Ok(None),
            BLOCK => Ok(Some(block)),
            _ => Err(bad("archive is truncated inside a header")),
        }
    }

    fn read_meta(&mut self, size: u64, cap: usize, what: &str) -> Result<Vec<u8>, LayerError> {
        if size > cap as u64 {
            return Err(bad(format!(
                "{what} of {size} bytes exceeds the limit of {cap}"
            )));
        }
        let mut data = vec![0u8; size as usize];
        self.r.read_exact(&mut data).map_err(read_err)?;
        let pad = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        self.skip(pad)?;
        Ok(data)
    }

    /// The next entry, or `None` at the end of the archive.
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>, LayerError> {
        if self.done {
            return Ok(None);
        }
        let left = self.remaining + self.pad;
        self.remaining = 0;
        self.pad = 0;
        self.skip(left)?;

        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut meta_blocks = 0u32;
        loop {
            let Some(block) = self.read_block()? else {
                self.done = true;
                return Ok(None);
            };
            if block.iter().all(|b| *b == 0) {
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&block)? {
                return Err(bad("header checksum mismatch (corrupt or not a tar)"));
            }
            let size = parse_num(&block[124..136], "size")?;
            let typeflag = block[156];
            match typeflag {
                b'x' | b'g' | b'L' | b'K' => {
                    meta_blocks += 1;
                    if meta_blocks > 16 {
                        return Err(bad("too many extended headers before one entry"));
                    }
                    match typeflag {
                        b'x' => {
                            let data = self.read_meta(size, self.limits.max_pax, "PAX header")?;
                            pax.extend(parse_pax(&data)?);
                            if pax.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                                > self.limits.max_pax
                            {
                                return Err(bad("PAX headers of one entry exceed the limit"));
                            }
                        }
                        b'g' => {
                            // Global headers are validated and ignored.
                            let data =
                                self.read_meta(size, self.limits.max_pax, "PAX global header")?;
                            parse_pax(&data)?;
                        }
                        b'L' => {
                            let data =
                                self.read_meta(size, self.limits.max_path + 1, "GNU long name")?;
                            long_name = Some(cstr(&data).to_vec());
                        }
                        _ => {
                            let data =
                                self.read_meta(size, self.limits.max_path + 1, "GNU long link")?;
                            long_link = Some(cstr(&data).to_vec());
                        }
                    }
                    continue;
                }
                _ => {}
            }
            return self
                .finish_entry(&block, size, pax, long_name, long_link)
                .map(Some);
        }
    }

    fn finish_entry(
        &mut self,
        block: &[u8; BLOCK],
        mut size: u64,
        pax: Vec<(String, Vec<u8>)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Entry, LayerError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(bad(format!(
                "more than {} entries in one layer",
                self.limits.max_entries
            )));
        }
        let is_ustar = &block[257..263] == b"ustar\0";
        let mut path = cstr(&block[0..100]).to_vec();
        if is_ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut p = prefix.to_vec();
                p.push(b'/');
                p.extend_from_slice(&path);
                path = p;
            }
        }
        let mut link = cstr(&block[157..257]).to_vec();
        if let Some(n) = long_name {
            path = n;
        }
        if let Some(l) = long_link {
            link = l;
        }
        let mode = parse_num(&block[100..108], "mode")?;
        let mut uid = parse_num(&block[108..116], "uid")?;
        let mut gid = parse_num(&block[116..124], "gid")?;
        let mut mtime = i64::try_from(parse_num(&block[136..148], "mtime")?).unwrap_or(0);
        let mut xattrs = Vec::new();
        for (key, value) in pax {
            match key.as_str() {
                "path" => path = value,
                "linkpath" => link = value,
                "size" => size = pax_u64(&value, "size")?,
                "uid" => uid = pax_u64(&value, "uid")?,
                "gid" => gid = pax_u64(&value, "gid")?,
                "mtime" => mtime = pax_time(&value)?,
                k => {
                    if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), value));
                    }
                }
            }
        }
        for (what, p) in [("path", &path), ("link target", &link)] {
            if p.len() > self.limits.max_path {
                return Err(bad(format!(
                    "{what} of {} bytes exceeds the limit of {}",
                    p.len(),
                    self.limits.max_path
                )));
            }
            if p.contains(&0) {
                return Err(bad(format!("{what} contains a NUL byte")));
            }
        }
        let typeflag = block[156];
        let kind = match typeflag {
            b'0' | 0 | b'7' => EntryKind::Regular,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::Char,
            b'4' => EntryKind::Block,
            b'5' => EntryKind::Dir,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        };
        let (major, minor) = if matches!(kind, EntryKind::Char | EntryKind::Block) {
            (
                u32::try_from(parse_num(&block[329..337], "devmajor")?).unwrap_or(u32::MAX),
                u32::try_from(parse_num(&block[337..345], "devminor")?).unwrap_or(u32::MAX),
            )
        } else {
            (0, 0)
        };
        // Old tars mark directories only by a trailing slash.
        let kind = if kind == EntryKind::Regular && path.ends_with(b"/") {
            EntryKind::Dir
        } else {
            kind
        };
        // Links, dirs and devices have no content, but a stated size is
        // still skipped so the stream stays in step.
        let data_size = size;
        self.remaining = data_size;
        self.pad = (BLOCK as u64 - data_size % BLOCK as u64) % BLOCK as u64;
        Ok(Entry {
            path,
            link,
            kind,
            mode: (mode & 0o7777) as u32,
            uid,
            gid,
            mtime,
            major,
            minor,
            xattrs,
        })
    }

    /// Reads the current entry's content.
    pub(crate) fn data(&mut self) -> DataReader<'_, R> {
        DataReader { tr: self }
    }
}

/// The content of the current entry; reads end at the entry's size.
pub(crate) struct DataReader<'a, R> {
    tr: &'a mut TarReader<R>,
}

impl<R: Read> Read for DataReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.tr.remaining == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(self.tr.remaining) as usize;
        let n = self.tr.r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive is truncated inside a file",
            ));
        }
        self.tr.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_num(b"0000644\0", "m").unwrap(), 0o644);
        assert_eq!(parse_num(b"  644 \0", "m").unwrap(), 0o644);
        assert_eq!(parse_num(b"\0\0\0", "m").unwrap(), 0);
        assert!(parse_num(b"0009\0", "m").is_err());
        assert_eq!(parse_num(&[0x80, 0, 0, 1, 0], "s").unwrap(), 256);
        assert!(parse_num(&[0xff; 12], "s").is_err());
        assert!(parse_num(
            &[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            "s"
        )
        .is_err());
        assert!(parse_num(b"77777777777777777777777", "s").is_err());
    }

    #[test]
    fn pax_records() {
        let r = parse_pax(b"12 path=abc\n17 uid=123456789\n").unwrap();
        assert_eq!(r[0], ("path".to_string(), b"abc".to_vec()));
        assert_eq!(r[1].0, "uid");
        for badrec in [
            &b"99 path=abc\n"[..],
            b"x path=abc\n",
            b"5 a=b\n",
            b"11 pathabc\n\n",
        ] {
            assert!(parse_pax(badrec).is_err(), "{badrec:?}");
        }
    }
}
