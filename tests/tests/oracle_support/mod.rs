//! The reference oracle: build one case dir of `tests/oracle/` with imgfarm (as the farm
//! user, rootless) and with BuildKit (a private dockerd 20.10), both FROM the same busybox
//! (seeded into imgfarm's store, pushed to a loopback registry for dockerd), export both as
//! docker-archives, and compare the file trees and the config fields.

#![allow(dead_code)]

pub mod tree;

use crate::build_support::{ok, text, Env};
use imgfarm_testkit::{or_skip, BaseImages, Dockerd, Registry};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use tree::Tree;

/// Config fields compared (image-spec `config` object).
pub const CONFIG_FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "Labels",
    "ExposedPorts",
    "Volumes",
    "StopSignal",
];

/// The registry with busybox and the dockerd that pulls from it, shared by the tests of one
/// binary that run at the same time (dropped, dockerd first, when the last one finishes).
pub struct Reference {
    pub dockerd: Dockerd,
    pub registry: Registry,
    /// `127.0.0.1:PORT/busybox:latest`
    pub base: String,
}

static SHARED: Mutex<Weak<Reference>> = Mutex::new(Weak::new());

impl Reference {
    /// The shared reference, started when needed; `None` with a visible SKIPPED line when
    /// dockerd can't start (not root, docker.io missing).
    pub fn get(test: &str) -> Option<Arc<Reference>> {
        let mut g = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = g.upgrade() {
            return Some(r);
        }
        let base = or_skip(test, BaseImages::build())?;
        let registry = or_skip(test, Registry::start())?;
        base.push_to(&registry, "busybox", "latest")
            .expect("pushing busybox to the registry");
        let dockerd = or_skip(test, Dockerd::start(Some(registry.addr())))?;
        let r = Arc::new(Reference {
            base: registry.image_ref("busybox", "latest"),
            dockerd,
            registry,
        });
        *g = Arc::downgrade(&r);
        Some(r)
    }
}

/// The repo's `tests/oracle/<case>`.
pub fn case_src(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("oracle")
        .join(case)
}

/// Extra build flags of a case: `oracle.args`, one argument a line, `{dir}` = the case dir.
pub fn extra_args(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("oracle.args"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.replace("{dir}", &dir.display().to_string()))
        .collect()
}

/// An exported image: its tree and its config JSON.
pub struct Image {
    pub tree: Tree,
    pub config: serde_json::Value,
    pub layers: usize,
}

/// Trees of first layers already read, by the sha256 of the layer file's bytes: a base image's
/// layer is read once per test binary, not once per image built on it.
static FIRST_LAYERS: Mutex<BTreeMap<String, Arc<Tree>>> = Mutex::new(BTreeMap::new());

/// The tree of `layer` applied to nothing, from [`FIRST_LAYERS`] when the same bytes were read.
fn first_layer_tree(layer: &Path) -> Tree {
    let mut f = std::fs::File::open(layer).expect("layer file");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("hashing a layer");
    let key = hex::encode(h.finalize());
    if let Some(t) = FIRST_LAYERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return (**t).clone();
    }
    let mut tree = Tree::new();
    tree::apply_layer(&mut tree, layer)
        .unwrap_or_else(|e| panic!("applying {}: {e:#}", layer.display()));
    FIRST_LAYERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::new(tree.clone()));
    tree
}

/// Read a docker-archive (`docker save` layout: manifest.json, config, layer tars).
pub fn read_docker_archive(tar_path: &Path) -> Image {
    let dir = tempfile::tempdir().expect("tempdir");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(tar_path)
        .arg("-C")
        .arg(dir.path())
        .status()
        .expect("tar");
    assert!(st.success(), "unpacking {}", tar_path.display());
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("manifest.json")).expect("manifest.json"),
    )
    .expect("manifest json");
    let m = &manifest[0];
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(m["Config"].as_str().expect("Config"))).expect("config"),
    )
    .expect("config json");
    let mut tree = Tree::new();
    let layers = m["Layers"].as_array().expect("Layers");
    for (i, l) in layers.iter().enumerate() {
        let p = dir.path().join(l.as_str().expect("layer path"));
        if i == 0 {
            tree = first_layer_tree(&p);
            continue;
        }
        tree::apply_layer(&mut tree, &p)
            .unwrap_or_else(|e| panic!("applying {}: {e:#}", p.display()));
    }
    Image {
        tree,
        config,
        layers: layers.len(),
    }
}

