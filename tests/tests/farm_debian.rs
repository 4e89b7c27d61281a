//! Real-world Dockerfiles on the Debian bookworm base, built through the farm (a coordinator,
//! one amd64 worker and one worker claiming linux/arm64, all real `imgfarm` processes run by
//! the unprivileged farm user) and locally (`imgfarm build`, the same user and local store),
//! FROM the same image in a loopback registry: the two docker-archives must hold the same
//! file tree (type, content, mode, owner, hardlinks) and the same config. Only [`TIMESTAMPED`]
//! files may differ, and only in content.
//!
//! apt reaches the [`AptRepo`] on the host's non-loopback address, through the RUN steps' own
//! (pasta) network. One registry, apt repo and farm serve the whole binary and cases build one
//! at a time; every build has a deadline; timings are printed.

mod farm_support;
mod oracle_support;

use farm_support::build_support;
use farm_support::{lines_with, worker_of, Farm, Proc};
use imgfarm_testkit::{or_skip, require_tools_or_skip, AptRepo, DebianBase, Registry};
use oracle_support::tree::{Kind, Node, Tree};
use oracle_support::{read_docker_archive, Image};
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// Files whose content holds the time of the build, so two builds of one Dockerfile a few
/// seconds apart never agree on it: exactly the paths that differed when building these cases
/// (the same idea as the corpus's `realworld_support::TIMESTAMPED`, whose longer list is what
/// BuildKit needs against itself; eipp.log.xz, alternatives.log and debconf's `*-old` did not
/// differ here). Type, mode, owner and links must still match. /etc/shadow's last-change field
/// counts days, so it only differs if the two builds straddle midnight UTC.
const TIMESTAMPED: &[&str] = &[
    // "YYYY-MM-DD HH:MM:SS status installed jq:amd64 ..." lines.
    "var/log/dpkg.log",
    // "Start-Date:" / "End-Date:" of the install.
    "var/log/apt/history.log",
    // "Log started: ..." / "Log ended: ...".
    "var/log/apt/term.log",
    // apt's binary caches record the mtimes of the list files `apt-get update` just wrote.
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    // ldconfig's auxiliary cache records the ctime of each library it scanned.
    "var/cache/ldconfig/aux-cache",
];

/// What this binary's tests share: the registry holding the Debian base, the apt repo and
/// one farm (its workers unpack the base once). Dropped, processes first, with the last test.
struct Shared {
    /// The coordinator, `amd1` (linux/amd64) and `arm1` (claims linux/arm64, runs it under
    /// qemu).
    _procs: Vec<Proc>,
    farm: Farm,
    apt: AptRepo,
    /// `127.0.0.1:PORT/debian:bookworm` (index of linux/amd64 and linux/arm64).
    base: String,
    _registry: Registry,
}

static SHARED: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

/// Held while a case builds: the local builds and the farm client share one state dir, and on
/// 2 cores concurrent builds only blur the timings.
static BUILDS: Mutex<()> = Mutex::new(());

fn shared(test: &str) -> Option<Arc<Shared>> {
    let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = g.upgrade() {
        return Some(s);
    }
    if !require_tools_or_skip(test, &["skopeo"]) {
        return None;
    }
    let debian = or_skip(test, DebianBase::get())?;
    let apt = or_skip(test, AptRepo::start())?;
    let registry = or_skip(test, Registry::start())?;
    let t = Instant::now();
    debian
        .push_to(&registry, "debian", "bookworm")
        .expect("pushing the Debian base to the registry");
    let farm = Farm::new(test, &["amd1", "arm1"])?;
    let procs = vec![
        farm.start_coordinator(6),
        farm.start_worker("amd1", Some("linux/amd64"), 1),
        farm.start_worker("arm1", Some("linux/arm64"), 1),
    ];
    eprintln!(
        "pushed the Debian base and started the farm in {:.1?}",
        t.elapsed()
    );
    let s = Arc::new(Shared {
        _procs: procs,
        farm,
        apt,
        base: registry.image_ref("debian", "bookworm"),
        _registry: registry,
    });
    *g = Arc::downgrade(&s);
    Some(s)
}

