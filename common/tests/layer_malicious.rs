//! Hostile layers, built byte by byte: nothing may be written outside the
//! root, limits hold, and no input panics.

mod layer_support;

use imgfarm_common::oci::layer::{self, ApplyOptions, DevicePolicy, LayerError};
use layer_support::*;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

// ---- raw tar building (the tar crate refuses most of these) ----

fn header(name: &[u8], typeflag: u8, link: &[u8], size: u64, mode: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    let put = |h: &mut Vec<u8>, at: usize, len: usize, v: u64| {
        let s = format!("{:0width$o}\0", v, width = len - 1);
        h[at..at + len].copy_from_slice(s.as_bytes());
    };
    put(&mut h, 100, 8, u64::from(mode));
    put(&mut h, 108, 8, 0);
    put(&mut h, 116, 8, 0);
    put(&mut h, 124, 12, size);
    put(&mut h, 136, 12, 1_600_000_000);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(v: &mut Vec<u8>) {
    while v.len() % 512 != 0 {
        v.push(0);
    }
}

#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.0
            .extend(header(name.as_bytes(), b'0', b"", data.len() as u64, 0o644));
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }
    fn dir(mut self, name: &str) -> Self {
        self.0.extend(header(name.as_bytes(), b'5', b"", 0, 0o755));
        self
    }
    fn symlink(mut self, name: &str, target: &str) -> Self {
        self.0
            .extend(header(name.as_bytes(), b'2', target.as_bytes(), 0, 0o777));
        self
    }
    fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.0
            .extend(header(name.as_bytes(), b'1', target.as_bytes(), 0, 0o644));
        self
    }
    fn device(mut self, name: &str) -> Self {
        self.0.extend(header(name.as_bytes(), b'3', b"", 0, 0o600));
        self
    }
    fn raw_meta(mut self, typeflag: u8, data: &[u8]) -> Self {
        self.0
            .extend(header(b"meta", typeflag, b"", data.len() as u64, 0o644));
        self.0.extend_from_slice(data);
        pad(&mut self.0);
        self
    }
    fn pax(self, key: &str, value: &[u8]) -> Self {
        let body = key.len() + value.len() + 3;
        let mut len = body + 1;
        while body + len.to_string().len() != len {
            len = body + len.to_string().len();
        }
        let mut rec = format!("{len} {key}=").into_bytes();
        rec.extend_from_slice(value);
        rec.push(b'\n');
        self.raw_meta(b'x', &rec)
    }
    fn end(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

// ---- sentinel harness ----

struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    outside: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let outside = base.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("secret"), b"do not touch").unwrap();
        fs::create_dir(outside.join("sub")).unwrap();
        fs::write(outside.join("sub/file"), b"nested").unwrap();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        Self {
            _tmp: tmp,
            base,
            root,
            outside,
        }
    }

    /// Everything under the sandbox except the root, with metadata.
    fn fence(&self) -> BTreeMap<PathBuf, Node> {
        let mut s = snapshot(&self.base);
        s.retain(|p, _| !p.starts_with("root"));
        s
    }

    fn apply(&self, bytes: &[u8], opts: &ApplyOptions) -> Result<layer::ApplyReport, LayerError> {
        let before = self.fence();
        let nlink = fs::metadata(self.outside.join("secret")).unwrap().nlink();
        let r = layer::apply(bytes, &self.root, opts);
        assert_eq!(before, self.fence(), "something outside the root changed");
        assert_eq!(
            nlink,
            fs::metadata(self.outside.join("secret")).unwrap().nlink()
        );
        r
    }

    fn outside_abs(&self) -> String {
        self.outside.display().to_string()
    }
}

fn opts() -> ApplyOptions {
    ApplyOptions::default()
}

// ---- cases ----

#[test]
fn dotdot_traversal_is_neutralised() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .file("../../../../../../outside/pwned", b"x")
        .file("a/../../outside/pwned2", b"x")
        .end();
    let r = sb.apply(&t, &opts()).unwrap();
    assert_eq!(r.neutralised_paths, 2);
    assert!(sb.root.join("outside/pwned").is_file());
    assert!(sb.root.join("outside/pwned2").is_file());
}

