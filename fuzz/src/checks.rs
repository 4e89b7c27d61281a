//! The body of every fuzz target, as plain functions of the input bytes.
//!
//! The cargo-fuzz binaries in `fuzz_targets/` call these, and
//! `common/tests/fuzz_regressions.rs` includes this file (`#[path]`) and
//! replays every file under `fuzz/regressions/<target>/` through the same
//! function, so CI checks past crashers on stable without libFuzzer. Each
//! function panics when a property is broken; an `Err` from the code under
//! test is a clean refusal and passes.

use imgfarm_common::dockerfile::dump::dump;
use imgfarm_common::dockerfile::expand::Expander;
use imgfarm_common::dockerfile::parser::parse;
use imgfarm_common::dockerfile::shell::{Env, Lexer, Limits};
use imgfarm_common::oci::image::{
    index_to_json, manifest_to_json, Document, ImageConfig, PlatformRequest,
};
use imgfarm_common::oci::layer::{apply, ApplyOptions, DevicePolicy};
use imgfarm_common::proto::{
    decode_message, encode_frame, FrameDecoder, Message, StreamOpen, MAX_CONTROL_FRAME,
};
use imgfarm_common::registry::manifest as registry_manifest;
use std::path::Path;

/// A target's body.
pub type Check = fn(&[u8]);

/// The fuzz targets and their functions, for the regression replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("parse_dockerfile", parse_dockerfile),
    ("decode_frame", decode_frame),
    ("shell_expand", shell_expand),
    ("layer_apply", layer_apply),
    ("image_json", image_json),
];

/// Any bytes parse or fail cleanly; a parse dumps one line per instruction
/// and clones equal.
pub fn parse_dockerfile(data: &[u8]) {
    if let Ok(result) = parse(data) {
        let text = dump(&result.ast);
        assert_eq!(text.lines().count(), result.ast.children.len());
        let copy = result.ast.clone();
        assert_eq!(copy, result.ast);
    }
}

/// Any byte stream, split in two at a point chosen by the first byte,
/// yields frames or a clean error; every decoded message re-encodes and
/// decodes to itself.
pub fn decode_frame(data: &[u8]) {
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let mut decoder = FrameDecoder::new(MAX_CONTROL_FRAME);
    for part in [&data[..split], &data[split..]] {
        if decoder.push(part).is_err() {
            return;
        }
        while let Ok(Some(body)) = decoder.next_frame() {
            if let Ok(msg) = decode_message::<Message>(&body) {
                let again = encode_frame(&msg).expect("a decoded message re-encodes");
                let back: Message = decode_message(&again[4..]).expect("round trip");
                assert_eq!(back, msg);
            }
            let _ = decode_message::<StreamOpen>(&body);
        }
    }
}

/// Small bounds so one input stays fast; the properties hold for any bounds.
const SHELL_LIMITS: Limits = Limits {
    max_word_bytes: 64 << 10,
    max_result_bytes: 256 << 10,
    max_work_bytes: 4 << 20,
    max_depth: 100,
    max_match_steps: 1 << 20,
};

