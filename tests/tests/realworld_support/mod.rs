//! The real-world corpus (`tests/realworld/<case>/`): Dockerfiles as people write them on a real
//! Debian 12 base, built with BuildKit (dockerd 20.10, `--network host`, as its dockerd has no
//! bridge) and with imgfarm (its default isolated RUN network), rootless as the farm user and,
//! for the ownership and permission cases, also as root. The exported images are compared file by file (type, mode
//! with setuid/setgid/sticky, uid/gid, content, xattrs, symlink targets, hardlink groups) and by
//! config, with one written exception: [`TIMESTAMPED`].
//!
//! One dockerd, registry and apt repo serve the whole corpus; cases run `IMGFARM_REALWORLD_JOBS`
//! (default 2) at a time; `IMGFARM_REALWORLD=case,case` picks cases;
//! `IMGFARM_REALWORLD_SELFCHECK=1` compares BuildKit with a second `--no-cache` BuildKit build
//! instead of imgfarm (this is how [`TIMESTAMPED`] was checked to be complete);
//! `IMGFARM_REALWORLD_LOGS=DIR` keeps imgfarm's build logs there.

#![allow(dead_code)]

use crate::build_support::{copy_dir, imgfarm_bin};
use crate::oracle_support::{
    config_diff, docker_build, extra_args, imgfarm_build, tree, DockerBuild, Image, ImgfarmBuild,
};
use imgfarm_testkit::{in_ci, or_skip, skip, AptRepo, DebianBase, Dockerd, FarmUser, Registry};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tree::MayDiffer;

/// Files whose *content* holds a build-time timestamp, so two builds of the same Dockerfile
/// never agree on it (checked with `IMGFARM_REALWORLD_SELFCHECK=1`: BuildKit against itself).
/// For these paths, and only these, the content may differ as stated ([`MayDiffer::Content`]:
/// content and size; [`MayDiffer::PycSourceMtime`]: the 4-byte source mtime of a .pyc header);
/// type, mode, owner, xattrs and hardlinks must still match. `*` matches within one path
/// segment. Nothing else gets a pass.
pub const TIMESTAMPED: &[(&str, MayDiffer)] = &[
    // dpkg: one "YYYY-MM-DD HH:MM:SS status/configure/..." line per action.
    ("var/log/dpkg.log", MayDiffer::Content),
    // apt: "Start-Date:"/"End-Date:" of each run (history) and "Log started:" (term).
    ("var/log/apt/history.log", MayDiffer::Content),
    ("var/log/apt/term.log", MayDiffer::Content),
    // update-alternatives: "update-alternatives YYYY-MM-DD HH:MM:SS: ..." lines.
    ("var/log/alternatives.log", MayDiffer::Content),
    // ldconfig's auxiliary cache: the ctime/mtime of each library it scanned.
    ("var/cache/ldconfig/aux-cache", MayDiffer::Content),
    // apt's binary caches: the mtimes of the list files they were built from.
    ("var/cache/apt/pkgcache.bin", MayDiffer::Content),
    ("var/cache/apt/srcpkgcache.bin", MayDiffer::Content),
    // debconf's backups of its databases, written with the time of the previous run.
    ("var/cache/debconf/*-old", MayDiffer::Content),
    // Bytecode pip compiles at install: the header holds the mtime the .py got at install.
    (
        "usr/local/lib/python3.11/dist-packages/*/__pycache__/*.pyc",
        MayDiffer::PycSourceMtime,
    ),
];

/// What [`TIMESTAMPED`] lets differ for `path` (no leading `/`).
pub fn timestamped(path: &str) -> MayDiffer {
    TIMESTAMPED
        .iter()
        .find(|(pat, _)| glob_match(pat, path))
        .map_or(MayDiffer::Nothing, |(_, m)| *m)
}

/// `*` matches any run of characters except `/`; everything else literally.
pub fn glob_match(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((pre, rest)) => {
            let Some(tail) = s.strip_prefix(pre) else {
                return false;
            };
            (0..=tail.len())
                .take_while(|&i| i == 0 || !tail[..i].contains('/'))
                .filter(|&i| tail.is_char_boundary(i))
                .any(|i| glob_match(rest, &tail[i..]))
        }
    }
}