#[test]
fn absolute_paths_land_inside_the_root() {
    let sb = Sandbox::new();
    let abs = format!("{}/pwned", sb.outside_abs());
    let t = Tar::default()
        .file(&abs, b"x")
        .file("/etc/imgfarm-test-pwned", b"x")
        .end();
    let r = sb.apply(&t, &opts()).unwrap();
    assert_eq!(r.neutralised_paths, 2);
    assert!(layer::apply::target_path(&sb.root, abs.as_bytes()).is_file());
    assert!(sb.root.join("etc/imgfarm-test-pwned").is_file());
    assert!(!Path::new("/etc/imgfarm-test-pwned").exists());
}

#[test]
fn writes_through_a_symlink_to_root_stay_inside() {
    let sb = Sandbox::new();
    let through = format!("escape{}/pwned", sb.outside_abs());
    let t = Tar::default()
        .symlink("escape", "/")
        .file(&through, b"x")
        .symlink("sysconf", "/etc")
        .file("sysconf/imgfarm-test-pwned", b"x")
        .end();
    sb.apply(&t, &opts()).unwrap();
    assert!(sb
        .root
        .join(sb.outside.strip_prefix("/").unwrap())
        .join("pwned")
        .is_file());
    assert!(sb.root.join("etc/imgfarm-test-pwned").is_file());
    assert!(!Path::new("/etc/imgfarm-test-pwned").exists());
    assert_eq!(
        fs::read_link(sb.root.join("sysconf")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn symlink_loops_are_an_error_not_an_escape() {
    let sb = Sandbox::new();
    // In the root, `etc -> /etc` points at itself.
    let t = Tar::default()
        .symlink("etc", "/etc")
        .file("etc/imgfarm-test-pwned", b"x")
        .end();
    match sb.apply(&t, &opts()) {
        Err(LayerError::Unsafe { reason, .. }) => assert!(reason.contains("loop"), "{reason}"),
        other => panic!("want Unsafe, got {other:?}"),
    }
    let t = Tar::default()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x")
        .end();
    assert!(matches!(
        sb.apply(&t, &opts()),
        Err(LayerError::Unsafe { .. })
    ));
    assert!(!Path::new("/etc/imgfarm-test-pwned").exists());
}

#[test]
fn relative_symlink_climbing_out_is_clamped() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .symlink("up", "../outside")
        .file("up/pwned", b"x")
        .symlink("deep", "../../../../../../../../outside/sub")
        .file("deep/pwned", b"x")
        .end();
    sb.apply(&t, &opts()).unwrap();
    assert!(sb.root.join("outside/pwned").is_file());
    assert!(sb.root.join("outside/sub/pwned").is_file());
}

#[test]
fn symlink_chains_cannot_escape() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .symlink("c1", "c2")
        .symlink("c2", "c3")
        .symlink("c3", &format!("../../../../..{}", sb.outside_abs()))
        .file("c1/pwned", b"x")
        .end();
    // The chain resolves to <root>/<outside path>, which is created.
    sb.apply(&t, &opts()).unwrap();
    assert!(sb
        .root
        .join(sb.outside.strip_prefix("/").unwrap())
        .join("pwned")
        .is_file());
}

#[test]
fn hardlinks_out_of_the_root_are_refused() {
    for target in ["/etc/passwd", "../outside/secret", "../../../../etc/shadow"] {
        let sb = Sandbox::new();
        let t = Tar::default().hardlink("h", target).end();
        match sb.apply(&t, &opts()) {
            Err(LayerError::Unsafe { reason, .. }) => {
                assert!(reason.contains("hardlink"), "{reason}")
            }
            other => panic!("{target}: want Unsafe, got {other:?}"),
        }
        assert!(!sb.root.join("h").exists());
    }
}

#[test]
fn hardlinks_through_symlinks_are_refused() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .symlink("dirlink", &sb.outside_abs())
        .hardlink("h", "dirlink/secret")
        .end();
    match sb.apply(&t, &opts()) {
        Err(LayerError::Unsafe { reason, .. }) => assert!(reason.contains("symlink"), "{reason}"),
        other => panic!("want Unsafe, got {other:?}"),
    }
    // Even to a file that is inside the root.
    let sb = Sandbox::new();
    let t = Tar::default()
        .dir("real/")
        .file("real/f", b"x")
        .symlink("alias", "real")
        .hardlink("h", "alias/f")
        .end();
    assert!(matches!(
        sb.apply(&t, &opts()),
        Err(LayerError::Unsafe { .. })
    ));
}

