//! A real farm on loopback for the end-to-end tests: one coordinator and
//! workers as separate `imgfarm` processes running as the unprivileged farm
//! user, with certificates from `imgfarm farm init|issue`, and a client
//! (`imgfarm build --farm`) whose progress is read line by line.
//!
//! Every process is stopped by its PID when its handle drops.

#![allow(dead_code)]

#[path = "../build_support/mod.rs"]
pub mod build_support;

#[allow(unused_imports)] // not every test binary uses all of them
pub use build_support::{ok, text, Env};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process we started, with its output collected in the background.
pub struct Proc {
    pub name: String,
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: std::process::Command) -> Proc {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = Arc::clone(&lines);
            let tag = name.to_string();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if std::env::var_os("IMGFARM_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    lines.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            lines,
        }
    }

    /// Everything printed so far (stdout and stderr, interleaved by line).
    pub fn output(&self) -> String {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Waits until a printed line contains `needle`; panics with the output after `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(l) = self
                .lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|l| l.contains(needle))
            {
                return l.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                panic!(
                    "{} exited ({status}) before printing {needle:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "{} did not print {needle:?} within {timeout:?}:\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return s;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "{} still running after {timeout:?}:\n{}",
                    self.name,
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name `kill` knows: STOP, CONT, TERM, ...) to this process only.
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {}", self.pid());
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Lines printed so far that contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Certificates, addresses and state dirs of one test farm.
pub struct Farm {
    pub env: Env,
    pub tls: PathBuf,
    pub addr: String,
    pub coordinator_state: PathBuf,
}

/// A free UDP port on 127.0.0.1 (bound then released).
fn free_udp_port_on(ip: &str) -> u16 {
    let s = std::net::UdpSocket::bind((ip, 0)).expect("bind udp");
    s.local_addr().expect("addr").port()
}

impl Farm {
    /// A farm CA with certificates for `workers` and one client `ci`.
    pub fn new(test: &str, workers: &[&str]) -> Option<Farm> {
        Farm::new_on(test, workers, "127.0.0.1")
    }

    /// [`Farm::new`] with the coordinator on `ip` (e.g. a [`imgfarm_testkit::NetNs`]'s host
    /// end, so workers inside the namespace reach it); its certificate names `ip` too.
    pub fn new_on(test: &str, workers: &[&str], ip: &str) -> Option<Farm> {
        let env = Env::new(test)?;
        let tls = env.work.path().join("tls");
        let run = |args: &[&str]| ok(&env.run(args));
        run(&[
            "farm",
            "init",
            "--dir",
            tls.to_str().expect("utf-8"),
            "--san",
            "127.0.0.1",
            "--san",
            "localhost",
            "--san",
            ip,
        ]);
        for w in workers {
            run(&[
                "farm",
                "issue",
                "--dir",
                tls.to_str().expect("utf-8"),
                "--worker",
                w,
            ]);
        }
        run(&[
            "farm",
            "issue",
            "--dir",
            tls.to_str().expect("utf-8"),
            "--client",
            "ci",
        ]);
        let coordinator_state = env.work.path().join("coordinator-state");
        std::fs::create_dir_all(&coordinator_state).expect("mkdir");
        env.chown_work();
        let addr = format!("{ip}:{}", free_udp_port_on(ip));
        Some(Farm {
            env,
            tls,
            addr,
            coordinator_state,
        })
    }

    pub fn farm_url(&self) -> String {
        format!("quic://{}", self.addr)
    }

    fn command(&self, state: &Path) -> std::process::Command {
        let mut c = self.env.user.command(&self.env.bin);
        c.arg("--state").arg(state).env_remove("IMGFARM_STATE");
        c
    }

    /// Starts the coordinator (heartbeat timeout `hb_timeout` seconds) and waits until it listens.
    pub fn start_coordinator(&self, hb_timeout: u64) -> Proc {
        self.start_coordinator_with(hb_timeout, &[])
    }

    /// [`Farm::start_coordinator`] with more arguments (e.g. `--log-level info`, which
    /// prints a `vertex placed` line per placement and a `build started` line with the
    /// build's queue wait).
    pub fn start_coordinator_with(&self, hb_timeout: u64, extra: &[&str]) -> Proc {
        let mut c = self.command(&self.coordinator_state);
        c.args(extra)
            .args(["coordinator", "--listen", &self.addr, "--tls-dir"])
            .arg(&self.tls)
            .args(["--heartbeat-timeout", &hb_timeout.to_string()]);
        let mut p = Proc::spawn("coordinator", c);
        p.wait_for("coordinator listening on", Duration::from_secs(30));
        p
    }

    /// Starts worker `name` (state under the work dir), optionally claiming `platforms`,
    /// and waits until it is connected.
    pub fn start_worker(&self, name: &str, platforms: Option<&str>, slots: usize) -> Proc {
        let c = self.worker_command(name, &self.worker_state(name), platforms, slots);
        spawn_worker(name, c)
    }

    /// Worker `name`'s state dir (its content store is the dir itself).
    pub fn worker_state(&self, name: &str) -> PathBuf {
        self.env.work.path().join(format!("worker-{name}-state"))
    }

    /// `imgfarm worker` for `name` with state `state` (created and handed to the farm user
    /// if missing), not started yet.
    pub fn worker_command(
        &self,
        name: &str,
        state: &Path,
        platforms: Option<&str>,
        slots: usize,
    ) -> std::process::Command {
        if !state.exists() {
            std::fs::create_dir_all(state).expect("mkdir");
            // Only this dir: the others hold the state of running workers.
            self.env.chown(state);
        }
        let mut c = self.command(state);
        c.args(["worker", "--coordinator", &self.farm_url(), "--tls-dir"])
            .arg(&self.tls)
            .args(["--name", name, "--slots", &slots.to_string()]);
        if let Some(p) = platforms {
            c.args(["--platforms", p]);
        }
        c
    }

    /// Starts worker `name` inside network namespace `ns` (reaching the coordinator over
    /// the namespace's veth; build the farm with [`Farm::new_on`] and `ns.host_addr()`).
    pub fn start_worker_in(
        &self,
        ns: &imgfarm_testkit::NetNs,
        name: &str,
        platforms: Option<&str>,
        slots: usize,
    ) -> Proc {
        let c = self.worker_command(name, &self.worker_state(name), platforms, slots);
        spawn_worker(name, in_netns(ns, &c))
    }

    /// Starts `imgfarm build --farm ... ARGS` with client state `state` (see
    /// [`Farm::client_state`]), in the background.
    pub fn start_build_as(&self, state: &Path, args: &[&str]) -> Proc {
        let mut c = self.command(state);
        c.args(["build", "--farm", &self.farm_url(), "--tls-dir"])
            .arg(&self.tls)
            .args(["--progress", "plain"])
            .args(args);
        Proc::spawn("client", c)
    }

    /// A client state dir of its own (a copy of the seeded one, busybox included), for
    /// clients that run at the same time.
    pub fn client_state(&self, name: &str) -> PathBuf {
        let dir = self.env.work.path().join(format!("client-{name}-state"));
        build_support::copy_dir(self.env.state.path(), &dir);
        self.env.chown(&dir);
        dir
    }

    /// Every content store of the farm: the coordinator's, the client's and each worker's
    /// (the `worker-*-state` dirs under the work dir), plus `extra`.
    pub fn stores(&self, extra: &[PathBuf]) -> Vec<PathBuf> {
        let mut v = vec![
            self.coordinator_state.clone(),
            self.env.state.path().to_path_buf(),
        ];
        if let Ok(d) = std::fs::read_dir(self.env.work.path()) {
            let mut more: Vec<PathBuf> = d
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with("-state") && n != "coordinator-state")
                })
                .collect();
            more.sort();
            v.extend(more);
        }
        v.extend(extra.iter().cloned());
        v
    }

    /// Asserts that every blob in every store of the farm ([`Farm::stores`]) hashes to its
    /// name and that no partial upload is left (call it with no build running: a live
    /// process's temp file in `ingest/` then is a leak too); returns the blobs verified.
    pub fn assert_stores_clean(&self, what: &str, extra: &[PathBuf]) -> usize {
        let mut n = 0;
        for s in self.stores(extra) {
            let c = imgfarm_testkit::check_store(&s).expect("check store");
            c.assert_idle(what);
            n += c.verified;
        }
        n
    }

    /// Starts `imgfarm build --farm ... ARGS` as the farm user, in the background.
    pub fn start_build(&self, args: &[&str]) -> Proc {
        let mut c = self.command(self.env.state.path());
        c.args(["build", "--farm", &self.farm_url(), "--tls-dir"])
            .arg(&self.tls)
            .args(["--progress", "plain"])
            .args(args);
        Proc::spawn("client", c)
    }

    /// Runs a farm build to the end; panics with its output unless it succeeds.
    pub fn build(&self, args: &[&str]) -> String {
        self.build_within(args, Duration::from_secs(600))
    }

    /// [`Farm::build`] that is killed and fails (instead of hanging) after `deadline`.
    pub fn build_within(&self, args: &[&str], deadline: Duration) -> String {
        finish("farm build", self.start_build(args), deadline)
    }

    /// The same build without the farm: `imgfarm build --progress plain ARGS` as the farm user
    /// with the client's state dir (so both see the same local images), killed and failing
    /// after `deadline`.
    pub fn local_build_within(&self, args: &[&str], deadline: Duration) -> String {
        let mut c = self.command(self.env.state.path());
        c.args(["build", "--progress", "plain"]).args(args);
        finish("local build", Proc::spawn("local", c), deadline)
    }
}

/// Spawns a worker command and waits until it is connected.
pub fn spawn_worker(name: &str, c: std::process::Command) -> Proc {
    let mut p = Proc::spawn(name, c);
    p.wait_for(&format!("worker {name} connected"), Duration::from_secs(60));
    p
}

/// `c` run inside network namespace `ns` (same program, arguments, environment and dir).
pub fn in_netns(ns: &imgfarm_testkit::NetNs, c: &std::process::Command) -> std::process::Command {
    let mut n = ns.command(c.get_program());
    n.args(c.get_args());
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => n.env(k, v),
            None => n.env_remove(k),
        };
    }
    if let Some(d) = c.get_current_dir() {
        n.current_dir(d);
    }
    n
}

/// The files under `dir` (relative path → content; symlinks as `-> target`), for
/// comparing the output of a build under faults with a fault-free one.
pub fn tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let ft = e.file_type().expect("file type");
            if ft.is_symlink() {
                let t = std::fs::read_link(&p).expect("readlink");
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if ft.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                walk(root, &p, out);
            } else {
                out.insert(rel, std::fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Waits for `p` up to `deadline`; its output, or a panic with it unless it succeeded.
fn finish(what: &str, mut p: Proc, deadline: Duration) -> String {
    let status = p.wait(deadline);
    let out = p.output();
    assert!(status.success(), "{what} failed ({status}):\n{out}");
    out
}

/// The progress lines naming `needle` (e.g. a step text), for worker checks.
pub fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

/// The worker named on a progress line (`... (worker amd1, emulated)` → `amd1`).
pub fn worker_of(line: &str) -> Option<String> {
    let rest = &line[line.find("(worker ")? + "(worker ".len()..];
    let end = rest.find([',', ')']).unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}
