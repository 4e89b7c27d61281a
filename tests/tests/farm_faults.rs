//! Fault suite (issue 15, deliverable 3): a real farm (coordinator, workers and client as
//! separate processes, the workers as the unprivileged farm user) under faults.
//!
//! For each fault the build completes (or fails with a clear message, asserted), its output
//! equals a fault-free local build of the same Dockerfile and arguments (nothing accepted is
//! lost), every blob in every store (coordinator, workers, client; the registry for pushes)
//! hashes to its name with no partial upload of a dead writer left in `ingest/`, and a retry
//! on the same farm succeeds.
//!
//! Faults: worker SIGKILL and SIGSTOP mid-step and while uploading its result; a worker's link cut for seconds and 20 %
//! packet loss both ways (the worker in a network namespace of its own, see
//! [`imgfarm_testkit::NetNs`]; needs root); the coordinator SIGKILLed and restarted three
//! times during one build; a worker whose state is a tiny tmpfs (out of disk space); a
//! registry answering 500 to blob uploads during `--push`, and one killed mid-push
//! (between two blob uploads, held at [`imgfarm_testkit::FaultyRegistry`]).

mod farm_support;

use farm_support::{lines_with, tree, worker_of, Farm, Proc};
use imgfarm_testkit::{or_skip, require_root_or_skip, NetNs, Registry};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Two independent stages (so two workers run at once) joined by a third; every file's
/// content depends on the build arg `R` only. `S` is how long the first steps take (the
/// faulted builds pass 3 s, the fault-free reference and retries none).
const TWO_STAGES: &str = "\
FROM busybox AS a
ARG R
ARG S=0
RUN echo a-$R > /a && sleep $S
FROM busybox AS b
ARG R
ARG S=0
RUN echo b-$R > /b && sleep $S
FROM busybox
ARG R
COPY --from=a /a /a
COPY --from=b /b /b
RUN cat /a /b > /ab && echo final-$R > /final
";

/// Six steps in a row, each `S` seconds (3 under faults): long enough to crash the
/// coordinator three times in between.
const CHAIN: &str = "\
FROM busybox
ARG R
ARG S=0
RUN echo 1-$R > /1 && sleep $S
RUN echo 2-$R > /2 && sleep $S
RUN echo 3-$R > /3 && sleep $S
RUN echo 4-$R > /4 && sleep $S
RUN echo 5-$R > /5 && sleep $S
RUN cat /1 /2 /3 /4 /5 > /all && sleep $S
";

const BUILD_DEADLINE: Duration = Duration::from_secs(300);

/// A Dockerfile context and the farm it is built on.
struct Case<'a> {
    farm: &'a Farm,
    ctx: PathBuf,
}

impl<'a> Case<'a> {
    fn new(farm: &'a Farm, dockerfile: &str) -> Self {
        let ctx = farm.env.context("ctx", &[("Dockerfile", dockerfile)]);
        Case { farm, ctx }
    }

    fn dest(&self, tag: &str) -> PathBuf {
        self.farm.env.work.path().join(format!("out-{tag}"))
    }

    /// Build arguments: `R=r`, steps of `secs` seconds (`S`), local output to `dest`.
    fn args(&self, r: &str, secs: u32, dest: &Path) -> Vec<String> {
        vec![
            "--platform".into(),
            "linux/amd64".into(),
            "--build-arg".into(),
            format!("R={r}"),
            "--build-arg".into(),
            format!("S={secs}"),
            "--output".into(),
            format!("type=local,dest={}", dest.display()),
            self.ctx.display().to_string(),
        ]
    }

    /// Starts the farm build with arg `R=r` and slow steps (3 s), written to `out-<r>`.
    fn start(&self, r: &str) -> Proc {
        self.start_secs(r, 3)
    }

    fn start_secs(&self, r: &str, secs: u32) -> Proc {
        let args = self.args(r, secs, &self.dest(r));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.farm.start_build(&args)
    }

    /// Asserts that the farm build `r` (finished, output `out`) wrote the same files as a
    /// fault-free local build with the same arguments.
    fn assert_same_as_local(&self, r: &str, out: &str) {
        let reference = self.dest(&format!("{r}-local"));
        let args = self.args(r, 0, &reference);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.farm
            .local_build_within(&args, Duration::from_secs(180));
        let (got, want) = (tree(&self.dest(r)), tree(&reference));
        assert!(
            want.len() > 10,
            "the local build wrote {} files",
            want.len()
        );
        if got != want {
            let diff: Vec<&String> = want
                .keys()
                .chain(got.keys())
                .filter(|k| got.get(*k) != want.get(*k))
                .take(20)
                .collect();
            panic!("farm build {r} differs from the local build at {diff:?}\n{out}");
        }
    }