#[test]
fn hardlink_to_a_file_inside_works_and_to_a_dir_is_refused() {
    let sb = Sandbox::new();
    let t = Tar::default().file("f", b"x").hardlink("h", "f").end();
    let r = sb.apply(&t, &opts()).unwrap();
    assert_eq!(r.hardlinks, 1);
    assert_eq!(
        fs::metadata(sb.root.join("h")).unwrap().ino(),
        fs::metadata(sb.root.join("f")).unwrap().ino()
    );
    let sb = Sandbox::new();
    let t = Tar::default().dir("d/").hardlink("h", "d").end();
    assert!(matches!(
        sb.apply(&t, &opts()),
        Err(LayerError::Unsafe { .. })
    ));
}

#[test]
fn symlink_replacing_a_directory_mid_archive_is_contained() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .dir("d/")
        .file("d/f", b"x")
        .symlink("d", &sb.outside_abs())
        .file("d/pwned", b"x")
        .symlink("e", "../outside")
        .dir("e/")
        .file("e/secret", b"overwrite?")
        .end();
    sb.apply(&t, &opts()).unwrap();
    // `d` is now the symlink (stored verbatim); the write went to the
    // in-root resolution of its target.
    assert!(fs::symlink_metadata(sb.root.join("d"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(sb
        .root
        .join(sb.outside.strip_prefix("/").unwrap())
        .join("pwned")
        .is_file());
    // `e/` replaced the symlink with a real dir.
    assert!(fs::symlink_metadata(sb.root.join("e")).unwrap().is_dir());
}

#[test]
fn whiteouts_and_opaque_markers_through_symlinks_stay_inside() {
    let sb = Sandbox::new();
    let t = Tar::default()
        .symlink("lnk", &sb.outside_abs())
        .file("lnk/.wh.secret", b"")
        .file("lnk/.wh..wh..opq", b"")
        .file("../.wh.outside", b"")
        .file("../outside/.wh..wh..opq", b"")
        .end();
    let r = sb.apply(&t, &opts()).unwrap();
    assert_eq!(r.whiteouts, 2);
    assert!(sb.outside.join("secret").is_file());
}

#[test]
fn concurrent_symlink_swaps_cannot_redirect_writes() {
    let sb = Sandbox::new();
    let mut t = Tar::default().dir("race/");
    for i in 0..3000 {
        t = t.file(&format!("race/f{i}"), b"payload");
    }
    let t = t.end();
    let before = sb.fence();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let race = sb.root.join("race");
            let tmp_link = sb.root.join("race-link");
            let _ = std::os::unix::fs::symlink(&sb.outside, &tmp_link);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Move the real dir away and put a symlink to the outside in
                // its place, then undo.
                if fs::rename(&race, sb.root.join("race-real")).is_ok() {
                    let _ = std::os::unix::fs::symlink(&sb.outside, &race);
                    std::thread::yield_now();
                    let _ = fs::remove_file(&race);
                    let _ = fs::rename(sb.root.join("race-real"), &race);
                }
            }
        });
        // Errors are fine (the tree is being vandalised); escapes are not.
        let _ = layer::apply(&t[..], &sb.root, &opts());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert_eq!(before, sb.fence(), "a racing symlink redirected a write");
}

#[test]
fn huge_names_and_headers_are_rejected() {
    let sb = Sandbox::new();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "PAX path over 4096",
            Tar::default()
                .pax("path", &vec![b'a'; 5000])
                .file("x", b"")
                .end(),
        ),
        (
            "PAX linkpath over 4096",
            Tar::default()
                .pax("linkpath", &vec![b'a'; 5000])
                .symlink("x", "y")
                .end(),
        ),
        (
            "PAX header over 1 MiB",
            Tar::default()
                .pax("comment", &vec![b'c'; 2 << 20])
                .file("x", b"")
                .end(),
        ),
        (
            "GNU long name over 4096",
            Tar::default()
                .raw_meta(b'L', &vec![b'n'; 10_000])
                .file("x", b"")
                .end(),
        ),
        (
            "NUL in PAX path",
            Tar::default().pax("path", b"a\0b").file("x", b"").end(),
        ),
        (
            "malformed PAX",
            Tar::default()
                .raw_meta(b'x', b"999 path=x\n")
                .file("x", b"")
                .end(),
        ),
    ];
    for (what, bytes) in cases {
        match sb.apply(&bytes, &opts()) {
            Err(LayerError::BadArchive(msg)) => eprintln!("{what}: {msg}"),
            other => panic!("{what}: want BadArchive, got {other:?}"),
        }
    }
    // A header claiming a 4 GiB PAX block is refused before any allocation.
    let mut claim = header(b"meta", b'x', b"", 1 << 32, 0o644);
    claim.extend_from_slice(&[0u8; 1024]);
    assert!(matches!(
        sb.apply(&claim, &opts()),
        Err(LayerError::BadArchive(_))
    ));
}