/// Files made in a case's context at test time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gen {
    None,
    /// `imgfarm-hello.deb`: the apt repo's package (`AptRepo::hello_deb`).
    HelloDeb,
    /// `dist/rwdemo-1.0-py3-none-any.whl`, zipped by /usr/bin/python3 with fixed dates.
    Wheel,
    /// `tree/dNNN/fNN`: 200 dirs of 100 files (20,000 files).
    Files20k,
}

/// One corpus case: `tests/realworld/<name>/`.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// Also build with imgfarm run as root (ownership and permission cases).
    pub root: bool,
    pub platform: &'static str,
    pub gen: Gen,
    /// Per build; a hang fails the case instead of blocking CI.
    pub timeout_s: u64,
}

const fn case(name: &'static str, root: bool) -> Case {
    Case {
        name,
        root,
        platform: "linux/amd64",
        gen: Gen::None,
        timeout_s: 300,
    }
}

/// The corpus, slowest first (so the pool ends with short cases).
pub const CASES: &[Case] = &[
    Case {
        platform: "linux/arm64",
        timeout_s: 900,
        ..case("apt_arm64_emulated", false)
    },
    case("gcc_static_multistage", false),
    Case {
        gen: Gen::Wheel,
        ..case("pip_wheel", false)
    },
    Case {
        gen: Gen::Files20k,
        timeout_s: 600,
        ..case("context_20k", false)
    },
    case("apt_install_jq", false),
    case("apt_install_clean", false),
    case("apt_cache_mounts", false),
    case("apt_hello_postinst", true),
    case("setcap_binary", true),
    Case {
        gen: Gen::HelloDeb,
        ..case("dpkg_install_deb", true)
    },
    case("useradd_homes", true),
    case("install_dirs", true),
    case("modes_nonroot", true),
    case("special_bits", true),
    case("user_home_write", true),
    case("workdir_owned", true),
    case("copy_chown_chmod", true),
    case("copy_up_nonroot", true),
    case("whiteouts_nonroot", true),
    case("hardlinks_across_dirs", true),
    case("empty_dir_0000", true),
    case("symlinks_fifo_owned", true),
    Case {
        timeout_s: 120,
        ..case("sigpipe_readers", false)
    },
];

