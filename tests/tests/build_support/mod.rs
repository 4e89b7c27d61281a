//! Shared set-up of the `imgfarm build` end-to-end tests: the binary, a
//! state dir owned by the unprivileged farm user with busybox seeded into
//! its local image store, and a context dir.

#![allow(dead_code)]

use imgfarm_testkit::{or_skip, BaseImages, FarmUser, UserTempDir};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The `imgfarm` binary next to this test's executable (`target/<profile>/imgfarm`).
pub fn imgfarm_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = dir.join("imgfarm");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (cargo build -p imgfarm)",
        bin.display()
    );
    bin
}

/// A build environment for one test.
pub struct Env {
    pub user: FarmUser,
    pub state: UserTempDir,
    pub work: UserTempDir,
    pub bin: PathBuf,
    /// Run imgfarm as root (this test process's user) instead of the farm user.
    pub as_root: bool,
}

/// Who runs imgfarm in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    /// The unprivileged farm user (rootless, with subordinate ids).
    FarmUser,
    /// Root, with no /etc/subuid entry (CI runs the tests as root).
    Root,
}

impl Env {
    /// `None` (with a visible SKIPPED line) when the farm user or the base
    /// images are unavailable on this machine.
    pub fn new(test: &str) -> Option<Env> {
        Self::new_as(test, As::FarmUser)
    }

    /// [`Env::new`] run by `who`; `As::Root` needs this test to run as root (SKIPPED, or a
    /// failure under CI, otherwise).
    pub fn new_as(test: &str, who: As) -> Option<Env> {
        if who == As::Root && !imgfarm_testkit::require_root_or_skip(test) {
            return None;
        }
        let user = or_skip(test, FarmUser::get())?;
        let base = or_skip(test, BaseImages::build())?;
        let state = user.tempdir().expect("state dir");
        let work = user.tempdir().expect("work dir");
        let env = Env {
            bin: imgfarm_bin(),
            user,
            state,
            work,
            as_root: who == As::Root,
        };
        // The layout may live in root's temp dir: copy it where the user can read it.
        let layout = env.work.path().join("busybox-oci");
        copy_dir(base.layout_dir(), &layout);
        env.chown_work();
        let out = env.run(&[
            "debug",
            "import-layout",
            layout.to_str().expect("utf-8 path"),
            "--ref",
            "latest",
            "--name",
            "busybox:latest",
        ]);
        assert!(
            out.status.success(),
            "seeding busybox: {}",
            text(&out.stderr)
        );
        Some(env)
    }

    /// Run `imgfarm --state STATE ARGS` as the farm user.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command()
            .arg("--state")
            .arg(self.state.path())
            .args(args)
            .env_remove("IMGFARM_STATE")
            .output()
            .expect("imgfarm runs")
    }

    /// `imgfarm` as the env's user, with no arguments yet.
    pub fn command(&self) -> std::process::Command {
        if self.as_root {
            std::process::Command::new(&self.bin)
        } else {
            self.user.command(&self.bin)
        }
    }

    /// Write a context dir `name` with `files` (path, content) and hand it to the user.
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.work.path().join(name);
        for (p, c) in files {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().expect("parent")).expect("mkdir");
            std::fs::write(&f, c).expect("write");
        }
        self.chown_work();
        dir
    }

    /// Give everything under the work dir to the farm user.
    pub fn chown_work(&self) {
        let status = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.user.uid(), self.user.gid()))
            .arg(self.work.path())
            .status()
            .expect("chown");
        assert!(status.success());
    }

    /// The refs of the local store (name → digest), read from the state dir.
    pub fn refs(&self) -> Vec<(String, String)> {
        let store =
            imgfarm_common::oci::store::ContentStore::open(self.state.path()).expect("store");
        let mut out: Vec<(String, String)> = store
            .list_refs()
            .expect("refs")
            .into_iter()
            .map(|(n, d)| (n, d.digest.to_string()))
            .collect();
        out.sort();
        out
    }

    /// The repo's examples/hello copied into the work dir.
    pub fn hello_context(&self) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello");
        let dst = self.work.path().join("hello");
        copy_dir(&src, &dst);
        self.chown_work();
        dst
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Assert success, printing the build output otherwise.
pub fn ok(out: &Output) -> String {
    let err = text(&out.stderr);
    assert!(
        out.status.success(),
        "imgfarm failed ({:?}):\n{err}\n{}",
        out.status,
        text(&out.stdout)
    );
    err
}