const APT: &str = r#"ARG BASE
FROM $BASE
ARG APT_SOURCES
RUN echo "$APT_SOURCES" > /etc/apt/sources.list && apt-get update && apt-get install -y --no-install-recommends jq imgfarm-hello
RUN jq --version > /jq-version
"#;

const USERS: &str = r#"ARG BASE
FROM $BASE
RUN useradd -m app \
 && install -d -o app -g app -m 0700 /home/app/.ssh \
 && echo key > /home/app/.ssh/id_ed25519 && chown app:app /home/app/.ssh/id_ed25519 \
 && chmod 0600 /home/app/.ssh/id_ed25519 \
 && mkdir /locked && chmod 0000 /locked \
 && touch /suid /sgid /sticky-file && chmod 4755 /suid && chgrp app /sgid && chmod 2755 /sgid \
 && chmod 1644 /sticky-file && mkdir /sticky && chmod 1777 /sticky \
 && mkdir -p /a /b && echo linked > /a/f && ln /a/f /b/g \
 && mkdir -p /srv/scratch/sub && echo x > /srv/scratch/sub/f \
 && chown -R app:app /srv/scratch && chmod 0700 /srv/scratch/sub && chmod 0600 /srv/scratch/sub/f
RUN rm -rf /srv/scratch
COPY --chown=app:app --chmod=0640 config.txt /home/app/config.txt
USER app
RUN echo notes > /home/app/notes && mkdir /home/app/data && chmod 0750 /home/app/data
"#;

/// `&str`s of `v`.
fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Deadline of one build (local or farm) of `platform`; arm64 runs under qemu.
fn deadline(platform: &str) -> Duration {
    if platform == "linux/arm64" {
        Duration::from_secs(480)
    } else {
        Duration::from_secs(180)
    }
}

/// One case built both ways: the farm's progress output and both images.
struct Built {
    farm_log: String,
    local: Image,
    farm: Image,
}

/// Build the context `files` for `platform` with `BASE` (the Debian image) and `build_args`
/// (`NAME=VALUE`) locally, then through the farm, both to docker-archives, and assert they
/// agree (see the module docs). `case` names the context dir and archives.
fn build_both(
    s: &Shared,
    case: &str,
    platform: &str,
    files: &[(&str, &str)],
    build_args: &[String],
) -> Built {
    let _serial = BUILDS.lock().unwrap_or_else(|e| e.into_inner());
    let farm = &s.farm;
    let ctx = farm.env.context(case, files);
    let mut build_args = build_args.to_vec();
    build_args.push(format!("BASE={}", s.base));
    let archive = |how: &str| farm.env.work.path().join(format!("{case}-{how}.tar"));
    let args = |dest: &Path| -> Vec<String> {
        let mut v = vec!["--platform".to_string(), platform.to_string()];
        for a in &build_args {
            v.extend(["--build-arg".to_string(), a.clone()]);
        }
        v.extend([
            "-o".to_string(),
            format!("type=docker,dest={}", dest.display()),
            ctx.display().to_string(),
        ]);
        v
    };

    let local_args = args(&archive("local"));
    let t = Instant::now();
    let local_log = farm.local_build_within(&argv(&local_args), deadline(platform));
    let local_time = t.elapsed();
    let farm_args = args(&archive("farm"));
    let t = Instant::now();
    let farm_log = farm.build_within(&argv(&farm_args), deadline(platform));
    let farm_time = t.elapsed();
    let t = Instant::now();
    let local = read_docker_archive(&archive("local"));
    let farm_img = read_docker_archive(&archive("farm"));
    let mut d = tree_diff(&farm_img.tree, &local.tree);
    d.extend(config_diff(&farm_img.config, &local.config));
    eprintln!(
        "{case} ({platform}): local build {local_time:.1?}, farm build {farm_time:.1?}, \
         comparing {:.1?}",
        t.elapsed()
    );
    assert!(
        d.is_empty(),
        "{case}: the farm and the local build differ in {} ways:\n{}\n--- farm log ---\n{farm_log}\n--- local log ---\n{local_log}",
        d.len(),
        d[..d.len().min(60)].join("\n")
    );
    Built {
        farm_log,
        local,
        farm: farm_img,
    }
}