#[test]
fn entry_count_is_capped() {
    let sb = Sandbox::new();
    let mut t = Tar::default();
    for i in 0..20 {
        t = t.file(&format!("f{i}"), b"");
    }
    let o = ApplyOptions {
        max_entries: 10,
        ..opts()
    };
    assert!(
        matches!(sb.apply(&t.end(), &o), Err(LayerError::BadArchive(m)) if m.contains("entries"))
    );
}

#[test]
fn gzip_bomb_is_bounded() {
    let sb = Sandbox::new();
    // 256 MiB of zeros in one file, about 250 KiB compressed.
    let size: u64 = 256 << 20;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&header(b"bomb", b'0', b"", size, 0o644))
        .unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        enc.write_all(&zeros).unwrap();
    }
    enc.write_all(&[0u8; 1024]).unwrap();
    let gz = enc.finish().unwrap();
    assert!(gz.len() < 2 << 20);
    let o = ApplyOptions {
        max_uncompressed: 16 << 20,
        ..opts()
    };
    match sb.apply(&gz, &o) {
        Err(LayerError::BadArchive(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("want BadArchive, got {other:?}"),
    }
    let written = fs::metadata(sb.root.join("bomb"))
        .map(|m| m.len())
        .unwrap_or(0);
    assert!(written <= 16 << 20, "wrote {written} bytes");
}

#[test]
fn devices_are_skipped_when_not_permitted() {
    let sb = Sandbox::new();
    let t = Tar::default().device("dev/null").file("ok", b"x").end();
    let o = ApplyOptions {
        devices: DevicePolicy::Skip,
        ..opts()
    };
    let r = sb.apply(&t, &o).unwrap();
    assert_eq!(r.devices_skipped, 1);
    assert!(
        r.warnings.iter().any(|w| w.contains("dev/null")),
        "{:?}",
        r.warnings
    );
    assert!(!sb.root.join("dev/null").exists());
    assert!(sb.root.join("ok").is_file());
}

#[test]
fn garbage_and_mutations_never_panic_or_escape() {
    let sb = Sandbox::new();
    let base = Tar::default()
        .dir("a/")
        .file("a/f", b"hello world")
        .symlink("a/l", "/")
        .hardlink("a/h", "a/f")
        .pax("path", b"a/pax-name")
        .file("ignored", b"data")
        .end();
    // Truncations.
    for cut in [1, 100, 511, 512, 700, 1024, 1536, base.len() - 1] {
        let r = sb.apply(&base[..cut.min(base.len())], &opts());
        if cut < 512 {
            assert!(r.is_err(), "cut {cut}");
        }
    }
    // Byte flips and random garbage (plain, and behind gzip/zstd magic).
    for i in 0..400u64 {
        let mut m = base.clone();
        let noise_bytes = noise(8, i);
        let pos =
            (u64::from_le_bytes(noise_bytes[..8].try_into().unwrap()) % m.len() as u64) as usize;
        m[pos] ^= noise_bytes[0] | 1;
        let _ = sb.apply(&m, &opts());
        let _ = fs::remove_dir_all(&sb.root);
        fs::create_dir(&sb.root).unwrap();
    }
    for prefix in [&[][..], &[0x1f, 0x8b][..], &[0x28, 0xb5, 0x2f, 0xfd][..]] {
        for i in 0..20 {
            let mut g = prefix.to_vec();
            g.extend(noise(3000, 1000 + i));
            assert!(sb.apply(&g, &opts()).is_err());
        }
    }
}

#[test]
fn bad_checksum_is_rejected() {
    let sb = Sandbox::new();
    let mut t = Tar::default().file("f", b"x").end();
    t[0] = b'g';
    match sb.apply(&t, &opts()) {
        Err(LayerError::BadArchive(msg)) => assert!(msg.contains("checksum"), "{msg}"),
        other => panic!("{other:?}"),
    }
}
