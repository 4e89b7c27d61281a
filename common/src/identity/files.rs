//! Writing certificate and key files: all-or-nothing refusal to overwrite,
//! keys created with mode 0600 from the start (never chmod'ed afterwards).

use super::IdentityError;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// One file to write.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// Where.
    pub path: PathBuf,
    /// Content.
    pub contents: String,
    /// Unix mode at creation (0o600 for keys, 0o644 for certificates).
    pub mode: u32,
}

/// Writes all `files`. Without `force`, fails before writing anything if any
/// of them exists. With `force`, each file is written to a fresh temp file
/// (created with its mode) and renamed over the old one.
pub fn write_new_files(files: &[FileSpec], force: bool) -> Result<(), IdentityError> {
    if !force {
        let existing: Vec<PathBuf> = files
            .iter()
            .filter(|f| f.path.symlink_metadata().is_ok())
            .map(|f| f.path.clone())
            .collect();
        if !existing.is_empty() {
            return Err(IdentityError::Exists(existing));
        }
    }
    for f in files {
        if force {
            let tmp = f.path.with_extension("tmp-imgfarm");
            let _ = std::fs::remove_file(&tmp);
            create_with_mode(&tmp, &f.contents, f.mode)?;
            std::fs::rename(&tmp, &f.path).map_err(|e| IdentityError::io("rename", &f.path, e))?;
        } else {
            create_with_mode(&f.path, &f.contents, f.mode)?;
        }
    }
    Ok(())
}

fn create_with_mode(
    path: &std::path::Path,
    contents: &str,
    mode: u32,
) -> Result<(), IdentityError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| IdentityError::io("create", path, e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| IdentityError::io("write", path, e))
}