/// The shell expander (`dockerfile::shell::Lexer`, and the frontend's
/// `dockerfile::expand::Expander` over it). Byte 0 picks the options, the
/// rest (UTF-8) is the word, expanded against a fixed scope whose values
/// hold quotes, whitespace, `$` and patterns. Checked: no panic; results
/// and intermediate strings stay within [`Limits::max_result_bytes`];
/// `process_word` and `process_word_with_matches` agree; matched names are
/// set and unmatched ones are not; the frontend's fast path agrees with the
/// lexer.
pub fn shell_expand(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(rest) else {
        return;
    };
    let env: Vec<(String, String)> = [
        ("A", "a"),
        ("EMPTY", ""),
        ("SP", " x  y "),
        ("Q", "'\"\\`"),
        ("D", "$A${A}"),
        ("P", "*?/#%"),
        ("LONG", "abcabcabcabcabcabcabcabcabcabcabcabc"),
        ("path", "lower"),
        ("PATH", "upper"),
    ]
    .iter()
    .map(|&(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let escape = if flags & 1 == 0 { '\\' } else { '`' };
    let insensitive = flags & 32 != 0;
    let lexer = Lexer::new(escape)
        .raw_quotes(flags & 2 != 0)
        .raw_escapes(flags & 4 != 0)
        .skip_unset_env(flags & 8 != 0)
        .skip_process_quotes(flags & 16 != 0)
        .case_insensitive(insensitive)
        .limits(SHELL_LIMITS);
    let one = lexer.process_word(word, &env);
    let with = lexer.process_word_with_matches(word, &env);
    match (&one, &with) {
        (Ok(a), Ok(b)) => {
            assert_eq!(*a, b.result, "process_word and _with_matches disagree");
            assert!(
                a.len() <= SHELL_LIMITS.max_result_bytes,
                "result over the bound"
            );
            assert!(
                b.matched.is_disjoint(&b.unmatched),
                "a name both matched and unmatched: {b:?}"
            );
            if !insensitive {
                for name in &b.matched {
                    assert!(Env::get(&env, name).is_some(), "{name} matched but unset");
                }
                for name in &b.unmatched {
                    assert!(Env::get(&env, name).is_none(), "{name} unmatched but set");
                }
            }
        }
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("process_word {one:?} but _with_matches {with:?}"),
    }
    if let Ok(words) = lexer.process_words(word, &env) {
        for w in &words {
            assert!(
                w.len() <= SHELL_LIMITS.max_result_bytes,
                "field over the bound"
            );
        }
    }
    // The frontend's adapter: default options, default (larger) bounds, and
    // a fast path for words with nothing to expand. Where the small-bound
    // lexer succeeded, the adapter must give the same word.
    if flags & 0b11_1110 == 0 {
        if let Ok(expected) = &one {
            let got = Expander::new(escape).word(word, &env);
            assert_eq!(got.as_ref(), Ok(expected), "Expander disagrees with Lexer");
        }
    }
}

/// Apply a layer (gzip, zstd or plain tar, sniffed) into a fresh root
/// inside a fresh sandbox, next to a sibling directory and a file that
/// stand for "the host". Checked: no panic, and whatever the archive holds
/// (`..`, absolute paths, symlinks out, hardlinks to outside, whiteouts of
/// `..`) nothing outside the root is created, changed or removed. Devices
/// are never created (`DevicePolicy::Skip`) so a run as root cannot make
/// `/dev`-like nodes even inside the root. Byte 0 picks an `only` filter.
pub fn layer_apply(data: &[u8]) {
    let Some((&flags, archive)) = data.split_first() else {
        return;
    };
    let sandbox = tempfile::tempdir().expect("temp dir");
    let root = sandbox.path().join("root");
    let outside = sandbox.path().join("outside");
    std::fs::create_dir(&root).expect("root");
    std::fs::create_dir(&outside).expect("outside");
    std::fs::write(outside.join("file"), b"host").expect("host file");
    std::fs::write(sandbox.path().join("sibling"), b"host").expect("sibling");
    let before = snapshot(sandbox.path(), &root);
    let only = match flags % 4 {
        1 => Some(vec!["etc".to_owned()]),
        2 => Some(vec!["a/b".to_owned(), "c".to_owned()]),
        _ => None,
    };
    let opts = ApplyOptions {
        devices: DevicePolicy::Skip,
        max_entries: 10_000,
        max_uncompressed: 64 << 20,
        only,
        ..ApplyOptions::default()
    };
    let _ = apply(archive, &root, &opts);
    let after = snapshot(sandbox.path(), &root);
    assert_eq!(
        before, after,
        "the layer changed something outside its root"
    );
    // The root itself must still be a directory (not replaced by a link).
    let meta = std::fs::symlink_metadata(&root).expect("root still there");
    assert!(meta.is_dir(), "the root was replaced");
}

/// Everything under `dir` except `skip`, as (path, kind, content) lines.
fn snapshot(dir: &Path, skip: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            if p == skip {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).expect("stat");
            let line = if meta.is_dir() {
                stack.push(p.clone());
                format!("{} dir {:o}", p.display(), mode(&meta))
            } else if meta.file_type().is_symlink() {
                format!("{} link {:?}", p.display(), std::fs::read_link(&p))
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                format!("{} file {:o} {:?}", p.display(), mode(&meta), bytes)
            };
            out.push(line);
        }
    }
    out
}

fn mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode()
}

/// The JSON parsers used on registry answers and stored documents:
/// `oci::image::Document::parse` (manifest or index, OCI or Docker),
/// `ImageConfig::from_json`, the registry client's `manifest::parse`,
/// `media_type_of` and `config_platform`, and platform selection from a
/// parsed index. Byte 0 picks the `Content-Type` hint. Checked: no panic;
/// a parsed document serialises and parses back equal; a parsed config
/// round-trips through `to_json`; every digest the registry parser accepts
/// is a safe file name (no `/`, no `..`).
pub fn image_json(data: &[u8]) {
    let Some((&flags, body)) = data.split_first() else {
        return;
    };
    let hint = match flags % 6 {
        0 => None,
        1 => Some("application/vnd.oci.image.manifest.v1+json"),
        2 => Some("application/vnd.oci.image.index.v1+json"),
        3 => Some("application/vnd.docker.distribution.manifest.v2+json"),
        4 => Some("application/vnd.docker.distribution.manifest.list.v2+json"),
        _ => Some("text/plain; charset=utf-8"),
    };
    if let Ok(doc) = Document::parse(body, hint) {
        let again = match &doc {
            Document::Index(i) => {
                let request =
                    PlatformRequest::from(imgfarm_common::platform::Platform::linux_amd64());
                let _ = imgfarm_common::oci::image::select_manifests(i, &request);
                index_to_json(i).expect("a parsed index serialises")
            }
            Document::Manifest(m) => manifest_to_json(m).expect("a parsed manifest serialises"),
        };
        let back = Document::parse(&again, None).expect("a serialised document parses");
        assert_eq!(back, doc, "document round trip");
    }
    if let Ok(cfg) = ImageConfig::from_json(body) {
        let again = cfg.to_json().expect("a parsed config serialises");
        let back = ImageConfig::from_json(&again).expect("a serialised config parses");
        assert_eq!(back, cfg, "config round trip");
    }
    let _ = registry_manifest::media_type_of(body, hint);
    let _ = registry_manifest::config_platform(body);
    if let Ok((_, parsed)) = registry_manifest::parse(body, hint) {
        let descriptors = match &parsed {
            registry_manifest::Parsed::Index { manifests } => manifests.iter().collect::<Vec<_>>(),
            registry_manifest::Parsed::Image { config, layers } => {
                std::iter::once(config).chain(layers).collect()
            }
        };
        for d in descriptors {
            let name = d.digest.to_string();
            assert!(
                !name.contains('/') && !name.contains(".."),
                "unsafe digest {name}"
            );
        }
    }
}
