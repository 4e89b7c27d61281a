//! deploy/kubernetes, proved without a cluster.
//!
//! - Each variant (base, overlays/classic, overlays/userns) renders with `kubectl kustomize`
//!   and every object validates against the Kubernetes API's schema of the overlay's
//!   documented minimum version (and the newest the validator knows), strictly: an unknown
//!   or misspelt field is an error. The validator is `kubernetes-validate` 1.37 from the venv
//!   `scripts/setup.sh --dev` makes (`IMGFARM_K8S_VENV`, default `/opt/imgfarm/k8s-venv`),
//!   whose PyYAML also turns the rendered YAML into JSON for the checks below.
//! - A policy check ([`policy`]) on the rendered objects: non-root, never privileged, requests
//!   and limits, per-arch worker selectors matching `--platforms`, PDBs and Services that
//!   select pods, Secrets that `scripts/k8s-secrets.sh` writes, hostPath only `/dev/net/tun`.
//!   It refuses crafted bad manifests with messages naming the object and the field.
//! - Every container's arguments are parsed by the real CLI (the debug `imgfarm` with the
//!   manifest's args and `--help` appended: clap parses every flag and value before it
//!   prints help), so a renamed flag breaks the test.
//! - `scripts/k8s-secrets.sh` run with the debug binary: Secrets the binary's own `TlsDir`
//!   loads, keys never on stdout; `--stdout` output is only Secrets (progress on stderr); a
//!   failing `base64` (a fake one first on PATH) fails the script with no manifest or temporary
//!   file left; an existing `--out` keeps its mode; bad `--client` names are refused before
//!   anything is made; `--help` is the comment block only.

use imgfarm_common::identity::{Role, TlsDir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The variants, each with the Kubernetes versions it is validated against: the documented
/// minimum first (deploy/kubernetes/README.md), then the newest the validator knows. classic
/// is for 1.30 only (from 1.31 the API server refuses procMount: Unmasked without hostUsers:
/// false, a rule of the server, not of the schema).
const VARIANTS: [(&str, &[&str]); 3] = [
    ("base", &["1.30.0", "1.37.0"]),
    ("overlays/classic", &["1.30.0"]),
    ("overlays/userns", &["1.33.0", "1.37.0"]),
];

/// The worker pools of the base (one Deployment, certificate and name per architecture).
const POOLS: [&str; 2] = ["amd64", "arm64"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

fn k8s_dir() -> PathBuf {
    repo().join("deploy/kubernetes")
}

/// The `imgfarm` binary next to this test's executable (`target/<profile>/imgfarm`).
fn imgfarm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("imgfarm");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p imgfarm)",
        bin.display()
    );
    bin
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("start {:?}: {e}", cmd.get_program()))
}

/// kubectl (with its kustomize) and the venv's kubernetes-validate and Python.
struct Tools {
    kubectl: PathBuf,
    validate: PathBuf,
    python: PathBuf,
}

impl Tools {
    /// The tools, or a skip (a failure in CI) naming what is missing.
    fn get(test: &str) -> Option<Tools> {
        let venv = std::env::var_os("IMGFARM_K8S_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/opt/imgfarm/k8s-venv"));
        let validate = venv.join("bin/kubernetes-validate");
        let python = venv.join("bin/python");
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()));
        // kubectl on PATH (its built-in kustomize), else the one setup.sh put in the venv.
        let kubectl = if on_path {
            PathBuf::from("kubectl")
        } else {
            venv.join("bin/kubectl")
        };
        let mut missing: Vec<String> = [&validate, &python]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !on_path && !kubectl.is_file() {
            missing.push("kubectl".into());
        }
        if !missing.is_empty() {
            imgfarm_testkit::skip(
                test,
                &format!(
                    "{} missing (run `sudo scripts/setup.sh --dev`)",
                    missing.join(", ")
                ),
            );
            return None;
        }
        Some(Tools {
            kubectl,
            validate,
            python,
        })
    }

    /// `kubectl kustomize DIR` (DIR under deploy/kubernetes, or absolute).
    fn render(&self, dir: &str) -> String {
        let path = k8s_dir().join(dir);
        let out = run(Command::new(&self.kubectl).arg("kustomize").arg(&path));
        assert!(
            out.status.success(),
            "kubectl kustomize {}: {}",
            path.display(),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The YAML documents of `yaml` as JSON values (empty documents dropped).
    fn objects(&self, yaml: &str) -> Vec<Value> {
        let mut child = Command::new(&self.python)
            .args([
                "-c",
                "import json, sys, yaml\n\
                 json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(yaml.as_bytes()).expect("write yaml");
        }
        let out = child.wait_with_output().expect("python");
        assert!(out.status.success(), "yaml to json: {}", text(&out.stderr));
        match serde_json::from_slice(&out.stdout).expect("json") {
            Value::Array(v) => v,
            other => panic!("expected a list of documents, got {other}"),
        }
    }

    /// `kubernetes-validate --strict -k VERSION` on `yaml`: the failures, empty when valid.
    fn validate(&self, yaml: &str, version: &str) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, yaml).expect("write");
        let out = run(Command::new(&self.validate)
            .args(["--strict", "--no-warn", "-k", version])
            .arg(&file));
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        let mut errors: Vec<String> = all
            .lines()
            .filter(|l| !l.starts_with("INFO"))
            .map(str::to_string)
            .collect();
        if !out.status.success() && errors.is_empty() {
            errors.push(format!(
                "kubernetes-validate failed ({}): {all}",
                out.status
            ));
        }
        errors
    }
}