    /// A fresh build (`r`-retry) after the fault succeeds and is right, then every store
    /// verifies.
    fn retry_and_check_stores(&self, r: &str, extra_stores: &[PathBuf]) {
        let retry = format!("{r}-retry");
        let mut c = self.start_secs(&retry, 0);
        let out = finish(&mut c, &retry);
        self.assert_same_as_local(&retry, &out);
        let n = self.farm.assert_stores_clean(r, extra_stores);
        assert!(n > 0, "no blob verified at all");
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "fault {r}: output as the fault-free build's, retry ok, {n} blobs verified in {} stores",
            self.farm.stores(extra_stores).len()
        );
    }
}

/// Waits (up to 90 s) until worker `name` has connected a second time.
fn wait_rejoined(worker: &Proc, name: &str) {
    let joined = format!("worker {name} connected");
    let start = Instant::now();
    while worker.count(&joined) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{name} did not reconnect:\n{}",
            worker.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a build to end successfully; its output.
fn finish(client: &mut Proc, what: &str) -> String {
    let status = client.wait(BUILD_DEADLINE);
    let out = client.output();
    assert!(status.success(), "build {what} failed ({status}):\n{out}");
    out
}

/// Waits until the client shows step `step` placed on a worker; that worker's name.
fn wait_placed(client: &mut Proc, step: &str, on: Option<&str>) -> String {
    let start = Instant::now();
    loop {
        let out = client.output();
        let hit = lines_with(&out, step)
            .into_iter()
            .filter_map(worker_of)
            .find(|w| on.is_none_or(|o| o == w));
        if let Some(w) = hit {
            return w;
        }
        assert!(
            !client.exited() && start.elapsed() < Duration::from_secs(120),
            "{step} was not placed{}:\n{out}",
            on.map(|w| format!(" on {w}")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts workers `names` (1 slot each, linux/amd64) on the host.
fn workers(farm: &Farm, names: &[&str]) -> Vec<(String, Proc)> {
    names
        .iter()
        .map(|w| (w.to_string(), farm.start_worker(w, Some("linux/amd64"), 1)))
        .collect()
}

fn index_of(ws: &[(String, Proc)], name: &str) -> usize {
    ws.iter()
        .position(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("unknown worker {name}"))
}

#[test]
fn a_worker_killed_mid_step_loses_nothing() {
    let name = "a_worker_killed_mid_step_loses_nothing";
    let Some(farm) = Farm::new(name, &["w1", "w2"]) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    let mut ws = workers(&farm, &["w1", "w2"]);
    let case = Case::new(&farm, TWO_STAGES);
    let mut client = case.start("kill");
    let victim = wait_placed(&mut client, "RUN echo a-", None);
    std::thread::sleep(Duration::from_millis(800));
    let i = index_of(&ws, &victim);
    ws[i].1.kill();
    let out = finish(&mut client, "kill");
    let last = lines_with(&out, "RUN echo a-")
        .into_iter()
        .filter_map(worker_of)
        .next_back();
    assert_ne!(last.as_deref(), Some(victim.as_str()), "{out}");
    case.assert_same_as_local("kill", &out);
    // The victim comes back (its store is opened again, which clears what it left).
    ws[i].1 = farm.start_worker(&victim, Some("linux/amd64"), 1);
    case.retry_and_check_stores("kill", &[]);
}

#[test]
fn a_stopped_worker_is_given_up_and_its_step_runs_elsewhere() {
    let name = "a_stopped_worker_is_given_up_and_its_step_runs_elsewhere";
    let Some(farm) = Farm::new(name, &["w1", "w2"]) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    let ws = workers(&farm, &["w1", "w2"]);
    let case = Case::new(&farm, TWO_STAGES);
    let mut client = case.start("stop");
    let victim = wait_placed(&mut client, "RUN echo b-", None);
    std::thread::sleep(Duration::from_millis(800));
    let stopped = &ws[index_of(&ws, &victim)].1;
    stopped.signal("STOP");
    let out = {
        let status = client.wait(BUILD_DEADLINE);
        // Wake it whatever happened, so its drop can reap it.
        stopped.signal("CONT");
        let out = client.output();
        assert!(status.success(), "build stop failed ({status}):\n{out}");
        out
    };
    case.assert_same_as_local("stop", &out);
    // Woken, the stopped worker finds its session gone and joins again.
    wait_rejoined(stopped, &victim);
    case.retry_and_check_stores("stop", &[]);
}

#[test]
fn a_worker_whose_link_is_cut_for_seconds_loses_nothing() {
    let name = "a_worker_whose_link_is_cut_for_seconds_loses_nothing";
    if !require_root_or_skip(name) {
        return;
    }
    let Some(ns) = or_skip(name, NetNs::new()) else {
        return;
    };
    let Some(farm) = Farm::new_on(name, &["far", "near"], &ns.host_addr().to_string()) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    let far = farm.start_worker_in(&ns, "far", Some("linux/amd64"), 1);
    let _near = farm.start_worker("near", Some("linux/amd64"), 1);
    let case = Case::new(&farm, TWO_STAGES);
    let mut client = case.start("cut");
    wait_placed(&mut client, "RUN echo", Some("far"));
    std::thread::sleep(Duration::from_millis(500));
    ns.cut().expect("cut");
    std::thread::sleep(Duration::from_secs(5));
    ns.heal().expect("heal");
    let out = finish(&mut client, "cut");
    case.assert_same_as_local("cut", &out);
    // The far worker comes back by itself once the link is up.
    wait_rejoined(&far, "far");
    case.retry_and_check_stores("cut", &[]);
}

#[test]
fn a_worker_behind_twenty_percent_packet_loss_builds_correctly() {
    let name = "a_worker_behind_twenty_percent_packet_loss_builds_correctly";
    if !require_root_or_skip(name) {
        return;
    }
    let Some(ns) = or_skip(name, NetNs::new()) else {
        return;
    };
    let Some(farm) = Farm::new_on(name, &["far"], &ns.host_addr().to_string()) else {
        return;
    };
    let _coordinator = farm.start_coordinator(6);
    let far = farm.start_worker_in(&ns, "far", Some("linux/amd64"), 2);
    ns.loss(20).expect("loss");
    let case = Case::new(&farm, TWO_STAGES);
    let mut client = case.start("loss");
    let out = finish(&mut client, "loss");
    let dropped = ns.dropped();
    assert!(dropped > 0, "the loss rules dropped nothing");
    eprintln!("20% loss: {dropped} packets dropped during the build");
    case.assert_same_as_local("loss", &out);
    case.retry_and_check_stores("loss", &[]);
    ns.loss(0).expect("loss off");
    // The namespace has no default route: pasta could not start there, so the worker's
    // steps got only their loopback, and the worker said why (not the host's network).
    assert!(
        far.output().contains("has no default route"),
        "{}",
        far.output()
    );
}

#[test]
fn a_build_survives_three_coordinator_crashes() {
    let name = "a_build_survives_three_coordinator_crashes";
    let Some(farm) = Farm::new(name, &["w1"]) else {
        return;
    };
    let mut coordinator = farm.start_coordinator(6);
    let _ws = workers(&farm, &["w1"]);
    let case = Case::new(&farm, CHAIN);
    let mut client = case.start("crash");
    client.wait_for("build id", Duration::from_secs(60));
    for round in 1..=3 {
        std::thread::sleep(Duration::from_millis(2000));
        assert!(!client.exited(), "round {round}:\n{}", client.output());
        coordinator.kill();
        std::thread::sleep(Duration::from_secs(1));
        coordinator = farm.start_coordinator(6);
        let start = Instant::now();
        while client.count("re-attaching") < round {
            assert!(
                start.elapsed() < Duration::from_secs(60) && !client.exited(),
                "round {round}: the client did not re-attach:\n{}",
                client.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let out = finish(&mut client, "crash");
    assert!(out.contains("re-attaching"), "{out}");
    case.assert_same_as_local("crash", &out);
    case.retry_and_check_stores("crash", &[]);
}

/// A tmpfs of `size` mounted at `dir` for a worker's state; unmounted on drop (declare it
/// before the worker, so the worker is stopped first).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str, farm: &Farm) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .expect("mount");
        assert!(st.success(), "mount tmpfs at {}", dir.display());
        farm.env.chown(dir);
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Incompressible, deterministic bytes (xorshift), so a layer holding them is as big as
/// they are.
fn noise(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    v
}

#[test]
fn a_worker_out_of_disk_space_hands_its_step_to_another() {
    let name = "a_worker_out_of_disk_space_hands_its_step_to_another";
    if !require_root_or_skip(name) {
        return;
    }
    let Some(farm) = Farm::new(name, &["small", "big"]) else {
        return;
    };
    let _tmpfs = Tmpfs::mount(&farm.worker_state("small"), "16m", &farm);
    let mut coordinator = farm.start_coordinator(6);
    let mut small = farm.start_worker("small", Some("linux/amd64"), 1);
    let case = Case::new(
        &farm,
        "FROM busybox\nARG R\nCOPY noise /noise\nRUN echo $R > /r && wc -c < /noise > /n\n",
    );
    std::fs::write(case.ctx.join("noise"), noise(24 << 20)).expect("noise");
    farm.env.chown(&case.ctx);
    let mut client = case.start("full");
    // Only the small worker exists: it fails for lack of space and is drained.
    coordinator.wait_for("out of disk space", Duration::from_secs(120));
    let _big = farm.start_worker("big", Some("linux/amd64"), 1);
    let out = finish(&mut client, "full");
    assert!(
        !lines_with(&out, "RUN echo")
            .iter()
            .any(|l| l.contains("ERROR")),
        "{out}"
    );
    case.assert_same_as_local("full", &out);
    // The small worker's store holds no partial blob either (checked with the others).
    small.kill();
    small = farm.start_worker("small", Some("linux/amd64"), 1);
    case.retry_and_check_stores("full", &[]);
    small.kill();
}

/// The registry's blobs (`docker/registry/v2/blobs/sha256/xx/<hex>/data`): each hashes to
/// its name. Returns how many.
fn assert_registry_blobs_verify(reg: &Registry) -> usize {
    let root = reg.storage_dir().join("docker/registry/v2/blobs/sha256");
    let mut n = 0;
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let data = blob.path().join("data");
            let want = blob.file_name().to_string_lossy().into_owned();
            let got = imgfarm_testkit::sha256_file(&data).expect("hash");
            assert_eq!(got, want, "registry blob {} is corrupt", data.display());
            n += 1;
        }
    }
    n
}

#[test]
fn a_registry_failing_uploads_during_a_push() {
    let name = "a_registry_failing_uploads_during_a_push";
    let Some(farm) = Farm::new(name, &["w1"]) else {
        return;
    };
    let Some(reg) = or_skip(name, Registry::start()) else {
        return;
    };
    let proxy = imgfarm_testkit::FaultyRegistry::start(reg.addr()).expect("proxy");
    let _coordinator = farm.start_coordinator(6);
    let _ws = workers(&farm, &["w1"]);
    let case = Case::new(&farm, TWO_STAGES);
    let push = |r: &str, tag: &str| {
        let image = format!("{}/faults/app:{tag}", proxy.addr());
        let mut args = vec!["--push".to_string(), "-t".into(), image];
        args.extend(case.args(r, 0, &case.dest(r)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = farm.start_build(&args);
        let status = c.wait(BUILD_DEADLINE);
        (status.success(), c.output())
    };

    // A few 500s: the push retries and succeeds.
    proxy.fail_next_uploads(2);
    let (ok, out) = push("flaky", "flaky");
    assert!(ok, "{out}");
    assert_eq!(proxy.failed(), 2, "{out}");
    case.assert_same_as_local("flaky", &out);
    let pushed = assert_registry_blobs_verify(&reg);
    assert!(pushed >= 3, "{pushed} blobs in the registry");

    // Every upload fails: the build fails and says why.
    proxy.fail_next_uploads(usize::MAX);
    let (ok, out) = push("down", "down");
    assert!(!ok, "the push cannot have succeeded:\n{out}");
    let failed = proxy.failed();
    assert!(failed > 2, "{out}");
    assert!(
        out.contains("ERROR: failed to solve: pushing to") && out.contains("HTTP 500"),
        "the failure does not say the registry answered 500 to the push:\n{out}"
    );
    assert_registry_blobs_verify(&reg);

    // The registry recovers: the same build pushes.
    proxy.fail_next_uploads(0);
    let (ok, out) = push("down", "down");
    assert!(ok, "{out}");
    case.assert_same_as_local("down", &out);
    assert_registry_blobs_verify(&reg);
    farm.assert_stores_clean("push", &[]);
    let st = std::process::Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(reg.skopeo_flags_plain())
        .arg(format!("docker://{}", reg.image_ref("faults/app", "down")))
        .output();
    if let Ok(st) = st {
        assert!(st.status.success(), "{}", farm_support::text(&st.stderr));
    }
}

#[test]
fn a_registry_killed_mid_push() {
    let name = "a_registry_killed_mid_push";
    let Some(farm) = Farm::new(name, &["w1"]) else {
        return;
    };
    let Some(mut reg) = or_skip(name, Registry::start()) else {
        return;
    };
    let proxy = imgfarm_testkit::FaultyRegistry::start(reg.addr()).expect("proxy");
    let _coordinator = farm.start_coordinator(6);
    let _ws = workers(&farm, &["w1"]);
    let case = Case::new(&farm, TWO_STAGES);
    let push = |r: &str| {
        let image = format!("{}/faults/app:{r}", proxy.addr());
        let mut args = vec!["--push".to_string(), "-t".into(), image];
        args.extend(case.args(r, 0, &case.dest(r)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        farm.start_build(&args)
    };

    // One blob upload goes through, the next waits at the proxy while the registry dies.
    proxy.hold_uploads_after(1);
    let mut client = push("dead");
    let start = Instant::now();
    while proxy.held() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120) && !client.exited(),
            "the push never reached its second blob upload:\n{}",
            client.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    reg.stop();
    proxy.release();
    let status = client.wait(BUILD_DEADLINE);
    let out = client.output();
    assert!(!status.success(), "the push cannot have succeeded:\n{out}");
    assert!(
        out.contains("ERROR: failed to solve: pushing to") && out.contains("cannot reach"),
        "the failure does not say the registry could not be reached:\n{out}"
    );
    // What the dead registry had committed is whole.
    assert_registry_blobs_verify(&reg);

    // A registry is back (a new one, behind the same address): the same build pushes.
    let Some(reg2) = or_skip(name, Registry::start()) else {
        return;
    };
    proxy.set_upstream(reg2.addr());
    let mut client = push("dead");
    let out = finish(&mut client, "dead (retry)");
    case.assert_same_as_local("dead", &out);
    assert!(assert_registry_blobs_verify(&reg2) >= 3);
    farm.assert_stores_clean("registry killed", &[]);
}

/// Temp files in `store`'s `ingest/` (uploads in progress).
fn ingesting(store: &Path) -> usize {
    std::fs::read_dir(store.join("ingest"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                .count()
        })
        .unwrap_or(0)
}

/// Starts build `tag` whose RUN step makes a 24 MiB incompressible layer, and returns once
/// that result streams into the coordinator's ingest/: the case, the client and the worker
/// uploading it.
fn uploading_a_big_result<'f>(farm: &'f Farm, tag: &str) -> (Case<'f>, Proc, String) {
    let case = Case::new(
        farm,
        "FROM busybox\nARG R\nCOPY noise /noise\n\
         RUN cat /noise /noise /noise > /big && echo $R > /r\n",
    );
    std::fs::write(case.ctx.join("noise"), noise(8 << 20)).expect("noise");
    farm.env.chown(&case.ctx);
    let mut client = case.start(tag);
    let victim = wait_placed(&mut client, "RUN cat /noise", None);
    let start = Instant::now();
    while ingesting(&farm.coordinator_state) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(120) && !client.exited(),
            "no result upload seen:\n{}",
            client.output()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (case, client, victim)
}

#[test]
fn a_worker_killed_while_uploading_its_result_leaves_no_partial_blob() {
    let name = "a_worker_killed_while_uploading_its_result_leaves_no_partial_blob";
    let Some(farm) = Farm::new(name, &["w1", "w2"]) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    let mut ws = workers(&farm, &["w1", "w2"]);
    let (case, mut client, victim) = uploading_a_big_result(&farm, "upload");
    let i = index_of(&ws, &victim);
    ws[i].1.kill();
    let out = finish(&mut client, "upload");
    case.assert_same_as_local("upload", &out);
    ws[i].1 = farm.start_worker(&victim, Some("linux/amd64"), 1);
    case.retry_and_check_stores("upload", &[]);
}

#[test]
fn a_worker_stopped_while_uploading_its_result_leaves_no_partial_blob() {
    let name = "a_worker_stopped_while_uploading_its_result_leaves_no_partial_blob";
    let Some(farm) = Farm::new(name, &["w1", "w2"]) else {
        return;
    };
    let _coordinator = farm.start_coordinator(3);
    let ws = workers(&farm, &["w1", "w2"]);
    let (case, mut client, victim) = uploading_a_big_result(&farm, "stalled");
    let stopped = &ws[index_of(&ws, &victim)].1;
    stopped.signal("STOP");
    let status = client.wait(BUILD_DEADLINE);
    // The stopped worker's upload stalls; once the coordinator gave the worker up, the
    // partial blob must not stay in its ingest/ while the worker sleeps.
    let left = ingesting(&farm.coordinator_state);
    stopped.signal("CONT");
    let out = client.output();
    assert!(status.success(), "{out}");
    assert_eq!(
        left, 0,
        "a stalled upload of a worker given up stays in the coordinator's ingest/"
    );
    case.assert_same_as_local("stalled", &out);
    case.retry_and_check_stores("stalled", &[]);
}