/// Build `case` with imgfarm as the farm user (linux/amd64, `BASE=busybox:latest`).
pub fn build_imgfarm(env: &Env, case: &str) -> (Image, String) {
    let ctx = env.work.path().join(case);
    if !ctx.exists() {
        crate::build_support::copy_dir(&case_src(case), &ctx);
        env.chown_work();
    }
    let dest = env.work.path().join(format!("{case}-imgfarm.tar"));
    let out_arg = format!("type=docker,dest={}", dest.display());
    let mut args: Vec<String> = [
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64",
        "--build-arg",
        "BASE=busybox:latest",
        "-t",
        &format!("oracle/{case}"),
        "-o",
        &out_arg,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra_args(&ctx));
    args.push(ctx.display().to_string());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = ok(&env.run(&argv));
    (read_docker_archive(&dest), log)
}

/// One `docker build` (BuildKit) of a context.
pub struct DockerBuild<'a> {
    pub ctx: &'a Path,
    /// Image tag, also the name of the saved archive.
    pub tag: &'a str,
    pub platform: &'a str,
    /// `--network` of the build's RUN steps (`none`, `host`).
    pub network: &'a str,
    pub build_args: &'a [(String, String)],
    /// Further flags (`oracle.args`).
    pub extra: &'a [String],
    pub no_cache: bool,
    /// Killed (with its `docker` CLI) after this long; the build then fails.
    pub timeout: std::time::Duration,
}

/// Run `d` and `docker save` the result to `dest`; `Err` holds the build log on failure.
pub fn docker_build(dockerd: &Dockerd, d: &DockerBuild<'_>, dest: &Path) -> Result<Image, String> {
    let mut cmd = std::process::Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(d.timeout.as_secs().to_string())
        .arg("/usr/bin/docker");
    // The environment (DOCKER_HOST, DOCKER_BUILDKIT, ...) of the daemon's own command.
    let base = dockerd.docker(["build"]);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(["build", "--network", d.network, "--platform", d.platform]);
    cmd.args(["--progress", "plain", "-t", d.tag]);
    if d.no_cache {
        cmd.arg("--no-cache");
    }
    for (k, v) in d.build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    cmd.args(d.extra).arg(d.ctx);
    let out = cmd.output().expect("docker build runs");
    if !out.status.success() {
        let why = if out.status.code() == Some(124) {
            format!("timed out after {:?}", d.timeout)
        } else {
            format!("failed ({})", out.status)
        };
        return Err(format!(
            "docker build {why}:\n{}\n{}",
            text(&out.stderr),
            text(&out.stdout)
        ));
    }
    let out = dockerd
        .docker(["save", "-o"])
        .arg(dest)
        .arg(d.tag)
        .output()
        .expect("docker save runs");
    if !out.status.success() {
        return Err(format!("docker save: {}", text(&out.stderr)));
    }
    Ok(read_docker_archive(dest))
}

/// One `imgfarm build` of a context, to a docker-archive.
pub struct ImgfarmBuild<'a> {
    pub ctx: &'a Path,
    pub tag: &'a str,
    pub platform: &'a str,
    pub build_args: &'a [(String, String)],
    pub extra: &'a [String],
    /// Killed (its whole process group) after this long; the build then fails.
    pub timeout: std::time::Duration,
}