/// Whether `path` is one of [`TIMESTAMPED`].
fn timestamped(path: &str) -> bool {
    TIMESTAMPED.contains(&path)
}

/// `tree::diff` of `ours` and `reference` with the content of [`TIMESTAMPED`] files (regular
/// files on both sides) left out; the ones that did differ are printed.
fn tree_diff(ours: &Tree, reference: &Tree) -> Vec<String> {
    let masked = |t: &Tree| -> Tree {
        t.iter()
            .map(|(p, n)| {
                let n = match (&n.kind, reference.get(p).map(|r| &r.kind)) {
                    (Kind::File(a), Some(Kind::File(b))) if timestamped(p) && a != b => {
                        eprintln!("  /{p}: content differs (timestamped)");
                        Node {
                            kind: Kind::File("timestamped".into()),
                            ..n.clone()
                        }
                    }
                    _ => n.clone(),
                };
                (p.clone(), n)
            })
            .collect()
    };
    let ours = masked(ours);
    let reference: Tree = reference
        .iter()
        .map(|(p, n)| match (&n.kind, ours.get(p).map(|o| &o.kind)) {
            (Kind::File(_), Some(Kind::File(o))) if o == "timestamped" => (
                p.clone(),
                Node {
                    kind: Kind::File("timestamped".into()),
                    ..n.clone()
                },
            ),
            _ => (p.clone(), n.clone()),
        })
        .collect();
    // tree::diff speaks of imgfarm and BuildKit; here both are imgfarm.
    oracle_support::tree::diff(&ours, &reference)
        .into_iter()
        .map(|l| {
            l.replace("only in imgfarm: ", "only on the farm:")
                .replace("only in buildkit:", "only locally:    ")
                .replace("imgfarm:  ", "farm:  ")
                .replace("buildkit: ", "local: ")
        })
        .collect()
}