/// What a case must show in BuildKit's image, so a pass is never vacuous (both builders
/// missing the point of the case): path and a check on its node (`None`: the path is absent).
type Check = fn(Option<&tree::Node>) -> bool;
pub const EXPECT: &[(&str, &str, Check)] = &[
    ("apt_install_jq", "usr/bin/jq", |n| n.is_some()),
    ("apt_install_clean", "var/lib/apt/lists/lock", |n| {
        n.is_none()
    }),
    ("apt_hello_postinst", "var/lib/imgfarm-hello/state", |n| {
        n.is_some_and(|n| n.mode == 0o640 && n.uid != 0 && n.uid < 1000)
    }),
    ("apt_cache_mounts", "usr/bin/imgfarm-hello", |n| n.is_some()),
    ("apt_arm64_emulated", "arch.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("aarch64\narm64\n")
    }),
    ("setcap_binary", "usr/local/bin/rawsleep", |n| {
        n.is_some_and(|n| n.xattrs.contains_key("security.capability"))
    }),
    ("modes_nonroot", "owned", |n| {
        n.is_some_and(|n| (n.mode, n.uid, n.gid) == (0o600, 1000, 2000))
    }),
    ("modes_nonroot", "m/f0000", |n| {
        n.is_some_and(|n| n.mode == 0)
    }),
    ("special_bits", "usr/local/bin/suid-true", |n| {
        n.is_some_and(|n| n.mode == 0o4755)
    }),
    ("special_bits", "stick-owned", |n| {
        n.is_some_and(|n| n.mode == 0o3770)
    }),
    ("install_dirs", "data/private/secret", |n| {
        n.is_some_and(|n| n.mode == 0o600 && n.uid == 1000)
    }),
    ("useradd_homes", "home/app/.bashrc", |n| {
        n.is_some_and(|n| n.uid == 1001)
    }),
    ("user_home_write", "home/app/.secret", |n| {
        n.is_some_and(|n| n.mode == 0o600 && n.uid == 1000)
    }),
    ("workdir_owned", "srv/app/made-by-app", |n| {
        n.is_some_and(|n| n.uid == 1000)
    }),
    ("copy_chown_chmod", "home/app/.env", |n| {
        n.is_some_and(|n| n.mode == 0o600 && n.uid == 1100)
    }),
    ("copy_up_nonroot", "app/data/f", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("x\ny\n")
    }),
    ("whiteouts_nonroot", "srv/cache", |n| n.is_none()),
    ("whiteouts_nonroot", "usr/share/man", |n| n.is_none()),
    ("hardlinks_across_dirs", "b/c/h", |n| {
        n.is_some_and(|n| n.links.len() == 2)
    }),
    ("empty_dir_0000", "locked", |n| {
        n.is_some_and(|n| n.mode == 0)
    }),
    ("symlinks_fifo_owned", "links/fifo", |n| {
        n.is_some_and(|n| n.kind == tree::Kind::Fifo && n.uid == 1000)
    }),
    ("dpkg_install_deb", "hello.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("hello from imgfarm-hello\n")
    }),
    ("pip_wheel", "cli.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("hello from rwdemo\n")
    }),
    ("gcc_static_multistage", "output.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("hello, imgfarm (7)\n")
    }),
    ("context_20k", "count.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("20000\n201\n")
    }),
    ("sigpipe_readers", "pipestatus.txt", |n| {
        n.and_then(|n| n.text.as_deref())
            == Some("yes|head: 141 0\nfind|head: 141 0\ncat|head|wc: 141 0 0\n")
    }),
    ("sigpipe_readers", "sigpipe-ignored.txt", |n| {
        n.and_then(|n| n.text.as_deref()) == Some("SIGPIPE ignored: 0\n")
    }),
];

/// The [`EXPECT`] checks of `case` that `t` fails, one line each.
pub fn unmet_expectations(case: &str, t: &tree::Tree) -> Vec<String> {
    EXPECT
        .iter()
        .filter(|(c, p, check)| *c == case && !check(t.get(*p)))
        .map(|(_, p, _)| match t.get(*p) {
            Some(n) => format!("/{p} is not as the case expects: {n:?}"),
            None => format!("/{p} is missing"),
        })
        .collect()
}

/// The repo's `tests/realworld`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("realworld")
}

/// Outcome of one build compared with BuildKit.
#[derive(Debug, Clone)]
pub enum Outcome {
    Pass,
    /// The build failed (first error line, then the log tail).
    BuildFailed(String),
    /// Built, but differs (every difference).
    Differs(Vec<String>),
    Skipped(String),
    NotRun,
}

impl Outcome {
    fn short(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::BuildFailed(_) => "BUILD FAILED",
            Outcome::Differs(_) => "DIFFERS",
            Outcome::Skipped(_) => "skipped",
            Outcome::NotRun => "-",
        }
    }

    fn failed(&self) -> bool {
        matches!(self, Outcome::BuildFailed(_) | Outcome::Differs(_))
    }

    /// The first mismatch or error, for the summary.
    fn first(&self) -> String {
        match self {
            Outcome::BuildFailed(e) => first_error(e),
            Outcome::Differs(d) => format!(
                "{} difference(s), first: {}",
                d.len(),
                d.first().map(String::as_str).unwrap_or("")
            ),
            Outcome::Skipped(r) => r.clone(),
            _ => String::new(),
        }
    }
}

