//! docker-archive against the real Docker daemon (20.10, the testbed's
//! BuildKit reference): `docker load` accepts our archive, and what
//! `docker save` writes imports into our store with the same config.

mod oci_layout_support;

use imgfarm_common::oci::docker_archive::{export_docker_archive, import_docker_archive};
use imgfarm_common::oci::image::{descriptor_digest, Document};
use imgfarm_common::oci::layout::{BlobStore, ImportLimits, TarOptions};
use imgfarm_testkit::{require_root_or_skip, require_tools_or_skip};
use oci_layout_support::{run, sample_image, TestStore};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private dockerd on a socket in a temp dir, stopped by its PID on drop.
struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    fn start(dir: &Path) -> Dockerd {
        fs::create_dir_all(dir).unwrap();
        let log = fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(["--iptables=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting dockerd");
        let d = Dockerd {
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if d.docker()
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return d;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "dockerd did not come up: {}",
            fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
    }

    fn docker(&self) -> Command {
        let cli = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        let mut c = Command::new(cli);
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.join("docker.sock").display()),
        );
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGTERM lets dockerd unmount and stop its containerd; SIGKILL after 20 s.
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn docker_loads_our_archive_and_we_load_docker_save() {
    let name = "docker_loads_our_archive_and_we_load_docker_save";
    if !require_root_or_skip(name) || !require_tools_or_skip(name, &["dockerd"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = TestStore::new(&tmp.path().join("store"));
    let refs = sample_image(&store);
    let ours = tmp.path().join("ours.tar");
    let tar = export_docker_archive(
        &*store,
        &refs[1].descriptor,
        &["example.com/imgfarm/app:1.0".to_string()],
        Vec::new(),
        TarOptions::default(),
    )
    .unwrap();
    fs::write(&ours, tar).unwrap();

    let daemon = Dockerd::start(&tmp.path().join("docker"));
    let out = run(daemon.docker().arg("load").arg("-i").arg(&ours));
    assert!(out.contains("example.com/imgfarm/app:1.0"), "{out}");
    let inspect: serde_json::Value = serde_json::from_str(&run(daemon.docker().args([
        "image",
        "inspect",
        "example.com/imgfarm/app:1.0",
    ])))
    .unwrap();
    assert_eq!(inspect[0]["Architecture"], "amd64");
    assert_eq!(inspect[0]["Config"]["Cmd"][0], "/bin/sh");

    // The other direction: `docker save` output into our store.
    let saved = tmp.path().join("saved.tar");
    run(daemon
        .docker()
        .args(["save", "-o"])
        .arg(&saved)
        .arg("example.com/imgfarm/app:1.0"));
    drop(daemon);
    let dst = TestStore::new(&tmp.path().join("dst"));
    let got = import_docker_archive(
        &*dst,
        fs::File::open(&saved).unwrap(),
        ImportLimits::default(),
    )
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].name.as_deref(), Some("example.com/imgfarm/app:1.0"));
    let m = dst
        .read_blob(&descriptor_digest(&got[0].descriptor).unwrap(), 1 << 20)
        .unwrap();
    let Document::Manifest(m) = Document::parse(&m, None).unwrap() else {
        panic!("not a manifest")
    };
    // Docker keeps the config bytes: the image ID is our config digest.
    let Document::Manifest(orig) = Document::parse(
        &store
            .read_blob(&descriptor_digest(&refs[1].descriptor).unwrap(), 1 << 20)
            .unwrap(),
        None,
    )
    .unwrap() else {
        panic!("not a manifest")
    };
    assert_eq!(m.config().digest(), orig.config().digest());
    assert_eq!(inspect[0]["Id"], orig.config().digest().to_string());
}
