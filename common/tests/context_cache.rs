//! The persisted build-context digest cache on real directories: a new
//! `BuildContext` (a new `imgfarm build`) reads no unchanged file, and any
//! change that could alter content, or a broken cache file, makes it read
//! the file again.

use imgfarm_common::context::cache::{DigestCache, LoadOutcome, SaveOutcome};
use imgfarm_common::context::BuildContext;
use imgfarm_common::dockerfile::ignore::IgnoreMatcher;
use imgfarm_common::oci::Digest;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A context with `n` small files and its state directory.
struct Fixture {
    ctx: tempfile::TempDir,
    state: tempfile::TempDir,
}

impl Fixture {
    fn new(n: usize) -> Self {
        let ctx = tempfile::tempdir().unwrap();
        for i in 0..n {
            let p = ctx.path().join(format!("d{}/f{i}.txt", i % 3));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("file {i:04}\n")).unwrap();
        }
        Self {
            ctx,
            state: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        fs::canonicalize(self.ctx.path()).unwrap()
    }

    fn cache_dir(&self) -> PathBuf {
        self.state.path().join("cache/context")
    }

    /// Opens the context as a new build would. The files were written just
    /// now, so "now" is placed past the racy margin for them to be trusted.
    fn open(&self) -> BuildContext {
        let later = SystemTime::now() + Duration::from_secs(10);
        let cache = DigestCache::load(&self.cache_dir(), &self.root(), later);
        BuildContext::open(&self.root(), IgnoreMatcher::empty())
            .unwrap()
            .with_digest_cache(cache)
    }

    /// Selects `.` as `COPY . /x` does; returns the digest and the number
    /// of files read.
    fn build(&self, ctx: &BuildContext) -> (Digest, usize) {
        let d = ctx.select(&[".".to_string()], &[]).unwrap().digest();
        (d, ctx.files_hashed())
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.ctx.path().join(rel)
    }
}

/// Digest of the same tree with no cache at all.
fn uncached_digest(root: &Path) -> Digest {
    BuildContext::open(root, IgnoreMatcher::empty())
        .unwrap()
        .select(&[".".to_string()], &[])
        .unwrap()
        .digest()
}

fn ctime_ns(p: &Path) -> (i64, i64) {
    let m = fs::metadata(p).unwrap();
    (m.ctime(), m.ctime_nsec())
}