/// The config fields that describe the image (everything but the `created` times).
fn config_diff(ours: &serde_json::Value, reference: &serde_json::Value) -> Vec<String> {
    let history = |c: &serde_json::Value| -> Vec<serde_json::Value> {
        c["history"]
            .as_array()
            .map(|h| {
                h.iter()
                    .map(|e| serde_json::json!([e["created_by"], e["empty_layer"], e["comment"]]))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for f in ["architecture", "os", "variant", "config"] {
        if ours[f] != reference[f] {
            out.push(format!(
                "config {f}:\n    farm:  {}\n    local: {}",
                ours[f], reference[f]
            ));
        }
    }
    if history(ours) != history(reference) {
        out.push(format!(
            "config history:\n    farm:  {:?}\n    local: {:?}",
            history(ours),
            history(reference)
        ));
    }
    let layers = |c: &serde_json::Value| c["rootfs"]["diff_ids"].as_array().map(Vec::len);
    if layers(ours) != layers(reference) {
        out.push(format!(
            "layer count: farm {:?}, local {:?}",
            layers(ours),
            layers(reference)
        ));
    }
    out
}

/// Every progress line of a `RUN` names `worker`, not emulated (as far as the farm knows).
fn assert_runs_on(log: &str, worker: &str) {
    let runs: Vec<&str> = lines_with(log, "RUN ")
        .into_iter()
        .filter(|l| l.contains("(worker "))
        .collect();
    assert!(!runs.is_empty(), "no RUN line names a worker:\n{log}");
    for l in runs {
        assert_eq!(worker_of(l).as_deref(), Some(worker), "{l}\n{log}");
        assert!(!l.contains("emulated"), "{l}");
    }
}

fn node<'a>(t: &'a Tree, p: &str) -> &'a Node {
    t.get(p)
        .unwrap_or_else(|| panic!("{p} missing from the image"))
}

/// `Kind::File` of a file holding `content`.
fn file_of(content: &str) -> Kind {
    use sha2::Digest as _;
    Kind::File(hex::encode(sha2::Sha256::digest(content.as_bytes())))
}

/// The apt case on `platform`: checks both images agree and what apt and the postinst left.
fn apt_case(test: &str, platform: &str, worker: &str) {
    let Some(s) = shared(test) else {
        return;
    };
    let arch = platform.trim_start_matches("linux/");
    let b = build_both(
        &s,
        &format!("apt-{arch}"),
        platform,
        &[("Dockerfile", APT)],
        &[format!("APT_SOURCES={}", s.apt.sources_line())],
    );
    assert_runs_on(&b.farm_log, worker);
    assert_eq!(b.farm.config["architecture"], arch);
    assert_eq!(b.local.config["architecture"], arch);
    let t = &b.farm.tree;
    // bookworm's jq 1.6, run on the image's architecture.
    assert_eq!(
        node(t, "jq-version").kind,
        file_of("jq-1.6\n"),
        "/jq-version"
    );
    assert!(matches!(node(t, "usr/bin/jq").kind, Kind::File(_)));
    // The postinst's system user owns its 0750 dir and 0640 file (not root, not the farm user).
    let dir = node(t, "var/lib/imgfarm-hello");
    let state = node(t, "var/lib/imgfarm-hello/state");
    assert_eq!((dir.kind.clone(), dir.mode), (Kind::Dir, 0o750));
    assert_eq!(state.mode, 0o640);
    assert!(dir.uid > 0 && dir.uid < 1000, "system uid: {}", dir.uid);
    assert_eq!((state.uid, state.gid), (dir.uid, dir.gid));
}

#[test]
fn apt_install_on_the_farm_matches_the_local_build() {
    apt_case(
        "apt_install_on_the_farm_matches_the_local_build",
        "linux/amd64",
        "amd1",
    );
}

#[test]
fn arm64_apt_install_runs_on_the_arm64_worker_and_matches_the_local_build() {
    apt_case(
        "arm64_apt_install_runs_on_the_arm64_worker_and_matches_the_local_build",
        "linux/arm64",
        "arm1",
    );
}

#[test]
fn users_owners_and_modes_on_the_farm_match_the_local_build() {
    let test = "users_owners_and_modes_on_the_farm_match_the_local_build";
    let Some(s) = shared(test) else {
        return;
    };
    let b = build_both(
        &s,
        "users",
        "linux/amd64",
        &[("Dockerfile", USERS), ("config.txt", "setting = 1\n")],
        &[],
    );
    assert_runs_on(&b.farm_log, "amd1");
    assert_eq!(b.farm.config["config"]["User"], "app");
    let t = &b.farm.tree;
    let meta = |p: &str| {
        let n = node(t, p);
        (n.uid, n.gid, n.mode)
    };
    // useradd -m in the minbase image: the first user is 1000:1000.
    assert_eq!(meta("home/app"), (1000, 1000, 0o755));
    assert_eq!(meta("home/app/.ssh"), (1000, 1000, 0o700));
    assert_eq!(meta("home/app/.ssh/id_ed25519"), (1000, 1000, 0o600));
    assert_eq!(meta("home/app/config.txt"), (1000, 1000, 0o640));
    assert_eq!(meta("home/app/notes"), (1000, 1000, 0o644));
    assert_eq!(meta("home/app/data"), (1000, 1000, 0o750));
    assert_eq!(meta("locked"), (0, 0, 0o000));
    assert_eq!(meta("suid"), (0, 0, 0o4755));
    assert_eq!(meta("sgid"), (0, 1000, 0o2755));
    assert_eq!(meta("sticky-file"), (0, 0, 0o1644));
    assert_eq!(meta("sticky"), (0, 0, 0o1777));
    assert_eq!(node(t, "b/g").links, ["a/f"], "hardlink across dirs");
    assert!(
        !t.keys().any(|k| k.starts_with("srv/scratch")),
        "rm -rf of a dir owned by app is a whiteout"
    );
    assert_eq!(node(t, "home/app/notes").kind, file_of("notes\n"));
}