/// Run `b` with `prefix` (a command that runs `timeout`, e.g. `FarmUser::command("timeout")`)
/// and `imgfarm --state STATE`; `Err` holds the build log on failure, `Ok` the image and log.
pub fn imgfarm_build(
    mut prefix: std::process::Command,
    bin: &Path,
    state: &Path,
    b: &ImgfarmBuild<'_>,
    dest: &Path,
) -> Result<(Image, String), String> {
    prefix
        .arg("--kill-after=10")
        .arg(b.timeout.as_secs().to_string())
        .arg(bin)
        .arg("--state")
        .arg(state)
        .env_remove("IMGFARM_STATE")
        .args([
            "build",
            "--progress",
            "plain",
            "--platform",
            b.platform,
            "-t",
            b.tag,
        ]);
    for (k, v) in b.build_args {
        prefix.arg("--build-arg").arg(format!("{k}={v}"));
    }
    prefix
        .arg("-o")
        .arg(format!("type=docker,dest={}", dest.display()))
        .args(b.extra)
        .arg(b.ctx);
    let out = prefix.output().expect("imgfarm runs");
    let log = format!("{}{}", text(&out.stderr), text(&out.stdout));
    if !out.status.success() {
        let why = if out.status.code() == Some(124) {
            format!("timed out after {:?}", b.timeout)
        } else {
            format!("failed ({})", out.status)
        };
        return Err(format!("imgfarm build {why}:\n{log}"));
    }
    Ok((read_docker_archive(dest), log))
}

/// Build `case` with BuildKit (`docker build --network none`) and `docker save` it.
pub fn build_buildkit(r: &Reference, case: &str, work: &Path) -> Image {
    let ctx = work.join(format!("{case}-bk"));
    if !ctx.exists() {
        crate::build_support::copy_dir(&case_src(case), &ctx);
    }
    let tag = format!("oracle/{case}:latest");
    let dest = work.join(format!("{case}-buildkit.tar"));
    let build = DockerBuild {
        ctx: &ctx,
        tag: &tag,
        platform: "linux/amd64",
        network: "none",
        build_args: &[("BASE".to_string(), r.base.clone())],
        extra: &extra_args(&ctx),
        no_cache: false,
        timeout: std::time::Duration::from_secs(600),
    };
    docker_build(&r.dockerd, &build, &dest).unwrap_or_else(|e| panic!("{case}: {e}"))
}

fn field(cfg: &serde_json::Value, f: &str) -> serde_json::Value {
    let v = cfg["config"]
        .get(f)
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    // An empty string/list/map says nothing more than an absent field.
    match &v {
        serde_json::Value::String(s) if s.is_empty() => serde_json::Value::Null,
        serde_json::Value::Array(a) if a.is_empty() => serde_json::Value::Null,
        serde_json::Value::Object(o) if o.is_empty() => serde_json::Value::Null,
        _ => v,
    }
}

/// Differences of the compared config fields, one line each.
pub fn config_diff(ours: &serde_json::Value, reference: &serde_json::Value) -> Vec<String> {
    CONFIG_FIELDS
        .iter()
        .filter_map(|f| {
            let (a, b) = (field(ours, f), field(reference, f));
            (a != b).then(|| format!("config {f}:\n    imgfarm:  {a}\n    buildkit: {b}"))
        })
        .collect()
}

/// Build `case` with both builders and panic with every difference when they disagree.
pub fn assert_matches_buildkit(test: &str, case: &str) {
    let Some(r) = Reference::get(test) else {
        return;
    };
    let Some(env) = Env::new(test) else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let reference = build_buildkit(&r, case, work.path());
    let (ours, log) = build_imgfarm(&env, case);
    let mut d = tree::diff(&ours.tree, &reference.tree);
    d.extend(config_diff(&ours.config, &reference.config));
    if !d.is_empty() {
        let shown = d.len().min(60);
        panic!(
            "{case}: imgfarm and BuildKit differ in {} ways:\n{}\n{}\n--- imgfarm build log ---\n{log}",
            d.len(),
            d[..shown].join("\n"),
            if d.len() > shown { "..." } else { "" }
        );
    }
}

/// Build `case` with imgfarm only (what dockerd 20.10 can't build, e.g. heredocs).
pub fn imgfarm_only(test: &str, case: &str) -> Option<(Image, String)> {
    let env = Env::new(test)?;
    Some(build_imgfarm(&env, case))
}