// ------------------------------------------------------------------------------------------
// The policy check.

/// Rules every rendered variant keeps; see [`policy::check`].
mod policy {
    use super::*;

    /// A workload's pod template, with where it came from.
    pub struct Pod<'a> {
        pub what: String,
        pub namespace: String,
        pub labels: BTreeMap<String, String>,
        pub spec: &'a Value,
    }

    fn str_map(v: &Value) -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn namespace(o: &Value) -> String {
        o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string()
    }

    fn describe(o: &Value) -> String {
        format!(
            "{} {}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        )
    }

    /// The pod templates of the workloads in `objs`.
    pub fn pods(objs: &[Value]) -> Vec<Pod<'_>> {
        objs.iter()
            .filter_map(|o| {
                let (labels, spec) = match o["kind"].as_str()? {
                    "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => (
                        &o["spec"]["template"]["metadata"]["labels"],
                        &o["spec"]["template"]["spec"],
                    ),
                    "Pod" => (&o["metadata"]["labels"], &o["spec"]),
                    _ => return None,
                };
                Some(Pod {
                    what: describe(o),
                    namespace: namespace(o),
                    labels: str_map(labels),
                    spec,
                })
            })
            .collect()
    }

    fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
        ["initContainers", "containers"]
            .into_iter()
            .flat_map(move |k| spec[k].as_array().into_iter().flatten())
    }

    /// The args of a container as strings.
    pub fn args(c: &Value) -> Vec<String> {
        c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect()
    }

    /// The value after flag `flag` in `args` (`--flag VALUE` or `--flag=VALUE`).
    pub fn flag(args: &[String], flag: &str) -> Option<String> {
        let eq = format!("{flag}=");
        args.iter().enumerate().find_map(|(i, a)| {
            if a == flag {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&eq).map(str::to_string)
            }
        })
    }

    fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    }

    /// Every rule broken in `objs`, as `OBJECT: what is wrong` lines; `secrets` are the
    /// Secret names scripts/k8s-secrets.sh writes.
    pub fn check(objs: &[Value], secrets: &BTreeSet<String>) -> Vec<String> {
        let mut bad = Vec::new();
        let pods = pods(objs);
        for p in &pods {
            check_pod(p, secrets, &mut bad);
        }
        for o in objs {
            let what = describe(o);
            match o["kind"].as_str() {
                Some("PodDisruptionBudget") => {
                    let sel = str_map(&o["spec"]["selector"]["matchLabels"]);
                    if !pods
                        .iter()
                        .any(|p| p.namespace == namespace(o) && selects(&sel, &p.labels))
                    {
                        bad.push(format!("{what}: its selector {sel:?} matches no pod"));
                    }
                }
                Some("Service") => {
                    let sel = str_map(&o["spec"]["selector"]);
                    let matched: Vec<&Pod<'_>> = pods
                        .iter()
                        .filter(|p| p.namespace == namespace(o) && selects(&sel, &p.labels))
                        .collect();
                    if matched.is_empty() {
                        bad.push(format!("{what}: its selector {sel:?} matches no pod"));
                    }
                    for port in o["spec"]["ports"].as_array().into_iter().flatten() {
                        let Some(target) = port["targetPort"].as_str() else {
                            continue;
                        };
                        let proto = port["protocol"].as_str().unwrap_or("TCP");
                        let found = matched.iter().any(|p| {
                            containers(p.spec).any(|c| {
                                c["ports"].as_array().into_iter().flatten().any(|cp| {
                                    cp["name"].as_str() == Some(target)
                                        && cp["protocol"].as_str().unwrap_or("TCP") == proto
                                })
                            })
                        });
                        if !matched.is_empty() && !found {
                            bad.push(format!(
                                "{what}: targetPort {target} ({proto}) is no container port of the pods it selects"
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        bad
    }

    fn check_pod(p: &Pod<'_>, secrets: &BTreeSet<String>, bad: &mut Vec<String>) {
        let what = &p.what;
        let psc = &p.spec["securityContext"];
        let worker = p
            .labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            == Some("worker");
        for k in ["hostNetwork", "hostPID", "hostIPC"] {
            if p.spec[k] == json!(true) {
                bad.push(format!("{what}: {k} is true"));
            }
        }
        for v in p.spec["volumes"].as_array().into_iter().flatten() {
            let name = v["name"].as_str().unwrap_or("?");
            if let Some(h) = v.get("hostPath") {
                if h["path"] != json!("/dev/net/tun") || h["type"] != json!("CharDevice") {
                    bad.push(format!(
                        "{what}: volume {name} is hostPath {} (only /dev/net/tun as a CharDevice is allowed)",
                        h["path"]
                    ));
                }
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                if !secrets.contains(s) {
                    bad.push(format!(
                        "{what}: volume {name} uses Secret {s}, which scripts/k8s-secrets.sh does not write (it writes {secrets:?})"
                    ));
                }
            }
        }
        for c in containers(p.spec) {
            let cname = c["name"].as_str().unwrap_or("?");
            let at = format!("{what} container {cname}");
            let sc = &c["securityContext"];
            let get = |k: &str| {
                if sc[k].is_null() {
                    &psc[k]
                } else {
                    &sc[k]
                }
            };
            if get("runAsNonRoot") != &json!(true) {
                bad.push(format!("{at}: runAsNonRoot is not true"));
            }
            match get("runAsUser").as_u64() {
                Some(0) => bad.push(format!("{at}: runAsUser is 0 (root)")),
                None => bad.push(format!(
                    "{at}: runAsUser is not set (the image's user is not checked)"
                )),
                Some(_) => {}
            }
            if sc["privileged"] == json!(true) {
                bad.push(format!("{at}: privileged is true"));
            }
            match (&sc["allowPrivilegeEscalation"], worker) {
                (Value::Bool(false), _) | (Value::Bool(true), true) => {}
                (Value::Bool(true), false) => bad.push(format!(
                    "{at}: allowPrivilegeEscalation is true, but only workers need it (newuidmap, newgidmap)"
                )),
                _ => bad.push(format!("{at}: allowPrivilegeEscalation is not set")),
            }
            let caps = &sc["capabilities"];
            if !caps["drop"]
                .as_array()
                .is_some_and(|d| d.contains(&json!("ALL")))
            {
                bad.push(format!("{at}: capabilities.drop lacks ALL"));
            }
            let allowed: &[&str] = if worker { &["SETUID", "SETGID"] } else { &[] };
            for a in caps["add"].as_array().into_iter().flatten() {
                if !allowed.iter().any(|x| a == &json!(x)) {
                    bad.push(format!("{at}: capabilities.add {a} (allowed: {allowed:?})"));
                }
            }
            for kind in ["requests", "limits"] {
                for res in ["cpu", "memory"] {
                    if c["resources"][kind][res].is_null() {
                        bad.push(format!("{at}: resources.{kind}.{res} is not set"));
                    }
                }
            }
            let image = c["image"].as_str().unwrap_or("");
            let first = image.split('/').next().unwrap_or("");
            if image.contains('/')
                && (first.contains('.') || first.contains(':') || first == "localhost")
            {
                bad.push(format!(
                    "{at}: image {image} names a registry host (use the placeholder and kustomize images:)"
                ));
            }
            if worker {
                let arch = p.spec["nodeSelector"]["kubernetes.io/arch"].as_str();
                let platforms = flag(&args(c), "--platforms");
                match (arch, platforms) {
                    (None, _) => bad.push(format!(
                        "{at}: a worker without a nodeSelector kubernetes.io/arch"
                    )),
                    (Some(_), None) => bad.push(format!(
                        "{at}: a worker without --platforms (its nodeSelector pins an architecture)"
                    )),
                    (Some(arch), Some(list)) => {
                        for pl in list.split(',') {
                            if pl.split('/').nth(1) != Some(arch) {
                                bad.push(format!(
                                    "{at}: --platforms {pl} does not match nodeSelector kubernetes.io/arch {arch}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The secrets script.

/// Runs scripts/k8s-secrets.sh with the debug binary; its output.
fn secrets_script(args: &[&str]) -> Output {
    run(&mut secrets_command(args))
}

/// `scripts/k8s-secrets.sh --imgfarm <debug imgfarm> ARGS`, not started.
fn secrets_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(repo().join("scripts/k8s-secrets.sh"));
    cmd.arg("--imgfarm").arg(imgfarm_bin()).args(args);
    cmd
}

/// The Secrets of a fresh farm (k8s-secrets.sh into a temp dir), by name.
fn fresh_secrets(t: &Tools, tmp: &Path) -> BTreeMap<String, Value> {
    let farm = tmp.join("farm");
    let out = tmp.join("secrets");
    let o = secrets_script(&[
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--client",
        "ci",
    ]);
    assert!(
        o.status.success(),
        "k8s-secrets.sh: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let rendered = t.render(out.to_str().expect("utf-8"));
    t.objects(&rendered)
        .into_iter()
        .map(|s| (s["metadata"]["name"].as_str().expect("name").to_string(), s))
        .collect()
}

/// Writes a Secret's data as files into `dir` (a `--tls-dir`, as the volume mount makes it).
fn secret_to_dir(secret: &Value, dir: &Path) {
    use base64_decode::decode;
    std::fs::create_dir_all(dir).expect("mkdir");
    for (k, v) in secret["data"].as_object().expect("data") {
        std::fs::write(dir.join(k), decode(v.as_str().expect("base64"))).expect("write");
    }
}

/// Just enough base64 (standard alphabet, padded) for the Secrets' data.
mod base64_decode {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        for chunk in bytes.chunks(4) {
            let pad = chunk.iter().filter(|c| **c == b'=').count();
            let n = chunk
                .iter()
                .map(|c| if *c == b'=' { 0 } else { val(*c) })
                .fold(0u32, |acc, v| (acc << 6) | v);
            let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&three[..3 - pad]);
        }
        out
    }
}

// ------------------------------------------------------------------------------------------
// Tests.

#[test]
fn every_variant_renders_and_validates_against_the_api_schema() {
    let name = "every_variant_renders_and_validates_against_the_api_schema";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let mut checked = 0;
    for (dir, versions) in VARIANTS {
        let yaml = t.render(dir);
        let objs = t.objects(&yaml);
        assert!(objs.len() >= 8, "{dir} rendered {} objects", objs.len());
        for v in versions {
            let errors = t.validate(&yaml, v);
            assert!(
                errors.is_empty(),
                "{dir} against Kubernetes {v}:\n{}",
                errors.join("\n")
            );
            checked += objs.len();
        }
    }
    // The strict check has teeth: a misspelt field fails, and appArmorProfile (the field
    // both overlays use) is unknown before 1.30.
    let typo = t
        .render("overlays/userns")
        .replace("readOnlyRootFilesystem", "readOnlyRootFileSystem");
    assert!(
        !t.validate(&typo, "1.33.0").is_empty(),
        "a misspelt field passed"
    );
    let errors = t.validate(&t.render("overlays/classic"), "1.29.0");
    assert!(
        errors.iter().any(|e| e.contains("appArmorProfile")),
        "appArmorProfile should be unknown to 1.29: {errors:?}"
    );
    // The README states each overlay's version.
    let readme = std::fs::read_to_string(k8s_dir().join("README.md")).expect("README");
    for needle in ["1.30", "1.33", "idsPerPod"] {
        assert!(
            readme.contains(needle),
            "README.md does not mention {needle}"
        );
    }
    eprintln!("validated {checked} objects");
}

#[test]
fn rendered_manifests_keep_the_policy() {
    let name = "rendered_manifests_keep_the_policy";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let secrets: BTreeSet<String> = fresh_secrets(&t, tmp.path()).into_keys().collect();
    for (dir, _) in VARIANTS {
        let objs = t.objects(&t.render(dir));
        let bad = policy::check(&objs, &secrets);
        assert!(bad.is_empty(), "{dir}:\n{}", bad.join("\n"));
        // One worker Deployment and PDB per pool, each pinned to its architecture.
        let pods = policy::pods(&objs);
        for arch in POOLS {
            let worker = pods
                .iter()
                .find(|p| p.what == format!("Deployment imgfarm-worker-{arch}"))
                .unwrap_or_else(|| panic!("{dir}: no worker Deployment for {arch}"));
            assert_eq!(
                worker.spec["nodeSelector"]["kubernetes.io/arch"],
                json!(arch)
            );
            assert!(objs
                .iter()
                .any(|o| o["kind"] == json!("PodDisruptionBudget")
                    && o["metadata"]["name"] == json!(format!("imgfarm-worker-{arch}"))));
        }
        let coordinator = objs
            .iter()
            .find(|o| o["kind"] == json!("StatefulSet"))
            .expect("coordinator StatefulSet");
        assert_eq!(coordinator["spec"]["replicas"], json!(1));
        assert!(!coordinator["spec"]["volumeClaimTemplates"].is_null());
    }
    // The overlays' rootless settings.
    for (dir, host_users) in [
        ("overlays/userns", json!(false)),
        ("overlays/classic", Value::Null),
    ] {
        let objs = t.objects(&t.render(dir));
        for p in policy::pods(&objs) {
            let c = &p.spec["containers"][0]["securityContext"];
            if p.what.contains("worker") {
                assert_eq!(p.spec["hostUsers"], host_users, "{dir} {}", p.what);
                assert_eq!(c["procMount"], json!("Unmasked"), "{dir} {}", p.what);
                assert_eq!(c["seccompProfile"]["type"], json!("Unconfined"));
                assert_eq!(c["appArmorProfile"]["type"], json!("Unconfined"));
            } else {
                assert!(
                    c["procMount"].is_null() && p.spec["hostUsers"].is_null(),
                    "{}",
                    p.what
                );
            }
        }
    }
}

/// Applies `edit` to the rendered classic overlay's object `kind name` and returns the
/// policy's complaints.
fn complaints_after(
    t: &Tools,
    secrets: &BTreeSet<String>,
    kind: &str,
    name: &str,
    edit: impl FnOnce(&mut Value),
) -> Vec<String> {
    let mut objs = t.objects(&t.render("overlays/classic"));
    let o = objs
        .iter_mut()
        .find(|o| o["kind"] == json!(kind) && o["metadata"]["name"] == json!(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    edit(o);
    policy::check(&objs, secrets)
}

fn assert_complains(bad: &[String], needle: &str) {
    assert!(
        bad.iter().any(|b| b.contains(needle)),
        "expected a complaint with {needle:?}, got {bad:#?}"
    );
}

#[test]
fn the_policy_refuses_bad_manifests_with_clear_messages() {
    let name = "the_policy_refuses_bad_manifests_with_clear_messages";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let secrets: BTreeSet<String> = [
        "imgfarm-coordinator-tls",
        "imgfarm-worker-amd64-tls",
        "imgfarm-worker-arm64-tls",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let worker = "imgfarm-worker-arm64";
    let bad = complaints_after(&t, &secrets, "Deployment", worker, |o| {
        o["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"] =
            json!(true);
    });
    assert_complains(
        &bad,
        "Deployment imgfarm-worker-arm64 container worker: privileged is true",
    );
    let bad = complaints_after(&t, &secrets, "StatefulSet", "imgfarm-coordinator", |o| {
        let r = &mut o["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"];
        r.as_object_mut().expect("limits").remove("memory");
    });
    assert_complains(
        &bad,
        "StatefulSet imgfarm-coordinator container coordinator: resources.limits.memory is not set",
    );
    let bad = complaints_after(&t, &secrets, "Deployment", worker, |o| {
        let s = &mut o["spec"]["template"]["spec"]["nodeSelector"];
        s.as_object_mut()
            .expect("nodeSelector")
            .remove("kubernetes.io/arch");
    });
    assert_complains(&bad, "a worker without a nodeSelector kubernetes.io/arch");
    let bad = complaints_after(&t, &secrets, "Deployment", worker, |o| {
        o["spec"]["template"]["spec"]["nodeSelector"]["kubernetes.io/arch"] = json!("amd64");
    });
    assert_complains(
        &bad,
        "--platforms linux/arm64 does not match nodeSelector kubernetes.io/arch amd64",
    );
    let bad = complaints_after(&t, &secrets, "StatefulSet", "imgfarm-coordinator", |o| {
        o["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            ["allowPrivilegeEscalation"] = json!(true);
    });
    assert_complains(
        &bad,
        "allowPrivilegeEscalation is true, but only workers need it",
    );
    let bad = complaints_after(&t, &secrets, "PodDisruptionBudget", worker, |o| {
        o["spec"]["selector"]["matchLabels"]["imgfarm/pool"] = json!("s390x");
    });
    assert_complains(
        &bad,
        "PodDisruptionBudget imgfarm-worker-arm64: its selector",
    );
    let mut fewer = secrets.clone();
    fewer.remove("imgfarm-worker-amd64-tls");
    let bad = policy::check(&t.objects(&t.render("overlays/classic")), &fewer);
    assert_complains(
        &bad,
        "uses Secret imgfarm-worker-amd64-tls, which scripts/k8s-secrets.sh does not write",
    );

    // A crafted manifest breaking several rules at once.
    let crafted = t.objects(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: rogue, namespace: imgfarm}
spec:
  selector: {matchLabels: {app.kubernetes.io/component: worker}}
  template:
    metadata: {labels: {app.kubernetes.io/component: worker}}
    spec:
      hostNetwork: true
      containers:
        - name: worker
          image: registry.example.net/imgfarm:1
          args: [worker, --platforms, linux/amd64]
          securityContext: {runAsUser: 0, privileged: true, capabilities: {add: [SYS_ADMIN]}}
          resources: {requests: {cpu: "1"}}
      volumes:
        - name: sock
          hostPath: {path: /var/run/docker.sock}
---
apiVersion: v1
kind: Service
metadata: {name: nowhere, namespace: imgfarm}
spec:
  selector: {app: nothing}
  ports: [{name: quic, port: 7443, protocol: UDP}]
"#,
    );
    let bad = policy::check(&crafted, &secrets);
    for needle in [
        "Deployment rogue: hostNetwork is true",
        "volume sock is hostPath \"/var/run/docker.sock\"",
        "container worker: runAsNonRoot is not true",
        "container worker: runAsUser is 0 (root)",
        "container worker: privileged is true",
        "container worker: allowPrivilegeEscalation is not set",
        "container worker: capabilities.drop lacks ALL",
        "container worker: capabilities.add \"SYS_ADMIN\"",
        "container worker: resources.requests.memory is not set",
        "container worker: resources.limits.cpu is not set",
        "names a registry host",
        "a worker without a nodeSelector kubernetes.io/arch",
        "Service nowhere: its selector",
    ] {
        assert_complains(&bad, needle);
    }
}

/// The `--metrics-listen ADDR` flag is added to `imgfarm coordinator` and `imgfarm worker` on
/// another branch at the same time as these manifests.
/// Runs the debug `imgfarm ARGS --help`: clap parses every flag and value before it prints
/// the help, so an unknown flag, a missing value or a value its parser refuses fails.
fn cli_accepts(args: &[String]) -> Output {
    run(Command::new(imgfarm_bin()).args(args).arg("--help"))
}

#[test]
fn container_arguments_parse_with_the_real_cli() {
    let name = "container_arguments_parse_with_the_real_cli";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let mut seen = BTreeSet::new();
    for (dir, _) in VARIANTS {
        let objs = t.objects(&t.render(dir));
        for p in policy::pods(&objs) {
            for c in p.spec["containers"].as_array().expect("containers") {
                assert_eq!(
                    c["command"],
                    json!(["/usr/local/bin/imgfarm"]),
                    "{}",
                    p.what
                );
                let args = policy::args(c);
                let sub = args.first().cloned().unwrap_or_default();
                assert!(
                    sub == "coordinator" || sub == "worker",
                    "{}: args start with {sub:?}",
                    p.what
                );
                let out = cli_accepts(&args);
                assert!(
                    out.status.success(),
                    "{dir} {}: imgfarm {} --help refused:\n{}",
                    p.what,
                    args.join(" "),
                    text(&out.stderr)
                );
                let help = text(&out.stdout);
                assert!(help.contains(&format!("imgfarm {sub}")), "{help}");
                seen.insert(sub);
            }
        }
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The check has teeth: a renamed flag, a flag without its value and a bad size fail.
    let objs = t.objects(&t.render("base"));
    let worker = policy::pods(&objs)
        .into_iter()
        .find(|p| p.what == "Deployment imgfarm-worker-amd64")
        .expect("amd64 worker");
    let args = policy::args(&worker.spec["containers"][0]);
    let renamed: Vec<String> = args
        .iter()
        .map(|a| {
            if a == "--tls-dir" {
                "--tls-directory".into()
            } else {
                a.clone()
            }
        })
        .collect();
    let out = cli_accepts(&renamed);
    assert!(!out.status.success(), "a renamed flag was accepted");
    assert!(
        text(&out.stderr).contains("--tls-directory"),
        "{}",
        text(&out.stderr)
    );
    let i = args
        .iter()
        .position(|a| a == "--cache-max")
        .expect("--cache-max");
    let mut bad_size = args.clone();
    bad_size[i + 1] = "lots".into();
    assert!(
        !cli_accepts(&bad_size).status.success(),
        "--cache-max lots was accepted"
    );
}

#[test]
fn secrets_script_writes_loadable_secrets_and_prints_no_key() {
    let name = "secrets_script_writes_loadable_secrets_and_prints_no_key";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let farm = tmp.path().join("farm");
    let out_dir = tmp.path().join("secrets");
    let args = [
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        "ci",
        "--san",
        "farm.example.net",
    ];
    let o = secrets_script(&args);
    let printed = format!("{}{}", text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "k8s-secrets.sh: {printed}");
    // No key, in PEM or base64 ("-----BEGIN PRIVATE"), on the terminal.
    for needle in ["PRIVATE KEY", "LS0tLS1CRUdJTiBQUklWQVRF"] {
        assert!(!printed.contains(needle), "a key was printed:\n{printed}");
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&out_dir), 0o700);
    let mut names = Vec::new();
    for e in std::fs::read_dir(&out_dir).expect("read out") {
        let p = e.expect("entry").path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        names.push(p.file_name().expect("name").to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "imgfarm-client-ci-tls.yaml",
            "imgfarm-coordinator-tls.yaml",
            "imgfarm-worker-amd64-tls.yaml",
            "imgfarm-worker-arm64-tls.yaml",
            "kustomization.yaml"
        ]
    );

    // The Secrets render (kubectl kustomize OUT), validate, and each one, mounted as a
    // --tls-dir, is what TlsDir::load wants for its role and name.
    let yaml = t.render(out_dir.to_str().expect("utf-8"));
    let errors = t.validate(&yaml, "1.30.0");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let secrets: BTreeMap<String, Value> = t
        .objects(&yaml)
        .into_iter()
        .map(|s| (s["metadata"]["name"].as_str().expect("name").to_string(), s))
        .collect();
    let load = |secret: &str, role: Role, who: Option<&str>| {
        let dir = tmp.path().join("mounted").join(secret);
        let s = &secrets[secret];
        assert_eq!(s["metadata"]["namespace"], json!("imgfarm"));
        assert!(
            s["data"].get("ca.key").is_none(),
            "{secret} holds the CA key"
        );
        secret_to_dir(s, &dir);
        let creds = TlsDir::new(&dir)
            .load(role, who)
            .unwrap_or_else(|e| panic!("{secret}: {e}"));
        assert_eq!(creds.identity.role, role);
        dir
    };
    let coord = load("imgfarm-coordinator-tls", Role::Coordinator, None);
    for arch in POOLS {
        let dir = load(
            &format!("imgfarm-worker-{arch}-tls"),
            Role::Worker,
            Some(&format!("pool-{arch}")),
        );
        let files: BTreeSet<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files.len(), 3, "{files:?}");
    }
    load("imgfarm-client-ci-tls", Role::Client, Some("ci"));
    // The coordinator's certificate names the Service, in the namespace, and the extra --san.
    if imgfarm_testkit::require_tools_or_skip(name, &["openssl"]) {
        let o = run(Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(coord.join("coordinator.crt")));
        let sans = text(&o.stdout);
        for n in [
            "DNS:imgfarm-coordinator,",
            "DNS:imgfarm-coordinator.imgfarm.svc,",
            "DNS:imgfarm-coordinator.imgfarm.svc.cluster.local",
            "DNS:farm.example.net",
        ] {
            assert!(sans.contains(n), "{n} not in {sans}");
        }
    }

    // A second run reuses the farm (same CA), refuses --san for it, and --stdout is opt-in.
    let ca = std::fs::read(farm.join("ca.crt")).expect("ca.crt");
    let o = secrets_script(&args);
    assert!(
        !o.status.success(),
        "--san on an existing farm was accepted"
    );
    assert!(text(&o.stderr).contains("--san only applies to a new farm directory"));
    let o = secrets_script(&args[..6]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(std::fs::read(farm.join("ca.crt")).expect("ca.crt"), ca);
    let o = secrets_script(&[&args[..6], &["--stdout"][..]].concat());
    assert!(text(&o.stdout).contains("kind: Secret"));
    // A farm directory without ca.key (kept elsewhere) and without a pool's certificate.
    let partial = tmp.path().join("partial");
    std::fs::create_dir(&partial).expect("mkdir");
    for f in ["ca.crt", "coordinator.crt", "coordinator.key"] {
        std::fs::copy(farm.join(f), partial.join(f)).expect("copy");
    }
    let o = secrets_script(&[
        "--farm-dir",
        partial.to_str().expect("utf-8"),
        "--out",
        tmp.path().join("out2").to_str().expect("utf-8"),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no worker-pool-amd64.{crt,key} and no ca.key"),
        "{}",
        text(&o.stderr)
    );
}

/// The files in `dir` (none when it does not exist), sorted.
fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    };
    names.sort();
    names
}

#[test]
fn secrets_script_fails_on_a_failing_base64_and_leaves_no_secret() {
    use std::os::unix::fs::PermissionsExt as _;
    // A base64 that fails (like `base64 -w0` where there is no -w, on macOS) and one that
    // prints nothing: each must stop the script, naming the file, with no manifest (and no
    // temporary file holding key material) left in OUT.
    for (what, body) in [("exits 1", "exit 1"), ("prints nothing", "cat >/dev/null")] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let fake = bin.join("base64");
        std::fs::write(&fake, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(bin.clone()).chain(std::env::split_paths(&path)))
                .expect("PATH");
        let farm = tmp.path().join("farm");
        let out_dir = tmp.path().join("secrets");
        let o = run(secrets_command(&[
            "--farm-dir",
            farm.to_str().expect("utf-8"),
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--client",
            "ci",
        ])
        .env("PATH", path));
        let stderr = text(&o.stderr);
        assert!(
            !o.status.success(),
            "base64 {what}: the script succeeded:\n{stderr}"
        );
        let ca = farm.join("ca.crt").display().to_string();
        assert!(
            stderr.contains(&format!("k8s-secrets.sh: could not base64-encode {ca}"))
                || stderr.contains(&format!("k8s-secrets.sh: {ca} encoded to nothing")),
            "base64 {what}: no message naming {ca}:\n{stderr}"
        );
        let left: Vec<String> = file_names(&out_dir)
            .into_iter()
            .filter(|n| n.contains(".yaml"))
            .collect();
        assert!(left.is_empty(), "base64 {what}: left in OUT: {left:?}");
    }
}

#[test]
fn secrets_script_stdout_is_only_the_secrets_for_kubectl_apply() {
    let name = "secrets_script_stdout_is_only_the_secrets_for_kubectl_apply";
    let Some(t) = Tools::get(name) else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let farm = tmp.path().join("farm");
    let out_dir = tmp.path().join("secrets");
    let args = [
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        "ci",
        "--stdout",
    ];
    // A new farm (`imgfarm farm init` and `farm issue` run), then an existing one.
    for run_no in 1..=2 {
        let o = secrets_script(&args);
        let stdout = text(&o.stdout);
        let stderr = text(&o.stderr);
        assert!(o.status.success(), "run {run_no}: {stderr}");
        assert!(stderr.contains("wrote "), "run {run_no}: {stderr}");
        // What `| kubectl apply -f -` reads: YAML documents, every one a Secret.
        let docs = t.objects(&stdout);
        let mut names = Vec::new();
        for d in &docs {
            assert_eq!(d["kind"], json!("Secret"), "run {run_no}: {d}\n{stdout}");
            names.push(d["metadata"]["name"].as_str().expect("name").to_string());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "imgfarm-client-ci-tls",
                "imgfarm-coordinator-tls",
                "imgfarm-worker-amd64-tls",
                "imgfarm-worker-arm64-tls"
            ],
            "run {run_no}"
        );
    }
}

#[test]
fn secrets_script_keeps_an_existing_out_directorys_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let tmp = tempfile::tempdir().expect("tempdir");
    let farm = tmp.path().join("farm");
    for (dir_mode, warns) in [(0o755, true), (0o700, false), (0o710, true)] {
        let out_dir = tmp.path().join(format!("out-{dir_mode:o}"));
        std::fs::create_dir(&out_dir).expect("mkdir");
        std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(dir_mode))
            .expect("chmod");
        let o = secrets_script(&[
            "--farm-dir",
            farm.to_str().expect("utf-8"),
            "--out",
            out_dir.to_str().expect("utf-8"),
        ]);
        let stderr = text(&o.stderr);
        assert!(o.status.success(), "{dir_mode:o}: {stderr}");
        assert_eq!(
            mode(&out_dir),
            dir_mode,
            "the mode of an existing OUT was changed"
        );
        let warning = format!(
            "k8s-secrets.sh: warning: {} is accessible to group/others",
            out_dir.display()
        );
        assert_eq!(stderr.contains(&warning), warns, "{dir_mode:o}: {stderr}");
        for f in file_names(&out_dir) {
            assert_eq!(mode(&out_dir.join(&f)), 0o600, "{f}");
        }
    }
    // A missing OUT is made with mode 0700, parents included.
    let nested = tmp.path().join("new/secrets");
    let o = secrets_script(&[
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        nested.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(!text(&o.stderr).contains("warning"), "{}", text(&o.stderr));
    assert_eq!(mode(&nested), 0o700);
}

#[test]
fn secrets_script_refuses_a_client_name_unfit_for_a_secret_before_writing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let farm = tmp.path().join("farm");
    let out_dir = tmp.path().join("secrets");
    // `/` (a path in the farm directory; imgfarm refuses it too, but only after `farm init`),
    // uppercase and `_` (imgfarm accepts them, a Secret's name does not), dots misplaced.
    for bad in ["ops/ci", "CI", "Ci", "ci_1", "-ci", "ci-", "ci..1", "ci.-1"] {
        let o = secrets_script(&[
            "--farm-dir",
            farm.to_str().expect("utf-8"),
            "--out",
            out_dir.to_str().expect("utf-8"),
            "--client",
            "ok",
            "--client",
            bad,
        ]);
        let stderr = text(&o.stderr);
        assert!(!o.status.success(), "--client {bad} was accepted");
        assert!(
            stderr.contains(&format!(
                "k8s-secrets.sh: --client '{bad}': not usable in a Secret's name"
            )),
            "--client {bad}: {stderr}"
        );
        assert!(
            !farm.exists(),
            "--client {bad}: the farm directory was made"
        );
        assert!(!out_dir.exists(), "--client {bad}: OUT was made");
    }
    let long = "a".repeat(64);
    let o = secrets_script(&[
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        &long,
    ]);
    assert!(!o.status.success(), "a 64-character client was accepted");
    assert!(!farm.exists());
    // Dots and dashes inside are fine.
    let o = secrets_script(&[
        "--farm-dir",
        farm.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
        "--client",
        "ci-1.ops",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(out_dir.join("imgfarm-client-ci-1.ops-tls.yaml").is_file());
}

#[test]
fn secrets_script_help_is_the_comment_block_only() {
    let o = run(Command::new(repo().join("scripts/k8s-secrets.sh")).arg("--help"));
    let help = text(&o.stdout);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        help.starts_with("Kubernetes Secrets for deploy/kubernetes"),
        "{help}"
    );
    assert!(
        help.trim_end().ends_with(
            "Without --stdout nothing secret is printed: only the files written (on stderr)."
        ),
        "{help}"
    );
    for line in help.lines() {
        assert!(
            !line.contains("set -euo") && !line.starts_with('#') && !line.starts_with("!/"),
            "not help: {line:?}"
        );
    }
    assert!(help.contains("--client NAME"), "{help}");
}