/// The most telling lines of a failed build log: the first step `#N ERROR:` line (shortened),
/// after the step's last output line when it had one (the command's own complaint); else the
/// first line that says error, failed or denied.
pub fn first_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let first = lines.first().copied().unwrap_or("");
    let short = |l: &str| -> String {
        let l = l.trim();
        match l.char_indices().nth(240) {
            Some((i, _)) => format!("{}...", &l[..i]),
            None => l.to_string(),
        }
    };
    let is_step_error = |l: &str| {
        l.starts_with('#')
            && l.split_once(' ')
                .is_some_and(|(_, r)| r.starts_with("ERROR"))
    };
    if let Some(i) = lines.iter().position(|l| is_step_error(l)) {
        let before = i
            .checked_sub(1)
            .map(|j| lines[j])
            .filter(|l| l.starts_with('#') && !is_step_error(l) && !l.contains(" DONE "))
            .filter(|l| {
                l.split(' ')
                    .nth(1)
                    .is_some_and(|t| t.parse::<f64>().is_ok())
            });
        return match before {
            Some(b) => format!("{first} {} | {}", short(b), short(lines[i])),
            None => format!("{first} {}", short(lines[i])),
        };
    }
    let hit = lines
        .iter()
        .skip(1)
        .find(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("failed") || l.contains("denied")
        })
        .copied()
        .unwrap_or("");
    format!("{first} {}", short(hit))
}

/// Results of one case.
#[derive(Debug, Clone)]
pub struct Report {
    pub case: &'static str,
    pub buildkit: Result<Duration, String>,
    pub rootless: (Outcome, Duration),
    pub root: (Outcome, Duration),
}

/// Everything the cases share.
struct Shared {
    user: FarmUser,
    bin: PathBuf,
    base: String,
    dev: String,
    args: Vec<(String, String)>,
    dockerd: Dockerd,
    hello_deb: PathBuf,
    /// imgfarm states (the farm user's, root's), shared by all cases, so each base image is
    /// pulled and unpacked once per state, and parallel cases run parallel builds on one state
    /// (which raced on unpacking one base until the per-snapshot flock of 1bf487a).
    user_state: imgfarm_testkit::UserTempDir,
    root_state: tempfile::TempDir,
    /// Contexts and outputs.
    user_work: imgfarm_testkit::UserTempDir,
    root_work: tempfile::TempDir,
    selfcheck: bool,
}