/// Overwrites `p` with `body` until its ctime moved (timestamps come from a
/// coarse clock: two writes in one tick share one).
fn rewrite(p: &Path, body: &str) {
    let before = ctime_ns(p);
    loop {
        fs::write(p, body).unwrap();
        if ctime_ns(p) != before {
            return;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn set_mtime(p: &Path, secs: u64) {
    let f = fs::File::options().write(true).open(p).unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

#[test]
fn a_new_context_reads_no_unchanged_file() {
    let f = Fixture::new(50);
    let first = f.open();
    assert_eq!(
        first.digest_cache().unwrap().load_outcome(),
        &LoadOutcome::Missing
    );
    let (digest, read) = f.build(&first);
    assert_eq!(read, 50);
    assert_eq!(
        first.save_digest_cache().unwrap(),
        Some(SaveOutcome::Written(50))
    );

    let second = f.open();
    assert_eq!(
        second.digest_cache().unwrap().load_outcome(),
        &LoadOutcome::Loaded(50)
    );
    assert_eq!(
        f.build(&second),
        (digest.clone(), 0),
        "verified by lstat only"
    );
    assert_eq!(
        second.save_digest_cache().unwrap(),
        Some(SaveOutcome::Unchanged)
    );
    assert_eq!(digest, uncached_digest(&f.root()));
}

#[test]
fn same_size_content_change_with_a_new_mtime_is_a_miss() {
    let f = Fixture::new(10);
    set_mtime(&f.path("d1/f4.txt"), 1_000_000);
    let ctx = f.open();
    f.build(&ctx);
    ctx.save_digest_cache().unwrap();

    rewrite(&f.path("d1/f4.txt"), "file XXXX\n");
    set_mtime(&f.path("d1/f4.txt"), 2_000_000);
    let ctx = f.open();
    let (digest, read) = f.build(&ctx);
    assert_eq!(read, 1, "only the changed file is read");
    assert_eq!(digest, uncached_digest(&f.root()));
    assert_eq!(
        ctx.save_digest_cache().unwrap(),
        Some(SaveOutcome::Written(10))
    );
}

#[test]
fn a_rewrite_that_restores_the_mtime_is_a_miss() {
    // `touch -r`, `rsync -t`, `cp -p`: same size, same mtime, new content;
    // only the ctime tells.
    let f = Fixture::new(10);
    let p = f.path("d2/f5.txt");
    set_mtime(&p, 1_000_000);
    let ctx = f.open();
    let (before, _) = f.build(&ctx);
    ctx.save_digest_cache().unwrap();

    rewrite(&p, "file YYYY\n");
    set_mtime(&p, 1_000_000);
    let ctx = f.open();
    let (after, read) = f.build(&ctx);
    assert_eq!(read, 1);
    assert_ne!(after, before);
    assert_eq!(after, uncached_digest(&f.root()));
}

#[test]
fn a_mode_change_is_a_miss() {
    let f = Fixture::new(10);
    let ctx = f.open();
    let (before, _) = f.build(&ctx);
    ctx.save_digest_cache().unwrap();

    fs::set_permissions(f.path("d0/f3.txt"), fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = f.open();
    let (after, read) = f.build(&ctx);
    assert_eq!(read, 1);
    assert_ne!(after, before, "the mode is part of the selection digest");
    assert_eq!(after, uncached_digest(&f.root()));
    assert_eq!(
        ctx.save_digest_cache().unwrap(),
        Some(SaveOutcome::Written(10))
    );
}

#[test]
fn a_corrupt_or_foreign_cache_file_is_ignored() {
    let f = Fixture::new(10);
    let ctx = f.open();
    let (digest, _) = f.build(&ctx);
    ctx.save_digest_cache().unwrap();
    let file = DigestCache::file_for(&f.cache_dir(), &f.root());
    let good = fs::read(&file).unwrap();

    // A flipped byte in the records, a truncated file, garbage, an empty
    // file, another directory's cache under this name: each is a miss.
    let mut flipped = good.clone();
    let at = good.len() - 50;
    flipped[at] ^= 0xff;
    let other = tempfile::tempdir().unwrap();
    let other_root = fs::canonicalize(other.path()).unwrap();
    let foreign = {
        fs::write(other_root.join("x"), "x").unwrap();
        let later = SystemTime::now() + Duration::from_secs(10);
        let ctx = BuildContext::open(&other_root, IgnoreMatcher::empty())
            .unwrap()
            .with_digest_cache(DigestCache::load(other.path(), &other_root, later));
        ctx.select(&[".".to_string()], &[]).unwrap();
        ctx.save_digest_cache().unwrap();
        fs::read(DigestCache::file_for(other.path(), &other_root)).unwrap()
    };
    for (what, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("garbage", b"not a cache at all".to_vec()),
        ("empty", Vec::new()),
        ("foreign", foreign),
    ] {
        fs::write(&file, &bytes).unwrap();
        let ctx = f.open();
        let outcome = ctx.digest_cache().unwrap().load_outcome().clone();
        assert!(
            matches!(outcome, LoadOutcome::Ignored(_)),
            "{what}: {outcome:?}"
        );
        assert_eq!(f.build(&ctx), (digest.clone(), 10), "{what}");
        assert_eq!(
            ctx.save_digest_cache().unwrap(),
            Some(SaveOutcome::Written(10)),
            "{what}: the broken file is replaced"
        );
        assert_eq!(fs::read(&file).unwrap(), good, "{what}");
    }

    // An oversized file is not even read.
    let big = fs::File::create(&file).unwrap();
    big.set_len(300 << 20).unwrap();
    let ctx = f.open();
    assert!(matches!(
        ctx.digest_cache().unwrap().load_outcome(),
        LoadOutcome::Ignored(why) if why.contains("larger than")
    ));
}

#[test]
fn gone_files_are_dropped_and_unselected_ones_kept() {
    let f = Fixture::new(12);
    let ctx = f.open();
    f.build(&ctx);
    ctx.save_digest_cache().unwrap();

    // A build that copies one file leaves the others' records alone.
    let ctx = f.open();
    ctx.select(&["d0/f0.txt".to_string()], &[]).unwrap();
    assert_eq!(ctx.files_hashed(), 0);
    assert_eq!(
        ctx.save_digest_cache().unwrap(),
        Some(SaveOutcome::Unchanged)
    );

    // A deleted file's record is dropped, even by a build that did not
    // look at it; a changed unselected file's record is dropped too.
    fs::remove_file(f.path("d1/f1.txt")).unwrap();
    rewrite(&f.path("d2/f2.txt"), "changed!!\n");
    let ctx = f.open();
    ctx.select(&["d0".to_string()], &[]).unwrap();
    assert_eq!(
        ctx.save_digest_cache().unwrap(),
        Some(SaveOutcome::Written(10))
    );
    let ctx = f.open();
    assert_eq!(
        ctx.digest_cache().unwrap().load_outcome(),
        &LoadOutcome::Loaded(10)
    );
    assert_eq!(f.build(&ctx).1, 1, "only the changed file");
}

#[test]
fn a_read_only_state_fails_the_save_with_the_path() {
    let f = Fixture::new(2);
    let ctx = f.open();
    f.build(&ctx);
    // The cache directory's place is taken by a file.
    fs::create_dir_all(f.state.path().join("cache")).unwrap();
    fs::write(f.cache_dir(), "not a directory").unwrap();
    let err = ctx.save_digest_cache().unwrap_err().to_string();
    assert!(err.contains("digest cache"), "{err}");
    assert!(err.contains(&f.cache_dir().display().to_string()), "{err}");
}
