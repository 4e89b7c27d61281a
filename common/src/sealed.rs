//! Small cache files that are used only when whole: a magic string naming
//! the format and its version, the body, and the sha256 of both. Reading is
//! bounded; a missing, oversized, truncated, foreign or damaged file is
//! reported as unusable (the caller treats it as a cache miss). Writing goes
//! through a temporary file in the same directory and a rename, so readers
//! see the old file or the new one. There is no fsync: after a crash a torn
//! file fails its checksum, which is a miss, not an error.

use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::path::Path;

/// Length of the trailing checksum.
const SUM_LEN: usize = 32;

/// Reads the body of the sealed file `file` written with `magic`. `Ok(None)`
/// when there is no such file; `Err` says why an existing one is unusable.
pub fn read(file: &Path, magic: &[u8], max: usize) -> Result<Option<Vec<u8>>, String> {
    let f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut bytes = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() > max {
        return Err(format!("larger than {max} bytes"));
    }
    unseal(bytes, magic).map(Some)
}

/// The body of sealed `bytes`, if they are whole and of format `magic`.
pub fn unseal(mut bytes: Vec<u8>, magic: &[u8]) -> Result<Vec<u8>, String> {
    if !bytes.starts_with(magic) {
        return Err("not of this format or version".into());
    }
    if bytes.len() < magic.len() + SUM_LEN {
        return Err("truncated".into());
    }
    let (sealed, sum) = bytes.split_at(bytes.len() - SUM_LEN);
    if Sha256::digest(sealed).as_slice() != sum {
        return Err("checksum mismatch".into());
    }
    bytes.truncate(bytes.len() - SUM_LEN);
    bytes.drain(..magic.len());
    Ok(bytes)
}

/// `magic`, `body` and their sha256.
pub fn seal(magic: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(magic.len() + body.len() + SUM_LEN);
    out.extend_from_slice(magic);
    out.extend_from_slice(body);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Replaces `file` with the sealed `body` (creating its directory).
pub fn write(file: &Path, magic: &[u8], body: &[u8]) -> std::io::Result<()> {
    let bytes = seal(magic, body);
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        crate::oci::store::unique_suffix()
    ));
    let result = std::fs::File::create_new(&tmp)
        .and_then(|mut f| f.write_all(&bytes))
        .and_then(|()| std::fs::rename(&tmp, file));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/x.bin");
        assert_eq!(read(&f, b"M1\n", 100).unwrap(), None);
        write(&f, b"M1\n", b"body").unwrap();
        assert_eq!(read(&f, b"M1\n", 100).unwrap().unwrap(), b"body");
        assert!(read(&f, b"M2\n", 100).unwrap_err().contains("format"));
        assert!(read(&f, b"M1\n", 10).unwrap_err().contains("larger"));
        let good = std::fs::read(&f).unwrap();
        for cut in 0..good.len() {
            assert!(unseal(good[..cut].to_vec(), b"M1\n").is_err(), "{cut}");
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 1;
            assert!(unseal(bad, b"M1\n").is_err(), "{at}");
        }
        // No temporary file is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