/// Write a line to stderr even when libtest captures output (progress and timings).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Build the whole corpus and panic listing every failed case.
pub fn run_corpus(test: &str) {
    let started = Instant::now();
    let dirs: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("tests/realworld")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for d in &dirs {
        assert!(
            CASES.iter().any(|c| c.name == d),
            "tests/realworld/{d} has no entry in CASES"
        );
    }
    for c in CASES {
        assert!(
            dirs.iter().any(|d| d == c.name),
            "CASES names {} but tests/realworld/{} is missing",
            c.name,
            c.name
        );
    }
    let only: Option<Vec<String>> = std::env::var("IMGFARM_REALWORLD")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    let cases: Vec<Case> = CASES
        .iter()
        .filter(|c| only.as_ref().is_none_or(|o| o.iter().any(|n| n == c.name)))
        .copied()
        .collect();
    assert!(!cases.is_empty(), "IMGFARM_REALWORLD selects no case");

    let Some(user) = or_skip(test, FarmUser::get()) else {
        return;
    };
    let Some(debian) = or_skip(test, DebianBase::get()) else {
        return;
    };
    let Some(registry) = or_skip(test, Registry::start()) else {
        return;
    };
    let Some(apt) = or_skip(test, AptRepo::start()) else {
        return;
    };
    let t = Instant::now();
    debian
        .push_to(&registry, "debian", "bookworm")
        .expect("pushing debian:bookworm");
    debian
        .push_dev_to(&registry, "debian", "bookworm-dev")
        .expect("pushing debian:bookworm-dev");
    let Some(dockerd) = or_skip(test, Dockerd::start(Some(registry.addr()))) else {
        return;
    };
    let base = registry.image_ref("debian", "bookworm");
    let dev = registry.image_ref("debian", "bookworm-dev");
    let jobs: usize = std::env::var("IMGFARM_REALWORLD_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, cases.len());
    let shared = Shared {
        bin: imgfarm_bin(),
        args: vec![
            ("BASE".to_string(), base.clone()),
            ("DEV".to_string(), dev.clone()),
            ("APT".to_string(), apt.sources_line()),
        ],
        base,
        dev,
        dockerd,
        hello_deb: apt.hello_deb().to_path_buf(),
        user_state: user.tempdir().expect("user state dir"),
        root_state: tempfile::tempdir().expect("root state dir"),
        user_work: user.tempdir().expect("user work dir"),
        root_work: tempfile::tempdir().expect("root work dir"),
        user,
        selfcheck: env_flag("IMGFARM_REALWORLD_SELFCHECK"),
    };
    say(&format!(
        "realworld: registry, apt repo ({}) and dockerd ready in {:.1}s",
        apt.sources_line(),
        t.elapsed().as_secs_f64()
    ));

    let next = AtomicUsize::new(0);
    let reports: Mutex<Vec<Report>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(c) = cases.get(i) else { break };
                let r = run_case(&shared, c);
                say(&line(&r));
                reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
            });
        }
    });
    let mut reports = reports.into_inner().unwrap_or_else(|e| e.into_inner());
    reports.sort_by_key(|r| CASES.iter().position(|c| c.name == r.case));

    say(&format!(
        "\nrealworld summary ({} cases, {} jobs, {:.0}s in all){}:",
        reports.len(),
        jobs,
        started.elapsed().as_secs_f64(),
        if shared.selfcheck {
            "; SELFCHECK: the 'rootless' column is BuildKit --no-cache against BuildKit"
        } else {
            ""
        }
    ));
    for r in &reports {
        say(&line(r));
    }
    let mut failures = Vec::new();
    for r in &reports {
        if let Err(e) = &r.buildkit {
            failures.push(format!("{}: BuildKit: {e}", r.case));
        }
        for (who, (o, _)) in [("rootless", &r.rootless), ("root", &r.root)] {
            match o {
                Outcome::BuildFailed(log) => {
                    failures.push(format!("{} ({who}): {}", r.case, tail(log, 25)))
                }
                Outcome::Differs(d) => {
                    let shown = d.len().min(25);
                    failures.push(format!(
                        "{} ({who}): {} difference(s) with BuildKit:\n{}{}",
                        r.case,
                        d.len(),
                        d[..shown].join("\n"),
                        if d.len() > shown { "\n..." } else { "" }
                    ))
                }
                Outcome::Skipped(why) if in_ci() => {
                    failures.push(format!("{} ({who}) cannot run in CI: {why}", r.case))
                }
                _ => {}
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} realworld case(s) failed:\n\n{}",
            reports
                .iter()
                .filter(|r| r.buildkit.is_err() || r.rootless.0.failed() || r.root.0.failed())
                .count(),
            reports.len(),
            failures.join("\n\n")
        );
    }
}

fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let first = lines.first().copied().unwrap_or("");
    let rest = &lines[lines.len().saturating_sub(n)..];
    format!("{first}\n  ...\n{}", rest.join("\n"))
}

fn line(r: &Report) -> String {
    let bk = match &r.buildkit {
        Ok(d) => format!("{:6.1}s", d.as_secs_f64()),
        Err(_) => "FAILED ".to_string(),
    };
    let col = |(o, d): &(Outcome, Duration)| match o {
        Outcome::NotRun => format!("{:<20}", "-"),
        _ => format!("{:<13}{:6.1}s", o.short(), d.as_secs_f64()),
    };
    let mut s = format!(
        "realworld {:<24} buildkit {bk}  rootless {}  root {}",
        r.case,
        col(&r.rootless),
        col(&r.root)
    );
    for (who, (o, _)) in [("rootless", &r.rootless), ("root", &r.root)] {
        if o.failed() || matches!(o, Outcome::Skipped(_)) {
            s.push_str(&format!("\n    {who}: {}", o.first()));
        }
    }
    if let Err(e) = &r.buildkit {
        s.push_str(&format!("\n    buildkit: {}", first_error(e)));
    }
    s
}

/// Why a case can't run here, if it can't.
fn missing_prerequisite(c: &Case) -> Option<String> {
    if c.platform == "linux/arm64"
        && std::env::consts::ARCH != "aarch64"
        && !Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists()
    {
        return Some(
            "qemu-aarch64 is not registered in binfmt_misc (run `sudo scripts/setup.sh`)"
                .to_string(),
        );
    }
    None
}

fn run_case(sh: &Shared, c: &Case) -> Report {
    let (user_state, root_state) = (&sh.user_state, &sh.root_state);
    let mut report = Report {
        case: c.name,
        buildkit: Err("not run".to_string()),
        rootless: (Outcome::NotRun, Duration::ZERO),
        root: (Outcome::NotRun, Duration::ZERO),
    };
    if let Some(why) = missing_prerequisite(c) {
        skip(&format!("realworld {}", c.name), &why);
        report.buildkit = Ok(Duration::ZERO);
        report.rootless.0 = Outcome::Skipped(why.clone());
        if c.root {
            report.root.0 = Outcome::Skipped(why);
        }
        return report;
    }
    say(&format!("realworld {}: building", c.name));
    let timeout = Duration::from_secs(c.timeout_s);
    // Root's copy of the context serves BuildKit and imgfarm-as-root; the farm user gets its own.
    let root_ctx = sh.root_work.path().join(c.name);
    make_context(sh, c, &root_ctx);
    let extra = extra_args(&root_ctx);

    let tag = format!("realworld/{}:latest", c.name);
    // BuildKit, with RUN on the host network (its dockerd has no bridge), saved and read.
    let buildkit = |tag: &str, no_cache: bool| {
        let dest = sh.root_work.path().join(format!("{}-buildkit.tar", c.name));
        let build = DockerBuild {
            ctx: &root_ctx,
            tag,
            platform: c.platform,
            network: "host",
            build_args: &sh.args,
            extra: &extra,
            no_cache,
            timeout,
        };
        let r = docker_build(&sh.dockerd, &build, &dest);
        let _ = std::fs::remove_file(&dest);
        r
    };
    let t = Instant::now();
    let bk = buildkit(&tag, false);
    report.buildkit = bk.as_ref().map(|_| t.elapsed()).map_err(|e| e.clone());
    let Ok(reference) = bk else {
        return report;
    };
    let unmet = unmet_expectations(c.name, &reference.tree);
    if !unmet.is_empty() {
        report.buildkit = Err(format!(
            "BuildKit's image lacks what the case is about:\n{}",
            unmet.join("\n")
        ));
        return report;
    }

    if sh.selfcheck {
        let t = Instant::now();
        let r = buildkit(&format!("realworld/{}:again", c.name), true);
        if let Ok(again) = &r {
            // Show what the rule excused: each entry must be a real timestamp, not a bug.
            let all = tree::diff(&again.tree, &reference.tree);
            let excused: Vec<&str> = all
                .iter()
                .filter_map(|l| l.strip_prefix("differs /"))
                .filter_map(|l| l.split(':').next())
                .filter(|p| timestamped(p) != MayDiffer::Nothing)
                .collect();
            say(&format!("realworld {}: rule excused {excused:?}", c.name));
        }
        report.rootless = (
            compare(r.map(|i| (i, String::new())), &reference),
            t.elapsed(),
        );
        return report;
    }

    // imgfarm, rootless as the farm user; then as root.
    let imgfarm =
        |who: &str, prefix: std::process::Command, state: &Path, ctx: &Path, out: &Path| {
            let t = Instant::now();
            let dest = out.join(format!("{}-imgfarm-{who}.tar", c.name));
            let build = ImgfarmBuild {
                ctx,
                tag: &tag,
                platform: c.platform,
                build_args: &sh.args,
                extra: &extra,
                timeout,
            };
            let r = imgfarm_build(prefix, &sh.bin, state, &build, &dest);
            let _ = std::fs::remove_file(&dest);
            keep_log(c.name, who, &r);
            (compare(r, &reference), t.elapsed())
        };
    let user_ctx = sh.user_work.path().join(c.name);
    make_context(sh, c, &user_ctx);
    chown_to_user(&sh.user, &user_ctx);
    report.rootless = imgfarm(
        "rootless",
        sh.user.command("timeout"),
        user_state.path(),
        &user_ctx,
        sh.user_work.path(),
    );
    if c.root {
        report.root = imgfarm(
            "root",
            std::process::Command::new("timeout"),
            root_state.path(),
            &root_ctx,
            sh.root_work.path(),
        );
    }
    report
}

/// With `IMGFARM_REALWORLD_LOGS=DIR`, write imgfarm's build log to `DIR/<case>-<who>.log`.
fn keep_log(case: &str, who: &str, r: &Result<(Image, String), String>) {
    let Some(dir) = std::env::var_os("IMGFARM_REALWORLD_LOGS") else {
        return;
    };
    let log = match r {
        Ok((_, log)) => log,
        Err(log) => log,
    };
    let dir = PathBuf::from(dir);
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{case}-{who}.log")), log);
}

/// Compare a build result with the BuildKit image under the [`TIMESTAMPED`] rule.
fn compare(r: Result<(Image, String), String>, reference: &Image) -> Outcome {
    match r {
        Err(log) => Outcome::BuildFailed(log),
        Ok((ours, _log)) => {
            let mut d = tree::diff_with(&ours.tree, &reference.tree, &timestamped);
            d.extend(config_diff(&ours.config, &reference.config));
            if d.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Differs(d)
            }
        }
    }
}

fn chown_to_user(user: &FarmUser, dir: &Path) {
    let st = std::process::Command::new("chown")
        .arg("-R")
        .arg(format!("{}:{}", user.uid(), user.gid()))
        .arg(dir)
        .status()
        .expect("chown");
    assert!(st.success(), "chown -R {}", dir.display());
}

/// Copy the case into `dst` and generate its test-time files.
fn make_context(sh: &Shared, c: &Case, dst: &Path) {
    copy_dir(&corpus_dir().join(c.name), dst);
    match c.gen {
        Gen::None => {}
        Gen::HelloDeb => {
            std::fs::copy(&sh.hello_deb, dst.join("imgfarm-hello.deb")).expect("copy hello deb");
        }
        Gen::Wheel => make_wheel(&dst.join("dist")),
        Gen::Files20k => {
            for d in 0..200 {
                let dir = dst.join("tree").join(format!("d{d:03}"));
                std::fs::create_dir_all(&dir).expect("mkdir");
                for f in 0..100 {
                    std::fs::write(dir.join(format!("f{f:02}")), format!("{d}/{f}\n"))
                        .expect("write");
                }
            }
        }
    }
}

/// A pure-Python wheel `rwdemo-1.0-py3-none-any.whl` (a module and a console script), zipped
/// by /usr/bin/python3 with fixed dates so both builders get the same bytes.
const MAKE_WHEEL: &str = r#"
import base64, hashlib, sys, zipfile
out = sys.argv[1]
files = {
    "rwdemo/__init__.py": "def greet():\n    return 'hello from rwdemo'\n\ndef main():\n    print(greet())\n",
    "rwdemo-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: rwdemo\nVersion: 1.0\nSummary: imgfarm corpus wheel\n",
    "rwdemo-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: imgfarm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "rwdemo-1.0.dist-info/entry_points.txt": "[console_scripts]\nrwdemo-greet = rwdemo:main\n",
}
record = []
for name, text in files.items():
    data = text.encode()
    h = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={h},{len(data)}")
record.append("rwdemo-1.0.dist-info/RECORD,,")
files["rwdemo-1.0.dist-info/RECORD"] = "\n".join(record) + "\n"
with zipfile.ZipFile(out + "/rwdemo-1.0-py3-none-any.whl", "w", zipfile.ZIP_DEFLATED) as z:
    for name, text in files.items():
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, text)
"#;

fn make_wheel(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir dist");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(MAKE_WHEEL)
        .arg(dir)
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(
        out.status.success(),
        "making the wheel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
